"""Per-series cost of applying a series on a Linux tree: raw `git am` in a checkout (the
floor any CI pays), patchci with a kept worktree reset between series (what the daemon
does), and with a fresh worktree per series (what it did: minutes on a loaded 2-core
machine). Ratios are against the raw run measured in the same process; target <= 1.10x.

    python -m bench worktrees [--tree REPO] [--series N]

Without --tree, the Linux 6.12 repository the kernel-executor tests cache (made once from
/usr/src/linux-source-6.12.tar.xz) is used.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import dropwhile
from pathlib import Path

from patchci.apply import ApplyStatus, apply_series
from patchci.git import Git
from patchci.model import Patch, Person, Series
from patchci.subject import parse_subject

ENV = {"GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
       "GIT_COMMITTER_NAME": "Bench", "GIT_COMMITTER_EMAIL": "bench@example.com"}  # fmt: skip


def _git(
    repo: Path, *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, input=input, env={**os.environ, **ENV, **(env or {})},
                          timeout=600).stdout  # fmt: skip


def _patches(repo: Path, n: int, tmp: Path) -> list[bytes]:
    """*n* one-patch series against main, each appending a comment to another .c file."""
    files = [f for f in _git(repo, "ls-tree", "-r", "--name-only", "main", "net/").split()
             if f.endswith(".c")][:n]  # fmt: skip
    out = []
    for i, path in enumerate(files):
        text = _git(repo, "show", f"main:{path}") + f"\n/* bench {i} */\n"
        blob = _git(repo, "hash-object", "-w", "--stdin", input=text).strip()
        idx = {"GIT_INDEX_FILE": str(tmp / f"i{i}")}
        _git(repo, "read-tree", "main", env=idx)
        _git(repo, "update-index", "--cacheinfo", f"100644,{blob},{path}", env=idx)
        tree = _git(repo, "write-tree", env=idx).strip()
        commit = _git(repo, "commit-tree", tree, "-p", "main", input=f"bench: {path}\n").strip()
        out.append(_git(repo, "format-patch", "--stdout", "-1", commit).encode())
    return out


def _series(raw: bytes, i: int) -> Series:
    subject = f"[PATCH] bench {i}"
    patch = Patch(f"<b{i}@bench>", subject, Person("Bench", "bench@example.com"), None,
                  parse_subject(subject), raw)  # fmt: skip
    return Series("bench", f"b{i}", subject, 1, 1, (patch,))


def _check(wt: Path) -> None:
    """The same stand-in check command after each apply, in every variant."""
    _git(wt, "diff", "--stat", "HEAD~1", "HEAD")


def _raw(repo: Path, patches: list[bytes], tmp: Path) -> list[float]:
    wt = tmp / "raw"
    _git(repo, "worktree", "add", "--detach", str(wt), "main")  # once, not timed
    times = []
    for raw in patches:
        t0 = time.perf_counter()
        subprocess.run(["git", "-C", str(wt), "am", "-3", "-q"], input=raw, check=True,
                       env={**os.environ, **ENV}, timeout=600)  # fmt: skip
        _check(wt)
        _git(wt, "checkout", "-q", "--force", "--detach", "main")
        times.append(time.perf_counter() - t0)
    _git(repo, "worktree", "remove", "--force", str(wt))
    return times


def _patchci(repo: Path, patches: list[bytes], tmp: Path, reuse: bool) -> list[float]:
    git = Git(repo, timeout=600)
    root = tmp / ("kept" if reuse else "scratch")
    times = []
    for i, raw in enumerate(patches):
        t0 = time.perf_counter()
        with apply_series(git, "main", _series(raw, i), root, timeout=600,
                          reuse=root if reuse else None) as applied:  # fmt: skip
            if applied.status is not ApplyStatus.APPLIED:
                raise SystemExit(f"bench series {i} did not apply: {applied.output[-300:]}")
            _check(applied.worktree)
        times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench worktrees")
    ap.add_argument("--tree", type=Path, help="a git repository with a Linux tree on main")
    ap.add_argument("--series", type=int, default=8)
    if argv is None:  # `python -m bench worktrees --flags`: the flags after the bench names
        argv = list(dropwhile(lambda x: not x.startswith("-"), sys.argv[1:]))
    args = ap.parse_args(argv)
    if args.tree is None:
        from tests.kernel_vm import linux_repo

        args.tree = linux_repo()
    with tempfile.TemporaryDirectory(prefix="bench-wt-") as t:
        tmp = Path(t)
        repo = tmp / "linux.git"
        subprocess.run(["git", "clone", "-q", "--bare", "--shared", str(args.tree), str(repo)],
                       check=True)  # fmt: skip
        files = len(_git(repo, "ls-tree", "-r", "--name-only", "main").splitlines())
        patches = _patches(repo, args.series, tmp)
        raw = _raw(repo, patches, tmp)
        kept = _patchci(repo, patches, tmp, reuse=True)
        # a fresh worktree costs a minute or more per series here: two are enough
        scratch = _patchci(repo, patches[:2], tmp, reuse=False)
        shutil.rmtree(tmp / "kept", ignore_errors=True)
    base = statistics.median(raw)
    print(
        f"apply + one check per series on a {files:,}-file tree, {len(patches)} series, "
        "median per series:"
    )
    for label, times in (("raw git am (floor)", raw), ("patchci, kept worktree", kept),
                         ("patchci, fresh worktree", scratch)):  # fmt: skip
        med = statistics.median(times)
        print(f"  {label:<26} {med * 1000:9.0f} ms  ({med / base:5.2f}x raw; first "
              f"{times[0] * 1000:.0f} ms)")  # fmt: skip
