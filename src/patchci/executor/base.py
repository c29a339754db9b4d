"""What every executor takes and returns: test specs in, a RunResult out.

Pure data (frozen dataclasses) plus the `Executor` protocol. An executor runs a list of
`TestSpec` on one branch and reports one `RunResult`; the results store, the NIPA JSON
export and the contest report all read the same types.

Run status vocabulary: "running" (started, not finished), "done" (the tests ran, whatever
their outcomes), "error" (the infrastructure failed: the tree did not build, the VM never
booted, the executor was lost). An "error" run says nothing about the series in the branch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Protocol

from patchci.crash import Crash
from patchci.ktap import TestNode
from patchci.model import Outcome, worst

RUN_RUNNING, RUN_DONE, RUN_ERROR = "running", "done", "error"
RUN_STATUSES = (RUN_RUNNING, RUN_DONE, RUN_ERROR)

# Outcomes that earn a retry: the code under test misbehaved (not skips, not our errors).
RETRY_ON = frozenset({Outcome.FAIL, Outcome.CRASH, Outcome.TIMEOUT})

_NOT_NAME = re.compile(r"[^0-9A-Za-z]+")
# The kselftest runner's wrapper node: "selftests: net: tcp_ao.sh".
_RUNNER_NODE = re.compile(r"selftests:\s*\S+:\s*\S.*")


def namify(text: str) -> str:
    """NIPA's `namify`: runs of non-alphanumerics become one `-` (`tcp_ao.sh` → `tcp-ao-sh`)."""
    return _NOT_NAME.sub("-", text).strip("-") or "unnamed"


@dataclass(frozen=True)
class TestSpec:
    """One test to run. A str *command* is a shell snippet (run as `sh -c`); a tuple is an
    argv. A relative *cwd* is taken relative to the branch worktree."""

    __test__ = False  # not a pytest class

    group: str
    name: str
    command: tuple[str, ...] | str
    timeout: float = 300.0
    cwd: Path | None = None

    @property
    def argv(self) -> tuple[str, ...]:
        if isinstance(self.command, str):
            return ("sh", "-c", self.command)
        return self.command

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.name)


@dataclass(frozen=True)
class Subtest:
    """One node of a test's KTAP tree. *path* is the "/"-joined names from the test down
    ("a/b/c"), *depth* its length (1 for a direct subtest)."""

    path: str
    depth: int
    name: str
    outcome: Outcome
    duration: float | None = None
    retry_outcome: Outcome | None = None


@dataclass(frozen=True)
class CrashRef:
    """A crash as results keep it: enough to group, ignore and show it."""

    kind: str
    fingerprint: str
    title: str = ""
    excerpt: str = ""
    ignored: bool = False

    @classmethod
    def from_crash(cls, c: Crash, max_lines: int = 60) -> CrashRef:
        return cls(c.kind, c.fingerprint, c.title, "\n".join(c.lines[:max_lines]), c.ignored)


@dataclass(frozen=True)
class TestResult:
    """One test of one run. *outcome* is the first attempt's; *retry_outcome* the last
    retry's (None when it was not retried)."""

    __test__ = False

    group: str
    name: str
    outcome: Outcome
    duration: float | None = None
    retry_outcome: Outcome | None = None
    retry_duration: float | None = None
    subtests: tuple[Subtest, ...] = ()
    crashes: tuple[CrashRef, ...] = ()
    log_path: str | None = None
    retry_log_path: str | None = None
    reproduce: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.name)

    @property
    def real_crashes(self) -> tuple[CrashRef, ...]:
        return tuple(c for c in self.crashes if not c.ignored)

    @property
    def crashed(self) -> bool:
        """A kernel splat not on the ignore list showed up in its output."""
        return bool(self.real_crashes)

    @property
    def final(self) -> Outcome:
        """The verdict after retries: a retry that passed wins."""
        if self.retry_outcome is None:
            return self.outcome
        return self.retry_outcome

    @property
    def is_flake(self) -> bool:
        """NIPA's definition: failed, passed on retry, and no crash."""
        return self.outcome in RETRY_ON and self.retry_outcome is Outcome.PASS and not self.crashed


@dataclass(frozen=True)
class RunResult:
    """One executor's run over one branch."""

    executor: str
    branch: str
    started: datetime
    finished: datetime | None
    status: str
    error: str = ""
    tests: tuple[TestResult, ...] = ()
    reproduce: str = ""
    kernel: str = ""
    config: str = ""
    log_dir: str | None = None
    link: str | None = None

    @property
    def outcome(self) -> Outcome:
        """ERROR for an infrastructure failure, else the worst final test outcome."""
        if self.status == RUN_ERROR:
            return Outcome.ERROR
        if self.status == RUN_RUNNING:
            return Outcome.PENDING
        return worst((t.final for t in self.tests), default=Outcome.SKIP)


class Executor(Protocol):
    """Runs *tests* on the checked-out branch in *worktree*, logs under *out_dir*."""

    name: str
    # (group, name) → seconds in the executor's last run: longest first (set by the caller)
    previous_durations: dict[tuple[str, str], float]

    def run(
        self, branch_name: str, worktree: Path, tests: Sequence[TestSpec], out_dir: Path
    ) -> RunResult: ...


# -- KTAP stream → subtests ----------------------------------------------------------------


class SubtestCollector:
    """The ``on_test`` of a streaming KTAP parse: keeps each completed test as a `Subtest`
    row (the parser keeps nothing), named by its path. Tests come in post-order (a block
    after its subtests); `subtests()` gives them in pre-order, unnamed ones as "#<number>".
    The kselftest runner wraps one program's output in a "selftests: dir: prog" node,
    which is left out: its children are the test's own subtests."""

    def __init__(self) -> None:
        # Completed tests waiting for their parent, per level: (path below it, node).
        self._levels: list[list[tuple[tuple[str, ...], Subtest]]] = [[], []]

    def __call__(self, level: int, node: TestNode) -> None:
        levels = self._levels
        while len(levels) <= level + 1:
            levels.append([])
        label = node.name or f"#{node.number}"
        row = Subtest("", 0, label, node.outcome, node.duration)
        kids = levels[level + 1]
        bucket = levels[level]
        bucket.append(((label,), row))
        if kids:
            bucket.extend(((label, *path), sub) for path, sub in kids)
            levels[level + 1] = []

    def subtests(self) -> tuple[Subtest, ...]:
        rows = self._levels[1]
        tops = [path for path, _ in rows if len(path) == 1]
        skip = 1 if len(tops) == 1 and _RUNNER_NODE.fullmatch(rows[0][1].name) else 0
        return tuple(
            replace(sub, path="/".join(path[skip:]), depth=len(path) - skip)
            for path, sub in rows[skip:]
        )


def merge_retry(first: Iterable[Subtest], retry: Iterable[Subtest]) -> tuple[Subtest, ...]:
    """The first attempt's subtests with each one's retry outcome filled in (by path), as
    NIPA merges them. Subtests only the retry reported are left out: the first attempt
    defines the test's shape."""
    again = {s.path: s for s in retry}
    return tuple(
        s if s.path not in again else replace(s, retry_outcome=again[s.path].outcome) for s in first
    )
