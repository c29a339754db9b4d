"""Queries for the contest pages (branches, runs, per-test results), read-only.

Kept apart from queries.py for size. The flakes matrix reads the derived `test_matrix`
(db/matrix.py) and a test's history comes from `db.results.ResultsStore`; both compute
their signals with `analysis.flakes`, so the web shows what the analysis computes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import false, func, select
from sqlalchemy.engine import Connection

from patchci.analysis.flakes import CELLS, FAIL, FLAKE, FlakeSignals, signals_of_codes
from patchci.db import matrix
from patchci.db import tables as t
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


Key = tuple[str, str, str]  # executor, grp, name


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
    stream: str | None  # the filter's, else the newest branch's
    branches: list[str]  # newest first
    rows: list[MatrixRow]  # one page
    total: int  # tests that passed the filters
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


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


FLAKE_SORTS = ("flaky", "flips", "streak", "name")


def _sort_key(sort: str) -> Callable[[tuple[Key, FlakeSignals]], Any]:
    if sort == "flips":
        return lambda kv: (-kv[1].flips, -kv[1].retry_flakes, kv[0])
    if sort == "streak":  # failing now, longest first; then the most recently recovered
        return lambda kv: (
            (0, -kv[1].streak) if kv[1].streak_state in (FAIL, FLAKE) else (1, kv[1].streak),
            kv[0],
        )
    if sort == "name":
        return lambda kv: (kv[0][1], kv[0][2], kv[0][0])
    return lambda kv: (-kv[1].retry_flakes, -kv[1].flips, -kv[1].failures, kv[0])


def flake_matrix(
    conn: Connection, f: ContestFilter, min_flips: int = 0, *, sort: str = "flaky",
    page: int = 1, per_page: int = 100,
) -> FlakeMatrix:  # fmt: skip
    """Test × branch matrix of the stream's newest branches (NIPA's flakes page), from the
    derived `test_matrix`: one row per test, signals from its codes, one page of rows."""
    w = matrix.window(conn, f.stream, f.branches, executor=f.executor, grp=f.grp, name=f.name)
    table = [((ex, grp, name), codes, signals_of_codes(codes)) for ex, grp, name, codes in w.rows]
    kept = sorted(((k, sig) for k, _c, sig in table if sig.flips >= min_flips), key=_sort_key(sort))
    codes_of = {k: c for k, c, _s in table}
    start = (page - 1) * per_page
    rows = [
        MatrixRow(k[0], k[1], k[2], [CELLS.get(c) for c in reversed(codes_of[k])], sig)
        for k, sig in kept[start : start + per_page]
    ]
    return FlakeMatrix(w.stream, w.branches, rows, len(kept), page, per_page)


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
