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

import math
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


# -- known flaky: the statistics a verdict rests on -------------------------------------
#
# A test (or subtest) is *known flaky* when its recent history shows it failing and
# passing again on its own, often enough to tell from chance: TestClutch's floor is at
# least `min_runs` results, at least one pass and at least two separate failure starts
# (a failure that lasts several branches is one start: that is a regression, not a flake).
# It is *released* once it passed `stable_runs` times in a row. A known-flaky failure is a
# warning, unless this branch made it fail more often than before: its attempts here
# against its attempts in the window, Fisher's exact test (one-sided), at `alpha`.


@dataclass(frozen=True)
class FlakeRule:
    window: int = 30  # results looked at, newest
    min_runs: int = 10
    min_passes: int = 1
    min_starts: int = 2
    stable_runs: int = 10
    alpha: float = 0.05


@dataclass(frozen=True)
class FlakeStats:
    runs: int  # results with a pass/fail state in the window
    failures: int  # of them, failed at the first attempt (fail, flake)
    starts: int  # separate failure starts
    saves: int  # failed then passed on retry
    passing_streak: int  # passes in a row, newest back
    attempts: int  # every attempt, retries included
    failed_attempts: int
    rule: FlakeRule = FlakeRule()

    @property
    def known_flaky(self) -> bool:
        r = self.rule
        return (
            self.runs >= r.min_runs and self.passes >= r.min_passes
            and self.starts >= r.min_starts and not self.released
        )  # fmt: skip

    @property
    def passes(self) -> int:
        """Results that passed, at the first attempt or on retry."""
        return self.runs - self.failures + self.saves

    @property
    def released(self) -> bool:
        """Was flaky in the window, but has been stable since."""
        return self.starts >= self.rule.min_starts and self.passing_streak >= self.rule.stable_runs

    @property
    def rate(self) -> float:
        return self.failures / self.runs if self.runs else 0.0

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        """The failure rate's 95 % Wilson interval: how sure the rate is."""
        return wilson(self.failures, self.runs, z)

    def describe(self) -> str:
        low, high = self.interval()
        text = f"failed {self.failures} of the last {self.runs} runs"
        text += f", {self.starts} separate times" if self.starts != self.failures else ""
        text += f" (rate {low:.0%}-{high:.0%})"
        if self.saves:
            text += f", retry passed {self.saves}"
        return text


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    denom = 1 + z * z / n
    return (max(0.0, (centre - spread) / denom), min(1.0, (centre + spread) / denom))


_FAILING_STATE = re.compile("K|F+")


def attempts_of(r: Result) -> tuple[int, int]:
    """(failed, total) attempts of one result: the first and, when retried, the retry."""
    if state(r) is None:
        return (0, 0)
    failed = int(r.outcome in _FAILING)
    if r.retry_outcome is None:
        return (failed, 1)
    return (failed + int(r.retry_outcome in _FAILING or r.crashed), 2)


def flake_stats(history: Sequence[Result], rule: FlakeRule = FlakeRule()) -> FlakeStats:
    """The statistics of a history (oldest first) over its newest `rule.window` results."""
    counted = [r for r in history if state(r) is not None][-rule.window :]
    failed = total = 0
    for r in counted:
        f, n = attempts_of(r)
        failed += f
        total += n
    return _stats("".join(code(r) for r in counted).translate(_STATES), failed, total, rule)


def flake_stats_of_codes(codes: str, rule: FlakeRule = FlakeRule()) -> FlakeStats:
    """The same from a history's codes (the flakes matrix row), oldest first. Codes do not
    say whether a failure was retried: attempts count a failure once, a flake twice."""
    states = codes.translate(_STATES)[-rule.window :]
    k, f = states.count("K"), states.count("F")
    return _stats(states, k + f, len(states) + k, rule)


def _stats(states: str, failed: int, total: int, rule: FlakeRule) -> FlakeStats:
    return FlakeStats(
        runs=len(states),
        failures=states.count("F") + states.count("K"),
        starts=len(_FAILING_STATE.findall(states)),
        saves=states.count("K"),
        passing_streak=len(states) - len(states.rstrip("P")),
        attempts=total,
        failed_attempts=failed,
        rule=rule,
    )


def fisher_greater(a: int, b: int, c: int, d: int) -> float:
    """One-sided Fisher's exact test of the table [[a, b], [c, d]]: the probability of a
    first row with at least *a* failures (of a+b) if both rows had the same failure rate."""
    n1, k, n = a + b, a + c, a + b + c + d
    total = math.comb(n, n1)
    top = min(n1, k)
    return sum(math.comb(k, x) * math.comb(n - k, n1 - x) for x in range(a, top + 1)) / total


@dataclass(frozen=True)
class FlakeVerdict:
    """What the history says of one failing result: *flaky* (known flaky, failing no more
    than it used to), *worse* (known flaky, but failing more with this branch) or *new*
    (not known flaky). *evidence* says it in one line."""

    kind: str
    evidence: str
    stats: FlakeStats
    p_value: float | None = None


KNOWN_FLAKY, WORSE, NEW = "flaky", "worse", "new"


def judge(
    now: Sequence[Result], history: Sequence[Result], rule: FlakeRule = FlakeRule()
) -> FlakeVerdict:
    """*now* (this branch's results of the test) against its *history* before it."""
    stats = flake_stats(history, rule)
    if not stats.known_flaky:
        return FlakeVerdict(NEW, "", stats)
    fa = sum(attempts_of(r)[0] for r in now)
    na = sum(attempts_of(r)[1] for r in now)
    p = fisher_greater(fa, na - fa, stats.failed_attempts, stats.attempts - stats.failed_attempts)
    here = f"{fa} of {na} attempts here, {stats.failed_attempts} of {stats.attempts} before"
    if p < rule.alpha:
        return FlakeVerdict(WORSE, f"known flaky but failing more: {here} (Fisher p={p:.3f})",
                            stats, p)  # fmt: skip
    retried = any(r.retry_outcome is not None for r in now)
    saved = any(state(r) == FLAKE for r in now)
    tail = "; retry passed" if saved else "; retry failed" if retried else ""
    return FlakeVerdict(KNOWN_FLAKY, f"known flaky: {stats.describe()}{tail}", stats, p)
