"""Weighing a branch's failures before they count against it: each failing test (or its
failing subtests) against its own history on that executor (analysis.flakes.judge) and
against the maintainer's expectations file (analysis.expectations). What comes out are
report.contest Excuses; `contest_summary` (service/runs.py) applies them.

An expected failure is matched first: the maintainer said so. Then the history: a test
whose failing subtests are all known flaky (or, without subtests, the test itself) is a
known flake, a warning; known flaky but failing more than it used to (Fisher's exact test)
stays a regression, with that as its evidence.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

from patchci.analysis import expectations as xp
from patchci.analysis.flakes import KNOWN_FLAKY as JUDGED_FLAKY
from patchci.analysis.flakes import WORSE, FlakeRule, FlakeVerdict, HistoryEntry, judge
from patchci.config import Settings, VerdictConfig
from patchci.db.results import ResultsStore
from patchci.errors import ConfigError
from patchci.executor.base import TestResult
from patchci.git import Git
from patchci.report.contest import (
    EXPECTED,
    FLAKY,
    KNOWN_FLAKY,
    REGRESSION,
    ContestSummary,
    Excuse,
    newest_runs,
)

log = logging.getLogger(__name__)

_LAST_GOOD: dict[str, tuple[float, xp.Expectations]] = {}
_MAKEFILE_VAR = re.compile(r"^(VERSION|PATCHLEVEL|SUBLEVEL|EXTRAVERSION)\s*=\s*(\S*)", re.M)


def rule_of(v: VerdictConfig) -> FlakeRule:
    return FlakeRule(window=v.flaky_window, min_runs=v.flaky_min_runs,
                     min_starts=v.flaky_min_starts, stable_runs=v.flaky_stable_runs,
                     alpha=v.flaky_alpha)  # fmt: skip


def expectations_of(settings: Settings | None) -> xp.Expectations:
    """The configured expectations file, read again when it changed. A file broken after
    start-up keeps the last good version in force (and says so): dropping every entry
    would turn expected failures into regressions."""
    path = settings.verdicts.expectations if settings is not None else None
    if not path:
        return xp.Expectations()
    p = Path(path).expanduser()
    try:
        mtime = p.stat().st_mtime
        cached = _LAST_GOOD.get(str(p))
        if cached is not None and cached[0] == mtime:
            return cached[1]
        loaded = xp.load(p)
    except (ConfigError, OSError) as e:
        cached = _LAST_GOOD.get(str(p))
        if cached is None:
            raise ConfigError(f"verdicts.expectations: {e}") from e
        log.error("%s; the version read before stays in force", e)
        return cached[1]
    _LAST_GOOD[str(p)] = (mtime, loaded)
    return loaded


def kernel_version(git: Git, rev: str) -> str | None:
    """The kernel version of the tree at *rev*, from its top Makefile ("6.12.0-rc4")."""
    res = git.run("show", f"{rev}:Makefile", check=False)
    if not res.ok:
        return None
    found: dict[str, str] = dict(_MAKEFILE_VAR.findall(res.stdout[:4096]))
    if not found.get("VERSION", "").isdigit():
        return None
    v = f"{found['VERSION']}.{found.get('PATCHLEVEL') or 0}.{found.get('SUBLEVEL') or 0}"
    return v + found.get("EXTRAVERSION", "")


def scope_of(
    settings: Settings | None, results: ResultsStore, branch: str, executor: str = ""
) -> xp.Scope:
    """Where *executor*'s results on *branch* come from, as expectations are matched: the
    stream's tree and the kernel version of the branch head."""
    row = results.branch(branch)
    ss = next((s for s in settings.streams if s.name == row.stream), None) if settings else None
    if settings is None or ss is None:
        return xp.Scope("", row.stream, executor, None)
    tree = next((t for t in settings.trees if t.name == ss.tree), None)
    kernel = None
    if tree is not None and settings.tree_path(tree).is_dir():
        kernel = kernel_version(Git(settings.tree_path(tree)), row.head)
    return xp.Scope(ss.tree, row.stream, executor, kernel)


def _subtest_history(history: Sequence[TestResult], path: str) -> list[HistoryEntry]:
    out = []
    for h in history:
        s = next((s for s in h.subtests if s.path == path), None)
        if s is not None:
            out.append(HistoryEntry(s.outcome, s.retry_outcome))
    return out


def _judge_test(
    t: TestResult, subtests: Sequence[str], history: Sequence[TestResult], rule: FlakeRule
) -> Excuse | None:
    if not subtests or not any(h.subtests for h in history):
        # no subtests, or a history that never recorded any: the test as a whole
        return _excuse(judge([t], history, rule), "")
    verdicts = []
    for path in subtests:
        now = _subtest_history([t], path)
        verdicts.append((path, judge(now, _subtest_history(history, path), rule)))
    worse = [(p, v) for p, v in verdicts if v.kind == WORSE]
    if worse:
        return _excuse(worse[0][1], worse[0][0])
    if all(v.kind == JUDGED_FLAKY for _, v in verdicts):
        return Excuse(KNOWN_FLAKY, "; ".join(f"{p}: {v.evidence}" for p, v in verdicts[:3]))
    return None


def _excuse(v: FlakeVerdict, subtest: str) -> Excuse | None:
    where = f"{subtest}: " if subtest else ""
    if v.kind == WORSE:
        return Excuse(REGRESSION, where + v.evidence)
    if v.kind == JUDGED_FLAKY:
        return Excuse(KNOWN_FLAKY, where + v.evidence)
    return None


def excuses(
    summary: ContestSummary, results: ResultsStore, settings: Settings | None = None,
    *, today: date | None = None,
) -> dict[tuple[str, str, str], Excuse]:  # fmt: skip
    """The excuse of each failure of *summary* that has one."""
    todo = [f for f in summary.findings
            if f.kind in (REGRESSION, "known", "unverified", FLAKY)]  # fmt: skip
    if not todo:
        return {}
    verdicts = settings.verdicts if settings is not None else VerdictConfig()
    rule = rule_of(verdicts)
    expect = expectations_of(settings)
    today = today or datetime.now(UTC).date()
    where = scope_of(settings, results, summary.branch) if expect.entries else None
    runs = newest_runs(results.branch_results(summary.branch))
    out: dict[tuple[str, str, str], Excuse] = {}
    for f in todo:
        key = (f.executor, f.group, f.name)
        if where is not None:
            m = expect.match(replace(where, executor=f.executor), f.group, f.name, xp.FLAKY if f.kind == FLAKY else xp.FAIL,
                             f.subtests, today=today)  # fmt: skip
            if m is not None:
                out[key] = Excuse(EXPECTED, m.describe())
                continue
        run = runs.get(f.executor)
        t = next((t for t in run.tests if t.key == (f.group, f.name)), None) if run else None
        if t is None:
            continue
        history = results.prior_results(summary.branch, f.executor, f.group, f.name,
                                        rule.window)  # fmt: skip
        e = _judge_test(t, f.subtests if f.kind != FLAKY else (), history, rule)
        if e is not None:
            out[key] = e
    return out
