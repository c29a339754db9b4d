"""Build the branch's own kernel and selftests for the VM executor.

One persistent build directory per (executor, tree) (`make O=`), fed from a persistent
worktree reset to each branch, with ccache: from branch to branch only what changed is
rebuilt. The configuration is allnoconfig + virtme-ng's needs + patchci's `vm.config` +
the executor's fragments (+ debug fragments), made in a scratch directory and copied in
only when it differs, so an unchanged configuration never forces a rebuild.

Everything here runs the patched tree's own code (make, Kconfig scripts, compilers on its
sources): it runs in the sandbox. A kernel that does not build raises KernelBuildFailed
(with the compiler's words); whether that is the patch's fault or the base's is decided by
the caller, which builds the base too.
"""

from __future__ import annotations

import filecmp
import logging
import os
import shutil
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from patchci import proc
from patchci.buildlog import format_diagnostic, parse_diagnostics
from patchci.errors import CommandTimeout, InfraError, PatchError
from patchci.sandbox import Sandbox

log = logging.getLogger(__name__)

IMAGE = "arch/x86/boot/bzImage"
BUILD_LOG = "kernel-build.log"
SELFTESTS_LOG = "selftests-build.log"
KCONFIG_ARTIFACT = "kernel.config"
DEFAULT_TIMEOUT = 3 * 3600.0


class KernelBuildFailed(PatchError):
    """The kernel or its selftests did not build. `errors` are the compiler's words."""

    def __init__(self, what: str, errors: Sequence[str], log_path: Path) -> None:
        self.what = what
        self.errors = tuple(errors)
        self.log_path = log_path
        first = errors[0] if errors else f"see {log_path.name}"
        super().__init__(f"{what} failed: {first}")


def kunit_symbols(entries: Sequence[str]) -> list[str]:
    """CONFIG_KUNIT and the Kconfig symbols among *entries* (`FOO_KUNIT_TEST` or
    `CONFIG_FOO_KUNIT_TEST`; an entry with a `/` is a .kunitconfig file)."""
    if not entries:
        return []
    syms = [e if e.startswith("CONFIG_") else f"CONFIG_{e}" for e in entries if "/" not in e]
    return list(dict.fromkeys(["CONFIG_KUNIT", *syms]))


def kunit_files(worktree: Path, entries: Sequence[str]) -> list[Path]:
    """The .kunitconfig files among *entries*, in the tree (a path to a directory means
    its .kunitconfig, as kunit.py's --kunitconfig takes it)."""
    out = []
    for e in (e for e in entries if "/" in e):
        p = worktree / e
        p = p / ".kunitconfig" if p.is_dir() else p
        if not p.is_file():
            raise InfraError(f"kunit: {e} is not a .kunitconfig in the tree")
        out.append(p)
    return out


@dataclass(frozen=True)
class BuildOptions:
    """How to build: fragments are paths relative to the tree (the branch's own)."""

    fragments: tuple[str, ...] = ()
    debug: bool = False
    jobs: int = 0  # 0: one per CPU
    ccache_dir: Path | None = None
    timeout: float = DEFAULT_TIMEOUT
    # KUnit tests built in (they run at boot): Kconfig symbols, or .kunitconfig files
    kunit: tuple[str, ...] = ()


@dataclass(frozen=True)
class KernelBuild:
    image: Path
    config: Path  # the .config used, copied into the run's logs
    build_dir: Path
    seconds: float
    rebuilt_config: bool


def data_fragment(name: str) -> Path:
    return Path(str(resources.files("patchci.executor") / "data" / name))


def virtme_fragment(dest: Path) -> Path:
    """virtme-ng's required options (`virtme-configkernel --dry-run`) as a fragment."""
    from patchci.executor.vm import find_vng

    tool = proc.which("virtme-configkernel")
    vng = find_vng()
    if tool is None and vng is not None:  # installed with vng, in the venv
        tool = str(Path(vng).parent / "virtme-configkernel")
    if tool is None or not Path(tool).exists():
        raise InfraError("virtme-configkernel not found (pip install virtme-ng)")
    res = proc.run([tool, "--dry-run"], timeout=60)
    if not res.ok:
        raise InfraError(f"virtme-configkernel --dry-run failed: {res.output.strip()[-300:]}")
    dest.write_text(res.stdout, encoding="utf-8")
    return dest


