"""Flakiness signals from a test's history. Pure: no I/O.

A history is a test's results oldest first, one per branch (or per run) of one executor.
Each result is classified into a state:

* ``flake``: failed, passed on retry, no (unignored) crash: NIPA's definition;
* ``fail``: failed and the retries (if any) did not pass;
* ``pass``: passed (or XFAIL);
* other outcomes (skip, error, pending) carry no pass/fail signal and are left out of
  flips, bounces and streaks.

Signals: how often the retry saved it, how often the state changed between consecutive
results (NIPA's flakes page "flips"), how often it failed once between two passes
(pass→fail→pass "bounces", flaky without retries), and the current streak.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from patchci.model import Outcome

PASS, FAIL, FLAKE = "pass", "fail", "flake"

_FAILING = frozenset({Outcome.FAIL, Outcome.CRASH, Outcome.TIMEOUT})
_PASSING = frozenset({Outcome.PASS, Outcome.XFAIL})


class Result(Protocol):
    """What a history entry needs (HistoryRow and HistoryEntry both have it)."""

    @property
    def outcome(self) -> Outcome: ...

    @property
    def retry_outcome(self) -> Outcome | None: ...

    @property
    def crashed(self) -> bool: ...


@dataclass(frozen=True)
class HistoryEntry:
    outcome: Outcome
    retry_outcome: Outcome | None = None
    crashed: bool = False
    branch: str = ""


@dataclass(frozen=True)
class FlakeSignals:
    results: int  # all entries, skips included
    counted: int  # entries with a pass/fail/flake state
    passes: int
    failures: int
    retry_flakes: int  # failed then passed on retry, without a crash
    flips: int  # state changes between consecutive counted results
    bounces: int  # pass → fail → pass
    streak_state: str | None  # state of the newest counted result
    streak: int  # how many counted results in a row, newest back, share that state

    @property
    def flaky(self) -> bool:
        return self.retry_flakes > 0 or self.bounces > 0

    @property
    def fail_rate(self) -> float:
        return (self.failures / self.counted) if self.counted else 0.0


def state(r: Result) -> str | None:
    """pass, fail or flake; None for results that say neither (skip, error, pending)."""
    if r.outcome in _FAILING:
        if r.retry_outcome in _PASSING and not r.crashed:
            return FLAKE
        return FAIL
    if r.outcome in _PASSING:
        return PASS
    return None


def flake_signals(history: Sequence[Result]) -> FlakeSignals:
    """Signals of one test's history, oldest first."""
    states = [s for s in (state(r) for r in history) if s is not None]
    flips = sum(1 for a, b in zip(states, states[1:], strict=False) if a != b)
    bounces = sum(
        1
        for a, b, c in zip(states, states[1:], states[2:], strict=False)
        if (a, b, c) == (PASS, FAIL, PASS)
    )
    streak = 0
    for s in reversed(states):
        if s != states[-1]:
            break
        streak += 1
    return FlakeSignals(
        results=len(history),
        counted=len(states),
        passes=states.count(PASS),
        failures=states.count(FAIL),
        retry_flakes=states.count(FLAKE),
        flips=flips,
        bounces=bounces,
        streak_state=states[-1] if states else None,
        streak=streak,
    )


K = TypeVar("K", bound=Hashable)


def flake_table(rows: Iterable[tuple[K, Result]], min_flips: int = 0) -> dict[K, FlakeSignals]:
    """Signals per key (e.g. (executor, group, test)) of rows given oldest first; keys whose
    history flipped fewer than *min_flips* times are left out (NIPA's min-flip filter)."""
    grouped: dict[K, list[Result]] = {}
    for key, r in rows:
        grouped.setdefault(key, []).append(r)
    table = {k: flake_signals(h) for k, h in grouped.items()}
    return {k: s for k, s in table.items() if s.flips >= min_flips}


def flakiest(table: Mapping[K, FlakeSignals], limit: int = 20) -> list[tuple[K, FlakeSignals]]:
    """The flaky keys, most retry-flakes first, then most flips."""
    flaky = [(k, s) for k, s in table.items() if s.flaky]
    flaky.sort(key=lambda kv: (-kv[1].retry_flakes, -kv[1].flips, -kv[1].bounces))
    return flaky[:limit]
