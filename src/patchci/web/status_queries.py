"""The contest side of the status page: executors, runs in progress, branches waiting.

Read-only SQLAlchemy Core, bind parameters only; `now` comes from the caller so tests
control time. An expected end is a guess: the start plus the median duration of the
executor's last done runs, None when it has none.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.engine import Connection

from patchci.config import Settings
from patchci.db import tables as t
from patchci.errors import ConfigError
from patchci.executor.base import RUN_DONE, RUN_ERROR, RUN_RUNNING

EXPECT_FROM = 20  # an executor's expected duration is the median of this many last done runs
OVERDUE_FACTOR = 2.0  # a run is overdue past this many times its expected duration
RUNNING_LIMIT = 200
PENDING_LIMIT = 20


@dataclass(frozen=True)
class ExecutorStatus:
    executor: str
    last_started_at: datetime  # the start of its newest run
    last_finished_at: datetime | None  # the end of its newest run (by start) not running
    last_status: str | None  # that run's status (done/error); None before any run ended
    seen_at: datetime  # the latest of the two above
    age_s: float  # since seen_at
    runs_recent: int  # runs started in the window
    running: int  # runs in progress now


@dataclass(frozen=True)
class RunningRun:
    id: int
    branch_id: int
    branch: str
    stream: str
    executor: str
    started_at: datetime
    age_s: float
    expected_s: float | None  # median duration of the executor's last done runs
    expected_end: datetime | None
    overdue: bool  # running longer than OVERDUE_FACTOR x expected_s


@dataclass(frozen=True)
class PendingBranch:
    """A branch with no finished run yet, or with runs still in progress."""

    id: int
    name: str
    stream: str
    date: datetime
    runs_done: int
    runs_error: int
    runs_running: int
    expected_end: datetime | None  # the latest of its runs'; None when any is unknown


@dataclass(frozen=True)
class ContestStatus:
    executors: list[ExecutorStatus]
    running_runs: list[RunningRun]  # the oldest RUNNING_LIMIT
    pending_branches: list[PendingBranch]  # the newest PENDING_LIMIT


def _age(now: datetime, then: datetime) -> float:
    return max(0.0, (now - then).total_seconds())


def _executor_names() -> Any:
    """CTE of the distinct executors by a skip scan of the (executor, started_at) index:
    one probe per executor instead of a pass over every run."""
    rc, r2 = t.runs.c, t.runs.alias("r2").c
    names = select(func.min(rc.executor).label("executor")).cte("executors", recursive=True)
    after = select(func.min(r2.executor)).where(r2.executor > names.c.executor)
    return names.union_all(select(after.scalar_subquery()).where(names.c.executor.is_not(None)))


def _running_counts(conn: Connection) -> Counter[str]:
    # Counted here, not with GROUP BY: SQLite would walk the executor index for the grouping
    # and fetch every row from it, several times slower than the plain scan this is.
    q = select(t.runs.c.executor).where(t.runs.c.status == RUN_RUNNING)
    return Counter(str(e) for e in conn.execute(q).scalars())


def _executor_rows(conn: Connection, now: datetime, window_s: float) -> list[Any]:
    """Per executor, index lookups only: its newest start, its runs started in the window,
    and the id of its newest run (by start) that is no longer running."""
    names, r = _executor_names(), t.runs.alias("r").c
    mine = r.executor == names.c.executor
    newest = select(r.started_at).where(mine).order_by(r.started_at.desc()).limit(1)
    recent = select(func.count()).where(mine, r.started_at >= now - timedelta(seconds=window_s))
    ended = (
        select(r.id)
        .where(mine, r.status != RUN_RUNNING)
        .order_by(r.started_at.desc(), r.id.desc())
        .limit(1)
    )
    q = select(
        names.c.executor,
        newest.scalar_subquery().label("started"),
        recent.scalar_subquery().label("recent"),
        ended.scalar_subquery().label("ended"),
    ).where(names.c.executor.is_not(None))
    return list(conn.execute(q).all())


def executor_status(
    conn: Connection, now: datetime, window_s: float, running: Mapping[str, int] | None = None
) -> list[ExecutorStatus]:
    """Every executor that ever ran: when it was last seen, what it did, what it runs now.

    *running* counts the runs in progress per executor, when the caller has them already.
    """
    rows = _executor_rows(conn, now, window_s)
    rc = t.runs.c
    ids = [x.ended for x in rows if x.ended is not None]
    q = select(rc.id, rc.finished_at, rc.status).where(rc.id.in_(ids))
    last = {x.id: x for x in conn.execute(q)}
    if running is None:
        running = _running_counts(conn)
    out = []
    for x in rows:
        started = t.as_utc(x.started)  # a scalar subquery may bypass the type on SQLite
        if started is None:  # not for an executor that has runs; keeps mypy honest
            continue
        end = last.get(x.ended)
        finished = t.as_utc(end.finished_at) if end is not None else None
        seen = max(started, finished) if finished is not None else started
        out.append(
            ExecutorStatus(
                executor=x.executor, last_started_at=started, last_finished_at=finished,
                last_status=end.status if end is not None else None, seen_at=seen,
                age_s=_age(now, seen), runs_recent=int(x.recent),
                running=running.get(x.executor, 0),
            )
        )  # fmt: skip
    return sorted(out, key=lambda e: e.executor)  # the same order whatever the collation


def expected_durations(conn: Connection, executors: Iterable[str]) -> dict[str, float | None]:
    """Per executor: the median duration in seconds of its last EXPECT_FROM done runs."""
    rc = t.runs.c
    out: dict[str, float | None] = {}
    for executor in sorted(set(executors)):
        q = (
            select(rc.started_at, rc.finished_at)
            .where(rc.executor == executor, rc.status == RUN_DONE, rc.finished_at.is_not(None))
            .order_by(rc.started_at.desc(), rc.id.desc())
            .limit(EXPECT_FROM)
        )
        spans = [max(0.0, (end - start).total_seconds()) for start, end in conn.execute(q)]
        out[executor] = statistics.median(spans) if spans else None
    return out


def _running(r: Any, now: datetime, expected_s: float | None) -> RunningRun:
    age = _age(now, r.started_at)
    end, overdue = None, False
    if expected_s is not None:
        end = r.started_at + timedelta(seconds=expected_s)
        overdue = age > OVERDUE_FACTOR * expected_s
    return RunningRun(
        id=r.id, branch_id=r.branch_id, branch=r.name, stream=r.stream, executor=r.executor,
        started_at=r.started_at, age_s=age, expected_s=expected_s, expected_end=end,
        overdue=overdue,
    )  # fmt: skip


def running_runs(
    conn: Connection, now: datetime, limit: int | None = RUNNING_LIMIT
) -> list[RunningRun]:
    """Runs in progress, oldest first, with their expected end."""
    rc, bc = t.runs.c, t.branches.c
    q = (
        select(rc.id, rc.branch_id, bc.name, bc.stream, rc.executor, rc.started_at)
        .join(t.branches, bc.id == rc.branch_id)
        .where(rc.status == RUN_RUNNING)
        .order_by(rc.started_at, rc.id)
        .limit(limit)
    )
    rows = conn.execute(q).all()
    expected = expected_durations(conn, (r.executor for r in rows))
    return [_running(r, now, expected[r.executor]) for r in rows]


def _run_counts(conn: Connection, ids: Sequence[int]) -> dict[int, dict[str, int]]:
    rc = t.runs.c
    q = select(rc.branch_id, rc.status, func.count()).where(rc.branch_id.in_(ids))
    out: dict[int, dict[str, int]] = {}
    for bid, status, n in conn.execute(q.group_by(rc.branch_id, rc.status)):
        out.setdefault(int(bid), {})[str(status)] = int(n)
    return out


def _latest_end(runs: Sequence[RunningRun]) -> datetime | None:
    ends = [r.expected_end for r in runs]
    if not ends or None in ends:
        return None
    return max(e for e in ends if e is not None)


def _branch_rows(conn: Connection, busy: Iterable[int], limit: int) -> list[Any]:
    """The newest *limit* of: the branches with no finished run, and the *busy* ones."""
    rc, bc = t.runs.c, t.branches.c
    cols = (bc.id, bc.name, bc.stream, bc.date)
    newest = (bc.date.desc(), bc.id.desc())
    # Two queries, not one with OR: PostgreSQL plans NOT EXISTS alone as an anti join.
    finished = exists().where(rc.branch_id == bc.id, rc.status != RUN_RUNNING)
    found = {
        r.id: r
        for q in (
            select(*cols).where(~finished).order_by(*newest).limit(limit),
            select(*cols).where(bc.id.in_(sorted(set(busy)))).order_by(*newest).limit(limit),
        )
        for r in conn.execute(q)
    }
    return sorted(found.values(), key=lambda r: (r.date, r.id), reverse=True)[:limit]


def pending_branches(
    conn: Connection, running: Sequence[RunningRun], limit: int = PENDING_LIMIT
) -> list[PendingBranch]:
    """The newest branches without a finished run, or with runs still in progress.

    *running* is every run in progress (running_runs with no limit): passed in, as
    finding them is a pass over the runs table, which has no index on status.
    """
    rows = _branch_rows(conn, (r.branch_id for r in running), limit)
    counts = _run_counts(conn, [int(r.id) for r in rows])
    by_branch: dict[int, list[RunningRun]] = {}
    for run in running:
        by_branch.setdefault(run.branch_id, []).append(run)
    out = []
    for r in rows:
        n = counts.get(r.id, {})
        out.append(
            PendingBranch(
                id=r.id, name=r.name, stream=r.stream, date=r.date,
                runs_done=n.get(RUN_DONE, 0), runs_error=n.get(RUN_ERROR, 0),
                runs_running=n.get(RUN_RUNNING, 0),
                expected_end=_latest_end(by_branch.get(r.id, [])),
            )
        )  # fmt: skip
    return out


def contest_status(conn: Connection, now: datetime, window_s: float) -> ContestStatus:
    """The status page's contest side, reading the runs in progress once for all three."""
    running = running_runs(conn, now, limit=None)
    return ContestStatus(
        executors=executor_status(conn, now, window_s, Counter(r.executor for r in running)),
        running_runs=running[:RUNNING_LIMIT],
        pending_branches=pending_branches(conn, running),
    )


