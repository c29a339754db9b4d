"""The check contract and the runner that keeps one bad check from hurting the others.

A check declares its name, scope (patch or series), the tools it needs and a default
timeout, and implements `run(ctx) -> Verdict`. It runs subprocesses only through
`ctx.run(...)`, which charges them to the check's time budget. The runner turns a missing
tool into SKIP, a crash or a hang into ERROR (ours, never the patch's), and writes the log.
"""

from __future__ import annotations

import fnmatch
import logging
import shlex
import shutil
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from patchci import proc
from patchci.errors import CommandTimeout, ConfigError, InfraError, ToolMissing
from patchci.git import touched
from patchci.model import CheckResult, Outcome, Patch, Scope, Series, Tree
from patchci.routing import Route
from patchci.sandbox import Sandbox

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """What a check says: outcome, the one-line description Patchwork shows, a full log."""

    outcome: Outcome
    description: str
    log: str = ""
    reproducer: str | None = None


@dataclass
class CheckContext:
    """Everything a check may look at. The worktree is a scratch one with HEAD at `commit`
    (the patch under test for patch scope, the last patch for series scope)."""

    series: Series
    tree: Tree
    worktree: Path
    base: str
    commits: tuple[str, ...]
    patch_index: int | None
    options: Mapping[str, Any]
    log_dir: Path
    deadline: float = field(default_factory=lambda: time.monotonic() + 600)
    # Where the commands of a check run: they run the patched tree's code (its Makefile,
    # its scripts). None: our own environment (tests of the checks alone).
    sandbox: Sandbox | None = None
    # The routing decision (series_format warns on a guessed tree, as NIPA does).
    route: Route | None = None

    @property
    def patch(self) -> Patch | None:
        if self.patch_index is None:
            return None
        return self.series.patches[self.patch_index]

    @property
    def commit(self) -> str:
        if self.patch_index is None:
            return self.commits[-1] if self.commits else self.base
        return self.commits[self.patch_index]

    @property
    def parent(self) -> str:
        """The commit before this patch (or before the series for series scope)."""
        if self.patch_index is None or self.patch_index == 0:
            return self.base
        return self.commits[self.patch_index - 1]

    def reproducer(self, argv: Sequence[str]) -> str:
        """What a person pastes to run *argv* as the check did: a fresh worktree of the
        tree at this commit (the scratch one is gone once the check ends), every word
        quoted (a worktree named after a Message-Id, `wt-<...>`, was a bash syntax error)."""
        tree = shlex.quote(self.tree.path)
        return (f'wt=$(mktemp -d) && git -C {tree} worktree add --detach "$wt" {self.commit}'
                f' && cd "$wt" && {shlex.join(argv)}')  # fmt: skip

    def remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 0.001)

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        input: bytes | None = None,
        timeout: float | None = None,
        writable: Sequence[Path] = (),
    ) -> proc.Completed:
        """Run a command of the check, in the sandbox: it sees the worktree read-only (a
        patched script must not change what the next check reads) and the repository's
        objects, and may write to the check's log directory and *writable*. Without
        bwrap the worktree stays writable, and is cleaned at its next reset."""
        budget = self.remaining() if timeout is None else min(timeout, self.remaining())
        isolated = self.sandbox is not None and self.sandbox.isolated
        if not isolated:
            touched(self.worktree)
        return proc.run(
            argv, cwd=cwd or self.worktree, env=env, input=input, timeout=budget,
            sandbox=self.sandbox, writable=(self.log_dir, *writable),
            readable=self._git_dirs(), read_only=(self.worktree,) if isolated else (),
        )  # fmt: skip

    def _git_dirs(self) -> tuple[Path, ...]:
        """The repository a worktree's .git file points to (its objects, read-only)."""
        dot = self.worktree / ".git"
        if not dot.is_file():
            return ()
        text = dot.read_text(errors="replace").strip()
        if not text.startswith("gitdir:"):
            return ()
        gitdir = (self.worktree / text.removeprefix("gitdir:").strip()).resolve()
        common = gitdir.parent.parent if gitdir.parent.name == "worktrees" else gitdir
        return (common,)


