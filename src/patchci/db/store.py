"""All queries patchci runs, behind one `Store` (SQLAlchemy Core, bind parameters only).

Each public method is one transaction. Models go in and come out (Series, CheckResult);
rows that only the database knows about come out as small frozen dataclasses.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Insert, Table, func, select, update
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, CursorResult, Row
from sqlalchemy.sql import ColumnElement

from patchci.analysis.revisions import Revision
from patchci.db import tables as t
from patchci.db.base import Database
from patchci.db.tables import as_utc, utcnow
from patchci.errors import NotFound
from patchci.model import (
    EXPIRED,
    INCOMPLETE,
    MALFORMED,
    NEW,
    CheckResult,
    Outcome,
    Patch,
    Person,
    Series,
)
from patchci.subject import parse_subject

log = logging.getLogger(__name__)

__all__ = ["NotFound", "Store"]

JOB_STATUSES = ("queued", "running", "done", "error")
# "intent" is written just before a POST, so a crash between POST and "sent" is detectable.
# unknown: an intent whose outcome nobody saw (killed mid-send); a mail is not sent again
DELIVERY_STATUSES = ("intent", "sent", "failed", "unknown", "refused")


@dataclass(frozen=True)
class SeriesRow:
    id: int
    source: str
    key: str
    name: str
    version: int
    total: int
    complete: bool
    tree: str | None
    state: str
    state_reason: str
    pw_id: int | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class JobRow:
    id: int
    series_id: int
    kind: str
    status: str
    attempts: int
    error: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker: str
    lease_until: datetime | None = None


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    target: str
    series_id: int
    patch_pw_id: int | None
    context: str
    state: str
    fingerprint: str
    remote_id: str | None
    status: str
    error: str
    created_at: datetime


@dataclass(frozen=True)
class RetryRow:
    id: int
    source: str
    event_id: int
    event_date: str
    remote_id: int
    attempts: int
    status: str
    error: str
    first_at: datetime
    next_at: datetime


_RowT = TypeVar("_RowT", SeriesRow, JobRow, DeliveryRow, RetryRow)


def _row_to(cls: type[_RowT], row: Row[Any]) -> _RowT:
    m = row._mapping
    return cls(**{f.name: m[f.name] for f in fields(cls)})


# --- model <-> row conversion (pure) ---------------------------------------------------


def _series_values(s: Series) -> dict[str, Any]:
    return {
        "name": s.name,
        "version": s.version,
        "total": s.total,
        "complete": s.complete,
        "submitter_name": s.submitter.name if s.submitter else None,
        "submitter_email": s.submitter.email if s.submitter else None,
        "date": as_utc(s.date),
        "pw_id": s.pw_id,
        "web_url": s.web_url,
        "problems": json.dumps(list(s.problems)),
    }


def _patch_slots(s: Series) -> list[tuple[int, bool, Patch]]:
    """(idx, is_cover, patch) for every mail of *s*; a repeated msgid keeps its first slot."""
    slots: list[tuple[int, bool, Patch]] = []
    if s.cover is not None:
        slots.append((0, True, s.cover))
    slots += [(i, False, p) for i, p in enumerate(s.patches)]
    seen: set[str] = set()
    out = []
    for slot in slots:
        if slot[2].msgid in seen:
            log.warning("series %s/%s: duplicate msgid %s ignored", s.source, s.key, slot[2].msgid)
            continue
        seen.add(slot[2].msgid)
        out.append(slot)
    return out


def _patch_values(series_id: int, idx: int, is_cover: bool, p: Patch) -> dict[str, Any]:
    return {
        "series_id": series_id,
        "idx": idx,
        "is_cover": is_cover,
        "msgid": p.msgid,
        "subject": p.subject,
        "author_name": p.author.name,
        "author_email": p.author.email,
        "tags": " ".join(p.info.tags),
        "pw_id": p.pw_id,
        "web_url": p.web_url,
        "raw": p.raw,
        "date": as_utc(p.date),
        "in_reply_to": p.in_reply_to,
        "refs": " ".join(p.references),
        "recipients": json.dumps([[r.name, r.email] for r in p.recipients]),
        "has_diff": p.has_diff,
        "files": json.dumps(list(p.files)),
        "pull_url": p.pull_url,
    }


def _patch_from_row(row: Row[Any]) -> Patch:
    m = row._mapping
    return Patch(
        msgid=m["msgid"],
        subject=m["subject"],
        author=Person(m["author_name"], m["author_email"]),
        date=m["date"],
        info=parse_subject(m["subject"]),
        raw=bytes(m["raw"]),
        in_reply_to=m["in_reply_to"],
        references=tuple(m["refs"].split()),
        recipients=tuple(Person(n, e) for n, e in json.loads(m["recipients"])),
        has_diff=bool(m["has_diff"]),
        files=tuple(json.loads(m["files"])),
        pull_url=m["pull_url"],
        pw_id=m["pw_id"],
        web_url=m["web_url"],
    )


def _result_from_row(row: Row[Any]) -> CheckResult:
    m = row._mapping
    try:
        outcome = Outcome(m["outcome"])
    except ValueError:
        log.warning("check result %s: unknown outcome %r, read as error", m["id"], m["outcome"])
        outcome = Outcome.ERROR
    return CheckResult(
        check=m["check_name"],
        outcome=outcome,
        description=m["description"],
        patch_index=m["patch_idx"],
        log_path=m["log_path"],
        duration=m["duration"],
        reproducer=m["reproducer"],
        details=tuple((k, v) for k, v in json.loads(m["details"])),
    )


def _result_values(job_id: int, series_id: int, r: CheckResult, now: datetime) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "series_id": series_id,
        "patch_idx": r.patch_index,
        "check_name": r.check,
        "outcome": r.outcome.value,
        "description": r.description,
        "log_path": r.log_path,
        "duration": r.duration,
        "reproducer": r.reproducer,
        "details": json.dumps([list(kv) for kv in r.details]),
        "created_at": now,
    }


def _incomplete_reason(s: Series) -> str:
    return "; ".join(s.problems) or "incomplete"


def _arrival_state(current: str, s: Series) -> tuple[str, str] | None:
    """The state a stored series moves to when a new view *s* of it arrives (None: keep)."""
    if not s.complete:
        return (INCOMPLETE, _incomplete_reason(s)) if current in (NEW, INCOMPLETE) else None
    return (NEW, "completed") if current in (INCOMPLETE, EXPIRED) else None


def _inserted_id(res: CursorResult[Any]) -> int:
    pk = res.inserted_primary_key
    if pk is None:
        raise RuntimeError("INSERT returned no primary key")
    return int(pk[0])


def _dialect_insert(conn: Connection, table: Table) -> pg_dialect.Insert | sqlite_dialect.Insert:
    """An INSERT that knows ON CONFLICT (both supported backends have it)."""
    if conn.dialect.name == "postgresql":
        return pg_dialect.insert(table)
    return sqlite_dialect.insert(table)


class Store(Database):
    """The database of one patchci instance."""

    # --- cursors and events ------------------------------------------------------------

    def get_cursor(self, source: str) -> str | None:
        with self._read() as conn:
            q = select(t.source_cursors.c.value).where(t.source_cursors.c.source == source)
            value: str | None = conn.execute(q).scalar_one_or_none()
            return value

    def event_seen(self, source: str, event_id: int) -> bool:
        ev = t.source_events.c
        with self._read() as conn:
            q = select(ev.id).where(ev.source == source, ev.event_id == event_id)
            return conn.execute(q).first() is not None

    def record_event(
        self, source: str, event_id: int, event_date: str, series_id: int | None
    ) -> None:
        """Remember event *event_id* (again: no-op) and move the cursor up to *event_date*."""
        with self._write() as conn:
            self._record_event(conn, source, event_id, event_date, series_id)

    def _record_event(
        self, conn: Connection, source: str, event_id: int, event_date: str, series_id: int | None
    ) -> None:
        now = utcnow()
        ins = _dialect_insert(conn, t.source_events).values(
            source=source,
            event_id=event_id,
            event_date=event_date,
            series_id=series_id,
            seen_at=now,
        )
        conn.execute(ins.on_conflict_do_nothing(index_elements=["source", "event_id"]))
        self._advance_cursor(conn, source, event_date, now)

    def _advance_cursor(self, conn: Connection, source: str, value: str, now: datetime) -> None:
        # One statement, so concurrent ingesters cannot move the cursor backwards.
        cur = t.source_cursors
        ins = _dialect_insert(conn, cur).values(source=source, value=value, updated_at=now)
        old: ColumnElement[str] = cur.c.value
        if conn.dialect.name == "postgresql":
            old = old.collate(
                "C"
            )  # byte order, as SQLite compares: the database locale may not be C
        upsert = ins.on_conflict_do_update(
            index_elements=["source"],
            set_={"value": ins.excluded.value, "updated_at": ins.excluded.updated_at},
            where=old < ins.excluded.value,
        )
        conn.execute(upsert)

    # --- series --------------------------------------------------------------------------

    def save_series(self, series: Series) -> int:
        """Store *series* once per (source, key); a later, bigger view adds its new patches.

        A view that lacks patches already stored is older than what we have and is ignored.
        """
        with self._write() as conn:
            return self._save_series(conn, series)

    def save_series_with_event(
        self, series: Series, source: str, event_id: int, event_date: str
    ) -> int:
        """save_series and record_event in one transaction: the cursor never gets ahead of
        the series it stands for."""
        with self._write() as conn:
            series_id = self._save_series(conn, series)
            self._record_event(conn, source, event_id, event_date, series_id)
            return series_id

    def save_malformed_series(
        self,
        series: Series,
        reason: str,
        results: Sequence[CheckResult],
        event: tuple[str, int, str] | None = None,
    ) -> int:
        """A series one of whose mails does not parse, in one transaction: the series (the
        unparsed mail's raw bytes kept), state `malformed` with *reason*, the results that
        say so (to be reported), and the *event* (cursor, id, date) so the cursor moves on."""
        with self._write() as conn:
            series_id = self._save_series(conn, series)
            conn.execute(
                update(t.series)
                .where(t.series.c.id == series_id)
                .values(state=MALFORMED, state_reason=reason, updated_at=utcnow())
            )
            now = utcnow()
            res = conn.execute(
                t.jobs.insert().values(
                    series_id=series_id, kind="ingest", status="done", attempts=1, error=reason,
                    created_at=now, started_at=now, finished_at=now, worker="ingest",
                )
            )  # fmt: skip
            job_id = _inserted_id(res)
            if results:
                rows = [_result_values(job_id, series_id, r, now) for r in results]
                conn.execute(t.check_results.insert(), rows)
            if event is not None:
                self._record_event(conn, *event, series_id)
        log.warning("series %d (%s/%s): malformed: %s", series_id, series.source, series.key,
                    reason)  # fmt: skip
        return series_id

    def malformed_unreported(self) -> list[SeriesRow]:
        """Malformed series none of whose results has been delivered yet."""
        sc, dc = t.series.c, t.deliveries.c
        sent = select(dc.series_id).where(dc.status == "sent")
        q = select(t.series).where(sc.state == MALFORMED, sc.id.not_in(sent)).order_by(sc.id)
        with self._read() as conn:
            return [_row_to(SeriesRow, r) for r in conn.execute(q)]

    # --- 404 retries of listed series ----------------------------------------------------

    def add_retry(
        self, cursor: str, source: str, event_id: int, event_date: str, remote_id: int,
        error: str, next_at: datetime,
    ) -> None:  # fmt: skip
        """Record the event under *cursor* (which moves on) and queue its series for a
        retry, once per series of *source* (its created and completed events share one)."""
        rc = t.ingest_retries.c
        with self._write() as conn:
            self._record_event(conn, cursor, event_id, event_date, None)
            queued = select(rc.id).where(
                rc.source == source, rc.remote_id == remote_id, rc.status == "retrying"
            )
            if conn.execute(queued).first() is not None:
                return
            ins = _dialect_insert(conn, t.ingest_retries).values(
                source=source, event_id=event_id, event_date=event_date, remote_id=remote_id,
                attempts=1,
                status="retrying", error=error, first_at=utcnow(), next_at=next_at,
            )  # fmt: skip
            conn.execute(ins.on_conflict_do_nothing(index_elements=["source", "event_id"]))

    def retry_queued(self, source: str, remote_id: int) -> bool:
        rc = t.ingest_retries.c
        q = select(rc.id).where(
            rc.source == source, rc.remote_id == remote_id, rc.status == "retrying"
        )
        with self._read() as conn:
            return conn.execute(q).first() is not None

    def due_retries(self, source: str, now: datetime) -> list[RetryRow]:
        rc = t.ingest_retries.c
        q = (
            select(t.ingest_retries)
            .where(rc.source == source, rc.status == "retrying", rc.next_at <= now)
            .order_by(rc.id)
        )
        with self._read() as conn:
            return [_row_to(RetryRow, r) for r in conn.execute(q)]

    def retries(self, source: str | None = None) -> list[RetryRow]:
        q = select(t.ingest_retries).order_by(t.ingest_retries.c.id)
        if source is not None:
            q = q.where(t.ingest_retries.c.source == source)
        with self._read() as conn:
            return [_row_to(RetryRow, r) for r in conn.execute(q)]

    def update_retry(
        self, retry_id: int, *, status: str, error: str = "", next_at: datetime | None = None,
        attempt: bool = True,
    ) -> None:  # fmt: skip
        rc = t.ingest_retries.c
        values: dict[str, Any] = {"status": status, "error": error}
        if attempt:
            values["attempts"] = rc.attempts + 1
        if next_at is not None:
            values["next_at"] = next_at
        with self._write() as conn:
            conn.execute(update(t.ingest_retries).where(rc.id == retry_id).values(**values))

    def _save_series(self, conn: Connection, s: Series) -> int:
        """Store *s* and set its arrival state in the caller's transaction: a kill between
        the two left incomplete series `new` (checked as complete) or complete ones
        `incomplete` until they expired."""
        sc = t.series.c
        row = conn.execute(select(t.series).where(sc.source == s.source, sc.key == s.key)).first()
        values = _series_values(s)
        slots = _patch_slots(s)
        if row is None:
            now = utcnow()
            state, reason = (NEW, "") if s.complete else (INCOMPLETE, _incomplete_reason(s))
            res = conn.execute(
                t.series.insert().values(
                    source=s.source, key=s.key, state=state, state_reason=reason, tree=None,
                    created_at=now, updated_at=now, **values,
                )
            )  # fmt: skip
            series_id = _inserted_id(res)
            rows = [_patch_values(series_id, i, c, p) for i, c, p in slots]
            if rows:
                conn.execute(t.patches.insert(), rows)
            log.info("series %d (%s/%s): stored, %d mails", series_id, s.source, s.key, len(rows))
            return series_id
        series_id = int(row.id)
        merged = self._merge_patches(conn, series_id, s, slots)
        if merged is None:  # an older view: what we have is newer
            return series_id
        arrival = _arrival_state(row.state, s)
        if arrival is not None:
            values["state"], values["state_reason"] = arrival
        if merged or any(row._mapping[k] != v for k, v in values.items()):
            conn.execute(
                update(t.series).where(sc.id == series_id).values(updated_at=utcnow(), **values)
            )
            log.info(
                "series %d (%s/%s): updated, complete=%s", series_id, s.source, s.key, s.complete
            )
        return series_id

    def _merge_patches(
        self, conn: Connection, series_id: int, s: Series, slots: list[tuple[int, bool, Patch]]
    ) -> bool | None:
        """Add the mails of *slots* not stored yet; True if anything changed, None if the
        view lacks mails already stored (it is older than what we have)."""
        pc = t.patches.c
        stored = {
            r.msgid: r
            for r in conn.execute(
                select(pc.id, pc.msgid, pc.idx, pc.is_cover, pc.pw_id, pc.web_url).where(
                    pc.series_id == series_id
                )
            )
        }
        wanted = {p.msgid for _, _, p in slots}
        missing = set(stored) - wanted
        if missing:
            log.warning(
                "series %d (%s/%s): new view lacks %d stored mails; keeping the stored one",
                series_id, s.source, s.key, len(missing),
            )  # fmt: skip
            return None
        changed = False
        new_rows = []
        for idx, is_cover, p in slots:
            old = stored.get(p.msgid)
            if old is None:
                new_rows.append(_patch_values(series_id, idx, is_cover, p))
                continue
            want: dict[str, Any] = {"idx": idx, "is_cover": is_cover}
            want |= {"pw_id": p.pw_id or old.pw_id, "web_url": p.web_url or old.web_url}
            if any(old._mapping[k] != v for k, v in want.items()):
                conn.execute(update(t.patches).where(pc.id == old.id).values(**want))
                changed = True
        if new_rows:
            conn.execute(t.patches.insert(), new_rows)
        return changed or bool(new_rows)

    def load_series(self, series_id: int) -> Series:
        with self._read() as conn:
            row = conn.execute(select(t.series).where(t.series.c.id == series_id)).first()
            if row is None:
                raise NotFound(f"series {series_id} is not in the database")
            pc = t.patches.c
            prows = conn.execute(
                select(t.patches).where(pc.series_id == series_id).order_by(pc.is_cover, pc.idx)
            ).all()
        m = row._mapping
        cover = next((_patch_from_row(r) for r in prows if r.is_cover), None)
        submitter = None
        if m["submitter_email"] is not None or m["submitter_name"] is not None:
            submitter = Person(m["submitter_name"] or "", m["submitter_email"] or "")
        return Series(
            source=m["source"],
            key=m["key"],
            name=m["name"],
            version=m["version"],
            total=m["total"],
            patches=tuple(_patch_from_row(r) for r in prows if not r.is_cover),
            cover=cover,
            submitter=submitter,
            date=m["date"],
            complete=bool(m["complete"]),
            pw_id=m["pw_id"],
            web_url=m["web_url"],
            problems=tuple(json.loads(m["problems"])),
        )

    def revisions(self, limit: int = 5000) -> list[Revision]:
        """Supersede facts of the newest *limit* series (no mail bodies are read)."""
        sc, pc = t.series.c, t.patches.c
        q = (
            select(
                sc.id,
                sc.source,
                sc.name,
                sc.version,
                sc.submitter_email,
                pc.msgid,
                pc.in_reply_to,
                pc.is_cover,
                pc.idx,
            )  # fmt: skip
            .join(t.patches, pc.series_id == sc.id)
            .where((pc.is_cover.is_(True)) | (pc.idx == 0))
            .where(sc.id >= select(func.coalesce(func.max(sc.id), 0) - limit).scalar_subquery())
        )
        first: dict[int, Any] = {}
        with self._read() as conn:
            for r in conn.execute(q):
                # the cover wins over the first patch
                if r.id not in first or (r.is_cover and not first[r.id].is_cover):
                    first[r.id] = r
        return [
            Revision(
                r.id, r.source, r.name, r.version, r.submitter_email or "", r.msgid, r.in_reply_to
            )  # fmt: skip
            for r in first.values()
        ]

    def patch_pw_ids(self, series_id: int) -> list[int]:
        pc = t.patches.c
        q = select(pc.pw_id).where(pc.series_id == series_id, pc.is_cover.is_(False))
        with self._read() as conn:
            return [i for (i,) in conn.execute(q.order_by(pc.idx)) if i is not None]

    def find_series(self, source: str, key: str) -> int | None:
        sc = t.series.c
        with self._read() as conn:
            q = select(sc.id).where(sc.source == source, sc.key == key)
            found: int | None = conn.execute(q).scalar_one_or_none()
            return found

    def series_row(self, series_id: int) -> SeriesRow:
        with self._read() as conn:
            row = conn.execute(select(t.series).where(t.series.c.id == series_id)).first()
        if row is None:
            raise NotFound(f"series {series_id} is not in the database")
        return _row_to(SeriesRow, row)

    def list_series(self, *, state: str | None = None, limit: int = 100) -> list[SeriesRow]:
        """Newest first."""
        q = select(t.series).order_by(t.series.c.id.desc()).limit(limit)
        if state is not None:
            q = q.where(t.series.c.state == state)
        with self._read() as conn:
            return [_row_to(SeriesRow, r) for r in conn.execute(q)]

    def set_series_state(
        self, series_id: int, state: str, reason: str = "", tree: str | None = None
    ) -> None:
        """Move a series to *state*; *tree* is kept as it was when None."""
        values: dict[str, Any] = {"state": state, "state_reason": reason, "updated_at": utcnow()}
        if tree is not None:
            values["tree"] = tree
        with self._write() as conn:
            res = conn.execute(update(t.series).where(t.series.c.id == series_id).values(**values))
            if res.rowcount == 0:
                raise NotFound(f"series {series_id} is not in the database")
        log.info("series %d: state %s%s", series_id, state, f" ({reason})" if reason else "")

    # --- jobs ----------------------------------------------------------------------------

    def create_job(self, series_id: int, kind: str) -> int:
        with self._write() as conn:
            res = conn.execute(
                t.jobs.insert().values(
                    series_id=series_id, kind=kind, status="queued", attempts=0, error="",
                    created_at=utcnow(), worker="",
                )
            )  # fmt: skip
            job_id = _inserted_id(res)
        log.info("job %d: %s queued for series %d", job_id, kind, series_id)
        return job_id

    def claim_series(
        self, from_state: str, to_state: str, kind: str, owner: str, lease: float,
        now: datetime | None = None, after: int = 0, series_id: int | None = None,
    ) -> tuple[int, int] | None:  # fmt: skip
        """Take the oldest series in *from_state* for *owner*: it moves to *to_state* and a
        running job of *kind* holds it until `now + lease` seconds (renew_lease extends
        it); only series with an id above *after* (one pass over a queue takes each series
        once). (series id, job id), or None when there is nothing to take. Several processes
        may call this on one database: each series is taken once (SKIP LOCKED on
        PostgreSQL; SQLite's write transactions are serialised)."""
        now = now or utcnow()
        sc = t.series.c
        with self._write() as conn:
            q = select(sc.id).where(sc.state == from_state, sc.id > after)
            if series_id is not None:  # that series or none
                q = q.where(sc.id == series_id)
            q = q.order_by(sc.id).limit(1)
            if conn.dialect.name == "postgresql":
                q = q.with_for_update(skip_locked=True)
            sid = conn.execute(q).scalar_one_or_none()
            if sid is None:
                return None
            moved = conn.execute(
                update(t.series)
                .where(sc.id == sid, sc.state == from_state)
                .values(state=to_state, updated_at=now)
            )
            if moved.rowcount != 1:
                return None
            res = conn.execute(
                t.jobs.insert().values(
                    series_id=sid, kind=kind, status="running", attempts=1, error="",
                    created_at=now, started_at=now, worker=owner,
                    lease_until=now + timedelta(seconds=lease),
                )
            )  # fmt: skip
            job_id = _inserted_id(res)
        log.info("job %d: %s of series %d claimed by %s", job_id, kind, sid, owner)
        return int(sid), job_id

    def renew_lease(self, job_id: int, owner: str, lease: float) -> bool:
        """Extend a running job's lease; False when it is no longer ours (it expired and
        was taken up by another worker)."""
        jc = t.jobs.c
        until = utcnow() + timedelta(seconds=lease)
        with self._write() as conn:
            res = conn.execute(
                update(t.jobs)
                .where(jc.id == job_id, jc.worker == owner, jc.status == "running")
                .values(lease_until=until)
            )
            return res.rowcount == 1

    def reclaim_expired(
        self,
        states: Mapping[str, str],
        now: datetime | None = None,
        max_attempts: int = 3,
        dead: Callable[[str], bool] = lambda _worker: False,
        poison_kinds: tuple[str, ...] = ("checks",),
    ) -> list[JobRow]:
        """Running jobs whose lease ended, or whose worker is *dead* (known gone: a killed
        process of this host): each becomes `error` with the reason, and its series goes
        back from the claimed state to the one it was taken from (*states*: claimed →
        previous), or to `error` once *max_attempts* jobs of a kind in *poison_kinds* died
        on it. Returns the jobs reclaimed."""
        now = now or utcnow()
        jc, sc = t.jobs.c, t.series.c
        out: list[JobRow] = []
        with self._write() as conn:
            running = conn.execute(select(t.jobs).where(jc.status == "running")).all()
            for row in running:
                job = _row_to(JobRow, row)
                expired = job.lease_until is None or job.lease_until < now
                if not expired and not dead(job.worker):
                    continue
                why = f"lease expired: worker {job.worker} stopped (killed?)"
                conn.execute(
                    update(t.jobs).where(jc.id == job.id)
                    .values(status="error", error=why, finished_at=now)
                )  # fmt: skip
                died = conn.execute(
                    select(func.count()).where(
                        jc.series_id == job.series_id, jc.kind == job.kind,
                        jc.status == "error", jc.error.like("lease expired:%"),
                    )
                ).scalar_one()  # fmt: skip
                srow = conn.execute(select(sc.state).where(sc.id == job.series_id)).first()
                if srow is not None and srow.state in states:
                    back, reason = states[srow.state], f"taken up again: {why}"
                    # Only patch code (the checks) can be why a worker dies; posting is ours.
                    if died >= max_attempts and job.kind in poison_kinds:
                        back = "error"
                        reason = f"its {job.kind} stopped the worker {died} times ({why})"
                    conn.execute(
                        update(t.series).where(sc.id == job.series_id)
                        .values(state=back, state_reason=reason, updated_at=now)
                    )  # fmt: skip
                out.append(job)
        for job in out:
            log.warning("job %d (%s, series %d): lease of %s expired, work taken up again",
                        job.id, job.kind, job.series_id, job.worker)  # fmt: skip
        return out

    def job_count(self, series_id: int, kind: str) -> int:
        """How many jobs of *kind* a series has had (its attempts so far)."""
        jc = t.jobs.c
        q = select(func.count()).where(jc.series_id == series_id, jc.kind == kind)
        with self._read() as conn:
            return int(conn.execute(q).scalar_one())

    def live_workers(self, now: datetime | None = None) -> list[str]:
        """Owners of running jobs whose lease has not ended."""
        jc = t.jobs.c
        q = select(jc.worker).where(jc.status == "running", jc.lease_until >= (now or utcnow()))
        with self._read() as conn:
            return sorted({r.worker for r in conn.execute(q)})

    def start_job(self, job_id: int, worker: str = "") -> None:
        jc = t.jobs.c
        values = {
            "status": "running",
            "attempts": jc.attempts + 1,
            "started_at": utcnow(),
            "finished_at": None,
            "worker": worker,
            "error": "",
        }
        self._update_job(job_id, values)
        log.info("job %d: running on %s", job_id, worker or "local")

    def finish_job(self, job_id: int, status: str, error: str = "") -> None:
        if status not in ("done", "error"):
            raise ValueError(f"job {job_id}: cannot finish with status {status!r}")
        self._update_job(job_id, {"status": status, "error": error, "finished_at": utcnow()})
        log.info("job %d: %s%s", job_id, status, f" ({error})" if error else "")

    def _update_job(self, job_id: int, values: Mapping[str, Any]) -> None:
        with self._write() as conn:
            res = conn.execute(update(t.jobs).where(t.jobs.c.id == job_id).values(**values))
            if res.rowcount == 0:
                raise NotFound(f"job {job_id} is not in the database")

    def jobs(self, *, status: str | None = None) -> list[JobRow]:
        """Oldest first, the order a queue is worked."""
        if status is not None and status not in JOB_STATUSES:
            raise ValueError(f"unknown job status {status!r} (one of {', '.join(JOB_STATUSES)})")
        q = select(t.jobs).order_by(t.jobs.c.id)
        if status is not None:
            q = q.where(t.jobs.c.status == status)
        with self._read() as conn:
            return [_row_to(JobRow, r) for r in conn.execute(q)]

    # --- results -------------------------------------------------------------------------

    def add_results(self, job_id: int, series_id: int, results: Sequence[CheckResult]) -> None:
        if not results:
            return
        now = utcnow()
        rows = [_result_values(job_id, series_id, r, now) for r in results]
        with self._write() as conn:
            conn.execute(t.check_results.insert(), rows)
        log.info("job %d: %d results stored for series %d", job_id, len(rows), series_id)

    def latest_results(self, series_id: int) -> list[CheckResult]:
        """The newest result per (patch, check): series-wide ones first, then by patch."""
        cr = t.check_results.c
        newest = (
            select(func.max(cr.id).label("id"))
            .where(cr.series_id == series_id)
            .group_by(cr.patch_idx, cr.check_name)
            .subquery()
        )
        q = select(t.check_results).join(newest, cr.id == newest.c.id)
        with self._read() as conn:
            results = [_result_from_row(r) for r in conn.execute(q)]
        results.sort(key=lambda r: (r.patch_index is not None, r.patch_index or 0, r.check))
        return results

    # --- deliveries ----------------------------------------------------------------------

    def last_delivery(
        self, target: str, patch_pw_id: int | None, context: str, status: str = "sent"
    ) -> DeliveryRow | None:
        """The newest delivery of *context* for a patch (None: series-wide) with *status*."""
        dc = t.deliveries.c
        pw = dc.patch_pw_id.is_(None) if patch_pw_id is None else dc.patch_pw_id == patch_pw_id
        q = (
            select(t.deliveries)
            .where(dc.target == target, pw, dc.context == context, dc.status == status)
            .order_by(dc.id.desc())
            .limit(1)
        )
        with self._read() as conn:
            row = conn.execute(q).first()
        return None if row is None else _row_to(DeliveryRow, row)

    def series_of_msgid(self, msgids: Sequence[str]) -> list[int]:
        """The series holding a mail with the first of *msgids* that any holds (several
        when sources overlap: a list read from Patchwork and from lore)."""
        pc = t.patches.c
        with self._read() as conn:
            for m in msgids:
                ids = conn.execute(select(pc.series_id).where(pc.msgid == m)
                                   .group_by(pc.series_id)).scalars().all()  # fmt: skip
                if ids:
                    return sorted(int(i) for i in ids)
        return []

    def series_deliveries(self, series_id: int, target_prefix: str) -> list[DeliveryRow]:
        """Every delivery of series *series_id* to targets starting with *target_prefix*
        ("email:"), oldest first."""
        dc = t.deliveries.c
        q = (
            select(t.deliveries)
            .where(dc.series_id == series_id, dc.target.startswith(target_prefix))
            .order_by(dc.id)
        )
        with self._read() as conn:
            return [_row_to(DeliveryRow, r) for r in conn.execute(q)]

    def count_deliveries(self, target_prefix: str, status: str, since: datetime) -> int:
        """Deliveries to targets starting with *target_prefix* with *status* since *since*."""
        dc = t.deliveries.c
        q = select(func.count()).where(
            dc.target.startswith(target_prefix), dc.status == status, dc.created_at >= since
        )
        with self._read() as conn:
            return int(conn.execute(q).scalar_one())

    def recent_series(self, states: Sequence[str], since: datetime) -> list[SeriesRow]:
        """Series in one of *states* updated since *since*, oldest first."""
        sc = t.series.c
        q = select(t.series).where(sc.state.in_(states), sc.updated_at >= since).order_by(sc.id)
        with self._read() as conn:
            return [_row_to(SeriesRow, r) for r in conn.execute(q)]

    def record_delivery(
        self,
        target: str,
        series_id: int,
        patch_pw_id: int | None,
        context: str,
        state: str,
        fingerprint: str,
        remote_id: str | None,
        status: str = "sent",
        error: str = "",
    ) -> None:
        if status not in DELIVERY_STATUSES:
            raise ValueError(f"unknown delivery status {status!r}")
        ins: Insert = t.deliveries.insert().values(
            target=target, series_id=series_id, patch_pw_id=patch_pw_id, context=context,
            state=state, fingerprint=fingerprint, remote_id=remote_id, status=status,
            error=error, created_at=utcnow(),
        )  # fmt: skip
        with self._write() as conn:
            conn.execute(ins)
