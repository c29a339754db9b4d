"""One series through route → apply → checks, independent of where it came from.

Used by `patchci check` (local), the daemon and the demo. Storage and reporting are the
caller's business: this returns the results.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from patchci.apply import ApplyStatus, apply_result, apply_series
from patchci.checks.base import Check, CheckContext, run_check
from patchci.errors import InfraError
from patchci.git import Git
from patchci.model import CheckResult, Outcome, Scope, Series, Tree
from patchci.routing import Route, route_series
from patchci.sandbox import Sandbox

log = logging.getLogger(__name__)

ChecksFor = Callable[[Tree], Sequence[Check]]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Workspace:
    """Where a tree's base comes from and where series are applied. The daemon's fetches
    trees when due (trees.TreeSync) and keeps a persistent worktree per check worker under
    *worktrees*/<tree>; the default uses the tree as it is, in a scratch worktree."""

    base: Callable[[Tree], str] = lambda tree: tree.base_ref
    worktrees: Path | None = None

    def reuse(self, tree: Tree) -> Path | None:
        return self.worktrees / tree.name if self.worktrees else None


@dataclass(frozen=True)
class SeriesVerdict:
    route: Route
    tree: Tree | None
    results: tuple[CheckResult, ...]

    @property
    def outcome(self) -> Outcome:
        from patchci.model import worst

        return worst((r.outcome for r in self.results), default=Outcome.PASS)


def _tree_selection(
    route: Route, duration: float, series: Series, trees: Sequence[Tree], log_dir: Path
) -> CheckResult:
    """The routing decision, with a log that says how it was reached (the check's link)."""
    # Not for this CI: nothing to report on Patchwork (skip is never posted).
    outcome = (Outcome.PASS if route.tree
               else Outcome.SKIP if route.method == "not-local" else Outcome.WARN)  # fmt: skip
    lines = [f"series: {series.key} ({series.name})", *(f"subject: {x}" for x in series.subjects),
             f"decision: {route.tree or 'no tree'} by {route.method}"
             f"{' (guessed)' if route.guessed else ''}", f"reason: {route.reason}",
             "trees configured:"]  # fmt: skip
    lines += [f"  {t.name}: tags {', '.join(t.tags) or t.name}; paths {', '.join(t.paths) or '-'}"
              for t in trees]  # fmt: skip
    path = log_dir / "tree_selection.log"
    try:
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    except OSError as e:  # the decision stands without its log
        log.warning("series %s: cannot write %s: %s", series.key, path, e)
        return CheckResult("tree_selection", outcome, route.reason, duration=duration)
    return CheckResult("tree_selection", outcome, route.reason, duration=duration,
                       log_path=str(path))  # fmt: skip


def _applies_probe(series: Series, workdir: Path, ws: Workspace) -> Callable[[Tree], bool]:
    """For routing's last resort: does the series apply to this tree?"""

    def applies(tree: Tree) -> bool:
        # An InfraError (a fetch failed) propagates: "does not apply" would be a guess.
        base = ws.base(tree)
        with apply_series(Git(Path(tree.path)), base, series, workdir,
                          reuse=ws.reuse(tree)) as applied:  # fmt: skip
            if applied.status is ApplyStatus.ERROR:
                raise InfraError(applied.output.strip() or f"cannot apply to {tree.name}")
            return applied.status in (ApplyStatus.APPLIED, ApplyStatus.ALREADY_APPLIED)

    return applies


def _fixes_probe(ws: Workspace) -> Callable[[Tree, Sequence[str]], bool]:
    """For routing by `Fixes:`: does the tree's (freshly fetched) base have every commit?"""

    def has_commits(tree: Tree, shas: Sequence[str]) -> bool:
        git = Git(Path(tree.path))
        base = ws.base(tree)  # an InfraError (a fetch failed) propagates: not a guess
        for sha in shas:
            full = git.rev_parse(sha)
            if full is None or not git.is_ancestor(full, base):
                return False
        return True

    return has_commits


def check_series(
    series: Series,
    trees: Sequence[Tree],
    checks_for: ChecksFor,
    log_dir: Path,
    *,
    progress: Progress | None = None,
    sandbox: Sandbox | None = None,
    workspace: Workspace | None = None,
) -> SeriesVerdict:
    """Route, apply and check *series*. Never raises for the patch's faults; InfraError
    from fetching the tree or setting up a worktree becomes an `apply` ERROR result."""
    ws = workspace or Workspace()
    say = progress or (lambda _msg: None)
    log_dir.mkdir(parents=True, exist_ok=True)
    work = log_dir / "work"
    t0 = time.monotonic()
    say("routing")
    try:
        route = route_series(series, trees, _applies_probe(series, work, ws),
                             has_commits=_fixes_probe(ws))  # fmt: skip
    except InfraError as e:  # ours: checked again later, never a routing verdict
        log.error("series %s: routing infrastructure error: %s", series.key, e)
        route = Route(None, f"could not route (infrastructure): {e}", "none", False)
        err = CheckResult("apply", Outcome.ERROR, f"infrastructure error (not the patch): {e}")
        return SeriesVerdict(route, None, (err,))
    results: list[CheckResult] = [
        _tree_selection(route, time.monotonic() - t0, series, trees, log_dir)
    ]
    tree = next((t for t in trees if t.name == route.tree), None)
    log.info("series %s: tree_selection %s (%s)", series.key, route.tree, route.reason)
    if tree is None:
        return SeriesVerdict(route, None, tuple(results))
    checks = list(checks_for(tree))
    base: str | None = None
    try:
        say(f"fetching {tree.name}" if tree.url or tree.remote else f"applying to {tree.name}")
        base = ws.base(tree)
        with apply_series(Git(Path(tree.path)), base, series, work,
                          reuse=ws.reuse(tree)) as applied:  # fmt: skip
            base = applied.base or base
            results.append(apply_result(applied, tree.name, log_dir))
            ok = applied.status is ApplyStatus.APPLIED
            results.extend(
                _run_checks(
                    series,
                    tree,
                    route,
                    checks,
                    applied.worktree,
                    applied.base,
                    applied.commits if ok else (),
                    log_dir,
                    say,
                    sandbox,
                )
            )
    except InfraError as e:
        log.error("series %s: apply infrastructure error: %s", series.key, e)
        results.append(
            CheckResult("apply", Outcome.ERROR, f"infrastructure error (not the patch): {e}")
        )
    return SeriesVerdict(route, tree, tuple(_with_base(r, base) for r in results))


def _with_base(r: CheckResult, base: str | None) -> CheckResult:
    """Every result after routing records the base commit it was made on."""
    if base is None or r.check == "tree_selection" or any(k == "base" for k, _ in r.details):
        return r
    return dataclasses.replace(r, details=(*r.details, ("base", base)))


def _run_checks(
    series: Series,
    tree: Tree,
    route: Route,
    checks: Sequence[Check],
    worktree: Path,
    base: str,
    commits: tuple[str, ...],
    log_dir: Path,
    say: Progress,
    sandbox: Sandbox | None = None,
) -> list[CheckResult]:
    """Patch-major: check out each applied patch once and run every patch check on it."""
    out: list[CheckResult] = []
    git = Git(worktree)

    def ctx(idx: int | None) -> CheckContext:
        return CheckContext(series, tree, worktree, base, commits, idx, {}, log_dir,
                            sandbox=sandbox, route=route)  # fmt: skip

    if series.pull_url:  # NIPA runs only the checks marked for pull requests on a pull
        out += [CheckResult(c.name, Outcome.SKIP, "not run on a pull request (it reads patch "
                            "mails; a pull request has none)") for c in checks
                if not c.pull_requests]  # fmt: skip
        checks = [c for c in checks if c.pull_requests]
    runnable = [c for c in checks if commits or not c.needs_apply]
    patch_checks = [c for c in runnable if c.scope is Scope.PATCH]
    series_checks = [c for c in runnable if c.scope is Scope.SERIES]
    if patch_checks and commits:
        for idx, commit in enumerate(commits):
            git.run("checkout", "--quiet", "--detach", commit)
            for chk in patch_checks:
                say(f"patch {idx + 1}/{len(commits)}: {chk.name}")
                out.append(run_check(chk, ctx(idx)))
    if commits:
        git.run("checkout", "--quiet", "--detach", commits[-1])
    for chk in series_checks:
        say(f"series: {chk.name}")
        out.append(run_check(chk, ctx(None)))
    return out
