"""Queries for the contest pages (branches, runs, per-test results), read-only.

Kept apart from queries.py for size; the history behind the flakes matrix and the test
history comes from `db.results.ResultsStore`, so the web shows what the analysis computes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import exists, false, func, select
from sqlalchemy.engine import Connection, Engine

from patchci.analysis.flakes import FlakeSignals, HistoryEntry, flake_signals, flake_table, state
from patchci.db import tables as t
from patchci.db.results import HistoryRow, ResultsStore
from patchci.model import Outcome
from patchci.web.security import log_relpath, safe_url


@dataclass(frozen=True)
class ContestFilter:
    branch: str | None = None  # one branch by name, else the newest `branches`
    branches: int = 10
    stream: str | None = None
    executor: str | None = None
    outcome: str | None = None  # the final outcome, after retries
    grp: str | None = None
    name: str | None = None  # substring of the test name


@dataclass(frozen=True)
class ResultRow:
    test_id: int
    run_id: int
    branch: str
    branch_date: datetime
    executor: str
    grp: str
    name: str
    outcome: str
    retry_outcome: str | None
    final: str
    duration: float | None
    log: str | None  # path under /contest/logs/
    retry_log: str | None
    crashes: int
    link: str | None


@dataclass(frozen=True)
class ResultLog:
    rows: list[ResultRow]
    total: int
    limit: int


@dataclass(frozen=True)
class MatrixRow:
    executor: str
    grp: str
    name: str
    cells: list[str | None]  # per branch (newest first): pass, fail, flake, skip... or None
    signals: FlakeSignals


@dataclass(frozen=True)
class FlakeMatrix:
    branches: list[str]  # newest first
    rows: list[MatrixRow]


@dataclass(frozen=True)
class SeriesBranch:
    name: str
    date: datetime
    included: bool
    reason: str


def _recent_branch_ids(f: ContestFilter) -> Any:
    bc = t.branches.c
    if f.branch is not None:
        return select(bc.id).where(bc.name == f.branch)
    q = select(bc.id).order_by(bc.date.desc(), bc.id.desc()).limit(f.branches)
    if f.stream is not None:
        q = q.where(bc.stream == f.stream)
    return select(q.subquery().c.id)


def result_log(conn: Connection, f: ContestFilter, logs_root: Path | None, limit: int) -> ResultLog:
    """Test results of the selected branches, newest branch first (NIPA's result log)."""
    tc, rc, bc = t.tests.c, t.runs.c, t.branches.c
    final = func.coalesce(tc.retry_outcome, tc.outcome)
    crashes = (
        select(func.count())
        .where(t.crashes.c.test_id == tc.id, t.crashes.c.ignored == false())
        .scalar_subquery()
    )
    q = (
        select(
            tc.id,
            tc.run_id,
            bc.name.label("branch"),
            bc.date,
            rc.executor,
            tc.grp,
            tc.name,
            tc.outcome,
            tc.retry_outcome,
            final.label("final"),
            tc.duration,
            tc.log_path,
            tc.retry_log_path,
            crashes.label("crashes"),
            rc.link,
        )  # fmt: skip
        .select_from(t.tests.join(t.runs).join(t.branches))
        .where(rc.branch_id.in_(_recent_branch_ids(f)))
    )
    if f.executor is not None:
        q = q.where(rc.executor == f.executor)
    if f.outcome is not None:
        q = q.where(final == f.outcome)
    if f.grp is not None:
        q = q.where(tc.grp == f.grp)
    if f.name:
        q = q.where(tc.name.icontains(f.name, autoescape=True))
    total = conn.execute(select(func.count()).select_from(q.subquery())).scalar_one()
    q = q.order_by(bc.date.desc(), bc.id.desc(), rc.executor, tc.grp, tc.name).limit(limit)
    rows = [
        ResultRow(
            r.id,
            r.run_id,
            r.branch,
            r.date,
            r.executor,
            r.grp,
            r.name,
            r.outcome,
            r.retry_outcome,
            r.final,
            r.duration,
            _rel(r.log_path, logs_root),
            _rel(r.retry_log_path, logs_root),
            int(r.crashes),
            safe_url(r.link),
        )  # fmt: skip
        for r in conn.execute(q)
    ]
    return ResultLog(rows, int(total), limit)


def _rel(path: str | None, root: Path | None) -> str | None:
    """Where a test log is under /contest/logs/; only absolute paths inside *root*."""
    if root is None or not path or not path.startswith("/"):
        return None
    return log_relpath(path, root)


def contest_choices(conn: Connection) -> tuple[list[str], list[str]]:
    """(executors, streams) present, for the filter menus."""
    execs = conn.execute(select(t.runs.c.executor).distinct()).scalars()
    streams = conn.execute(select(t.branches.c.stream).distinct()).scalars()
    return sorted(str(x) for x in execs), sorted(str(x) for x in streams)


def _matrix_rows(conn: Connection, f: ContestFilter) -> Any:
    """(branch id, executor, grp, name, outcome, retry, crashed) of the selected branches,
    oldest first: the columns the matrix needs and no more, as it reads ~100k rows."""
    tc, rc, bc, cc = t.tests.c, t.runs.c, t.branches.c, t.crashes.c
    crashed = exists().where(cc.test_id == tc.id, cc.ignored == false())
    q = (
        select(rc.branch_id, rc.executor, tc.grp, tc.name, tc.outcome, tc.retry_outcome, crashed)
        .select_from(t.tests.join(t.runs).join(t.branches))
        .where(rc.branch_id.in_(_recent_branch_ids(replace(f, branch=None))))
        .order_by(bc.date, rc.id, tc.id)
    )
    if f.executor is not None:
        q = q.where(rc.executor == f.executor)
    if f.grp is not None:
        q = q.where(tc.grp == f.grp)
    if f.name:
        q = q.where(tc.name.icontains(f.name, autoescape=True))
    return conn.execute(q)


def _outcome(value: str | None) -> Outcome | None:
    if value is None:
        return None
    try:
        return Outcome(value)
    except ValueError:  # as ResultsStore reads it: an unknown outcome is an error
        return Outcome.ERROR


def _entry(
    cache: dict[tuple[str, str | None, bool], tuple[HistoryEntry, str]],
    outcome: str, retry: str | None, crashed: bool,
) -> tuple[HistoryEntry, str]:  # fmt: skip
    """The (shared) entry and cell text of a result; there are only a few distinct ones."""
    key = (outcome, retry, crashed)
    hit = cache.get(key)
    if hit is None:
        e = HistoryEntry(_outcome(outcome) or Outcome.ERROR, _outcome(retry), crashed)
        hit = cache[key] = (e, state(e) or e.outcome.value)
    return hit


def flake_matrix(
    engine: Engine, f: ContestFilter, min_flips: int = 0, limit: int = 500
) -> FlakeMatrix:
    """Test × branch matrix of the newest branches, flakiest tests first (NIPA's flakes).

    Same signals as `ResultsStore.history` + `flake_table`, but without building a full
    HistoryRow per result: identical results share one entry."""
    cache: dict[tuple[str, str | None, bool], tuple[HistoryEntry, str]] = {}
    hist: dict[tuple[str, str, str], list[HistoryEntry]] = {}
    cells: dict[tuple[str, str, str], dict[int, str]] = {}
    with engine.connect() as conn:
        for bid, executor, grp, name, outcome, retry, crashed in _matrix_rows(conn, f):
            key = (executor, grp, name)
            entry, cell = _entry(cache, outcome, retry, bool(crashed))
            hist.setdefault(key, []).append(entry)
            cells.setdefault(key, {})[bid] = cell  # a retried run's later row wins
        seen = {bid for c in cells.values() for bid in c}
        bc = t.branches.c
        named = conn.execute(
            select(bc.id, bc.name).where(bc.id.in_(seen)).order_by(bc.date.desc(), bc.id.desc())
        ).all() if seen else []  # fmt: skip
    table = {k: flake_signals(h) for k, h in hist.items()}
    order = sorted(
        ((k, s) for k, s in table.items() if s.flips >= min_flips),
        key=lambda kv: (-kv[1].retry_flakes, -kv[1].flips, -kv[1].failures, kv[0]),
    )
    rows = [
        MatrixRow(k[0], k[1], k[2], [cells[k].get(b.id) for b in named], sig)
        for k, sig in order[:limit]
    ]
    return FlakeMatrix([b.name for b in named], rows)


def history_of_test(
    engine: Engine, grp: str, name: str, executor: str | None, n: int
) -> tuple[list[HistoryRow], FlakeSignals | None]:
    """The newest *n* results of one test (newest first) and its flake signals."""
    rows = ResultsStore(engine).last_results(grp, name, n=n, executor=executor)
    if not rows:
        return [], None
    return rows, flake_table((0, r) for r in reversed(rows))[0]


def series_branches(conn: Connection, series_id: int) -> list[SeriesBranch]:
    """The contest branches a series was considered for, newest first."""
    bs, bc = t.branch_series.c, t.branches.c
    q = (
        select(bc.name, bc.date, bs.included, bs.reason)
        .join(t.branches, bc.id == bs.branch_id)
        .where(bs.series_id == series_id)
        .order_by(bc.date.desc(), bc.id.desc())
    )
    return [SeriesBranch(r.name, r.date, bool(r.included), r.reason) for r in conn.execute(q)]
