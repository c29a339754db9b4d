"""Flake signals over synthetic histories (table-driven)."""

from __future__ import annotations

import pytest

from patchci.analysis.flakes import (
    FAIL,
    FLAKE,
    PASS,
    HistoryEntry,
    flake_signals,
    flake_table,
    flakiest,
    state,
)
from patchci.executor.base import CrashRef, TestResult
from patchci.model import Outcome

P, F, S = Outcome.PASS, Outcome.FAIL, Outcome.SKIP


def h(*spec: str) -> list[HistoryEntry]:
    """p: pass, f: fail (retry failed too), r: fail then pass on retry, c: crash then pass on
    retry, s: skip, t: timeout, e: infrastructure error."""
    table = {
        "p": HistoryEntry(P),
        "f": HistoryEntry(F, F),
        "r": HistoryEntry(F, P),
        "c": HistoryEntry(Outcome.CRASH, P, crashed=True),
        "s": HistoryEntry(S),
        "t": HistoryEntry(Outcome.TIMEOUT),
        "e": HistoryEntry(Outcome.ERROR),
    }
    return [table[c] for c in spec]


@pytest.mark.parametrize(
    ("history", "flakes", "flips", "bounces", "streak", "flaky"),
    [
        ("", 0, 0, 0, (None, 0), False),
        ("pppp", 0, 0, 0, (PASS, 4), False),
        ("ffff", 0, 0, 0, (FAIL, 4), False),
        ("pfp", 0, 2, 1, (PASS, 1), True),
        ("pfpfp", 0, 4, 2, (PASS, 1), True),
        ("pspfsp", 0, 2, 1, (PASS, 1), True),  # skips are transparent
        ("prp", 1, 2, 0, (PASS, 1), True),  # a retry-flake is its own state
        ("rrr", 3, 0, 0, (FLAKE, 3), True),
        ("pcp", 0, 2, 1, (PASS, 1), True),  # crashed: a real failure, not a flake
        ("ppff", 0, 1, 0, (FAIL, 2), False),  # a regression: one flip, no bounce
        ("pptp", 0, 2, 1, (PASS, 1), True),  # timeouts fail
        ("pepe", 0, 0, 0, (PASS, 2), False),  # infra errors say nothing
        ("ssss", 0, 0, 0, (None, 0), False),
    ],
)
def test_signals(
    history: str,
    flakes: int,
    flips: int,
    bounces: int,
    streak: tuple[str | None, int],
    flaky: bool,
) -> None:
    sig = flake_signals(h(*history))
    assert sig.results == len(history)
    assert (sig.retry_flakes, sig.flips, sig.bounces) == (flakes, flips, bounces)
    assert (sig.streak_state, sig.streak) == streak
    assert sig.flaky is flaky


def test_counts_and_fail_rate() -> None:
    sig = flake_signals(h(*"ppfrs"))
    assert (sig.counted, sig.passes, sig.failures, sig.retry_flakes) == (4, 2, 1, 1)
    assert sig.fail_rate == pytest.approx(0.25)
    assert flake_signals([]).fail_rate == 0.0


@pytest.mark.parametrize(
    ("outcome", "retry", "crashed", "expected"),
    [
        (P, None, False, PASS),
        (Outcome.XFAIL, None, False, PASS),
        (F, None, False, FAIL),
        (F, P, False, FLAKE),
        (F, P, True, FAIL),
        (F, F, False, FAIL),
        (Outcome.TIMEOUT, P, False, FLAKE),
        (S, None, False, None),
        (Outcome.ERROR, None, False, None),
    ],
)
def test_state(outcome: Outcome, retry: Outcome | None, crashed: bool, expected: str) -> None:
    assert state(HistoryEntry(outcome, retry, crashed)) == expected


def test_test_results_are_history_entries() -> None:
    """TestResult itself can be fed in: an ignored crash does not spoil a flake."""
    known = CrashRef("kmemleak", "kmemleak:x", ignored=True)
    real = CrashRef("warning", "warning:y")
    assert state(TestResult("g", "t", F, retry_outcome=P, crashes=(known,))) == FLAKE
    assert state(TestResult("g", "t", F, retry_outcome=P, crashes=(real,))) == FAIL


def test_table_and_flakiest() -> None:
    rows = [(("vm", "g", "a"), e) for e in h(*"pfpfp")]
    rows += [(("vm", "g", "b"), e) for e in h(*"pppp")]
    rows += [(("vm", "g", "c"), e) for e in h(*"prrp")]
    rows += [(("hw", "g", "a"), e) for e in h(*"pp")]
    table = flake_table(rows)
    assert table[("vm", "g", "a")].flips == 4
    assert table[("hw", "g", "a")].flips == 0
    assert [k for k, _ in flakiest(table)] == [("vm", "g", "c"), ("vm", "g", "a")]
    assert set(flake_table(rows, min_flips=1)) == {("vm", "g", "a"), ("vm", "g", "c")}
    assert flakiest(table, limit=1)[0][0] == ("vm", "g", "c")
