"""Queries for the contest pages (branches, runs, per-test results), read-only.

Kept apart from queries.py for size. The flakes matrix reads the derived `test_matrix`
(db/matrix.py) and a test's history comes from `db.results.ResultsStore`; both compute
their signals with `analysis.flakes`, so the web shows what the analysis computes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, case, false, func, or_, select, true, union
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from patchci.analysis.flakes import (
    CELLS,
    FAIL,
    FLAKE,
    FlakeRule,
    FlakeSignals,
    flake_stats_of_codes,
    signals_of_codes,
)
from patchci.db import matrix
from patchci.db import tables as t
from patchci.model import OUTCOME_PRIORITY, Outcome
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
_FAILING = (Outcome.FAIL.value, Outcome.CRASH.value, Outcome.TIMEOUT.value)

LOG_SORTS = ("date", "executor", "test", "result", "time")
# A column's direction when its header is first clicked: newest and slowest first, and for
# `result` ascending means worst first (OUTCOME_PRIORITY); the rest alphabetical.
LOG_DIRECTIONS = {"date": "desc", "time": "desc"}
LOG_PER_PAGE, LOG_PER_PAGE_MAX = 100, 1000


@dataclass(frozen=True)
class LogQuery:
    """How the result log is shown: subtests or not, the sort column and one page."""

    subtests: bool = False
    sort: str = "date"
    direction: str = "desc"
    page: int = 1
    per_page: int = LOG_PER_PAGE


@dataclass(frozen=True)
class SubtestRow:
    path: str  # "a/b/c" from the test down
    depth: int
    name: str
    outcome: str
    retry_outcome: str | None
    final: str
    duration: float | None


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
    retry_duration: float | None
    log: str | None  # path under /contest/logs/
    retry_log: str | None
    crashes: int
    link: str | None
    reproduce: str
    matched: bool  # False: listed only as the context of matching subtests
    subtests: list[SubtestRow]  # with subtests on: those that match, in path order


@dataclass(frozen=True)
class ResultLog:
    rows: list[ResultRow]  # one page of tests
    total: int  # tests that passed the filters
    limit: int  # = per_page, for API clients of the days before pages
    page: int
    per_page: int
    pages: int
    sort: str
    direction: str
    subtests: bool


@dataclass(frozen=True)
class MatrixRow:
    executor: str
    grp: str
    name: str
    cells: list[str | None]  # per branch (newest first): pass, fail, flake, skip... or None
    signals: FlakeSignals


@dataclass(frozen=True)
class Quarantined:
    """A test whose history makes it known flaky (its failures are warnings, not
    regressions; it still runs and is stored), or one released since: stable again."""

    executor: str
    grp: str
    name: str
    evidence: str
    released: bool


@dataclass(frozen=True)
class FlakeMatrix:
    stream: str | None  # the filter's, else the newest branch's
    branches: list[str]  # newest first
    rows: list[MatrixRow]  # one page
    total: int  # tests that passed the filters
    page: int
    per_page: int
    quarantine: list[Quarantined] = field(default_factory=list)  # over every test shown

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


@dataclass(frozen=True)
class SeriesBranch:
    name: str
    date: datetime
    included: bool
    reason: str
    runs: int = 0
    run_errors: int = 0  # runs that failed on our side: no verdict from them
    running: int = 0
    tests: int = 0
    failed: int = 0  # final outcome (after retries) fail, crash or timeout


def _recent_branch_ids(f: ContestFilter) -> Any:
    bc = t.branches.c
    if f.branch is not None:
        return select(bc.id).where(bc.name == f.branch)
    q = select(bc.id).order_by(bc.date.desc(), bc.id.desc()).limit(f.branches)
    if f.stream is not None:
        q = q.where(bc.stream == f.stream)
    return select(q.subquery().c.id)


def result_log(
    conn: Connection, f: ContestFilter, logs_root: Path | None, q: LogQuery = LogQuery()
) -> ResultLog:
    """One page of test results of the selected branches (NIPA's result log), sorted by
    `q.sort`; with `q.subtests`, each test carries its subtests that match the filters."""
    where, own = _log_where(f, q)
    page_q = (
        select(*_log_columns(), own.label("matched"))
        .select_from(t.tests.join(t.runs).join(t.branches))
        .where(*where)
        .order_by(*_log_order(q))
        .limit(q.per_page)
        .offset((q.page - 1) * q.per_page)
    )
    if _by_subtests(f, q):  # the costly pass over subtests runs once: count in the same query
        rows = conn.execute(page_q.add_columns(func.count().over().label("total"))).all()
        total = int(rows[0].total) if rows else _count(conn, where) if q.page > 1 else 0
    else:
        total = _count(conn, where)
        rows = conn.execute(page_q).all()
    ids = [r.id for r in rows]
    crashes = _crash_counts(conn, ids)
    subs = _subtests_of(conn, ids, f) if q.subtests else {}
    items = [_result_row(r, logs_root, crashes.get(r.id, 0), subs.get(r.id, [])) for r in rows]
    pages = max(1, -(-total // q.per_page))
    return ResultLog(
        items, total, q.per_page, q.page, q.per_page, pages, q.sort, q.direction, q.subtests
    )


def _by_subtests(f: ContestFilter, q: LogQuery) -> bool:
    """Whether subtests take part in the filtering (else they are only shown)."""
    return q.subtests and (f.outcome is not None or f.name is not None)


def _log_where(
    f: ContestFilter, q: LogQuery
) -> tuple[list[ColumnElement[bool]], ColumnElement[bool]]:
    """The conditions on a listed test, and whether the test itself matches: with subtests
    taking part, a test is also listed for one of its subtests."""
    tc, rc = t.tests.c, t.runs.c
    where: list[ColumnElement[bool]] = [rc.branch_id.in_(_recent_branch_ids(f))]
    if f.executor is not None:
        where.append(rc.executor == f.executor)
    if f.grp is not None:
        where.append(tc.grp == f.grp)
    own_match = _test_match(f)
    own = and_(*own_match) if own_match else true()
    if _by_subtests(f, q):  # ids of both kinds, so the outer query still starts from them
        itself = select(tc.id).select_from(t.tests.join(t.runs)).where(*where, own)
        either = union(itself.correlate(None), _tests_with_matching_subtests(f, where))
        where.append(tc.id.in_(either))
    else:
        where.append(own)
    return where, own


def _count(conn: Connection, where: list[ColumnElement[bool]]) -> int:
    q = select(func.count()).select_from(t.tests.join(t.runs)).where(*where)
    return int(conn.execute(q).scalar_one())


def _final(c: Any) -> ColumnElement[str]:
    """The outcome after retries, of a tests or subtests row."""
    return func.coalesce(c.retry_outcome, c.outcome)


def _test_match(f: ContestFilter) -> list[ColumnElement[bool]]:
    tc = t.tests.c
    match = []
    if f.outcome is not None:
        match.append(_final(tc) == f.outcome)
    if f.name is not None:
        match.append(tc.name.icontains(f.name, autoescape=True))
    return match


def _subtest_match(f: ContestFilter) -> list[ColumnElement[bool]]:
    """A subtest matches by its outcome and by its path, or its test's name (so a test's
    whole tree shows when the test is the one searched for)."""
    sc, tc = t.subtests.c, t.tests.c
    match = []
    if f.outcome is not None:
        match.append(_final(sc) == f.outcome)
    if f.name is not None:
        match.append(
            or_(
                sc.path.icontains(f.name, autoescape=True),
                tc.name.icontains(f.name, autoescape=True),
            )
        )
    return match


def _tests_with_matching_subtests(f: ContestFilter, where: list[ColumnElement[bool]]) -> Any:
    """Ids of the selected tests with a matching subtest: a join from those tests into
    their subtests by test_id, so the cost grows with the branches shown, not the table."""
    return (
        select(t.subtests.c.test_id)
        .select_from(t.subtests.join(t.tests).join(t.runs))
        .where(*where, *_subtest_match(f))
        .correlate(None)  # the same tables as the outer query, but its own rows
    )


def _log_columns() -> list[Any]:
    tc, rc, bc = t.tests.c, t.runs.c, t.branches.c
    return [
        tc.id, tc.run_id, bc.name.label("branch"), bc.date, rc.executor, tc.grp, tc.name,
        tc.outcome, tc.retry_outcome, _final(tc).label("final"), tc.duration,
        tc.retry_duration, tc.log_path, tc.retry_log_path, rc.link, tc.reproduce,
    ]  # fmt: skip


def _severity(outcome: ColumnElement[str]) -> ColumnElement[int]:
    """0 for the worst outcome, by OUTCOME_PRIORITY."""
    ranks = {o.value: i for i, o in enumerate(OUTCOME_PRIORITY)}
    return case(ranks, value=outcome, else_=len(ranks))


def _log_order(q: LogQuery) -> list[Any]:
    """The sort column in the asked direction, then the default order (newest branch
    first, then executor, group, name), so pages never overlap."""
    tc, rc, bc = t.tests.c, t.runs.c, t.branches.c
    keys: dict[str, list[Any]] = {
        "date": [bc.date, bc.id],
        "executor": [rc.executor],
        "test": [tc.grp, tc.name],
        "result": [_severity(_final(tc))],
        "time": [tc.duration],
    }
    first = [k.desc() if q.direction == "desc" else k.asc() for k in keys[q.sort]]
    if q.sort == "time":  # tests without a time last, whichever the direction
        first.insert(0, tc.duration.is_(None))
    return [*first, bc.date.desc(), bc.id.desc(), rc.executor, tc.grp, tc.name, tc.id]


def _crash_counts(conn: Connection, test_ids: list[int]) -> dict[int, int]:
    """Crashes (not ignored) per test of one page."""
    if not test_ids:
        return {}
    cc = t.crashes.c
    q = (
        select(cc.test_id, func.count())
        .where(cc.test_id.in_(test_ids), cc.ignored == false())
        .group_by(cc.test_id)
    )
    return {int(tid): int(n) for tid, n in conn.execute(q)}


def _subtests_of(
    conn: Connection, test_ids: list[int], f: ContestFilter
) -> dict[int, list[SubtestRow]]:
    """The matching subtests of one page's tests, each test's in path order."""
    if not test_ids:
        return {}
    sc = t.subtests.c
    q = (
        select(
            sc.test_id,
            sc.path,
            sc.depth,
            sc.name,
            sc.outcome,
            sc.retry_outcome,
            _final(sc).label("final"),
            sc.duration,
        )
        .select_from(t.subtests.join(t.tests) if f.name is not None else t.subtests)
        .where(sc.test_id.in_(test_ids), *_subtest_match(f))
    )
    found: dict[int, list[SubtestRow]] = {}
    for r in conn.execute(q):
        row = SubtestRow(r.path, r.depth, r.name, r.outcome, r.retry_outcome, r.final, r.duration)
        found.setdefault(r.test_id, []).append(row)
    for subs in found.values():  # by path components: "a/b" before "a-c", unlike text order
        subs.sort(key=lambda s: s.path.split("/"))
    return found


def _result_row(r: Any, logs_root: Path | None, crashes: int, subs: list[SubtestRow]) -> ResultRow:
    return ResultRow(
        r.id, r.run_id, r.branch, r.date, r.executor, r.grp, r.name, r.outcome,
        r.retry_outcome, r.final, r.duration, r.retry_duration, _rel(r.log_path, logs_root),
        _rel(r.retry_log_path, logs_root), crashes, safe_url(r.link), r.reproduce,
        bool(r.matched), subs,
    )  # fmt: skip


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
    page: int = 1, per_page: int = 100, rule: FlakeRule | None = None,
) -> FlakeMatrix:  # fmt: skip
    """Test × branch matrix of the stream's newest branches (NIPA's flakes page), from the
    derived `test_matrix`: one row per test, signals from its codes, one page of rows."""
    w = matrix.window(conn, f.stream, f.branches, executor=f.executor, grp=f.grp, name=f.name)
    codes_of = {(ex, grp, name): codes for ex, grp, name, codes in w.rows}
    signals = ((k, signals_of_codes(c)) for k, c in codes_of.items())
    # A test that flaked on every branch never flips (the same state each time): with the
    # default filter (one flip) it was hidden, the flakiest test of all. Flaky is enough.
    kept = sorted(((k, sig) for k, sig in signals
                   if sig.flips >= min_flips or (min_flips <= 1 and sig.flaky)),
                  key=_sort_key(sort))  # fmt: skip
    start = (page - 1) * per_page
    rows = [
        MatrixRow(k[0], k[1], k[2], [CELLS.get(c) for c in reversed(codes_of[k])], sig)
        for k, sig in kept[start : start + per_page]
    ]
    rule = rule or FlakeRule()
    if w.branches and len(w.branches) < rule.window:  # the rule's window, not the page's
        wide = matrix.window(conn, f.stream, rule.window, executor=f.executor, grp=f.grp,
                             name=f.name)  # fmt: skip
        codes_of = {(ex, grp, name): codes for ex, grp, name, codes in wide.rows}
    quarantine = []
    for k, c in sorted(codes_of.items()):
        st = flake_stats_of_codes(c, rule)
        if st.known_flaky or st.released:
            why = st.describe() + (f"; passed {st.passing_streak} in a row since" if st.released
                                   else "")  # fmt: skip
            quarantine.append(Quarantined(*k, why, st.released))
    return FlakeMatrix(w.stream, w.branches, rows, len(kept), page, per_page, quarantine)


def series_branches(conn: Connection, series_id: int) -> list[SeriesBranch]:
    """The contest branches a series was considered for, newest first, with what their
    runs found (the same counts for every series of a branch: the tests ran on all)."""
    bs, bc, rc, tc = t.branch_series.c, t.branches.c, t.runs.c, t.tests.c
    q = (
        select(bc.id, bc.name, bc.date, bs.included, bs.reason)
        .join(t.branches, bc.id == bs.branch_id)
        .where(bs.series_id == series_id)
        .order_by(bc.date.desc(), bc.id.desc())
    )
    rows = conn.execute(q).all()
    ids = [r.id for r in rows]
    runs: dict[int, tuple[int, int, int]] = {}
    tests: dict[int, tuple[int, int]] = {}
    if ids:
        status = select(
            rc.branch_id, func.count(),
            func.count().filter(rc.status == "error"), func.count().filter(rc.status == "running"),
        ).where(rc.branch_id.in_(ids)).group_by(rc.branch_id)  # fmt: skip
        runs = {b: (int(n), int(e), int(r)) for b, n, e, r in conn.execute(status)}
        final = func.coalesce(tc.retry_outcome, tc.outcome)
        counts = (
            select(rc.branch_id, func.count(), func.count().filter(final.in_(_FAILING)))
            .select_from(t.tests.join(t.runs))
            .where(rc.branch_id.in_(ids))
            .group_by(rc.branch_id)
        )
        tests = {b: (int(n), int(f)) for b, n, f in conn.execute(counts)}
    return [
        SeriesBranch(
            r.name,
            r.date,
            bool(r.included),
            r.reason,
            *runs.get(r.id, (0, 0, 0)),
            *tests.get(r.id, (0, 0)),
        )  # fmt: skip
        for r in rows
    ]


@dataclass(frozen=True)
class BranchSeries:
    """A series a test branch took in or left out, and why."""

    series_id: int
    name: str | None  # None: a series this database does not hold (imported branch)
    included: bool
    reason: str


def branch_series(conn: Connection, branch: str) -> list[BranchSeries]:
    """The series of *branch*: those in it first (in order), then those left out."""
    bs, b, sc = t.branch_series.c, t.branches.c, t.series.c
    q = (
        select(bs.series_id, bs.included, bs.reason, sc.name)
        .join(t.branches, b.id == bs.branch_id)
        .outerjoin(t.series, sc.id == bs.series_id)
        .where(b.name == branch)
        .order_by(bs.included.desc(), bs.series_id)
    )
    return [BranchSeries(r.series_id, r.name, bool(r.included), r.reason) for r in conn.execute(q)]
