"""build_tools: the selftests a series touches still build, with no new warning, and the
build leaves no new untracked file behind (a binary missing from `.gitignore`).

NIPA's build_tools builds every selftest (minus a skip list) before and after the patch,
compares warning *counts* and counts `git status` untracked lines. Here the targets are
the selftest directories the series touches (a change under `include/` or `tools/include/`
builds `include_targets`), compared as warning *sets* as `build` does, and the untracked
files are named.

Options:
- `include_targets` (list, default `["net"]`): built when the series touches headers
  (`include/`, `tools/include/`, `tools/lib/`) but no selftest.
- `targets` (list): built always, besides the touched ones.
- `skip_targets` (list, default NIPA's: slow or rarely building ones).
- `jobs` (int, default: the number of CPUs); `build_dir` (path) as for `build`.
- `headers` (bool, default true): `make headers` first on a kernel tree (the selftests
  include the exported headers from `usr/include`).

The sources are mirrored into the build directory (only changed files rewritten, build
products kept between series). Before each build the mirror's untracked, not ignored files
are removed, so what remains after it is what that build left.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from patchci import buildlog
from patchci.buildlog import Diagnostic
from patchci.checks.base import Check, CheckContext, CheckOptions, Verdict
from patchci.checks.build import KERNEL_MARKER, BuildDir, _safe, default_build_dir, setup_failure
from patchci.errors import InfraError
from patchci.git import GIT_PREFIX, Git
from patchci.model import Outcome, Scope

SELFTESTS = "tools/testing/selftests/"
HEADER_DIRS = ("include/", "tools/include/", "tools/lib/")
# NIPA's SKIP_TARGETS: very slow, or they do not build on a plain host.
NIPA_SKIP = ("bpf", "dt", "kvm", "landlock", "livepatch", "lsm", "sched_ext", "user_events",
             "mm", "powerpc", "filesystems/mount-notify", "ublk", "sgx", "nolibc", "nsfs",
             "vfio", "x86")  # fmt: skip
MAX_NAMED = 20


class BuildToolsOptions(CheckOptions):
    include_targets: tuple[str, ...] = ("net",)
    targets: tuple[str, ...] = ()
    skip_targets: tuple[str, ...] = NIPA_SKIP
    jobs: int | None = Field(None, ge=1)
    build_dir: str | None = None
    headers: bool = True


def selftest_targets(
    files: Sequence[str], is_target: Callable[[str], bool], opts: BuildToolsOptions
) -> tuple[list[str], list[str]]:
    """The selftest TARGETS to build for *files* (the deepest directory of each file under
    tools/testing/selftests that *is_target*) and the ones skipped by `skip_targets`."""
    found: list[str] = []
    for f in files:
        if not f.startswith(SELFTESTS):
            continue
        parts = f[len(SELFTESTS) :].split("/")[:-1]
        for n in range(len(parts), 0, -1):
            cand = "/".join(parts[:n])
            if is_target(cand):
                found.append(cand)
                break
    if not found and any(f.startswith(HEADER_DIRS) for f in files):
        found += opts.include_targets
    found += opts.targets
    targets = list(dict.fromkeys(found))
    skipped = [t for t in targets if t in opts.skip_targets]
    return [t for t in targets if t not in skipped], skipped


@dataclass(frozen=True)
class ToolsBuild:
    commit: str
    returncode: int
    diagnostics: tuple[Diagnostic, ...]
    untracked: frozenset[str]
    output: str


class BuildTools(Check):
    Options = BuildToolsOptions
    opts: BuildToolsOptions
    name = "build_tools"
    scope = Scope.SERIES
    pull_requests = True
    tools = ("git", "make")
    default_timeout = 3600.0
    description = "The selftests it touches build, warn no more and leave no untracked file"

    def _targets(self, ctx: CheckContext) -> tuple[list[str], list[str]]:
        files = [f for p in ctx.series.patches for f in p.files]
        return selftest_targets(files, lambda t: _is_target(ctx, t), self.opts)

    def applies(self, ctx: CheckContext) -> str | None:
        targets, skipped = self._targets(ctx)
        if targets:
            return None
        if skipped:
            return f"not run: only skip_targets touched ({', '.join(skipped)})"
        return "not run: no selftest or tools header touched"

    def run(self, ctx: CheckContext) -> Verdict:
        targets, skipped = self._targets(ctx)
        opt_dir = self.opts.build_dir
        bd = BuildDir(Path(opt_dir).expanduser() / _safe(self.name) if opt_dir
                      else default_build_dir(ctx.tree.name, self.name))  # fmt: skip
        with bd.locked(ctx.deadline):
            return _Job(ctx, self.opts, bd, targets, skipped).run()


def _is_target(ctx: CheckContext, target: str) -> bool:
    """A selftest directory with a Makefile, at the series' head or its base."""
    path = f"{SELFTESTS}{target}/Makefile"
    git = Git(ctx.worktree, deadline=ctx.deadline)
    return any(git.run("cat-file", "-e", f"{c}:{path}", check=False).ok
               for c in (ctx.commit, ctx.base))  # fmt: skip


