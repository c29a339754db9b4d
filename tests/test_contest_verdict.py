"""The verdict a series' contest check keeps over the branches it was in (NIPA's rule),
on stored branches and runs, SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace

from patchci.db.culprits import CulpritStore
from patchci.db.results import ResultsStore
from patchci.model import Outcome
from patchci.report.contest import FAIL, PENDING, SUCCESS, WARNING, ContestSummary
from patchci.service.contest import series_verdict
from tests.pg import db_url as db_url  # fixtures, used by name
from tests.pg import pg_server as pg_server
from tests.pg import pg_url as pg_url
from tests.test_results_db import manifest, result, run
from tests.test_results_db import rs as rs

P, F = Outcome.PASS, Outcome.FAIL


def branch(rs: ResultsStore, n: int, series: tuple[int, ...], *outcomes: Outcome) -> str:
    m = manifest(n, series=series)
    bid = rs.save_branch(m)
    tests = [result(f"t{i}.sh", o, o) for i, o in enumerate(outcomes)]
    if tests:
        rs.save_run(bid, run(m.name, "vm1", *tests))
    else:  # still running: no verdict yet
        rs.start_run(bid, "vm1", m.date)
    return m.name


def test_a_pass_is_kept_when_a_later_branch_fails(rs: ResultsStore) -> None:
    first = branch(rs, 0, (7,), P, P)
    second = branch(rs, 1, (7, 8), P, F)  # t1 regressed: series 8 came in with it
    cache: dict[str, ContestSummary] = {}
    kept = series_verdict(rs, 7, second, cache)
    assert (kept.state, kept.branch) == (SUCCESS, first)  # if we pass once, we pass
    # nobody is blamed before a culprit search names a series; then only that one fails
    assert series_verdict(rs, 8, second, cache).state == PENDING
    culprits = CulpritStore(rs.engine)
    culprits.open_searches(rs.branch(second).id, [("vm1", "selftests-net", "t1.sh")])
    (search,) = culprits.searches(second)
    culprits.end(search.id, "culprit", 8)
    new = series_verdict(rs, 8, second, cache)
    assert (new.state, new.branch) == (FAIL, second)
    assert series_verdict(rs, 7, second, cache).state == SUCCESS
    assert series_verdict(rs, 7, first, cache).branch == first


def test_a_real_result_replaces_pending_and_more_tests_win(rs: ResultsStore) -> None:
    waiting = branch(rs, 0, (7,))
    assert series_verdict(rs, 7, waiting, {}).state == PENDING
    failing = branch(rs, 1, (7,), F)
    assert series_verdict(rs, 7, failing, {}).state == WARNING  # no baseline: unverified
    passing = branch(rs, 2, (7,), P, P)
    assert series_verdict(rs, 7, passing, {}).branch == passing  # better replaces worse
    more = branch(rs, 3, (7,), P, P, P)
    assert series_verdict(rs, 7, more, {}).branch == more  # equal state, more tests
    again_pending = branch(rs, 4, (7,))
    assert series_verdict(rs, 7, again_pending, {}).branch == more  # pending never replaces


def test_a_branch_without_the_series_is_not_counted(rs: ResultsStore) -> None:
    first = branch(rs, 0, (7,), P)
    branch(rs, 1, (9,), F)
    third = branch(rs, 2, (7,), P)
    verdict = series_verdict(rs, 7, third, {})
    assert verdict.state == SUCCESS and verdict.branch == first
    assert replace(verdict, description="").tests == 1


def test_an_error_run_on_the_previous_branch_does_not_take_the_baseline(rs: ResultsStore) -> None:
    """The previous branch's run failed (ours): the branch after it is compared with the
    branch before, so a test that broke is still a regression. Before, it was 'failing
    without baseline', a warning, and never bisected."""
    from patchci.executor.base import RUN_ERROR
    from patchci.report.contest import REGRESSION
    from patchci.service.runs import contest_summary

    branch(rs, 0, (7,), P, P)
    m = manifest(1, series=(7,))
    bid = rs.save_branch(m)
    rs.save_run(bid, replace(run(m.name, "vm1"), status=RUN_ERROR, error="VM never booted"))
    broken = branch(rs, 2, (7, 8), P, F)
    s = contest_summary(rs, broken)
    assert [(f.name, f.kind) for f in s.findings] == [("t1.sh", REGRESSION)]
