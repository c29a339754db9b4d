"""What changed between two branches' results (NIPA's cidiff), test and subtest level.
Pure: runs in, changes out.

Per executor, the newest finished run of each branch is compared. A test (or a subtest of
a test both ran) is *newly failing* when it fails now (after retries, or with a kernel
splat) and did not before, *fixed* when it failed before and passes now, *newly skipped*
when it skips now and did not before; tests only one side ran are *new* or *removed*.
A test whose own outcome did not change can still have subtests that did: those are
listed on their own lines. An executor that ran on one branch only is not compared (a new
executor is not a hundred new tests).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from patchci.executor.base import RUN_DONE, RunResult, TestResult
from patchci.model import Outcome

NEWLY_FAILING, FIXED, NEW, REMOVED, NEWLY_SKIPPED = (
    "newly-failing",
    "fixed",
    "new",
    "removed",
    "newly-skipped",
)
KINDS = (NEWLY_FAILING, FIXED, NEWLY_SKIPPED, NEW, REMOVED)


@dataclass(frozen=True)
class Change:
    executor: str
    group: str
    name: str
    subtest: str  # "" for the test itself
    kind: str
    before: Outcome | None
    after: Outcome | None

    @property
    def label(self) -> str:
        return f"{self.group}/{self.name}" + (f": {self.subtest}" if self.subtest else "")


def _newest_done(runs: Iterable[RunResult]) -> dict[str, RunResult]:
    out: dict[str, RunResult] = {}
    for r in sorted(runs, key=lambda r: r.started):
        if r.status == RUN_DONE:
            out[r.executor] = r
    return out


def _failing(o: Outcome, crashed: bool = False) -> bool:
    return o.is_patch_failure or crashed


def _kind(before: Outcome, after: Outcome, crashed_before: bool, crashed_after: bool) -> str | None:
    was, now = _failing(before, crashed_before), _failing(after, crashed_after)
    if now and not was:
        return NEWLY_FAILING
    if was and not now and after in (Outcome.PASS, Outcome.XFAIL, Outcome.WARN):
        return FIXED
    if after is Outcome.SKIP and before is not Outcome.SKIP and not was:
        return NEWLY_SKIPPED
    return None


def _test_changes(ex: str, old: TestResult, new: TestResult) -> list[Change]:
    out = []
    kind = _kind(old.final, new.final, old.crashed, new.crashed)
    if kind is not None:
        out.append(Change(ex, new.group, new.name, "", kind, old.final, new.final))
    before = {s.path: s.retry_outcome or s.outcome for s in old.subtests}
    after = {s.path: s.retry_outcome or s.outcome for s in new.subtests}
    for path, o in after.items():
        if path not in before:
            if old.subtests:  # a subtest the old run did not have (it had some)
                out.append(Change(ex, new.group, new.name, path, NEW, None, o))
            continue
        k = _kind(before[path], o, False, False)
        if k is not None:
            out.append(Change(ex, new.group, new.name, path, k, before[path], o))
    if new.subtests:
        out += [Change(ex, new.group, new.name, p, REMOVED, o, None)
                for p, o in before.items() if p not in after]  # fmt: skip
    return out


def diff(before: Sequence[RunResult], after: Sequence[RunResult]) -> list[Change]:
    """The changes from the *before* branch's runs to the *after* branch's, by executor,
    then in the after run's test order (removed tests last)."""
    old_runs, new_runs = _newest_done(before), _newest_done(after)
    out: list[Change] = []
    for ex in sorted(old_runs.keys() | new_runs.keys()):
        old = {t.key: t for t in old_runs[ex].tests} if ex in old_runs else {}
        new = new_runs[ex].tests if ex in new_runs else ()
        seen = set()
        for t in new:
            seen.add(t.key)
            if t.key in old:
                out += _test_changes(ex, old[t.key], t)
            elif ex in old_runs:
                out.append(Change(ex, t.group, t.name, "", NEW, None, t.final))
        if ex in new_runs:
            out += [Change(ex, t.group, t.name, "", REMOVED, t.final, None)
                    for k, t in old.items() if k not in seen]  # fmt: skip
    return out


def counts(changes: Sequence[Change]) -> dict[str, int]:
    return {k: sum(c.kind == k for c in changes) for k in KINDS}
