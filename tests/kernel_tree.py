"""A minimal real kernel-source git tree for tests: Linux 6.1's own scripts, pinned data.

The *tools* come from Debian's linux-source-6.1 tarball as installed (checkpatch.pl with its
data files, get_maintainer.pl, kernel-doc, and the top-level files that make those scripts
accept the directory as a kernel tree). The *data* the tests read or patch is pinned in
tests/data/checks: MAINTAINERS (MAINTAINERS-6.1.xz), .mailmap and net/mptcp/pm_netlink.c
(kernel/tree/). Debian moves its 6.1 source with every stable point release (pm_netlink.c
moved twice between 6.1.x releases and broke the patches under test), so nothing a test
asserts may depend on which 6.1.x is installed. Checked against linux-source-6.1 6.1.192-3
(the pinned files are from it, MAINTAINERS from an earlier 6.1.x).

The tree is built once into a cache directory keyed by the tarball and the pinned files
(about 10 s); each test clones that repository. When the tarball is missing the tests fail
under `make test` and CI, which install it; only a partial developer run skips them.
"""

from __future__ import annotations

import fcntl
import hashlib
import lzma
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.prereq import unavailable

TARBALL = Path(os.environ.get("PATCHCI_KERNEL_TARBALL", "/usr/src/linux-source-6.1.tar.xz"))
PREFIX = "linux-source-6.1/"
DATA = Path(__file__).parent / "data" / "checks"
PINNED_TREE = DATA / "kernel" / "tree"
PINNED_MAINTAINERS = DATA / "MAINTAINERS-6.1.xz"
# Only programs (and the data files they ship with) come from the installed source.
TOOLS = (
    "scripts/checkpatch.pl", "scripts/spelling.txt", "scripts/const_structs.checkpatch",
    "scripts/get_maintainer.pl", "scripts/kernel-doc",
    "COPYING", "CREDITS", "Kbuild", "Makefile", "README",
)  # fmt: skip
# checkpatch/get_maintainer only want these to exist (top_of_kernel_tree).
MARKER_DIRS = ("Documentation", "arch", "include", "drivers", "fs", "init", "ipc", "kernel",
               "lib")  # fmt: skip
GIT_ID = ["-c", "user.name=patchci tests", "-c", "user.email=tests@patchci.invalid",
          "-c", "commit.gpgsign=false"]  # fmt: skip


def _pinned_files() -> list[Path]:
    return sorted(p for p in PINNED_TREE.rglob("*") if p.is_file())


def _cache_root() -> Path:
    st = TARBALL.stat()
    key = hashlib.sha256(f"{TARBALL}:{st.st_size}:{st.st_mtime_ns}:{TOOLS}".encode())
    for p in [PINNED_MAINTAINERS, *_pinned_files()]:
        key.update(p.relative_to(DATA).as_posix().encode() + b"\0" + p.read_bytes())
    return Path(tempfile.gettempdir()) / f"patchci-kernel-{os.getuid()}" / key.hexdigest()[:16]


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *GIT_ID, *args], cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"})  # fmt: skip


def _extract(dest: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="extract-", dir=dest.parent))
    try:
        subprocess.run(
            ["tar", "-xJf", str(TARBALL), "-C", str(tmp), "--strip-components=1",
             *(PREFIX + m for m in TOOLS)],
            check=True, capture_output=True,
        )  # fmt: skip
        for d in MARKER_DIRS:
            (tmp / d).mkdir(exist_ok=True)
            (tmp / d / ".keep").write_text("")
        shutil.copytree(PINNED_TREE, tmp, dirs_exist_ok=True)
        with lzma.open(PINNED_MAINTAINERS) as src:
            (tmp / "MAINTAINERS").write_bytes(src.read())
        _git(tmp, "init", "-q", "--initial-branch=main")
        _git(tmp, "add", "-A")
        _git(tmp, "commit", "-q", "-m", "Linux 6.1 scripts, pinned data (patchci tests)")
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cached_tree() -> Path:
    """The cached repository (built on first use); skip or fail without the tarball."""
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
