"""Kernel build cost for a vm executor: the branch's kernel (allnoconfig + virtme's needs +
executor/data/vm.config, as every vm executor builds it) from cold, with ccache warm in a new
build directory, with nothing changed, and after a one-file patch. Ratios are against the
cold build measured in the same run.

    python -m bench kbuild [--tree REPO] [--jobs N]

Without --tree, the Linux 6.12 repository the kernel-executor tests cache (made once from
/usr/src/linux-source-6.12.tar.xz) is used. Takes ~10-15 min on 2 cores (the cold build).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import dropwhile
from pathlib import Path

from patchci.executor.kbuild import BuildOptions, KernelBuilder


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench kbuild")
    ap.add_argument("--tree", type=Path, help="a git repository with a Linux tree on main")
    ap.add_argument("--jobs", type=int, default=0, help="make -j (default: one per CPU)")
    if argv is None:
        argv = list(dropwhile(lambda x: not x.startswith("-"), sys.argv[1:]))
    args = ap.parse_args(argv)
    if args.tree is None:
        from tests.kernel_vm import linux_repo

        args.tree = linux_repo()
    with tempfile.TemporaryDirectory(prefix="bench-kbuild-") as t:
        tmp = Path(t)
        wt = tmp / "wt"
        subprocess.run(["git", "-C", str(args.tree), "worktree", "add", "-q", "--detach",
                        str(wt), "main"], check=True, timeout=1800)  # fmt: skip
        try:
            opts = BuildOptions(jobs=args.jobs, ccache_dir=tmp / "ccache", timeout=7200)
            first = KernelBuilder(tmp / "build-a", opts, None)
            second = KernelBuilder(tmp / "build-b", opts, None)
            cold = _timed(lambda: first.build(wt, tmp / "logs-cold"))
            noop = _timed(lambda: first.build(wt, tmp / "logs-noop"))
            warm = _timed(lambda: second.build(wt, tmp / "logs-warm"))
            target = wt / "kernel" / "sys.c"  # built in every configuration
            target.write_text(target.read_text() + "\n/* bench: a one-line patch */\n")
            patched = _timed(lambda: first.build(wt, tmp / "logs-patch"))
        finally:
            subprocess.run(["git", "-C", str(args.tree), "worktree", "remove", "--force",
                            str(wt)], check=False, timeout=600)  # fmt: skip
    print("vm executor kernel (allnoconfig + virtme + vm.config), ccache:")
    for label, secs in (("cold (empty ccache, new build dir)", cold),
                        ("warm ccache, new build dir", warm),
                        ("nothing changed, same build dir", noop),
                        ("one-file patch, same build dir", patched)):  # fmt: skip
        print(f"  {label:<36} {secs:7.1f} s  ({secs / cold:5.3f}x cold)")
