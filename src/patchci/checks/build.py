"""build: does the patch break the build or add a warning? Built before and after, compared
as warning *sets* (file, message without line numbers), so a swapped warning is caught.

Options (`[checks.NAME] options = {...}`; several flavours = several checks of kind build):

- `command` (list, default `["make"]`): the build tool. `-k` and `-jN` are added for make.
- `make_args` (list): extra arguments, e.g. `["W=1"]`, `["LLVM=1"]`, `["ARCH=i386"]`.
  Default `["W=1"]` on a kernel tree, `[]` otherwise.
- `targets` (list, default `[]`: the default target).
- `env` (table): extra environment for the build.
- `jobs` (int, default: the number of CPUs).
- `build_dir` (path): persistent per tree and check; default
  `$PATCHCI_BUILD_CACHE/<tree>/<check>` or `${XDG_CACHE_HOME:-~/.cache}/patchci/build/...`.
- `out_of_tree` (bool): pass `O=<build_dir>/out`; default true when the tree has Kbuild's
  `scripts/Makefile.build`. Plain Makefiles build in the source mirror itself.
- `config` (str): config target run first, e.g. "allmodconfig", "defconfig", "none".
  Default "defconfig" on a kernel tree, "none" otherwise.
- `fragments` (list of paths, relative to the tree or absolute): merged into the config with
  `scripts/kconfig/merge_config.sh` (appended when it is absent), then `olddefconfig`.
- `disable` (list of symbols, default `["WERROR", "DRM_WERROR", "KVM_WERROR"]` on kernel
  trees): turned off so that a warning stays a warning.
- `ccache` (bool, default true): use `CC="ccache <cc>"` when ccache is installed;
  `cc` (str) names the compiler, default "clang" with LLVM=1 else "gcc".
- `keep_going` (bool, default true): `make -k`, so one broken file does not hide the others.

How the comparison stays right although builds are incremental: the sources are mirrored
at a stable path (`<build_dir>/src`, `git read-tree -u` with a private index, so only the
files that differ are rewritten) and built there, so objects survive from series to series.
For each patch: (1) the mirror is brought to the parent and built, unless the previous
build already left it there (the previous patch's after-build is the baseline); (2) the
files the patch changes are touched and rebuilt at the parent, printing the warnings of
exactly the objects the patch affects; (3) the mirror moves to the commit and is rebuilt.
(2) and (3) are compared. A base that does not build is ERROR, never the patch's fault.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from patchci import buildlog
from patchci.buildlog import Diagnostic, WarningDelta
from patchci.checks.base import Check, CheckContext, CheckOptions, Verdict
from patchci.errors import InfraError
from patchci.git import GIT_PREFIX, Git
from patchci.model import Outcome, Scope

log = logging.getLogger(__name__)

KERNEL_MARKER = "scripts/Makefile.build"
KERNEL_DISABLE = ("WERROR", "DRM_WERROR", "KVM_WERROR")
MAX_RESULTS = 64
MAX_LOG_DIAGS = 50


# What a kernel build needs and Debian's package for it: a missing one made `make
# defconfig` fail with "Target 'defconfig' not remade because of errors".
BUILD_TOOLS = {"flex": "flex", "bison": "bison", "bc": "bc", "perl": "perl", "gcc": "gcc",
               "pahole": "dwarves", "openssl": "openssl", "cpio": "cpio", "rsync": "rsync"}  # fmt: skip
BUILD_HEADERS = {"openssl/": "libssl-dev", "gelf.h": "libelf-dev", "libelf.h": "libelf-dev",
                 "ncurses.h": "libncurses-dev"}  # fmt: skip
_NOT_FOUND = re.compile(
    r"(?:^|[\s:])(?P<tool>[\w.+-]+): (?:not found|[Cc]ommand not found|No such file or directory)$"
)
_NO_HEADER = re.compile(r"fatal error: (?P<header>[\w./+-]+): No such file or directory")


class BuildSetupFailed(InfraError):
    """Configuring the build failed (ours: the base must configure); `log` is the output."""

    def __init__(self, message: str, log: str) -> None:
        super().__init__(message)
        self.log = log


def setup_failure(output: str) -> str:
    """The cause of a failed configuration step, in a few words: the missing tool or
    header and its Debian package when the output names one, else the last error line."""
    not_found: list[str] = []
    for line in output.splitlines():
        line = line.strip()
        m = _NOT_FOUND.search(line)
        if m and m.group("tool") in BUILD_TOOLS:
            tool = m.group("tool")
            return f"{tool} is not installed (apt-get install {BUILD_TOOLS[tool]})"
        if m:
            not_found.append(line)
        h = _NO_HEADER.search(line)
        if h:
            pkg = next((p for k, p in BUILD_HEADERS.items() if k in h.group("header")), None)
            if pkg:
                return f"{h.group('header')} is missing (apt-get install {pkg})"
    if not_found:  # a program or file we know no package for: the line says which
        return not_found[0][:200]
    errors = [ln.strip() for ln in output.splitlines() if "rror" in ln or "***" in ln]
    return (errors or output.strip().splitlines()[-1:] or ["no output"])[0][:200]


class BuildOptions(CheckOptions):
    """None means "what suits the tree": a kernel tree (scripts/Makefile.build) builds
    out of tree with W=1 from defconfig, WERROR options disabled; another tree plainly."""

    command: tuple[str, ...] = Field(("make",), min_length=1)
    make_args: tuple[str, ...] | None = None
    targets: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    jobs: int | None = Field(None, ge=1)
    out_of_tree: bool | None = None
    config: str | None = None
    fragments: tuple[str, ...] = ()
    disable: tuple[str, ...] | None = None
    keep_going: bool = True
    ccache: bool = True
    cc: str | None = None
    build_dir: str | None = None


@dataclass(frozen=True)
class BuildSpec:
    """The options resolved for one tree."""

    command: tuple[str, ...]
    make_args: tuple[str, ...]
    targets: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    jobs: int
    out_of_tree: bool
    config: str
    fragments: tuple[str, ...]
    disable: tuple[str, ...]
    keep_going: bool
    cc: str | None  # "ccache gcc" when ccache is used

    @property
    def is_make(self) -> bool:
        return Path(self.command[0]).name in ("make", "gmake")

    def stamp(self) -> str:
        """Identity of everything but the sources: a changed option means a fresh config."""
        blob = json.dumps([self.command, self.make_args, self.config, self.fragments,
                           self.disable, self.cc, self.out_of_tree])  # fmt: skip
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def resolve_spec(opts: BuildOptions, kernel: bool) -> BuildSpec:
    make_args = opts.make_args if opts.make_args is not None else ("W=1",) if kernel else ()
    cc: str | None = None
    use_ccache = opts.ccache and shutil.which("ccache")
    if use_ccache and not any(a.startswith("CC=") for a in make_args):
        llvm = any(a.startswith("LLVM=") for a in make_args)
        cc = f"ccache {opts.cc or ('clang' if llvm else 'gcc')}"
    config = opts.config if opts.config is not None else "defconfig" if kernel else "none"
    disable = opts.disable if opts.disable is not None else KERNEL_DISABLE if kernel else ()
    return BuildSpec(
        command=opts.command,
        make_args=tuple(make_args),
        targets=opts.targets,
        env=tuple(sorted(opts.env.items())),
        jobs=opts.jobs or os.cpu_count() or 1,
        out_of_tree=opts.out_of_tree if opts.out_of_tree is not None else kernel,
        config="" if config.lower() in ("", "none") else config,
        fragments=opts.fragments,
        disable=tuple(disable),
        keep_going=opts.keep_going,
        cc=cc,
    )


@dataclass(frozen=True)
class BuildRun:
    """One invocation of the build at one commit."""

    commit: str
    returncode: int
    diagnostics: tuple[Diagnostic, ...]
    output: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def first_error(self) -> str:
        for d in self.diagnostics:
            if d.severity in ("error", "fatal error"):
                return buildlog.format_diagnostic(d)
        tail = [ln for ln in self.output.splitlines() if ln.strip()][-1:]
        return tail[0] if tail else f"exit status {self.returncode}"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "_"


def default_build_dir(tree: str, check: str) -> Path:
    root = os.environ.get("PATCHCI_BUILD_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = str(Path(xdg) / "patchci" / "build")
    return Path(root) / _safe(tree) / _safe(check)


class BuildDir:
    """The persistent state of one tree+check: source mirror, objects, last built commit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.src = path / "src"
        self.out = path / "out"
        self.index = path / "mirror.index"
        self.state_file = path / "state.json"
        self.results = path / "results"

    @contextlib.contextmanager
    def locked(self, deadline: float) -> Iterator[None]:
        """Only one build at a time per build directory (jobs may run in parallel)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with (self.path / ".lock").open("a") as fh:
            while True:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise InfraError(f"build directory {self.path} stayed locked") from None
                    time.sleep(0.2)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def save_state(self, **state: Any) -> None:
        self.state_file.write_text(json.dumps(state))

    def save_result(self, run: BuildRun) -> None:
        """Keep the after-build's diagnostics per commit, the newest MAX_RESULTS of them."""
        self.results.mkdir(exist_ok=True)
        data = {
            "commit": run.commit,
            "returncode": run.returncode,
            "diagnostics": [buildlog.format_diagnostic(d) for d in run.diagnostics],
        }
        (self.results / f"{run.commit}.json").write_text(json.dumps(data, indent=1))
        old = sorted(self.results.glob("*.json"), key=lambda p: p.stat().st_mtime)
        for p in old[:-MAX_RESULTS]:
            p.unlink(missing_ok=True)

    def result_ok(self, commit: str) -> bool | None:
        try:
            data = json.loads((self.results / f"{commit}.json").read_text())
        except (OSError, ValueError):
            return None
        return bool(data.get("returncode") == 0)


