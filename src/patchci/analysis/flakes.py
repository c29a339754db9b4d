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

import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import ne
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


# One character per result: what the flakes matrix stores per branch (db/matrix.py) and
# what the signals are computed from, so the matrix and a test's history agree.
NOT_RUN = "."
CELLS = {
    "p": "pass", "f": "fail", "k": FLAKE, "c": "crash", "t": "timeout", "s": "skip",
    "e": "error", "w": "warn", "n": "pending",
}  # fmt: skip
_LETTER = {
    Outcome.PASS: "p", Outcome.XFAIL: "p", Outcome.FAIL: "f", Outcome.CRASH: "c",
    Outcome.TIMEOUT: "t", Outcome.SKIP: "s", Outcome.ERROR: "e", Outcome.WARN: "w",
    Outcome.PENDING: "n",
}  # fmt: skip
# pass, fail or flake as P, F, K; every other code (and NOT_RUN) says nothing.
_STATES = str.maketrans({**dict.fromkeys(CELLS.keys() | {NOT_RUN}), "p": "P", "f": "F",
                         "c": "F", "t": "F", "k": "K"})  # fmt: skip
_STATE_NAME = {"P": PASS, "F": FAIL, "K": FLAKE}
_BOUNCE = re.compile("(?=PFP)")


def code(r: Result) -> str:
    """The one-letter code of a result: its state when failing (flake, or crash/timeout/fail
    as what went wrong), else its outcome's letter."""
    s = state(r)
    if s == FLAKE:
        return "k"
    if s == FAIL and r.crashed:
        return "c"  # an unignored crash splat, whatever the runner said
    return _LETTER[r.outcome]


def signals_of_codes(codes: str) -> FlakeSignals:
    """Signals of a history given as codes, oldest first; NOT_RUN entries are not results.

    String operations, not a loop per result: the flakes page runs this for every test."""
    states = codes.translate(_STATES)
    last = states[-1:]
    return FlakeSignals(
        results=len(codes) - codes.count(NOT_RUN),
        counted=len(states),
        passes=states.count("P"),
        failures=states.count("F"),
        retry_flakes=states.count("K"),
        flips=sum(map(ne, states, states[1:])),
        bounces=len(_BOUNCE.findall(states)),
        streak_state=_STATE_NAME.get(last),
        streak=len(states) - len(states.rstrip(last)) if last else 0,
    )


def flake_signals(history: Sequence[Result]) -> FlakeSignals:
    """Signals of one test's history, oldest first."""
    return signals_of_codes("".join(code(r) for r in history))


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