class CheckOptions(BaseModel):
    """The options of a check kind, typed: an unknown key (`targest`) or a wrong type
    (`max_patches = "many"`, `args = "--strict"`) is a configuration error found by
    `config check`, not when a series runs. Subclasses add their fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_options(
    cls: type[Check], options: Mapping[str, Any] | None, name: str | None = None
) -> CheckOptions:
    """*options* validated against *cls*.Options; ConfigError naming the key otherwise."""
    from patchci.config import format_validation_error

    try:
        return cls.Options.model_validate(dict(options or {}))
    except ValidationError as e:
        raise ConfigError(f"checks.{name or cls.name}.options.{format_validation_error(e)}") from e


class Check:
    """Base class for checks; subclasses set the class attributes and implement run()."""

    Options: ClassVar[type[CheckOptions]] = CheckOptions
    name: ClassVar[str] = ""
    scope: ClassVar[Scope] = Scope.PATCH
    tools: ClassVar[tuple[str, ...]] = ()
    default_timeout: ClassVar[float] = 300.0
    needs_apply: ClassVar[bool] = True
    description: ClassVar[str] = ""
    # Run on a pull request's merge too (NIPA's "pull-requests": true); the others look at
    # a patch mail, which a pull request does not have.
    pull_requests: ClassVar[bool] = False

    def __init__(self, options: Mapping[str, Any] | None = None, timeout: float | None = None):
        self.opts: CheckOptions = parse_options(type(self), options)
        self.options: dict[str, Any] = dict(options or {})
        self.timeout = float(timeout if timeout is not None else self.default_timeout)
        self.when_paths: tuple[str, ...] = ()  # `[checks.X] when_paths`: run only for these

    def off_paths(self, ctx: CheckContext) -> str | None:
        """Why the check does not run here: the patch (the series, for a series check)
        touches none of `when_paths`; None when it does, or when there are none."""
        if not self.when_paths:
            return None
        patches = ctx.series.patches if ctx.patch_index is None else (ctx.patch,)
        files = [f for p in patches if p is not None for f in p.files]
        if any(path_matches(f, self.when_paths) for f in files):
            return None
        what = "series" if ctx.patch_index is None else "patch"
        return f"not run: the {what} touches none of {', '.join(self.when_paths)}"

    def missing_tools(self, ctx: CheckContext) -> list[str]:
        """Tools not found, either on PATH or as a path relative to the worktree."""
        out = []
        for t in self.tools:
            if "/" in t:
                if not (ctx.worktree / t).exists():
                    out.append(t)
            elif shutil.which(t) is None:
                out.append(t)
        return out

    def applies(self, ctx: CheckContext) -> str | None:
        """Return a reason to skip this check for *ctx*, or None to run it."""
        return None

    def run(self, ctx: CheckContext) -> Verdict:  # pragma: no cover - abstract
        raise NotImplementedError


def path_matches(path: str, patterns: Sequence[str]) -> bool:
    """*path* under a "dir/" prefix or matching a glob of *patterns* (`*` crosses "/")."""
    return any(path.startswith(p) if p.endswith("/") else fnmatch.fnmatchcase(path, p)
               for p in patterns)  # fmt: skip


def run_check(check: Check, ctx: CheckContext) -> CheckResult:
    """Run *check* with its timeout; never raises for anything the check does."""
    start = time.monotonic()
    ctx.deadline = start + check.timeout
    where = "series" if ctx.patch_index is None else f"patch {ctx.patch_index + 1}"
    log_path = ctx.log_dir / (
        f"{check.name}.log"
        if ctx.patch_index is None
        else f"{ctx.patch_index + 1}-{check.name}.log"
    )
    verdict: Verdict
    try:
        off = check.off_paths(ctx)
        missing = [] if off else check.missing_tools(ctx)
        reason = off or (None if missing else check.applies(ctx))
        if missing:
            verdict = Verdict(Outcome.SKIP, f"skipped: missing tool {', '.join(missing)}")
        elif reason is not None:
            verdict = Verdict(Outcome.SKIP, reason)
        else:
            verdict = check.run(ctx)
    except CommandTimeout as e:
        verdict = Verdict(
            Outcome.ERROR,
            f"check timed out after {check.timeout:g}s (infrastructure)",
            f"{e}\n--- stdout ---\n{e.stdout}\n--- stderr ---\n{e.stderr}",
        )
    except ToolMissing as e:
        verdict = Verdict(Outcome.SKIP, f"skipped: {e}")
    except InfraError as e:
        # Ours, said in one line; the command output is in the message's own log, not a
        # Python traceback (which hid the cause: "flex: not found").
        verdict = Verdict(Outcome.ERROR, f"infrastructure error: {e}", getattr(e, "log", ""))
    except Exception as e:  # a crashing check must not take the series down
        log.exception("check %s crashed on series %s %s", check.name, ctx.series.key, where)
        verdict = Verdict(
            Outcome.ERROR, f"check crashed: {type(e).__name__}: {e}", traceback.format_exc()
        )
    duration = time.monotonic() - start
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(
        f"check: {check.name}\nseries: {ctx.series.key} on {ctx.series.source} "
        f"(patchci's logs: {'/'.join(ctx.log_dir.parts[-2:])})\nscope: {where}\n"
        f"outcome: {verdict.outcome.value}\ndescription: {verdict.description}\n"
        f"duration: {duration:.2f}s\n\n{verdict.log}",
        encoding="utf-8",
    )
    log.info(
        "series %s %s check %s: %s (%s)",
        ctx.series.key,
        where,
        check.name,
        verdict.outcome.value,
        verdict.description,
    )
    return CheckResult(
        check=check.name,
        outcome=verdict.outcome,
        description=verdict.description,
        patch_index=ctx.patch_index,
        log_path=str(log_path),
        duration=duration,
        reproducer=verdict.reproducer,
    )
