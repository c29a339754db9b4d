"""Queries over contest results: branches, executor runs, tests, subtests, crashes.

Same pattern as `store.Store` (SQLAlchemy Core, bind parameters only, one transaction per
public method), kept apart so neither module grows past a readable size. Executor types go
in and come out (`Manifest`, `RunResult`, `TestResult`); history and summaries come out as
small frozen rows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, exists, false, func, select, type_coerce
from sqlalchemy.engine import Connection, Row
from sqlalchemy.sql import ColumnElement

from patchci.brancher import Manifest
from patchci.db import matrix
from patchci.db import tables as t
from patchci.db.base import Database
from patchci.db.store import NotFound
from patchci.db.tables import as_utc, utcnow
from patchci.executor.base import (
    RETRY_ON,
    RUN_DONE,
    RUN_RUNNING,
    RUN_STATUSES,
    CrashRef,
    RunResult,
    Subtest,
    TestResult,
)
from patchci.model import Outcome

log = logging.getLogger(__name__)

_CHUNK = 500  # ids per IN (...) list
_FAILING = tuple(o.value for o in RETRY_ON)


@dataclass(frozen=True)
class OrphanRun:
    """A run left `running` by a worker that is gone."""

    id: int
    branch: str
    executor: str
    worker: str
    attempts: int


@dataclass(frozen=True)
class BranchRow:
    id: int
    name: str
    stream: str
    date: datetime
    base: str
    head: str
    merges: dict[str, str]
    new_changes: bool
    series: tuple[int, ...]
    left_out: tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class RunRow:
    id: int
    branch: str
    executor: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    error: str
    tests: int
    failures: int  # tests whose final outcome (after retries) is a failure


@dataclass(frozen=True)
class HistoryRow:
    """One result of one test, with where it ran."""

    test_id: int
    run_id: int
    branch: str
    branch_date: datetime
    stream: str
    executor: str
    grp: str
    name: str
    outcome: Outcome
    retry_outcome: Outcome | None
    duration: float | None
    crashes: tuple[str, ...]  # fingerprints of crashes not on the ignore list

    @property
    def crashed(self) -> bool:
        return bool(self.crashes)


@dataclass(frozen=True)
class FlakyRow:
    executor: str
    grp: str
    name: str
    flakes: int  # failed, passed on retry, no crash
    results: int
    last_flake: datetime


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]


def _test_values(run_id: int, r: TestResult) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "grp": r.group,
        "name": r.name,
        "outcome": r.outcome.value,
        "retry_outcome": r.retry_outcome.value if r.retry_outcome else None,
        "duration": r.duration,
        "retry_duration": r.retry_duration,
        "log_path": r.log_path,
        "retry_log_path": r.retry_log_path,
        "reproduce": r.reproduce,
    }


def _subtest_values(test_id: int, s: Subtest) -> dict[str, Any]:
    return {
        "test_id": test_id,
        "path": s.path,
        "depth": s.depth,
        "name": s.name,
        "outcome": s.outcome.value,
        "retry_outcome": s.retry_outcome.value if s.retry_outcome else None,
        "duration": s.duration,
    }


def _crash_values(run_id: int, test_id: int | None, c: CrashRef) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "test_id": test_id,
        "kind": c.kind,
        "fingerprint": c.fingerprint,
        "title": c.title,
        "excerpt": c.excerpt,
        "ignored": c.ignored,
    }


def _not_ignored_crash() -> ColumnElement[bool]:
    cr = t.crashes.c
    return exists().where(cr.test_id == t.tests.c.id, cr.ignored == false())


class ResultsStore(Database):
    """Contest results in the patchci database (the engine may be shared with Store)."""

    # --- branches ----------------------------------------------------------------------

    def save_branch(self, m: Manifest) -> int:
        """Store a branch manifest, once per name; saving it again replaces its facts."""
        bc = t.branches.c
        values = {
            "stream": m.stream,
            "date": as_utc(m.date),
            "base": m.base,
            "head": m.head,
            "merges": json.dumps(dict(m.merges), sort_keys=True),
            "new_changes": m.new_changes,
        }
        with self._write() as conn:
            old = conn.execute(select(bc.id, bc.stream, bc.date).where(bc.name == m.name)).first()
            if old is None:
                seq = matrix.next_seq(conn, m.stream)
                ins = t.branches.insert().values(
                    name=m.name, created_at=utcnow(), seq=seq, **values
                )
                bid = int(conn.execute(ins.returning(bc.id)).scalar_one())
                if self._out_of_order(conn, bid, m.stream):
                    matrix.renumber(conn, m.stream)
            else:
                bid = old.id
                conn.execute(t.branches.update().where(bc.id == bid).values(**values))
                conn.execute(t.branch_series.delete().where(t.branch_series.c.branch_id == bid))
                if (old.stream, as_utc(old.date)) != (m.stream, values["date"]):
                    for stream in {old.stream, m.stream}:
                        matrix.renumber(conn, stream)
            rows = {sid: (True, "") for sid in m.series}
            for sid, reason in m.left_out:
                rows.setdefault(sid, (False, reason))
            if rows:
                conn.execute(
                    t.branch_series.insert(),
                    [
                        {"branch_id": bid, "series_id": s, "included": inc, "reason": why}
                        for s, (inc, why) in rows.items()
                    ],
                )
        log.info("branch %s stored (id %d, %d series)", m.name, bid, len(m.series))
        return int(bid)

    @staticmethod
    def _out_of_order(conn: Connection, bid: int, stream: str) -> bool:
        """Whether a branch of *stream* is dated after the one just inserted as the last."""
        bc = t.branches.c
        me = select(bc.date).where(bc.id == bid).scalar_subquery()
        later = select(bc.id).where(bc.stream == stream, bc.id != bid, bc.date > me)
        return conn.execute(select(exists(later))).scalar_one() is True

    def branch(self, name: str) -> BranchRow:
        with self._read() as conn:
            row = conn.execute(select(t.branches).where(t.branches.c.name == name)).first()
            if row is None:
                raise NotFound(f"branch {name!r}")
            return self._branch_row(conn, row)

    def previous_branch(self, name: str) -> BranchRow | None:
        """The branch of the same stream cut just before *name*, if we have it."""
        bc = t.branches.c
        with self._read() as conn:
            cur = self._stream_date(conn, name)
            q = (
                select(t.branches)
                .where(bc.stream == cur.stream, bc.date < cur.date)
                .order_by(bc.date.desc(), bc.id.desc())
                .limit(1)
            )
            row = conn.execute(q).first()
            return None if row is None else self._branch_row(conn, row)

    @staticmethod
    def _stream_date(conn: Connection, name: str) -> Row[Any, Any]:
        """(stream, date) of branch *name*: where "before it" starts."""
        bc = t.branches.c
        cur = conn.execute(select(bc.stream, bc.date).where(bc.name == name)).first()
        if cur is None:
            raise NotFound(f"branch {name!r}")
        return cur

    def stream_branches(self, stream: str, limit: int = 500) -> list[BranchRow]:
        """The newest *limit* branches of *stream*, oldest first."""
        bc = t.branches.c
        q = select(t.branches).where(bc.stream == stream).order_by(bc.date.desc(), bc.id.desc())
        with self._read() as conn:
            rows = conn.execute(q.limit(limit)).all()
            return [self._branch_row(conn, r) for r in reversed(rows)]

    def branches_of_series(self, series_id: int) -> list[str]:
        """Names of the branches that included *series_id*, oldest first."""
        bc, bs = t.branches.c, t.branch_series.c
        q = (
            select(bc.name)
            .join_from(t.branch_series, t.branches)
            .where(bs.series_id == series_id, bs.included)
            .order_by(bc.date, bc.id)
        )
        with self._read() as conn:
            return list(conn.execute(q).scalars())

    @staticmethod
    def _branch_row(conn: Connection, row: Row[Any]) -> BranchRow:
        bs = t.branch_series.c
        q = select(bs.series_id, bs.included, bs.reason).where(bs.branch_id == row.id)
        members = conn.execute(q.order_by(bs.series_id)).all()
        return BranchRow(
            id=row.id,
            name=row.name,
            stream=row.stream,
            date=row.date,
            base=row.base,
            head=row.head,
            merges=json.loads(row.merges),
            new_changes=bool(row.new_changes),
            series=tuple(m.series_id for m in members if m.included),
            left_out=tuple((m.series_id, m.reason) for m in members if not m.included),
        )

    # --- runs --------------------------------------------------------------------------

    def start_run(
        self,
        branch_id: int,
        executor: str,
        started: datetime,
        *,
        reproduce: str = "",
        log_dir: str | None = None,
    ) -> int:
        """A run in progress (status "running"), so a UI can show it before it ends."""
        with self._write() as conn:
            return self._insert_run(conn, branch_id, executor, started, reproduce, log_dir)

    def hold_run(self, run_id: int, worker: str, lease: float) -> bool:
        """Take or extend the lease of a running run; False when another worker has it."""
        rc = t.runs.c
        until = utcnow() + timedelta(seconds=lease)
        with self._write() as conn:
            res = conn.execute(
                t.runs.update()
                .where(rc.id == run_id, rc.status == RUN_RUNNING)
                .where((rc.worker == worker) | (rc.worker == ""))
                .values(worker=worker, lease_until=until)
            )
            return res.rowcount == 1

    def orphaned_runs(
        self, dead: Callable[[str], bool], now: datetime | None = None
    ) -> list[OrphanRun]:
        """Running runs whose lease ended or whose worker is known *dead*."""
        now = now or utcnow()
        rc, bc = t.runs.c, t.branches.c
        q = (
            select(rc.id, rc.executor, rc.worker, rc.lease_until, rc.attempts, bc.name)
            .join(t.branches, bc.id == rc.branch_id)
            .where(rc.status == RUN_RUNNING)
            # a run sent to a worker host is the broker's to redeliver (db/jobs.py)
            .where(~exists().where(t.executor_jobs.c.run_id == rc.id))
        )
        with self._read() as conn:
            rows = conn.execute(q).all()
        out = []
        for r in rows:
            until = as_utc(r.lease_until) if r.lease_until is not None else None
            if (until is not None and until > now) and not dead(r.worker):
                continue
            out.append(OrphanRun(r.id, r.name, r.executor, r.worker, r.attempts))
        return out

    def take_over_run(self, run_id: int, worker: str, lease: float, previous: str) -> bool:
        """Claim an orphaned run for another attempt (only if still held by *previous*)."""
        rc = t.runs.c
        until = utcnow() + timedelta(seconds=lease)
        with self._write() as conn:
            res = conn.execute(
                t.runs.update()
                .where(rc.id == run_id, rc.status == RUN_RUNNING, rc.worker == previous)
                .values(worker=worker, lease_until=until, attempts=rc.attempts + 1)
            )
            return res.rowcount == 1

    def finish_run(self, run_id: int, run: RunResult) -> None:
        """Record the outcome of a started run: its status, facts and every test."""
        if run.status not in RUN_STATUSES:
            raise ValueError(f"run status {run.status!r} is not one of {RUN_STATUSES}")
        with self._write() as conn:
            self._finish(conn, run_id, run)

    def save_run(self, branch_id: int, run: RunResult) -> int:
        """start_run and finish_run in one transaction."""
        if run.status not in RUN_STATUSES:
            raise ValueError(f"run status {run.status!r} is not one of {RUN_STATUSES}")
        with self._write() as conn:
            rid = self._insert_run(
                conn, branch_id, run.executor, run.started, run.reproduce, run.log_dir
            )
            self._finish(conn, rid, run)
        log.info(
            "run %d stored: executor %s, branch %s, %s, %d tests",
            rid, run.executor, run.branch, run.status, len(run.tests),
        )  # fmt: skip
        return rid

    @staticmethod
    def _insert_run(
        conn: Connection,
        branch_id: int,
        executor: str,
        started: datetime,
        reproduce: str,
        log_dir: str | None,
    ) -> int:
        ins = t.runs.insert().values(
            branch_id=branch_id, executor=executor, started_at=started, finished_at=None,
            status=RUN_RUNNING, error="", kernel="", config="", reproduce=reproduce,
            log_dir=log_dir, link=None,
        )  # fmt: skip
        return int(conn.execute(ins.returning(t.runs.c.id)).scalar_one())

    def _finish(self, conn: Connection, run_id: int, run: RunResult) -> None:
        rc = t.runs.c
        where = conn.execute(
            t.runs.update()
            .where(rc.id == run_id)
            .values(
                started_at=run.started, finished_at=run.finished, status=run.status,
                error=run.error, kernel=run.kernel, config=run.config, reproduce=run.reproduce,
                log_dir=run.log_dir, link=run.link,
            )
            .returning(rc.branch_id, rc.executor)
        ).first()  # fmt: skip
        if where is None:
            raise NotFound(f"run {run_id}")
        conn.execute(t.tests.delete().where(t.tests.c.run_id == run_id))
        conn.execute(t.crashes.delete().where(t.crashes.c.run_id == run_id))
        self._insert_tests(conn, run_id, run)
        matrix.refresh(conn, where.branch_id, where.executor)

    @staticmethod
    def _insert_tests(conn: Connection, run_id: int, run: RunResult) -> None:
        if not run.tests:
            return
        ins = t.tests.insert().returning(t.tests.c.id, sort_by_parameter_order=True)
        ids = conn.execute(ins, [_test_values(run_id, r) for r in run.tests]).scalars().all()
        pairs = list(zip(ids, run.tests, strict=True))
        subs = [_subtest_values(tid, s) for tid, r in pairs for s in r.subtests]
        crashes = [_crash_values(run_id, tid, c) for tid, r in pairs for c in r.crashes]
        if subs:
            conn.execute(t.subtests.insert(), subs)
        if crashes:
            conn.execute(t.crashes.insert(), crashes)

    def load_run(self, run_id: int) -> RunResult:
        with self._read() as conn:
            q = select(t.runs, t.branches.c.name.label("branch")).join_from(t.runs, t.branches)
            row = conn.execute(q.where(t.runs.c.id == run_id)).first()
            if row is None:
                raise NotFound(f"run {run_id}")
            return RunResult(
                executor=row.executor,
                branch=row.branch,
                started=row.started_at,
                finished=row.finished_at,
                status=row.status,
                error=row.error,
                tests=self._tests(conn, run_id),
                reproduce=row.reproduce,
                kernel=row.kernel,
                config=row.config,
                log_dir=row.log_dir,
                link=row.link,
            )

    def run_tests(self, run_id: int) -> tuple[TestResult, ...]:
        with self._read() as conn:
            return self._tests(conn, run_id)

    def _tests(self, conn: Connection, run_id: int) -> tuple[TestResult, ...]:
        tc, sc, cc = t.tests.c, t.subtests.c, t.crashes.c
        rows = conn.execute(select(t.tests).where(tc.run_id == run_id).order_by(tc.id)).all()
        subs: dict[int, list[Subtest]] = {}
        for s in conn.execute(
            select(t.subtests).join_from(t.subtests, t.tests).where(tc.run_id == run_id)
            .order_by(sc.id)
        ):  # fmt: skip
            subs.setdefault(s.test_id, []).append(
                Subtest(s.path, s.depth, s.name, Outcome.stored(s.outcome), s.duration,
                        Outcome.stored_or_none(s.retry_outcome))
            )  # fmt: skip
        crashes: dict[int | None, list[CrashRef]] = {}
        for c in conn.execute(select(t.crashes).where(cc.run_id == run_id).order_by(cc.id)):
            crashes.setdefault(c.test_id, []).append(
                CrashRef(c.kind, c.fingerprint, c.title, c.excerpt, bool(c.ignored))
            )
        return tuple(
            TestResult(
                group=r.grp,
                name=r.name,
                outcome=Outcome.stored(r.outcome),
                duration=r.duration,
                retry_outcome=Outcome.stored_or_none(r.retry_outcome),
                retry_duration=r.retry_duration,
                subtests=tuple(subs.get(r.id, ())),
                crashes=tuple(crashes.get(r.id, ())),
                log_path=r.log_path,
                retry_log_path=r.retry_log_path,
                reproduce=r.reproduce,
            )  # fmt: skip
            for r in rows
        )

    def prior_results(
        self, branch_name: str, executor: str, grp: str, name: str, limit: int = 30
    ) -> list[TestResult]:
        """The newest *limit* results of one test on one executor on the branches of
        *branch_name*'s stream cut before it, oldest first, with subtests and crashes: the
        history a verdict weighs a failure against (analysis.flakes.judge)."""
        tc, rc, bc, sc, cc = t.tests.c, t.runs.c, t.branches.c, t.subtests.c, t.crashes.c
        with self._read() as conn:
            cur = self._stream_date(conn, branch_name)
            q = (
                select(t.tests)
                .select_from(t.tests.join(t.runs).join(t.branches))
                .where(bc.stream == cur.stream, bc.date < cur.date, rc.executor == executor,
                       rc.status == RUN_DONE, tc.grp == grp, tc.name == name)
                .order_by(bc.date.desc(), rc.id.desc(), tc.id.desc())
                .limit(limit)
            )  # fmt: skip
            rows = conn.execute(q).all()[::-1]
            ids = [r.id for r in rows]
            subs: dict[int, list[Subtest]] = {}
            crashes: dict[int, list[CrashRef]] = {}
            for chunk in _chunks(ids):
                for s in conn.execute(select(t.subtests).where(sc.test_id.in_(chunk))
                                      .order_by(sc.id)):  # fmt: skip
                    subs.setdefault(s.test_id, []).append(
                        Subtest(s.path, s.depth, s.name, Outcome.stored(s.outcome), s.duration,
                                Outcome.stored_or_none(s.retry_outcome))
                    )  # fmt: skip
                for c in conn.execute(select(t.crashes).where(cc.test_id.in_(chunk))):
                    crashes.setdefault(c.test_id, []).append(
                        CrashRef(c.kind, c.fingerprint, c.title, "", bool(c.ignored))
                    )
        return [
            TestResult(r.grp, r.name, Outcome.stored(r.outcome), r.duration,
                       Outcome.stored_or_none(r.retry_outcome), r.retry_duration,
                       tuple(subs.get(r.id, ())), tuple(crashes.get(r.id, ())))  # fmt: skip
            for r in rows
        ]

    def branch_runs(self, branch_name: str) -> list[RunRow]:
        """Every run on *branch_name*, oldest first, with test and failure counts."""
        rc, tc = t.runs.c, t.tests.c
        final = func.coalesce(tc.retry_outcome, tc.outcome)
        q = (
            select(
                rc.id,
                t.branches.c.name,
                rc.executor,
                rc.started_at,
                rc.finished_at,
                rc.status,
                rc.error,
                func.count(tc.id).label("n"),
                func.coalesce(func.sum(case((final.in_(_FAILING), 1), else_=0)), 0).label("f"),
            )  # fmt: skip
            .select_from(t.runs.join(t.branches).outerjoin(t.tests))
            .where(t.branches.c.name == branch_name)
            .group_by(rc.id, t.branches.c.name)
            .order_by(rc.started_at, rc.id)
        )
        with self._read() as conn:
            return [
                RunRow(r.id, r.name, r.executor, r.started_at, r.finished_at, r.status,
                       r.error, int(r.n), int(r.f))
                for r in conn.execute(q)
            ]  # fmt: skip

    def branch_results(self, branch_name: str) -> list[RunResult]:
        """Every run on *branch_name* in full (for the contest report)."""
        return [self.load_run(r.id) for r in self.branch_runs(branch_name)]

    def durations(self, executor: str) -> dict[tuple[str, str], float]:
        """(group, name) → duration in the executor's latest finished run, to schedule the
        longest tests first."""
        rc, tc = t.runs.c, t.tests.c
        with self._read() as conn:
            last = conn.execute(
                select(rc.id).where(rc.executor == executor, rc.status == RUN_DONE)
                .order_by(rc.started_at.desc(), rc.id.desc()).limit(1)
            ).scalar_one_or_none()  # fmt: skip
            if last is None:
                return {}
            q = select(tc.grp, tc.name, tc.duration).where(tc.run_id == last)
            return {(r.grp, r.name): r.duration for r in conn.execute(q) if r.duration is not None}

    # --- history -----------------------------------------------------------------------

    def last_results(
        self, grp: str, name: str, n: int = 10, executor: str | None = None
    ) -> list[HistoryRow]:
        """The newest *n* results of one test (newest first), optionally of one executor."""
        cond: list[ColumnElement[bool]] = [t.tests.c.grp == grp, t.tests.c.name == name]
        if executor is not None:
            cond.append(t.runs.c.executor == executor)
        return self._history(and_(*cond), newest_first=True, limit=n)

    def history(
        self, *, executor: str | None = None, stream: str | None = None, branches: int = 30
    ) -> list[HistoryRow]:
        """Every test result in the newest *branches* branches (of a stream, of an
        executor), oldest first: the input of `analysis.flakes`."""
        bc = t.branches.c
        recent = select(bc.id).order_by(bc.date.desc(), bc.id.desc()).limit(branches)
        if stream is not None:
            recent = recent.where(bc.stream == stream)
        cond: list[ColumnElement[bool]] = [t.runs.c.branch_id.in_(select(recent.subquery().c.id))]
        if executor is not None:
            cond.append(t.runs.c.executor == executor)
        return self._history(and_(*cond), newest_first=False, limit=None)

    def _history(
        self, where: ColumnElement[bool], *, newest_first: bool, limit: int | None
    ) -> list[HistoryRow]:
        tc, rc, bc = t.tests.c, t.runs.c, t.branches.c
        q = (
            select(
                tc.id,
                tc.run_id,
                bc.name.label("branch"),
                bc.date,
                bc.stream,
                rc.executor,
                tc.grp,
                tc.name,
                tc.outcome,
                tc.retry_outcome,
                tc.duration,
            )  # fmt: skip
            .select_from(t.tests.join(t.runs).join(t.branches))
            .where(where)
        )
        order = (bc.date, rc.id, tc.id)
        q = q.order_by(*(c.desc() for c in order)) if newest_first else q.order_by(*order)
        if limit is not None:
            q = q.limit(limit)
        with self._read() as conn:
            rows = conn.execute(q).all()
            fps = self._fingerprints(conn, [r.id for r in rows])
        return [
            HistoryRow(
                r.id,
                r.run_id,
                r.branch,
                r.date,
                r.stream,
                r.executor,
                r.grp,
                r.name,
                Outcome.stored(r.outcome),
                Outcome.stored_or_none(r.retry_outcome),
                r.duration,
                tuple(fps.get(r.id, ())),
            )  # fmt: skip
            for r in rows
        ]

    @staticmethod
    def _fingerprints(conn: Connection, test_ids: Sequence[int]) -> dict[int, list[str]]:
        cc = t.crashes.c
        out: dict[int, list[str]] = {}
        for chunk in _chunks(test_ids):
            q = select(cc.test_id, cc.fingerprint).where(
                cc.test_id.in_(chunk), cc.ignored == false()
            )
            for r in conn.execute(q.order_by(cc.id)):
                out.setdefault(r.test_id, []).append(r.fingerprint)
        return out

    def flaky_candidates(
        self, *, executor: str | None = None, since: datetime | None = None, limit: int = 50
    ) -> list[FlakyRow]:
        """Tests that failed and then passed on retry without a crash (NIPA's flake), most
        often first, with how many results they had in the same window."""
        tc, rc, bc = t.tests.c, t.runs.c, t.branches.c
        flake = and_(
            tc.outcome.in_(_FAILING), tc.retry_outcome == Outcome.PASS.value,
            ~_not_ignored_crash(),
        )  # fmt: skip
        flakes = func.sum(case((flake, 1), else_=0))
        q = (
            select(
                rc.executor,
                tc.grp,
                tc.name,
                flakes.label("flakes"),
                func.count().label("results"),
                type_coerce(func.max(case((flake, bc.date), else_=None)), t.UTCDateTime()).label(
                    "last"
                ),
            )  # fmt: skip
            .select_from(t.tests.join(t.runs).join(t.branches))
            .group_by(rc.executor, tc.grp, tc.name)
            .having(flakes > 0)
            .order_by(flakes.desc(), rc.executor, tc.grp, tc.name)
            .limit(limit)
        )
        if executor is not None:
            q = q.where(rc.executor == executor)
        if since is not None:
            q = q.where(bc.date >= as_utc(since))
        with self._read() as conn:
            return [
                FlakyRow(r.executor, r.grp, r.name, int(r.flakes), int(r.results), r.last)
                for r in conn.execute(q)
            ]  # fmt: skip
