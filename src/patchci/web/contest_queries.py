"""Queries for the contest pages (branches, runs, per-test results), read-only.

Kept apart from queries.py for size; the history behind the flakes matrix and the test
history comes from `db.results.ResultsStore`, so the web shows what the analysis computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import false, func, select
from sqlalchemy.engine import Connection, Engine

from patchci.analysis.flakes import FlakeSignals, flake_table, state
from patchci.db import tables as t
from patchci.db.results import HistoryRow, ResultsStore
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


def _cell(r: HistoryRow) -> str:
    return state(r) or r.outcome.value


def flake_matrix(
    engine: Engine, f: ContestFilter, min_flips: int = 0, limit: int = 500
) -> FlakeMatrix:
    """Test × branch matrix of the newest branches, flakiest tests first (NIPA's flakes)."""
    history = ResultsStore(engine).history(
        executor=f.executor, stream=f.stream, branches=f.branches
    )
    if f.name:
        needle = f.name.lower()
        history = [h for h in history if needle in h.name.lower()]
    if f.grp is not None:
        history = [h for h in history if h.grp == f.grp]
    branches: list[str] = []
    for h in sorted(history, key=lambda h: h.branch_date, reverse=True):
        if h.branch not in branches:
            branches.append(h.branch)
    table = flake_table((((h.executor, h.grp, h.name), h) for h in history), min_flips)
    cells: dict[tuple[str, str, str], dict[str, str]] = {}
    for h in history:  # oldest first: a retried run's later row wins its branch cell
        cells.setdefault((h.executor, h.grp, h.name), {})[h.branch] = _cell(h)
    order = sorted(
        table.items(),
        key=lambda kv: (-kv[1].retry_flakes, -kv[1].flips, -kv[1].failures, kv[0]),
    )
    rows = [
        MatrixRow(k[0], k[1], k[2], [cells[k].get(b) for b in branches], sig)
        for k, sig in order[:limit]
    ]
    return FlakeMatrix(branches, rows)


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
