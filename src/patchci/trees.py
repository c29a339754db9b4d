"""Trees: fetched before every use, so a series is applied to today's base, not last week's.

A `url` tree is ours: a bare mirror under the data directory (cloned once, atomically, and
shared by the trees of one URL), its branches kept as `refs/remotes/origin/*` so that test
branches cut in it are never pruned by a fetch. A `path` tree is the user's repository:
never modified (no checkout, no branch moved); with `remote = "..."` that remote is fetched
and its branch is the base.

A fetch that fails is retried a few times with backoff, then raised as FetchError (ours:
the series is checked again later, never blamed). A force-pushed branch is simply taken
(`+` refspec); `--prune` drops deleted branches.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from patchci.errors import FetchError, InfraError
from patchci.git import Git
from patchci.model import Tree

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 1800.0  # a first clone of a kernel tree takes a while
FETCH_ATTEMPTS = 3
FETCH_BACKOFF = 10.0  # seconds before the 2nd attempt, doubled each time
MIRROR_REMOTE = "origin"


def mirror_path(data_path: Path, url: str) -> Path:
    """Where the mirror of *url* lives: readable name + hash (two trees of one URL share)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", url.rstrip("/").rsplit("/", 1)[-1])
    stem = stem.removesuffix(".git")[:40] or "tree"
    return data_path / "mirrors" / f"{stem}-{hashlib.sha256(url.encode()).hexdigest()[:10]}.git"


class TreeSync:
    """Fetches trees when due and resolves their base commit. One per process: it remembers
    when each tree was last fetched, so a burst of series costs one fetch per *interval*."""

    def __init__(
        self,
        *,
        attempts: int | None = None,
        backoff: float | None = None,
        timeout: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.attempts = FETCH_ATTEMPTS if attempts is None else attempts
        self.backoff = FETCH_BACKOFF if backoff is None else backoff
        self.timeout = FETCH_TIMEOUT if timeout is None else timeout
        self._sleep = sleep
        self._fetched: dict[str, float] = {}  # repo path -> monotonic time of last fetch

    def base(self, tree: Tree, *, force: bool = False) -> str:
        """The full hash of *tree*'s base after fetching it (when it is fetched at all and
        its last fetch is older than its fetch interval, or *force*)."""
        git = Git(tree.path, timeout=self.timeout)
        if tree.url:
            self._ensure_mirror(tree)
        if tree.url or tree.remote:
            self._maybe_fetch(tree, git, force)
        ref = tree.base_ref
        sha = git.rev_parse(ref)
        if sha is None:
            where = f"{tree.url or tree.remote}" if (tree.url or tree.remote) else str(tree.path)
            raise FetchError(
                f"tree {tree.name}: branch {tree.branch!r} does not exist in {where} "
                f"(ref {ref}); check trees.{tree.name}.branch"
            )
        return sha

    # -- mirrors -------------------------------------------------------------------------

    def _ensure_mirror(self, tree: Tree) -> None:
        path = Path(tree.path)
        if (path / "HEAD").is_file() and (path / "objects").is_dir():
            return
        assert tree.url is not None
        with _locked(path):
            if (path / "HEAD").is_file():
                return
            partial = path.with_name(path.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)  # a clone a kill -9 interrupted
            partial.mkdir(parents=True)
            g = Git(partial, timeout=self.timeout)
            g.run("init", "-q", "--bare")
            g.run("remote", "add", MIRROR_REMOTE, tree.url)
            g.run("config", f"remote.{MIRROR_REMOTE}.fetch",
                  f"+refs/heads/*:refs/remotes/{MIRROR_REMOTE}/*")  # fmt: skip
            g.run("config", "gc.auto", "0")  # never gc while a check reads objects
            log.info("tree %s: cloning %s into %s", tree.name, tree.url, path)
            self._fetch(tree, g, MIRROR_REMOTE)
            partial.rename(path)
            self._fetched[str(path)] = time.monotonic()

    def _maybe_fetch(self, tree: Tree, git: Git, force: bool) -> None:
        last = self._fetched.get(str(git.repo))
        if not force and last is not None and time.monotonic() - last < tree.fetch_interval:
            return
        with _locked(Path(tree.path)):
            self._fetch(tree, git, tree.remote or MIRROR_REMOTE)
        self._fetched[str(git.repo)] = time.monotonic()

    def _fetch(self, tree: Tree, git: Git, remote: str) -> None:
        wait = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                git.run("fetch", "--quiet", "--prune", "--no-tags", remote)
            except InfraError as e:
                last = str(e)
                if attempt == self.attempts:
                    raise FetchError(
                        f"tree {tree.name}: fetching {tree.url or remote} failed "
                        f"{self.attempts} times: {last}"
                    ) from e
                log.warning("tree %s: fetch attempt %d/%d failed (%s); again in %.0f s",
                            tree.name, attempt, self.attempts, last, wait)  # fmt: skip
                self._sleep(wait)
                wait *= 2
            else:
                log.info("tree %s: fetched %s", tree.name, tree.url or remote)
                return


@contextlib.contextmanager
def _locked(repo: Path) -> Iterator[None]:
    """One fetch of a repository at a time, across processes (two daemons, workers)."""
    repo.parent.mkdir(parents=True, exist_ok=True)
    with open(repo.with_name(repo.name + ".fetch.lock"), "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