class Build(Check):
    Options = BuildOptions
    opts: BuildOptions
    name = "build"
    scope = Scope.PATCH
    pull_requests = True
    tools = ("git",)
    default_timeout = 7200.0
    description = "The build does not break and no warning is new"

    def __init__(self, options: Mapping[str, Any] | None = None, timeout: float | None = None):
        super().__init__(options, timeout)

    def missing_tools(self, ctx: CheckContext) -> list[str]:
        cmd = self.opts.command
        missing = super().missing_tools(ctx)
        if "/" not in cmd[0] and shutil.which(cmd[0]) is None:
            missing.append(cmd[0])
        return missing

    def run(self, ctx: CheckContext) -> Verdict:
        kernel = (ctx.worktree / KERNEL_MARKER).is_file()
        spec = resolve_spec(self.opts, kernel)
        opt_dir = self.opts.build_dir
        bd = BuildDir(
            Path(str(opt_dir)).expanduser() / _safe(self.name)
            if opt_dir
            else default_build_dir(ctx.tree.name, self.name)
        )
        with bd.locked(ctx.deadline):
            return _BuildJob(ctx, spec, bd).run()


class _BuildJob:
    """One patch's before/after build; holds the log as it goes."""

    def __init__(self, ctx: CheckContext, spec: BuildSpec, bd: BuildDir) -> None:
        self.ctx = ctx
        self.spec = spec
        self.bd = bd
        self.lines: list[str] = []
        self.git_dir = Git(ctx.worktree, deadline=ctx.deadline).common_dir()

    def say(self, msg: str) -> None:
        self.lines.append(msg)
        log.info("series %s build %s: %s", self.ctx.series.key, self.bd.path.name, msg)

    # -- steps -------------------------------------------------------------------------

    def sync(self, commit: str) -> None:
        """Make the mirror hold *commit*; only files that differ are rewritten."""
        self.bd.src.mkdir(parents=True, exist_ok=True)
        argv = [*GIT_PREFIX, f"--git-dir={self.git_dir}", f"--work-tree={self.bd.src}",
                "read-tree", "--reset", "-u", commit]  # fmt: skip
        res = self.ctx.run(argv, cwd=self.bd.src, env={"GIT_INDEX_FILE": str(self.bd.index)},
                           writable=(self.bd.path,))  # fmt: skip
        if not res.ok:
            raise InfraError(f"cannot check out {commit[:12]} in {self.bd.src}: {res.output}")

    def make_argv(self, *targets: str) -> list[str]:
        s = self.spec
        argv = list(s.command)
        if s.is_make:
            argv += (["-k"] if s.keep_going else []) + [f"-j{s.jobs}"]
        if s.out_of_tree:
            argv.append(f"O={self.bd.out}")
        argv += list(s.make_args)
        if s.cc:
            argv.append(f"CC={s.cc}")
        return argv + list(targets or s.targets)

    def invoke(self, argv: Sequence[str], label: str) -> tuple[int, str]:
        t0 = time.monotonic()
        # HOME in the build directory: ccache and friends keep their state there, not in
        # the source mirror (the sandbox's default HOME is the cwd).
        home = self.bd.path / "home"
        home.mkdir(parents=True, exist_ok=True)
        env = {"HOME": str(home), **dict(self.spec.env)}
        res = self.ctx.run(argv, cwd=self.bd.src, env=env, writable=(self.bd.path,))
        self.say(f"{label}: exit {res.returncode} in {time.monotonic() - t0:.1f}s")
        return res.returncode, res.output

    def build(self, commit: str, label: str) -> BuildRun:
        t0 = time.monotonic()
        rc, output = self.invoke(self.make_argv(), f"{label} ({commit[:12]})")
        diags = buildlog.parse_diagnostics(output.splitlines(), src_root=str(self.bd.src))
        return BuildRun(commit, rc, tuple(diags), output, time.monotonic() - t0)

    def config_stamp(self, commit: str) -> str:
        """The options plus every Kconfig blob: the config is regenerated when it changes."""
        if not self.spec.config:
            return self.spec.stamp()
        out = Git(self.ctx.worktree, deadline=self.ctx.deadline).run("ls-tree", "-r", commit).stdout
        kconf = [ln for ln in out.splitlines() if "/Kconfig" in ln or "\tKconfig" in ln]
        return hashlib.sha256((self.spec.stamp() + "\n".join(kconf)).encode()).hexdigest()[:16]

    def configure(self, stamp: str) -> None:
        s = self.spec
        if not s.config or (self.bd.state().get("config") == stamp and self._has_config()):
            return
        self.bd.out.mkdir(parents=True, exist_ok=True)
        rc, out = self.invoke(self.make_argv(s.config), f"config {s.config}")
        if rc != 0:
            raise BuildSetupFailed(f"make {s.config} failed: {setup_failure(out)}", out)
        frags = [str(Path(f) if Path(f).is_absolute() else self.bd.src / f) for f in s.fragments]
        if s.disable:
            extra = self.bd.path / "disable.config"
            extra.write_text("".join(f"# CONFIG_{sym} is not set\n" for sym in s.disable))
            frags.append(str(extra))
        if frags:
            self._merge(frags)

    def _has_config(self) -> bool:
        return (self.bd.out if self.spec.out_of_tree else self.bd.src).joinpath(".config").exists()

    def _merge(self, frags: list[str]) -> None:
        cfg = (self.bd.out if self.spec.out_of_tree else self.bd.src) / ".config"
        script = self.bd.src / "scripts/kconfig/merge_config.sh"
        if script.exists():
            argv = ["sh", str(script), "-m", "-O", str(cfg.parent), str(cfg), *frags]
            rc, out = self.invoke(argv, "merge config fragments")
            if rc != 0:
                raise BuildSetupFailed(f"merge_config.sh failed: {setup_failure(out)}", out)
        else:
            with cfg.open("a") as fh:
                for f in frags:
                    fh.write(Path(f).read_text())
        self.invoke(self.make_argv("olddefconfig"), "olddefconfig")

    def goto(self, commit: str) -> None:
        self.sync(commit)
        stamp = self.config_stamp(commit)
        self.configure(stamp)
        self.bd.save_state(commit="", ok=False, config=stamp)  # in flux until built

    def record(self, run: BuildRun) -> None:
        state = self.bd.state()
        self.bd.save_state(commit=run.commit, ok=run.ok, config=state.get("config"),
                           spec=self.spec.stamp())  # fmt: skip
        self.bd.save_result(run)

    def touch(self, files: Sequence[str]) -> int:
        """Mark the patch's files as changed so that make rebuilds what depends on them."""
        n = 0
        for f in files:
            p = self.bd.src / f
            if p.is_file():
                os.utime(p)
                n += 1
        return n

    # -- the check ---------------------------------------------------------------------

    def baseline(self) -> bool:
        """Bring the build to the parent; return whether the parent builds."""
        ctx, state = self.ctx, self.bd.state()
        if state.get("commit") == ctx.parent and state.get("spec") == self.spec.stamp():
            ok = bool(state.get("ok"))
            self.say(f"baseline build skipped: the build directory is at {ctx.parent[:12]}")
            return ok
        self.goto(ctx.parent)
        run = self.build(ctx.parent, "baseline build")
        self.record(run)
        return run.ok

    def run(self) -> Verdict:
        ctx = self.ctx
        files = Git(ctx.worktree, deadline=ctx.deadline).changed_files(ctx.commit)
        self.say(f"build dir: {self.bd.path}")
        self.say(f"command: {' '.join(self.make_argv())}")
        parent_ok = self.baseline()
        self.say(f"touched {self.touch(files)} file(s) of the patch at the parent")
        before = self.build(ctx.parent, "before")
        self.goto(ctx.commit)
        after = self.build(ctx.commit, "after")
        self.record(after)
        return self.verdict(parent_ok and before.ok, before, after)

    def verdict(self, parent_ok: bool, before: BuildRun, after: BuildRun) -> Verdict:
        ctx = self.ctx
        delta = buildlog.diff_warnings(before.diagnostics, after.diagnostics)
        body = "\n".join(self.lines) + "\n\n" + _delta_log(delta, after)
        repro = f"cd {shlex.quote(str(self.bd.src))} && {shlex.join(self.make_argv())}"
        if not parent_ok and ctx.parent == ctx.base:
            desc = f"base does not build: {before.first_error()}"[:250]
            return Verdict(Outcome.ERROR, desc, body + _tail(before), repro)
        if not after.ok and parent_ok:
            desc = f"build failed: {after.first_error()}"[:250]
            return Verdict(Outcome.FAIL, desc, body + _tail(after), repro)
        if delta.new:
            return Verdict(Outcome.FAIL, buildlog.describe(delta), body, repro)
        desc = buildlog.describe(delta)
        if not parent_ok:
            desc += "; the build was already broken before this patch"
        return Verdict(Outcome.PASS, desc, body, repro)


def _delta_log(delta: WarningDelta, after: BuildRun) -> str:
    out: list[str] = []
    for title, diags in (("New", delta.new), ("Fixed", delta.fixed)):
        if not diags:
            continue
        out.append(f"{title} warnings and errors ({len(diags)}):")
        for d in diags[:MAX_LOG_DIAGS]:
            out.append(buildlog.format_diagnostic(d))
            out += [f"    {c}" for c in d.context if not c.startswith(("In function", d.file))]
        out.append("")
    out.append(f"unchanged: {delta.unchanged_count}")
    return "\n".join(out) + "\n"


def _tail(run: BuildRun, n: int = 60) -> str:
    lines = run.output.splitlines()[-n:]
    return (
        f"\n--- last {len(lines)} lines of the build at {run.commit[:12]} ---\n"
        + "\n".join(lines)
        + "\n"
    )
