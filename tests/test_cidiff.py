"""What changed between two branches, test and subtest level (table tests on runs)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from patchci.analysis.cidiff import (
    FIXED,
    NEW,
    NEWLY_FAILING,
    NEWLY_SKIPPED,
    REMOVED,
    counts,
    diff,
)
from patchci.executor.base import RUN_DONE, RUN_ERROR, CrashRef, RunResult, Subtest, TestResult
from patchci.model import Outcome

P, F, S = Outcome.PASS, Outcome.FAIL, Outcome.SKIP
T0 = datetime(2026, 8, 20, tzinfo=UTC)


def run(*tests: TestResult, ex: str = "vm", status: str = RUN_DONE) -> RunResult:
    return RunResult(ex, "b", T0, T0, status, tests=tests)


def t(name: str, outcome: Outcome, retry: Outcome | None = None, **subs: Outcome) -> TestResult:
    return TestResult("net", name, outcome, retry_outcome=retry,
                      subtests=tuple(Subtest(p, 1, p, o) for p, o in subs.items()))  # fmt: skip


@pytest.mark.parametrize(
    ("before", "after", "want"),
    [
        (t("a", P), t("a", F), [("a", "", NEWLY_FAILING)]),
        (t("a", F), t("a", P), [("a", "", FIXED)]),
        (t("a", F), t("a", F, P), [("a", "", FIXED)]),  # the retry passed: not failing now
        (t("a", P), t("a", F, P), []),  # a flake is not a failure
        (t("a", P), t("a", S), [("a", "", NEWLY_SKIPPED)]),
        (t("a", S), t("a", S), []),
        (t("a", F), t("a", S), []),  # not fixed: it did not pass
        (t("a", F, x=F, y=P), t("a", F, x=F, y=F), [("a", "y", NEWLY_FAILING)]),
        (t("a", F, x=F), t("a", F, x=P, y=F), [("a", "x", FIXED), ("a", "y", NEW)]),
        (t("a", P, x=P, y=P), t("a", P, x=P), [("a", "y", REMOVED)]),
        (t("a", P), t("a", P, x=P), []),  # subtests appear: the old run had none to compare
    ],
)
def test_changes(before: TestResult, after: TestResult, want: list[tuple[str, str, str]]) -> None:
    got = diff([run(before)], [run(after)])
    assert [(c.name, c.subtest, c.kind) for c in got] == want


def test_a_crash_is_a_failure_even_when_the_retry_passed() -> None:
    crashed = TestResult("net", "a", F, retry_outcome=P, crashes=(CrashRef("BUG", "fp"),))
    (c,) = diff([run(t("a", P))], [run(crashed)])
    assert c.kind == NEWLY_FAILING


def test_new_and_removed_tests_and_executors() -> None:
    before = [run(t("a", P), t("gone", P)), run(t("x", P), ex="old-exec")]
    after = [run(t("a", P), t("added", F)), run(t("y", P), ex="new-exec")]
    got = diff(before, after)
    assert [(c.executor, c.name, c.kind) for c in got] == [
        ("vm", "added", NEW), ("vm", "gone", REMOVED),
    ]  # an executor on one side only is not compared  # fmt: skip
    assert counts(got) == {NEWLY_FAILING: 0, FIXED: 0, NEWLY_SKIPPED: 0, NEW: 1, REMOVED: 1}


def test_an_error_run_is_not_compared() -> None:
    """A run the infrastructure broke says nothing: its tests are not 'removed'."""
    assert diff([run(t("a", P))], [run(status=RUN_ERROR)]) == []
    # and the newest finished run of the executor is the one compared
    older, newer = run(t("a", F)), run(t("a", P))
    newer = RunResult("vm", "b", T0.replace(hour=1), T0, RUN_DONE, tests=newer.tests)
    assert [c.kind for c in diff([run(t("a", P))], [older, newer])] == []
