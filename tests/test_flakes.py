"""Flake signals over synthetic histories (table-driven)."""

from __future__ import annotations

import random

import pytest

from patchci.analysis.flakes import (
    CELLS,
    FAIL,
    FLAKE,
    PASS,
    HistoryEntry,
    code,
    flake_signals,
    flake_table,
    flakiest,
    signals_of_codes,
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


def reference_signals(history: list[HistoryEntry]) -> tuple[int, ...]:
    """The signals spelt out as loops, to check the string-operation implementation."""
    states = [s for s in map(state, history) if s is not None]
    flips = sum(1 for i in range(1, len(states)) if states[i] != states[i - 1])
    bounces = sum(1 for i in range(2, len(states)) if states[i - 2 : i + 1] == [PASS, FAIL, PASS])
    streak = 0
    while streak < len(states) and states[-1 - streak] == states[-1]:
        streak += 1
    return (len(history), len(states), states.count(PASS), states.count(FAIL),
            states.count(FLAKE), flips, bounces, streak)  # fmt: skip


def test_signals_match_a_reference_on_random_histories() -> None:
    rnd = random.Random(11)
    outcomes = list(Outcome)
    for _ in range(2000):
        history = [
            HistoryEntry(rnd.choice(outcomes), rnd.choice([None, *outcomes]), rnd.random() < 0.2)
            for _ in range(rnd.randrange(0, 12))
        ]
        sig = flake_signals(history)
        got = (sig.results, sig.counted, sig.passes, sig.failures, sig.retry_flakes,
               sig.flips, sig.bounces, sig.streak)  # fmt: skip
        assert got == reference_signals(history), history
        states = [s for s in map(state, history) if s is not None]
        assert sig.streak_state == (states[-1] if states else None)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (HistoryEntry(P), "p"),
        (HistoryEntry(Outcome.XFAIL), "p"),
        (HistoryEntry(F, F), "f"),
        (HistoryEntry(F, P), "k"),
        (HistoryEntry(F, P, crashed=True), "c"),  # crashed: not a flake
        (HistoryEntry(P, crashed=True), "p"),  # a splat during a passing test: still passed
        (HistoryEntry(Outcome.CRASH), "c"),
        (HistoryEntry(Outcome.TIMEOUT, P), "k"),
        (HistoryEntry(Outcome.TIMEOUT), "t"),
        (HistoryEntry(S), "s"),
        (HistoryEntry(Outcome.ERROR), "e"),
        (HistoryEntry(Outcome.PENDING), "n"),
    ],
)
def test_codes(entry: HistoryEntry, expected: str) -> None:
    assert code(entry) == expected
    assert CELLS[expected] in {"pass", "fail", "flake", "crash", "timeout", "skip", "error",
                               "pending"}  # fmt: skip


def test_not_run_entries_are_no_results() -> None:
    sig = signals_of_codes("p..f.p")
    assert (sig.results, sig.flips, sig.bounces) == (3, 2, 1)
    assert signals_of_codes("....") == flake_signals([])
