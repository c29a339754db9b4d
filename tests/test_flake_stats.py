"""Known flaky or not: the statistics a contest verdict rests on (table tests), and
Fisher's exact test against values computed by hand."""

from __future__ import annotations

import math

import pytest

from patchci.analysis.flakes import (
    KNOWN_FLAKY,
    NEW,
    WORSE,
    FlakeRule,
    HistoryEntry,
    fisher_greater,
    flake_stats,
    judge,
    wilson,
)
from patchci.model import Outcome

P, F = Outcome.PASS, Outcome.FAIL


def h(spec: str) -> list[HistoryEntry]:
    """p pass, f fail (retry failed), r fail then pass on retry, 1 fail (not retried),
    s skip, e infrastructure error, c crash then pass on retry."""
    table = {
        "p": HistoryEntry(P), "f": HistoryEntry(F, F), "r": HistoryEntry(F, P),
        "1": HistoryEntry(F), "s": HistoryEntry(Outcome.SKIP), "e": HistoryEntry(Outcome.ERROR),
        "c": HistoryEntry(Outcome.CRASH, P, crashed=True),
    }  # fmt: skip
    return [table[c] for c in spec]


@pytest.mark.parametrize(
    ("history", "runs", "failures", "starts", "saves", "flaky", "why"),
    [
        ("p" * 30, 30, 0, 0, 0, False, "never fails"),
        ("p" * 8 + "rp" + "rp", 12, 2, 2, 2, True, "two retry-saves among passes: flaky"),
        ("p" * 5 + "rpr", 8, 2, 2, 2, False, "8 runs: under the 10-run floor"),
        ("p" * 10 + "ffff", 14, 4, 1, 0, False, "one failure lasting 4 branches: a regression"),
        ("p" * 10 + "ffffpf", 16, 5, 2, 0, True, "failed, passed, failed again: 2 starts"),
        ("rrrrrrrrrrrr", 12, 12, 12, 12, True, "fails first every time, retry saves it"),
        ("ffffffffffff", 12, 12, 1, 0, False, "never passes: broken, not flaky"),
        ("p" * 8 + "sesese" + "rr", 10, 2, 2, 2, True, "skips and errors are not runs"),
        ("pppprpprppp" + "p" * 10, 21, 2, 2, 2, False, "stable for 10 runs since: released"),
        ("pcppcp" + "p" * 6, 12, 2, 2, 0, True, "a crash is a failure (not a retry save)"),
    ],
)
def test_known_flaky_rule(
    history: str, runs: int, failures: int, starts: int, saves: int, flaky: bool, why: str
) -> None:
    s = flake_stats(h(history))
    assert (s.runs, s.failures, s.starts, s.saves) == (runs, failures, starts, saves), why
    assert s.known_flaky is flaky, why


def test_released_tests_are_flaky_again_after_new_failure_starts() -> None:
    released = "pppprpprppp" + "p" * 10
    assert flake_stats(h(released)).released
    again = flake_stats(h(released + "r"))
    assert not again.released and again.known_flaky


def test_window_only_counts_the_newest_results() -> None:
    old_flakes = "prprpr" + "p" * 30
    s = flake_stats(h(old_flakes), FlakeRule(window=30))
    assert s.runs == 30 and s.failures == 0 and not s.known_flaky


def test_fisher_matches_the_hypergeometric_tail() -> None:
    # 2 of 2 now against 4 of 34 before: P(X >= 2) = C(6,2) / C(36,2)
    assert fisher_greater(2, 0, 4, 30) == pytest.approx(math.comb(6, 2) / math.comb(36, 2))
    assert fisher_greater(0, 2, 4, 30) == pytest.approx(1.0)
    # R: fisher.test(matrix(c(3,1,2,10),2), alternative="greater")$p.value = 0.06319
    assert fisher_greater(3, 1, 2, 10) == pytest.approx(0.0631868, abs=1e-6)


def test_wilson_interval_brackets_the_rate() -> None:
    low, high = wilson(4, 30)
    assert low < 4 / 30 < high and low == pytest.approx(0.0531, abs=1e-3)
    assert wilson(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("now", "history", "kind", "evidence"),
    [
        ("r", "p" * 8 + "rprp", KNOWN_FLAKY, "known flaky: failed 2 of the last 12 runs"),
        ("r", "p" * 8 + "rprp", KNOWN_FLAKY, "; retry passed"),
        ("f", "p" * 5 + "r" * 5 + "p" * 5 + "f" * 3 + "pr", KNOWN_FLAKY, "; retry failed"),
        ("f", "p" * 25 + "rprpr", WORSE, "known flaky but failing more: 2 of 2 attempts here"),
        ("f", "p" * 30, NEW, ""),
        ("f", "", NEW, ""),
    ],
)
def test_judge(now: str, history: str, kind: str, evidence: str) -> None:
    v = judge(h(now), h(history))
    assert v.kind == kind
    assert evidence in v.evidence


def test_a_test_failing_often_is_not_worse_for_failing_twice() -> None:
    """A test that fails a third of its attempts failing both attempts is no evidence that
    this branch made it worse (p ≈ 0.1); one that failed 3 of 60 attempts is."""
    often = "rp" * 15
    assert judge(h("f"), h(often)).kind == KNOWN_FLAKY
    rare = "p" * 27 + "rpr"
    v = judge(h("f"), h(rare))
    assert v.kind == WORSE and v.p_value is not None and v.p_value < 0.05