class _Job:
    def __init__(self, ctx: CheckContext, opts: BuildToolsOptions, bd: BuildDir,
                 targets: list[str], skipped: list[str]) -> None:  # fmt: skip
        self.ctx, self.opts, self.bd = ctx, opts, bd
        self.targets, self.skipped = targets, skipped
        self.git_dir = Git(ctx.worktree, deadline=ctx.deadline).common_dir()
        self.lines: list[str] = []
        self.kernel = (ctx.worktree / KERNEL_MARKER).is_file()
        self.jobs = opts.jobs or os.cpu_count() or 1

    def git(self, *args: str) -> list[str]:
        return [*GIT_PREFIX, f"--git-dir={self.git_dir}", f"--work-tree={self.bd.src}", *args]

    def run_in(self, argv: Sequence[str], label: str) -> tuple[int, str]:
        t0 = time.monotonic()
        home = self.bd.path / "home"
        home.mkdir(parents=True, exist_ok=True)
        env = {"HOME": str(home), "GIT_INDEX_FILE": str(self.bd.index)}
        res = self.ctx.run(argv, cwd=self.bd.src, env=env, writable=(self.bd.path,))
        self.lines.append(f"{label}: exit {res.returncode} in {time.monotonic() - t0:.1f}s")
        return res.returncode, res.output

    def checkout(self, commit: str) -> None:
        """The mirror at *commit*, without untracked files that are not ignored."""
        self.bd.src.mkdir(parents=True, exist_ok=True)
        rc, out = self.run_in(
            self.git("read-tree", "--reset", "-u", commit), f"checkout {commit[:12]}"
        )
        if rc != 0:
            raise InfraError(f"cannot check out {commit[:12]} in {self.bd.src}: {out}")
        rc, out = self.run_in(self.git("clean", "-ffdq"), "clean untracked files")
        if rc != 0:
            raise InfraError(f"cannot clean {self.bd.src}: {out}")

    def make_argv(self) -> list[str]:
        return ["make", f"-j{self.jobs}", "-C", SELFTESTS.rstrip("/"),
                f"TARGETS={' '.join(self.targets)}"]  # fmt: skip

    def build(self, commit: str, label: str, touch: Sequence[str] = ()) -> ToolsBuild:
        self.checkout(commit)
        for f in touch:  # rebuild what the series changes, so its old warnings print again
            p = self.bd.src / f
            if p.is_file():
                os.utime(p)
        if self.kernel and self.opts.headers:  # `headers` needs no .config
            rc, out = self.run_in(["make", f"-j{self.jobs}", "headers"], f"{label}: make headers")
            if rc != 0:
                raise InfraError(f"make headers failed at {commit[:12]}: {setup_failure(out)}")
        rc, output = self.run_in(self.make_argv(), f"{label} ({commit[:12]})")
        diags = buildlog.parse_diagnostics(output.splitlines(), src_root=str(self.bd.src))
        code, listed = self.run_in(self.git("ls-files", "--others", "--exclude-standard"),
                                   f"{label}: untracked files")  # fmt: skip
        if code != 0:
            raise InfraError(f"git ls-files failed in {self.bd.src}: {listed}")
        return ToolsBuild(commit, rc, tuple(diags), frozenset(listed.split()), output)

    def run(self) -> Verdict:
        ctx = self.ctx
        changed = Git(ctx.worktree, deadline=ctx.deadline).run(
            "diff", "--name-only", ctx.base, ctx.commit, "--").stdout.split()  # fmt: skip
        self.lines.append(f"targets: {' '.join(self.targets)}"
                          + (f" (skipped: {' '.join(self.skipped)})" if self.skipped else ""))  # fmt: skip
        self.lines.append(f"command: {shlex.join(self.make_argv())}")
        before = self.build(ctx.base, "before", touch=changed)
        after = self.build(ctx.commit, "after")
        return self.verdict(before, after)

    def verdict(self, before: ToolsBuild, after: ToolsBuild) -> Verdict:
        delta = buildlog.diff_warnings(before.diagnostics, after.diagnostics)
        dirt = sorted(after.untracked - before.untracked)
        body = ["\n".join(self.lines), ""]
        for title, diags in (("New warnings and errors", delta.new), ("Fixed", delta.fixed)):
            if diags:
                body += [f"{title} ({len(diags)}):", *map(buildlog.format_diagnostic, diags), ""]
        if dirt:
            body += [f"New untracked files after the build ({len(dirt)}), not in a .gitignore:",
                     *dirt[:MAX_NAMED * 10], ""]  # fmt: skip
        body += [f"--- last lines of the build at {after.commit[:12]} ---",
                 *after.output.splitlines()[-60:]]  # fmt: skip
        log = "\n".join(body) + "\n"
        repro = self.ctx.reproducer(self.make_argv())
        problems = []
        if after.returncode != 0 and before.returncode == 0:
            first = next((buildlog.format_diagnostic(d) for d in after.diagnostics
                          if d.severity in ("error", "fatal error")), f"exit {after.returncode}")  # fmt: skip
            problems.append(f"selftests no longer build: {first}")
        elif delta.new:
            problems.append(buildlog.describe(delta, limit=160))
        if dirt:
            named = ", ".join(dirt[:3]) + (", ..." if len(dirt) > 3 else "")
            problems.append(f"{len(dirt)} new untracked file{'s' if len(dirt) != 1 else ''}"
                            f" (missing .gitignore?): {named}")  # fmt: skip
        what = f"{' '.join(self.targets)}"
        if problems:
            return Verdict(Outcome.FAIL, f"{what}: {'; '.join(problems)}"[:250], log, repro)
        note = buildlog.describe(delta)
        if before.returncode != 0:
            note += "; it did not build before the series either"
        return Verdict(Outcome.PASS, f"{what}: builds, {note}, no new untracked file"[:250],
                       log, repro)  # fmt: skip