class KernelBuilder:
    """Builds kernels of one tree for one executor, in *build_dir*."""

    def __init__(self, build_dir: Path, opts: BuildOptions, sandbox: Sandbox | None) -> None:
        self.build_dir = build_dir
        self.opts = opts
        self.sandbox = sandbox

    # -- steps --------------------------------------------------------------------------

    def build(self, worktree: Path, out_dir: Path) -> KernelBuild:
        """Configure and build the kernel of *worktree*; logs and .config into *out_dir*."""
        t0 = time.monotonic()
        out_dir.mkdir(parents=True, exist_ok=True)
        self.build_dir.mkdir(parents=True, exist_ok=True)
        changed = self._configure(worktree, out_dir)
        self._make(worktree, ["bzImage"], out_dir / BUILD_LOG, "kernel build")
        self._make(worktree, ["headers"], out_dir / BUILD_LOG, "kernel headers", append=True)
        image = self.build_dir / IMAGE
        if not image.is_file():
            raise InfraError(f"kernel build left no {IMAGE} in {self.build_dir}")
        cfg = out_dir / KCONFIG_ARTIFACT
        shutil.copyfile(self.build_dir / ".config", cfg)
        took = time.monotonic() - t0
        log.info("kernel built in %.0f s (%s config) in %s", took,
                 "new" if changed else "same", self.build_dir)  # fmt: skip
        return KernelBuild(image, cfg, self.build_dir, took, changed)

    def install_selftests(
        self, worktree: Path, targets: Sequence[str], dest: Path, out_dir: Path
    ) -> Path:
        """`make -C tools/testing/selftests TARGETS=… install` from the branch's tree into
        *dest*; returns its kselftest-list.txt."""
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        args = [f"TARGETS={' '.join(targets)}", f"INSTALL_PATH={dest}", "install"]
        self._make(worktree, args, out_dir / SELFTESTS_LOG, "selftests build",
                   subdir="tools/testing/selftests", extra_writable=(dest,))  # fmt: skip
        listing = dest / "kselftest-list.txt"
        if not listing.is_file():
            raise InfraError(f"selftests install left no kselftest-list.txt in {dest}")
        return listing

    # -- internals ----------------------------------------------------------------------

    def _configure(self, worktree: Path, out_dir: Path) -> bool:
        """Make the wanted .config in a scratch dir; install it when it differs."""
        scratch = self.build_dir.with_name(self.build_dir.name + ".kconfig")
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        frags = [virtme_fragment(scratch / "virtme.config"), data_fragment("vm.config")]
        for rel in self.opts.fragments:
            p = worktree / rel
            if not p.is_file():
                raise InfraError(f"configuration fragment {rel} does not exist in the tree")
            frags.append(p)
        if self.opts.debug:
            frags += [worktree / "kernel/configs/debug.config", data_fragment("debug.config")]
        wanted = kunit_symbols(self.opts.kunit)
        if self.opts.kunit:
            frags += kunit_files(worktree, self.opts.kunit)
            (scratch / "kunit.config").write_text("".join(f"{s}=y\n" for s in wanted))
            frags.append(scratch / "kunit.config")
        logp = out_dir / "kernel-config.log"
        self._make(worktree, [f"O={scratch}", "allnoconfig"], logp, "allnoconfig",
                   o=False, extra_writable=(scratch,))  # fmt: skip
        merge = ["sh", "scripts/kconfig/merge_config.sh", "-m", "-O", str(scratch),
                 str(scratch / ".config"), *map(str, frags)]  # fmt: skip
        self._run(merge, worktree, logp, "merge_config.sh", (scratch,), append=True)
        self._make(worktree, [f"O={scratch}", "olddefconfig"], logp, "olddefconfig",
                   o=False, extra_writable=(scratch,), append=True)  # fmt: skip
        new, old = scratch / ".config", self.build_dir / ".config"
        have = set(new.read_text(encoding="utf-8", errors="replace").splitlines())
        lost = [s for s in wanted if f"{s}=y" not in have]
        if lost:  # an unknown symbol or an unmet dependency: olddefconfig dropped it
            raise InfraError(f"kunit: {', '.join(lost)} not set after olddefconfig (unknown "
                             "symbol, or a dependency missing from the fragments)")  # fmt: skip
        if old.is_file() and filecmp.cmp(new, old, shallow=False):
            return False
        shutil.copyfile(new, old)
        return True

    def _env(self) -> dict[str, str]:
        env = {"KBUILD_BUILD_USER": "patchci", "KBUILD_BUILD_HOST": "patchci"}
        if self.opts.ccache_dir is not None and proc.which("ccache"):
            # Paths under the executor's directory hash as relative ones and the cwd is not
            # hashed: another data directory (or a test's tmp dir) still hits the cache.
            env.update(CCACHE_DIR=str(self.opts.ccache_dir), CCACHE_NOHASHDIR="1",
                       CCACHE_BASEDIR=str(self.build_dir.parent))  # fmt: skip
        return env

    def _cc(self) -> list[str]:
        if self.opts.ccache_dir is not None and proc.which("ccache"):
            return ["CC=ccache gcc", "HOSTCC=ccache gcc"]
        return []

    def _make(
        self,
        worktree: Path,
        args: Sequence[str],
        log_path: Path,
        what: str,
        *,
        subdir: str | None = None,
        o: bool = True,
        extra_writable: Sequence[Path] = (),
        append: bool = False,
    ) -> None:
        jobs = self.opts.jobs or os.cpu_count() or 1
        argv = ["make", "-C", str(worktree / subdir) if subdir else str(worktree), f"-j{jobs}"]
        argv += [f"O={self.build_dir}"] if o else []
        argv += [*self._cc(), *args]
        self._run(argv, worktree, log_path, what, extra_writable, append=append)

    def _run(
        self,
        argv: Sequence[str],
        worktree: Path,
        log_path: Path,
        what: str,
        extra_writable: Sequence[Path],
        *,
        append: bool = False,
    ) -> None:
        tail: deque[str] = deque(maxlen=4000)
        writable = [worktree, self.build_dir, log_path.parent, *extra_writable]
        if self.opts.ccache_dir is not None:
            self.opts.ccache_dir.mkdir(parents=True, exist_ok=True)
            writable.append(self.opts.ccache_dir)
        part = log_path.with_suffix(".part")
        try:
            rc = proc.stream(
                argv, tail.append, cwd=worktree, timeout=self.opts.timeout, env=self._env(),
                log_path=part, sandbox=self.sandbox, writable=writable,
            )  # fmt: skip
        except CommandTimeout as e:
            raise InfraError(f"{what} timed out after {self.opts.timeout:g} s") from e
        finally:
            if part.exists():
                with log_path.open("ab" if append else "wb") as out:
                    out.write(part.read_bytes())
                part.unlink()
        if rc != 0:
            diags = [d for d in parse_diagnostics(tail, str(worktree)) if d.severity == "error"]
            errors = [format_diagnostic(d) for d in diags][:20]
            if not errors:
                errors = [ln for ln in tail if ln.strip()][-5:]
            raise KernelBuildFailed(what, errors, log_path)
