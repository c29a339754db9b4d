"""Which series of a branch broke a test: a binary search over the branch's series tips.
Pure: the probes are run by service/culprits.py, which hands their outcomes back here.

Points of a branch with n series: 0 is its base, i (1..n) the commit after series i was
applied; n is the branch head, where the branch run saw the test fail. The base is probed
first: a test that fails there too was broken before any series of the branch (upstream,
or by a merged tree) and no series is blamed. When the search narrows down to the last
series, the head is probed once more: the branch run's failure alone could be a flake. Then the lowest failing point is searched
between the highest passing one below it and it; when they are adjacent, the series of the
failing point is the culprit, with the two probes as its evidence. A probe that could not
tell (the kernel did not build there, the VM never booted, the test did not run) ends the
search as inconclusive: blaming around it would be a guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

PASS, FAIL, UNKNOWN = "pass", "fail", "unknown"
# What a search is: still going, or how it ended.
RUNNING, CULPRIT, BASE, INCONCLUSIVE, BUDGET = (
    "running",
    "culprit",
    "base",
    "inconclusive",
    "budget",
)
ENDED = (CULPRIT, BASE, INCONCLUSIVE, BUDGET)


@dataclass(frozen=True)
class Bisection:
    """Where a search stands. *culprit* is a point (1..n) when status is CULPRIT; *good*
    and *bad* bound what is known: the culprit is one of the series good+1..bad."""

    status: str
    next_point: int | None = None
    culprit: int | None = None
    good: int | None = None
    bad: int = 0


def bisect(n: int, probes: Mapping[int, str], budget: int) -> Bisection:
    """The state of a search over a branch of *n* series (≥ 1) whose head fails, given the
    *probes* made so far (point → PASS/FAIL/UNKNOWN) and at most *budget* probes."""
    if n < 1:
        raise ValueError("a branch without series has nothing to bisect")
    if probes.get(n) == PASS:  # the head, probed again, passed: the failure did not recur
        return _bounds(INCONCLUSIVE, {**probes, n: FAIL}, n)
    known = {**probes, n: FAIL}
    if any(v == UNKNOWN for v in probes.values()):
        return _bounds(INCONCLUSIVE, known, n)
    if 0 not in known:
        return Bisection(RUNNING, next_point=0, bad=n) if budget > len(probes) else \
            _bounds(BUDGET, known, n)  # fmt: skip
    if known[0] == FAIL:
        return Bisection(BASE, bad=0)
    state = _bounds(RUNNING, known, n)
    assert state.good is not None
    if state.bad == state.good + 1:
        if state.bad == n and n not in probes:
            # Only the branch run saw the head fail: probe it once more before naming the
            # last series, or one flaky failure would blame it (every probe below passed).
            if len(probes) >= budget:
                return _bounds(BUDGET, known, n)
            return Bisection(RUNNING, next_point=n, good=state.good, bad=n)
        return Bisection(CULPRIT, culprit=state.bad, good=state.good, bad=state.bad)
    if len(probes) >= budget:
        return _bounds(BUDGET, known, n)
    return Bisection(RUNNING, next_point=(state.good + state.bad) // 2, good=state.good,
                     bad=state.bad)  # fmt: skip


def _bounds(status: str, known: Mapping[int, str], n: int) -> Bisection:
    """The lowest failing point and the highest passing point below it. A pass above a
    fail (a test that failed and passed again) does not move the bound: the first failure
    is what the search is after."""
    bad = min((p for p, v in known.items() if v == FAIL), default=n)
    good = max((p for p, v in known.items() if v == PASS and p < bad), default=None)
    return Bisection(status, good=good, bad=bad)


def steps_needed(n: int) -> int:
    """Probes a search over *n* series takes at most: the base, then halving n points,
    then the head again."""
    return 2 + max(n - 1, 0).bit_length()
