"""A minimal real kernel-source git tree for tests, from Debian's linux-source-6.1 tarball.

Only the scripts the checks run (checkpatch, get_maintainer, kernel-doc and their data),
MAINTAINERS, .mailmap, the top-level files that make those scripts accept the directory
as a kernel tree, and the few sources the tests patch are extracted, once, into a cache
directory keyed by the tarball (about 10 s). Each test clones that repository.

When the tarball is missing the tests fail under `make test` and CI, which install it
(`apt-get install linux-source-6.1`); only a partial developer run skips them.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.prereq import unavailable

TARBALL = Path(os.environ.get("PATCHCI_KERNEL_TARBALL", "/usr/src/linux-source-6.1.tar.xz"))
PREFIX = "linux-source-6.1/"
MEMBERS = (
    "scripts/checkpatch.pl", "scripts/spelling.txt", "scripts/const_structs.checkpatch",
    "scripts/get_maintainer.pl", "scripts/kernel-doc", "MAINTAINERS", ".mailmap",
    "COPYING", "CREDITS", "Kbuild", "Makefile", "README",
    "net/mptcp/pm_netlink.c", "net/mptcp/protocol.h",
)  # fmt: skip
# checkpatch/get_maintainer only want these to exist (top_of_kernel_tree).
MARKER_DIRS = ("Documentation", "arch", "include", "drivers", "fs", "init", "ipc", "kernel",
               "lib")  # fmt: skip
GIT_ID = ["-c", "user.name=patchci tests", "-c", "user.email=tests@patchci.invalid",
          "-c", "commit.gpgsign=false"]  # fmt: skip


def _cache_root() -> Path:
    st = TARBALL.stat()
    key = hashlib.sha256(f"{TARBALL}:{st.st_size}:{st.st_mtime_ns}:{MEMBERS}".encode())
    return Path(tempfile.gettempdir()) / f"patchci-kernel-{os.getuid()}" / key.hexdigest()[:16]


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *GIT_ID, *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"})  # fmt: skip


def _extract(dest: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="extract-", dir=dest.parent))
    try:
        subprocess.run(
            [
                "tar",
                "-xJf",
                str(TARBALL),
                "-C",
                str(tmp),
                "--strip-components=1",
                *(PREFIX + m for m in MEMBERS),
            ],
            check=True,
            capture_output=True,
        )
        for d in MARKER_DIRS:
            (tmp / d).mkdir(exist_ok=True)
            (tmp / d / ".keep").write_text("")
        _git(tmp, "init", "-q", "--initial-branch=main")
        _git(tmp, "add", "-A")
        _git(tmp, "commit", "-q", "-m", "Linux 6.1 (subset for patchci tests)")
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cached_tree() -> Path:
    """The cached repository (extracted on first use); skip or fail without the tarball."""
    if not TARBALL.is_file():
        unavailable(f"{TARBALL} missing: apt-get install linux-source-6.1")
    dest = _cache_root() / "tree"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with (dest.parent / ".lock").open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        if not (dest / ".git").is_dir():
            _extract(dest)
    return dest


def kernel_tree(path: Path) -> Path:
    """A fresh clone of the cached tree at *path* (branch main)."""
    subprocess.run(["git", "clone", "-q", str(cached_tree()), str(path)], check=True,
                   capture_output=True)  # fmt: skip
    return path