@dataclass(frozen=True)
class ExpectationView:
    index: int
    test: str
    outcome: str
    reason: str
    link: str | None
    until: date | None
    expired: bool


@dataclass(frozen=True)
class ExpectationStatus:
    """The expectations file as the status page shows it: an expired entry no longer
    applies (its failures count again), which the maintainer should know."""

    path: str | None
    entries: list[ExpectationView]
    error: str | None = None

    @property
    def expired(self) -> list[ExpectationView]:
        return [e for e in self.entries if e.expired]


def expectation_status(settings: Settings, today: date) -> ExpectationStatus:
    path = settings.verdicts.expectations
    if not path:
        return ExpectationStatus(None, [])
    try:
        from patchci.service.verdicts import expectations_of

        x = expectations_of(settings)
    except ConfigError as e:
        return ExpectationStatus(path, [], str(e))
    old = {m.index for m in x.expired(today)}
    return ExpectationStatus(path, [
        ExpectationView(i, e.test + (f" [{e.subtest}]" if e.subtest else ""), e.outcome,
                        e.reason, e.link, e.until, i in old)
        for i, e in enumerate(x.entries, 1)
    ])  # fmt: skip


def undelivered(conn: Connection) -> dict[str, int]:
    """Per target, the checks whose newest delivery attempt failed (not posted since)."""
    dc = t.deliveries.c
    newest = select(func.max(dc.id)).group_by(dc.target, dc.patch_pw_id, dc.context)
    q = (
        select(dc.target, func.count())
        .where(dc.id.in_(newest), dc.status == "failed")
        .group_by(dc.target)
    )
    return {str(target): int(n) for target, n in conn.execute(q)}
