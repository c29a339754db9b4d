"""The Patchwork `contest` check: what the branch tests say about each series in it. Pure.

For one test branch, the newest run of each executor is summarised against the previous
branch of the same stream (its baseline):

* a test failing here (after retries, or with a kernel splat) that did not fail in the
  baseline, or did not exist there, is a **regression**: the check fails;
* one failing in both is a **known failure**: warning;
* without a baseline run of that executor the failure is **unverified**: warning;
* failed-then-passed-on-retry without a crash is **flaky**: mentioned, not held against it;
* a run whose status is "error" (base build broken, VM never booted, executor lost) is
  **excluded**: at most it turns success into a warning, and alone it leaves the check
  pending, with "infrastructure error: ..." in the description. It never fails the check.

A failure is then weighed (`reconsider`, with the excuses service/verdicts.py finds): a
test whose history makes it **known flaky** is a warning with the numbers; one the
expectations file expects is **expected** and does not count. A test failing on the
previous branch too that now fails in new subtests is a regression of those subtests.

Each series of the branch then reads the regressions as its culprit search says
(`attribute`, service/culprits.py): the series the bisection names fails, with the probes
as evidence; every other series reads that test as "broken by series N", which does not
count against it; a test that fails at the base too is a warning for all (broken before
the branch); while the search runs, or when it could not tell, the check is pending. No
series reads `fail` without a search that names it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from patchci.executor.base import RUN_DONE, RUN_ERROR, RUN_RUNNING, RunResult, TestResult
from patchci.model import Outcome
from patchci.report.patchwork import CheckPost, one_line

CONTEXT = "contest"
SUCCESS, WARNING, FAIL, PENDING = "success", "warning", "fail", "pending"
REGRESSION, KNOWN, UNVERIFIED, FLAKY = "regression", "known", "unverified", "flaky"
# What a failure becomes once weighed against its history and the expectations file.
KNOWN_FLAKY, EXPECTED = "known-flaky", "expected"
# What a regression becomes for one series once attributed (see `attribute`).
BLAMED, UPSTREAM, SEARCHING = "blamed", "upstream", "searching"
INFRA_PREFIX = "infrastructure error: "
# NIPA's codes: a lower code is a better result ("if we pass once, we pass").
_RANK = {SUCCESS: 0, WARNING: 3, FAIL: 4}


@dataclass(frozen=True)
class SeriesRef:
    series_id: int
    patch_ids: tuple[int, ...]


@dataclass(frozen=True)
class Finding:
    executor: str
    group: str
    name: str
    kind: str  # regression | known | unverified | flaky | blamed | upstream | searching
    outcome: Outcome  # ... | known-flaky | expected
    note: str = ""  # the evidence: of an attribution, a flake verdict, an expectation
    subtests: tuple[str, ...] = ()  # the failing subtests that make it what it is

    @property
    def label(self) -> str:
        return f"{self.group}/{self.name}"


@dataclass(frozen=True)
class ContestSummary:
    branch: str
    state: str  # a Patchwork state
    description: str
    tests: int
    findings: tuple[Finding, ...] = ()
    infra_errors: tuple[str, ...] = ()  # "<executor>: <reason>"
    pending: tuple[str, ...] = ()  # executors still running or not heard from
    warnings: int = 0  # tests that warned or could not run (ERROR)

    def of_kind(self, kind: str) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.kind == kind)


def failed(t: TestResult) -> bool:
    """Still failing after retries, or crashed the kernel (a splat is a bug even when the
    retry passed)."""
    return t.final.is_patch_failure or t.crashed


def failing_subtests(t: TestResult) -> tuple[str, ...]:
    """The paths of the subtests failing after retries, leaves only (a parent fails
    because a child does)."""
    bad = [s.path for s in t.subtests if (s.retry_outcome or s.outcome).is_patch_failure]
    return tuple(p for p in bad if not any(q.startswith(p + "/") for q in bad))


def newest_runs(runs: Iterable[RunResult]) -> dict[str, RunResult]:
    """The newest run of each executor."""
    out: dict[str, RunResult] = {}
    for r in sorted(runs, key=lambda r: r.started):
        out[r.executor] = r
    return out


def _classify(run: RunResult, baseline: RunResult | None) -> tuple[list[Finding], int]:
    before = {t.key: t for t in baseline.tests} if baseline is not None else None
    findings: list[Finding] = []
    warnings = 0
    for t in run.tests:
        if t.is_flake:
            findings.append(Finding(run.executor, t.group, t.name, FLAKY, t.outcome))
            continue
        if not failed(t):
            warnings += t.final in (Outcome.WARN, Outcome.ERROR)
            continue
        outcome = Outcome.CRASH if t.crashed else t.final
        subs = failing_subtests(t)
        if before is None:
            kind = UNVERIFIED
        else:
            old = before.get(t.key)
            kind = KNOWN if old is not None and failed(old) else REGRESSION
            if kind == KNOWN and old is not None and old.subtests and not t.crashed:
                # Failing before too, but now also in subtests that did not fail then:
                # those are a regression of their own.
                new = tuple(p for p in subs if p not in set(failing_subtests(old)))
                if new:
                    kind, subs = REGRESSION, new
        findings.append(Finding(run.executor, t.group, t.name, kind, outcome, subtests=subs))
    return findings, warnings


def summarise(
    branch: str,
    runs: Sequence[RunResult],
    previous: Sequence[RunResult] | None = None,
    required: Sequence[str] = (),
) -> ContestSummary:
    """The contest verdict of *branch* from its *runs*, against the *previous* branch's
    runs (None: no previous branch known). Executors in *required* that have not reported
    keep the check pending."""
    base = {e: r for e, r in newest_runs(previous or ()).items() if r.status == RUN_DONE}
    findings: list[Finding] = []
    infra: list[str] = []
    pending: list[str] = []
    tests = warnings = 0
    current = newest_runs(runs)
    for executor, run in sorted(current.items()):
        if run.status == RUN_ERROR:
            infra.append(f"{executor}: {run.error or 'run failed'}")
        elif run.status == RUN_RUNNING:
            pending.append(executor)
        else:
            found, warned = _classify(run, base.get(executor) if previous is not None else None)
            findings += found
            warnings += warned
            tests += len(run.tests)
    pending += [e for e in required if e not in current]
    done = any(r.status == RUN_DONE for r in current.values())
    state = _state(findings, infra, pending, warnings, done)
    summary = ContestSummary(
        branch, state, "", tests, tuple(findings), tuple(infra), tuple(pending), warnings
    )
    return ContestSummary(**{**summary.__dict__, "description": describe(summary)})


@dataclass(frozen=True)
class Attribution:
    """What the culprit search of one regression says: *status* as analysis.bisect's
    (running, culprit, base, inconclusive, budget), *evidence* its probes in one line."""

    status: str
    culprit: int | None = None
    evidence: str = ""
    reason: str = ""


def attribute(
    summary: ContestSummary, series_id: int,
    searches: Mapping[tuple[str, str, str], Attribution],
) -> ContestSummary:  # fmt: skip
    """*summary* as series *series_id* reads it: each regression by its search, keyed by
    (executor, group, name). One without a search is still being searched."""
    out = []
    for f in summary.findings:
        if f.kind != REGRESSION:
            out.append(f)
            continue
        a = searches.get((f.executor, f.group, f.name))
        if a is None or a.status not in ("culprit", "base"):
            why = a.reason if a is not None and a.reason else "bisecting"
            out.append(replace(f, kind=SEARCHING, note=why))
        elif a.status == "base":
            out.append(replace(f, kind=UPSTREAM, note=a.reason))
        elif a.culprit == series_id:
            out.append(replace(f, note=f"bisected: {a.evidence}"))
        else:
            out.append(replace(f, kind=BLAMED, note=f"broken by series {a.culprit}"))
    state = _state(out, summary.infra_errors, summary.pending, summary.warnings,
                   summary.state != PENDING or bool(summary.tests))  # fmt: skip
    mine = replace(summary, findings=tuple(out), state=state)
    return replace(mine, description=describe(mine))


@dataclass(frozen=True)
class Excuse:
    """Why a failing test does not count against the branch: *kind* KNOWN_FLAKY (its
    history says it fails like this now and then) or EXPECTED (the expectations file says
    so), or REGRESSION to keep it one with *note* as its evidence (flaky, but worse)."""

    kind: str
    note: str


def reconsider(
    summary: ContestSummary, excuses: Mapping[tuple[str, str, str], Excuse]
) -> ContestSummary:
    """*summary* with each failure that has an excuse, keyed by (executor, group, name),
    re-read as the excuse says. A crash is never excused."""
    out = []
    for f in summary.findings:
        e = excuses.get((f.executor, f.group, f.name))
        if e is None or f.outcome is Outcome.CRASH or f.kind not in _EXCUSABLE:
            out.append(f)
        elif e.kind == REGRESSION:
            out.append(replace(f, note=e.note) if f.kind == REGRESSION else f)
        else:
            out.append(replace(f, kind=e.kind, note=e.note))
    state = _state(out, summary.infra_errors, summary.pending, summary.warnings,
                   summary.state != PENDING or bool(summary.tests))  # fmt: skip
    mine = replace(summary, findings=tuple(out), state=state)
    return replace(mine, description=describe(mine))


_EXCUSABLE = (REGRESSION, KNOWN, UNVERIFIED, FLAKY)


def _state(
    findings: Sequence[Finding], infra: Sequence[str], pending: Sequence[str], warnings: int,
    done: bool,
) -> str:  # fmt: skip
    kinds = {f.kind for f in findings}
    if REGRESSION in kinds:
        return FAIL
    if pending or not done or SEARCHING in kinds:
        return PENDING
    if kinds & {KNOWN, UNVERIFIED, UPSTREAM, KNOWN_FLAKY} or infra or warnings:
        return WARNING
    return SUCCESS


def describe(s: ContestSummary) -> str:
    """One line for Patchwork: branch, counts, the first regressions, infra errors."""
    parts = [f"tests: {s.tests}"]
    for kind, label in (
        (REGRESSION, "regressions"), (SEARCHING, "regressions being bisected"),
        (BLAMED, "broken by another series"), (UPSTREAM, "failing at the base too"),
        (KNOWN, "known failures"), (UNVERIFIED, "failures without baseline"), (FLAKY, "flaky"),
        (KNOWN_FLAKY, "known flaky"), (EXPECTED, "expected"),
    ):  # fmt: skip
        n = len(s.of_kind(kind))
        if n:
            parts.append(f"{label}: {n}")
    if s.warnings:
        parts.append(f"warnings: {s.warnings}")
    if s.pending:
        parts.append(f"waiting for: {', '.join(s.pending)}")
    text = f"{s.branch} ({', '.join(parts)})"
    regressions = s.of_kind(REGRESSION)
    if regressions:
        text += ": " + ", ".join(_noted(f) for f in regressions[:5])
    others = [*s.of_kind(SEARCHING), *s.of_kind(BLAMED), *s.of_kind(UPSTREAM),
              *s.of_kind(KNOWN_FLAKY)]  # fmt: skip
    if others:
        text += ("; " if regressions else ": ") + ", ".join(_noted(f) for f in others[:5])
    if s.infra_errors:
        infra = INFRA_PREFIX + "; ".join(s.infra_errors)
        text = infra + " | " + text if s.tests == 0 else text + " | " + infra
    return one_line(text)


def render_contest(
    summary: ContestSummary, series: Sequence[SeriesRef], target_url: str | None = None
) -> list[CheckPost]:
    """One `contest` check per patch of every series in the branch."""
    return [
        CheckPost(pid, CONTEXT, summary.state, summary.description, target_url)
        for s in series
        for pid in s.patch_ids
    ]


def _noted(f: Finding) -> str:
    subs = ", ".join(p.rsplit("/", 1)[-1] for p in f.subtests[:3])  # the leaf: short
    label = f.label + (f" [{subs}{', …' if len(f.subtests) > 3 else ''}]" if subs else "")
    return f"{label} ({f.note})" if f.note else label


def upgrades(old: ContestSummary | None, new: ContestSummary) -> bool:
    """Whether a series' check should move from *old* (a previous branch's verdict) to
    *new*, NIPA's rule: pending never replaces a real result, a real result replaces
    pending, a better one replaces a worse one ("if we pass once, we pass"), and with equal
    states the verdict over more tests wins."""
    if old is None or old.state == PENDING:
        return True
    if new.state == PENDING:
        return False
    if _RANK[new.state] != _RANK[old.state]:
        return _RANK[new.state] < _RANK[old.state]
    return new.tests > old.tests
