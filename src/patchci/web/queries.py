"""Every query the web UI runs (SQLAlchemy Core, bind parameters only, read-only).

Functions take an open Connection and return frozen dataclasses that both the HTML pages
and the JSON API render; routes never build SQL.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Select, case, exists, func, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement

from patchci.db import tables as t
from patchci.db.store import DeliveryRow, JobRow
from patchci.model import OUTCOME_PRIORITY, Outcome
from patchci.web import status_queries as sq
from patchci.web.contest_queries import SeriesBranch, series_branches
from patchci.web.security import log_relpath, lore_url, safe_url

# Worst first, as model.worst(); stored values we do not know count as error (as Store does).
_RANK = {o.value: i for i, o in enumerate(OUTCOME_PRIORITY)}
_UNKNOWN_RANK = _RANK[Outcome.ERROR.value]


@dataclass(frozen=True)
class SeriesFilter:
    """The filters of the series list; None means "any"."""

    tree: str | None = None
    state: str | None = None
    outcome: str | None = None
    submitter: str | None = None
    q: str | None = None


@dataclass(frozen=True)
class SeriesSummary:
    id: int
    source: str
    key: str
    name: str
    version: int
    total: int
    complete: bool
    submitter_name: str | None
    submitter_email: str | None
    date: datetime | None
    tree: str | None
    state: str
    state_reason: str
    pw_id: int | None
    web_url: str | None
    created_at: datetime
    updated_at: datetime
    patch_count: int = 0
    verdict: str | None = None  # the worst of the newest results, None before any check
    outcomes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SeriesPage:
    items: list[SeriesSummary]
    total: int
    page: int
    per_page: int
    pages: int


@dataclass(frozen=True)
class CheckView:
    id: int
    job_id: int
    check: str
    outcome: str
    description: str
    patch_idx: int | None
    log: str | None  # path under /logs/, None when there is no servable log
    duration: float
    reproducer: str | None
    details: list[tuple[str, str]]
    created_at: datetime


@dataclass(frozen=True)
class PatchView:
    idx: int
    is_cover: bool
    msgid: str
    subject: str
    author_name: str
    author_email: str
    date: datetime | None
    pw_id: int | None
    web_url: str | None
    lore_url: str | None
    files: list[str]
    checks: list[CheckView]


@dataclass(frozen=True)
class SeriesDetail:
    series: SeriesSummary
    problems: list[str]
    lore_url: str | None
    cover: PatchView | None
    patches: list[PatchView]
    series_checks: list[CheckView]
    jobs: list[JobRow]
    deliveries: list[DeliveryRow]
    branches: list[SeriesBranch]  # contest branches the series was considered for


def _rank_expr() -> ColumnElement[int]:
    return case(_RANK, value=t.check_results.c.outcome, else_=_UNKNOWN_RANK)


def _newest_ids(series_id: int | None = None) -> Any:
    """Subquery: the id of the newest result per (series, patch, check)."""
    cr = t.check_results.c
    q = select(func.max(cr.id).label("id")).group_by(cr.series_id, cr.patch_idx, cr.check_name)
    if series_id is not None:
        q = q.where(cr.series_id == series_id)
    return q.subquery()


def _verdicts() -> Any:
    """Subquery: (series_id, rank of the worst newest result)."""
    cr = t.check_results.c
    newest = _newest_ids()
    return (
        select(cr.series_id.label("series_id"), func.min(_rank_expr()).label("rank"))
        .join(newest, cr.id == newest.c.id)
        .group_by(cr.series_id)
        .subquery()
    )


def _filtered(query: Select[Any], f: SeriesFilter, verdicts: Any) -> Select[Any]:
    sc = t.series.c
    if f.tree is not None:
        query = query.where(sc.tree == f.tree)
    if f.state is not None:
        query = query.where(sc.state == f.state)
    if f.outcome is not None:
        query = query.where(verdicts.c.rank == _RANK.get(f.outcome, -1))
    if f.submitter:
        query = query.where(
            or_(
                sc.submitter_name.icontains(f.submitter, autoescape=True),
                sc.submitter_email.icontains(f.submitter, autoescape=True),
            )
        )
    if f.q:
        pc = t.patches.c
        in_patch = exists().where(
            pc.series_id == sc.id,
            or_(
                pc.subject.icontains(f.q, autoescape=True), pc.msgid.icontains(f.q, autoescape=True)
            ),
        )
        query = query.where(or_(sc.name.icontains(f.q, autoescape=True), in_patch))
    return query


def _summary(m: Any, patch_count: int, outcomes: dict[str, int]) -> SeriesSummary:
    rank = m["rank"]
    return SeriesSummary(
        id=m["id"], source=m["source"], key=m["key"], name=m["name"], version=m["version"],
        total=m["total"], complete=bool(m["complete"]), submitter_name=m["submitter_name"],
        submitter_email=m["submitter_email"], date=m["date"], tree=m["tree"], state=m["state"],
        state_reason=m["state_reason"], pw_id=m["pw_id"], web_url=safe_url(m["web_url"]),
        created_at=m["created_at"], updated_at=m["updated_at"], patch_count=patch_count,
        verdict=None if rank is None else OUTCOME_PRIORITY[rank].value, outcomes=outcomes,
    )  # fmt: skip


def list_series(conn: Connection, f: SeriesFilter, page: int, per_page: int) -> SeriesPage:
    """One page of series, newest first, with their verdicts."""
    verdicts = _verdicts()
    base = select(t.series, verdicts.c.rank).outerjoin(
        verdicts, verdicts.c.series_id == t.series.c.id
    )
    base = _filtered(base, f, verdicts)
    total = conn.execute(select(func.count()).select_from(base.subquery())).scalar_one()
    rows = conn.execute(
        base.order_by(t.series.c.id.desc()).limit(per_page).offset((page - 1) * per_page)
    ).all()
    ids = [r.id for r in rows]
    counts = _patch_counts(conn, ids)
    outcomes = _outcome_counts(conn, ids)
    items = [_summary(r._mapping, counts.get(r.id, 0), outcomes.get(r.id, {})) for r in rows]
    pages = max(1, math.ceil(int(total) / per_page))
    return SeriesPage(items=items, total=int(total), page=page, per_page=per_page, pages=pages)


def _patch_counts(conn: Connection, ids: Sequence[int]) -> dict[int, int]:
    if not ids:
        return {}
    pc = t.patches.c
    q = (
        select(pc.series_id, func.count())
        .where(pc.series_id.in_(ids), pc.is_cover.is_(False))
        .group_by(pc.series_id)
    )
    return {int(sid): int(n) for sid, n in conn.execute(q)}


def _outcome_counts(conn: Connection, ids: Sequence[int]) -> dict[int, dict[str, int]]:
    if not ids:
        return {}
    cr = t.check_results.c
    newest = _newest_ids()
    q = (
        select(cr.series_id, cr.outcome, func.count())
        .join(newest, cr.id == newest.c.id)
        .where(cr.series_id.in_(ids))
        .group_by(cr.series_id, cr.outcome)
    )
    out: dict[int, dict[str, int]] = {}
    for sid, outcome, n in conn.execute(q):
        out.setdefault(int(sid), {})[str(outcome)] = int(n)
    return out


def distinct_values(conn: Connection) -> tuple[list[str], list[str]]:
    """(trees, states) present in the database, for the filter menus."""
    sc = t.series.c
    trees = conn.execute(select(sc.tree).where(sc.tree.is_not(None)).distinct()).scalars()
    states = conn.execute(select(sc.state).distinct()).scalars()
    return sorted(str(x) for x in trees), sorted(str(x) for x in states)


def _check_view(m: Any, logs_root: Path) -> CheckView:
    try:
        details = [(str(k), str(v)) for k, v in json.loads(m["details"])]
    except (ValueError, TypeError):
        details = []
    return CheckView(
        id=m["id"], job_id=m["job_id"], check=m["check_name"], outcome=m["outcome"],
        description=m["description"], patch_idx=m["patch_idx"],
        log=log_relpath(m["log_path"], logs_root), duration=float(m["duration"]),
        reproducer=m["reproducer"], details=details, created_at=m["created_at"],
    )  # fmt: skip


def series_checks(
    conn: Connection, series_id: int, logs_root: Path, *, history: bool = False
) -> list[CheckView]:
    """The newest result per (patch, check) of a series, or every result with *history*."""
    cr = t.check_results.c
    q = select(t.check_results).where(cr.series_id == series_id)
    if not history:
        newest = _newest_ids(series_id)
        q = q.join(newest, cr.id == newest.c.id)
    q = q.order_by(cr.patch_idx.is_not(None), cr.patch_idx, cr.check_name, cr.id)
    return [_check_view(r._mapping, logs_root) for r in conn.execute(q)]


def _patch_view(m: Any, checks: list[CheckView]) -> PatchView:
    try:
        files = [str(x) for x in json.loads(m["files"])]
    except (ValueError, TypeError):
        files = []
    return PatchView(
        idx=m["idx"], is_cover=bool(m["is_cover"]), msgid=m["msgid"], subject=m["subject"],
        author_name=m["author_name"], author_email=m["author_email"], date=m["date"],
        pw_id=m["pw_id"], web_url=safe_url(m["web_url"]), lore_url=lore_url(m["msgid"]),
        files=files, checks=checks,
    )  # fmt: skip


def series_detail(conn: Connection, series_id: int, logs_root: Path) -> SeriesDetail | None:
    verdicts = _verdicts()
    row = conn.execute(
        select(t.series, verdicts.c.rank)
        .outerjoin(verdicts, verdicts.c.series_id == t.series.c.id)
        .where(t.series.c.id == series_id)
    ).first()
    if row is None:
        return None
    checks = series_checks(conn, series_id, logs_root)
    pc = t.patches.c
    cols = [c for c in t.patches.c if c.name != "raw"]  # the mails stay out of the page
    prows = conn.execute(
        select(*cols).where(pc.series_id == series_id).order_by(pc.is_cover.desc(), pc.idx)
    ).all()
    cover = None
    patches = []
    for p in prows:
        if p.is_cover:
            cover = _patch_view(p._mapping, [])
        else:
            patches.append(_patch_view(p._mapping, [c for c in checks if c.patch_idx == p.idx]))
    outcomes: dict[str, int] = {}
    for c in checks:
        outcomes[c.outcome] = outcomes.get(c.outcome, 0) + 1
    m = row._mapping
    try:
        problems = [str(x) for x in json.loads(m["problems"])]
    except (ValueError, TypeError):
        problems = []
    first = cover or (patches[0] if patches else None)
    return SeriesDetail(
        series=_summary(m, len(patches), outcomes),
        problems=problems,
        lore_url=first.lore_url if first else None,
        cover=cover,
        patches=patches,
        series_checks=[c for c in checks if c.patch_idx is None],
        jobs=series_jobs(conn, series_id),
        deliveries=series_deliveries(conn, series_id),
        branches=series_branches(conn, series_id),
    )


def series_exists(conn: Connection, series_id: int) -> bool:
    q = select(t.series.c.id).where(t.series.c.id == series_id)
    return conn.execute(q).first() is not None


def series_jobs(conn: Connection, series_id: int) -> list[JobRow]:
    q = select(t.jobs).where(t.jobs.c.series_id == series_id).order_by(t.jobs.c.id)
    return [_job(r._mapping) for r in conn.execute(q)]


def series_deliveries(conn: Connection, series_id: int) -> list[DeliveryRow]:
    dc = t.deliveries.c
    q = select(t.deliveries).where(dc.series_id == series_id).order_by(dc.id)
    return [_delivery(r._mapping) for r in conn.execute(q)]


def _job(m: Any) -> JobRow:
    return JobRow(**{k: m[k] for k in JobRow.__dataclass_fields__})


def _delivery(m: Any) -> DeliveryRow:
    return DeliveryRow(**{k: m[k] for k in DeliveryRow.__dataclass_fields__})


# --- status ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CursorView:
    name: str
    value: str
    updated_at: datetime
    age_s: float


@dataclass(frozen=True)
class SourceStatus:
    source: str
    cursors: list[CursorView]
    age_s: float | None  # since any of its cursors last moved; None: never polled
    last_event_at: datetime | None
    last_event_id: int | None
    last_event_series_id: int | None
    events_recent: int
    alarm: bool


@dataclass(frozen=True)
class ActiveJob:
    id: int
    series_id: int
    kind: str
    status: str
    worker: str
    attempts: int
    since: datetime
    age_s: float


@dataclass(frozen=True)
class CheckError:
    id: int
    series_id: int
    check: str
    description: str
    log: str | None
    created_at: datetime


@dataclass(frozen=True)
class Latency:
    """Seconds from a series being stored to its first check result."""

    count: int
    p50_s: float | None
    p95_s: float | None


@dataclass(frozen=True)
class StatusReport:
    generated_at: datetime
    window_s: float
    alarm_after_s: float
    sources: list[SourceStatus]
    series_by_state: dict[str, int]
    jobs_by_status: dict[str, int]
    active_jobs: list[ActiveJob]
    failed_jobs: list[JobRow]
    failed_deliveries: list[DeliveryRow]
    check_errors: list[CheckError]
    latency: Latency
    alarms: list[str]  # the sources whose cursor is stale
    contest: sq.ContestStatus  # executors, runs in progress, branches waiting


def _age(now: datetime, then: datetime | None) -> float:
    return max(0.0, (now - then).total_seconds()) if then is not None else 0.0


def source_status(
    conn: Connection, now: datetime, window_s: float, alarm_after_s: float,
    configured: Sequence[str] = (),
) -> list[SourceStatus]:  # fmt: skip
    """Per source: its cursors (a source may keep several, `name#kind`) and last event."""
    cursors: dict[str, list[CursorView]] = {name: [] for name in configured}
    for name, value, updated in conn.execute(
        select(t.source_cursors).order_by(t.source_cursors.c.source)
    ):
        base = str(name).split("#", 1)[0]
        cursors.setdefault(base, []).append(
            CursorView(str(name), str(value), updated, _age(now, updated))
        )
    ev = t.source_events.c
    since = now - timedelta(seconds=window_s)
    out = []
    for source in sorted(cursors):
        mine = or_(ev.source == source, ev.source.startswith(source + "#", autoescape=True))
        last = conn.execute(
            select(ev.event_id, ev.series_id, ev.seen_at)
            .where(mine)
            .order_by(ev.seen_at.desc(), ev.id.desc())
            .limit(1)
        ).first()
        recent = conn.execute(select(func.count()).where(mine, ev.seen_at >= since)).scalar_one()
        curs = cursors[source]
        age = min(c.age_s for c in curs) if curs else None
        out.append(
            SourceStatus(
                source=source, cursors=curs, age_s=age,
                last_event_at=last.seen_at if last else None,
                last_event_id=last.event_id if last else None,
                last_event_series_id=last.series_id if last else None,
                events_recent=int(recent), alarm=age is not None and age > alarm_after_s,
            )
        )  # fmt: skip
    return out


def _group_count(conn: Connection, column: Any) -> dict[str, int]:
    q = select(column, func.count()).group_by(column).order_by(column)
    return {str(k): int(n) for k, n in conn.execute(q)}


def series_by_state(conn: Connection) -> dict[str, int]:
    return _group_count(conn, t.series.c.state)


def jobs_by_status(conn: Connection) -> dict[str, int]:
    return _group_count(conn, t.jobs.c.status)


def results_by_outcome(conn: Connection) -> dict[str, int]:
    return _group_count(conn, t.check_results.c.outcome)


def active_jobs(conn: Connection, now: datetime, limit: int = 100) -> list[ActiveJob]:
    """Queued and running jobs, oldest first; age counts from queueing or from start."""
    jc = t.jobs.c
    q = select(t.jobs).where(jc.status.in_(("queued", "running"))).order_by(jc.id).limit(limit)
    out = []
    for r in conn.execute(q):
        since = r.started_at if r.status == "running" and r.started_at else r.created_at
        out.append(
            ActiveJob(r.id, r.series_id, r.kind, r.status, r.worker, r.attempts, since,
                      _age(now, since))
        )  # fmt: skip
    return out


def recent_errors(
    conn: Connection, since: datetime, logs_root: Path, limit: int = 50
) -> tuple[list[JobRow], list[DeliveryRow], list[CheckError]]:
    """Our own failures since *since*: jobs in error, failed deliveries, error results."""
    jc, dc, cr = t.jobs.c, t.deliveries.c, t.check_results.c
    job_time = func.coalesce(jc.finished_at, jc.started_at, jc.created_at)
    jobs = conn.execute(
        select(t.jobs).where(jc.status == "error", job_time >= since)
        .order_by(jc.id.desc()).limit(limit)
    )  # fmt: skip
    dels = conn.execute(
        select(t.deliveries).where(dc.status == "failed", dc.created_at >= since)
        .order_by(dc.id.desc()).limit(limit)
    )  # fmt: skip
    checks = conn.execute(
        select(t.check_results).where(cr.outcome == Outcome.ERROR.value, cr.created_at >= since)
        .order_by(cr.id.desc()).limit(limit)
    )  # fmt: skip
    return (
        [_job(r._mapping) for r in jobs],
        [_delivery(r._mapping) for r in dels],
        [
            CheckError(r.id, r.series_id, r.check_name, r.description,
                       log_relpath(r.log_path, logs_root), r.created_at)
            for r in checks
        ],
    )  # fmt: skip


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile of *values* (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def first_result_latency(conn: Connection, since: datetime, limit: int = 20000) -> Latency:
    sc, cr = t.series.c, t.check_results.c
    q = (
        select(sc.created_at, func.min(cr.created_at))
        .join(t.check_results, cr.series_id == sc.id)
        .where(sc.created_at >= since)
        .group_by(sc.id, sc.created_at)
        .limit(limit)
    )
    waits = []
    for created, first in conn.execute(q):
        first = t.as_utc(first)  # an aggregate bypasses the column type on SQLite
        if created is not None and first is not None:
            waits.append(max(0.0, (first - created).total_seconds()))
    return Latency(len(waits), percentile(waits, 50), percentile(waits, 95))


def status_report(
    conn: Connection, now: datetime, window_s: float, alarm_after_s: float, logs_root: Path,
    configured: Sequence[str] = (),
) -> StatusReport:  # fmt: skip
    since = now - timedelta(seconds=window_s)
    jobs, deliveries, checks = recent_errors(conn, since, logs_root)
    sources = source_status(conn, now, window_s, alarm_after_s, configured)
    return StatusReport(
        generated_at=now,
        window_s=window_s,
        alarm_after_s=alarm_after_s,
        sources=sources,
        series_by_state=series_by_state(conn),
        jobs_by_status=jobs_by_status(conn),
        active_jobs=active_jobs(conn, now),
        failed_jobs=jobs,
        failed_deliveries=deliveries,
        check_errors=checks,
        latency=first_result_latency(conn, since),
        alarms=[s.source for s in sources if s.alarm],
        contest=sq.contest_status(conn, now, window_s),
    )
