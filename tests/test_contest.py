"""The Patchwork `contest` check: table-driven verdicts over synthetic branch runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from patchci.executor.base import CrashRef, RunResult, TestResult
from patchci.model import Outcome
from patchci.report.contest import (
    CONTEXT,
    FAIL,
    FLAKY,
    KNOWN,
    PENDING,
    REGRESSION,
    SUCCESS,
    UNVERIFIED,
    WARNING,
    ContestSummary,
    SeriesRef,
    render_contest,
    summarise,
    upgrades,
)

T0 = datetime(2026, 8, 20, 3, 0, tzinfo=UTC)
BR = "net-next-2026-08-20--03-00"
SPLAT = CrashRef("warning", "warning:foo")
P, F = Outcome.PASS, Outcome.FAIL


def t(code: str, name: str) -> TestResult:
    """p pass, f fail (retry fails), r fail then pass on retry, c crash then pass on retry,
    s skip, w warn, e could not run, x timeout."""
    table = {
        "p": TestResult("g", name, P),
        "f": TestResult("g", name, F, retry_outcome=F),
        "r": TestResult("g", name, F, retry_outcome=P),
        "c": TestResult("g", name, Outcome.CRASH, retry_outcome=P, crashes=(SPLAT,)),
        "s": TestResult("g", name, Outcome.SKIP),
        "w": TestResult("g", name, Outcome.WARN),
        "e": TestResult("g", name, Outcome.ERROR),
        "x": TestResult("g", name, Outcome.TIMEOUT, retry_outcome=Outcome.TIMEOUT),
    }
    return table[code]


def done(codes: str, executor: str = "vm", minutes: int = 0) -> RunResult:
    """A finished run whose test i has outcome code codes[i] and name t<i>."""
    tests = tuple(t(c, f"t{i}") for i, c in enumerate(codes))
    start = T0 + timedelta(minutes=minutes)
    return RunResult(executor, BR, start, start + timedelta(minutes=30), "done", tests=tests)


def error(
    executor: str = "vm", why: str = "build of net-next failed (exit 2)", minutes: int = 0
) -> RunResult:
    start = T0 + timedelta(minutes=minutes)
    return RunResult(executor, BR, start, start, "error", why)


def running(executor: str = "vm") -> RunResult:
    return RunResult(executor, BR, T0, None, "running")


@pytest.mark.parametrize(
    ("runs", "previous", "required", "state", "kinds"),
    [
        pytest.param([done("ppp")], [done("ppp")], (), SUCCESS, {}, id="all-pass"),
        pytest.param([done("pfp")], [done("ppp")], (), FAIL, {REGRESSION: 1}, id="regression"),
        pytest.param([done("pfp")], [done("pfp")], (), WARNING, {KNOWN: 1}, id="known-failure"),
        pytest.param([done("pfp")], None, (), WARNING, {UNVERIFIED: 1}, id="no-previous"),
        pytest.param([done("pfp")], [], (), WARNING, {UNVERIFIED: 1}, id="no-baseline-run"),
        pytest.param([done("pfp")], [error()], (), WARNING, {UNVERIFIED: 1}, id="baseline-errored"),
        pytest.param([done("ppf")], [done("pp")], (), FAIL, {REGRESSION: 1}, id="new-test-fails"),
        pytest.param([done("prp")], [done("ppp")], (), SUCCESS, {FLAKY: 1}, id="flaky-is-ok"),
        pytest.param(
            [done("pcp")], [done("ppp")], (), FAIL, {REGRESSION: 1}, id="crash-passing-retry"
        ),
        pytest.param([done("pxp")], [done("ppp")], (), FAIL, {REGRESSION: 1}, id="timeout"),
        pytest.param([done("pfp")], [done("prp")], (), FAIL, {REGRESSION: 1}, id="was-flaky"),
        pytest.param([done("psp")], [done("ppp")], (), SUCCESS, {}, id="skip-is-ok"),
        pytest.param([done("pwp")], [done("ppp")], (), WARNING, {}, id="warn"),
        pytest.param([done("pep")], [done("ppp")], (), WARNING, {}, id="test-could-not-run"),
        # infrastructure errors never fail the check
        pytest.param([error()], [done("ppp")], (), PENDING, {}, id="only-infra-error"),
        pytest.param([], None, (), PENDING, {}, id="no-runs"),
        pytest.param(
            [done("ppp"), error("hw")], [done("ppp")], (), WARNING, {}, id="one-executor-lost"
        ),
        pytest.param(
            [done("pfp"), error("hw")],
            [done("ppp")],
            (),
            FAIL,
            {REGRESSION: 1},
            id="regression-and-infra",
        ),
        pytest.param(
            [error(minutes=0), done("ppp", minutes=5)],
            [done("ppp")],
            (),
            SUCCESS,
            {},
            id="rerun-after-error",
        ),
        pytest.param(
            [done("pfp", minutes=0), error(minutes=5)],
            [done("ppp")],
            (),
            PENDING,
            {},
            id="newest-run-errored",
        ),
        pytest.param([running()], [done("ppp")], (), PENDING, {}, id="running"),
        pytest.param(
            [done("ppp")], [done("ppp")], ("vm", "hw"), PENDING, {}, id="required-missing"
        ),
        pytest.param(
            [done("pfp"), running("hw")],
            [done("ppp")],
            (),
            FAIL,
            {REGRESSION: 1},
            id="regression-beats-pending",
        ),
        pytest.param(
            [done("pf", "vm"), done("fp", "hw")],
            [done("pp", "vm"), done("fp", "hw")],
            (),
            FAIL,
            {REGRESSION: 1, KNOWN: 1},
            id="baseline-per-executor",
        ),
    ],
)
def test_verdicts(
    runs: list[RunResult],
    previous: list[RunResult] | None,
    required: tuple[str, ...],
    state: str,
    kinds: dict[str, int],
) -> None:
    s = summarise(BR, runs, previous, required)
    assert s.state == state
    found: dict[str, int] = {}
    for f in s.findings:
        found[f.kind] = found.get(f.kind, 0) + 1
    assert found == kinds
    assert s.state != FAIL or s.of_kind(REGRESSION)


def test_infrastructure_error_description() -> None:
    s = summarise(BR, [error(why="VM never booted")], [done("pp")])
    assert s.state == PENDING
    assert s.description.startswith("infrastructure error: vm: VM never booted")
    assert s.infra_errors == ("vm: VM never booted",)
    s = summarise(BR, [done("pp"), error("hw", "executor lost")], [done("pp")])
    assert s.state == WARNING
    assert s.description == f"{BR} (tests: 2) | infrastructure error: hw: executor lost"


def test_description_names_regressions() -> None:
    s = summarise(BR, [done("pfrf")], [done("pppf")])
    assert s.description == (f"{BR} (tests: 4, regressions: 1, known failures: 1, flaky: 1): g/t1")
    reg = s.of_kind(REGRESSION)[0]
    assert (reg.executor, reg.label, reg.outcome) == ("vm", "g/t1", F)
    crash = summarise(BR, [done("c")], [done("p")]).findings[0]
    assert crash.outcome is Outcome.CRASH


def test_description_fits_patchwork() -> None:
    many = done("f" * 80)
    s = summarise(BR, [many], [done("p" * 80)])
    assert s.state == FAIL and len(s.description) <= 200


def test_render_posts_on_every_patch_of_every_series() -> None:
    s = summarise(BR, [done("pp")], [done("pp")])
    posts = render_contest(
        s, [SeriesRef(1, (11, 12)), SeriesRef(2, (21,))], "https://ci.example/contest"
    )
    assert [(p.patch_id, p.context, p.state) for p in posts] == [
        (11, CONTEXT, SUCCESS),
        (12, CONTEXT, SUCCESS),
        (21, CONTEXT, SUCCESS),
    ]
    assert all(p.description == f"{BR} (tests: 2)" for p in posts)
    assert posts[0].target_url == "https://ci.example/contest"


def summary(state: str, tests: int) -> ContestSummary:
    return ContestSummary(BR, state, "", tests)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (None, summary(PENDING, 0), True),
        (summary(PENDING, 0), summary(FAIL, 10), True),
        (summary(SUCCESS, 10), summary(PENDING, 0), False),
        (summary(FAIL, 10), summary(SUCCESS, 10), True),
        (summary(SUCCESS, 10), summary(FAIL, 20), False),  # if we pass once, we pass
        (summary(WARNING, 10), summary(FAIL, 10), False),
        (summary(SUCCESS, 10), summary(SUCCESS, 20), True),
        (summary(SUCCESS, 20), summary(SUCCESS, 10), False),
    ],
)
def test_upgrades(old: ContestSummary | None, new: ContestSummary, expected: bool) -> None:
    assert upgrades(old, new) is expected
