"""A whole Linux 6.12 source tree as a git repository, and a ccache, for the kernel
executor's tests: built once per machine and kept between runs.

The source is Debian's linux-source-6.12 tarball as installed (`make test` installs it).
Nothing a test asserts depends on which 6.12.x it is: the tests build whatever is there
with patchci's minimal configuration and run a selftest of that same source. Checked
against 6.12.118 (linux-source-6.12 6.12.118-1~deb12u1).

Kept in PATCHCI_TEST_CACHE (default /var/tmp/patchci-tests-<uid>, which survives reboots):
`linux-<key>.git` (about 1.5 GB; the first run spends ~1-2 min making it) and `ccache`
(a cold kernel build is ~10 min on 2 cores, a warm one well under a minute).
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

TARBALL = Path(os.environ.get("PATCHCI_KERNEL612_TARBALL", "/usr/src/linux-source-6.12.tar.xz"))
GIT_ID = ["-c", "user.name=patchci tests", "-c", "user.email=tests@patchci.invalid",
          "-c", "commit.gpgsign=false"]  # fmt: skip


def cache_dir() -> Path:
    default = Path("/var/tmp") / f"patchci-tests-{os.getuid()}"
    return Path(os.environ.get("PATCHCI_TEST_CACHE", str(default)))


def ccache_dir() -> Path:
    return cache_dir() / "ccache"


def _key() -> str:
    st = TARBALL.stat()
    return hashlib.sha256(f"{TARBALL}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *GIT_ID, *args], cwd=cwd, check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, timeout=1800)  # fmt: skip


def linux_repo() -> Path:
    """The bare repository of the tarball's tree (one commit on `main`)."""
    if not TARBALL.is_file():
        unavailable(f"{TARBALL} is not installed (apt-get install linux-source-6.12)")
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    repo = root / f"linux-{_key()}.git"
    with open(root / ".lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if (repo / "refs" / "heads" / "main").exists() or _has_main(repo):
            return repo
        for old in root.glob("linux-*.git"):  # another source version: not kept
            shutil.rmtree(old, ignore_errors=True)
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            src = Path(tmp) / "src"
            src.mkdir()
            subprocess.run(["tar", "-xf", str(TARBALL), "-C", str(src), "--strip-components=1"],
                           check=True, timeout=1800)  # fmt: skip
            _git(src, "init", "-q", "--initial-branch=main")
            _git(src, "add", "-A", "--force")  # Debian's .gitignore ignores the top level
            _git(src, "commit", "-q", "--no-verify", "-m", f"Linux from {TARBALL.name}")
            part = repo.with_name(repo.name + ".part")
            shutil.rmtree(part, ignore_errors=True)
            _git(root, "clone", "-q", "--bare", str(src), str(part))
            part.rename(repo)
    return repo


def _has_main(repo: Path) -> bool:
    if not repo.is_dir():
        return False
    res = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "-q", "main"],
                         capture_output=True, timeout=60)  # fmt: skip
    return res.returncode == 0


def clone_tree(dest: Path) -> Path:
    """A bare clone of the cached tree sharing its objects (instant; the test's own)."""
    subprocess.run(["git", "clone", "-q", "--bare", "--shared", str(linux_repo()), str(dest)],
                   check=True, timeout=600)  # fmt: skip
    return dest
