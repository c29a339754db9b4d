"""Git adapter: every git command patchci runs goes through `Git.run` (and so `proc.run`).

Output formats are pinned (`--no-pager`, full hashes, no colour, C locale), every command has
a timeout, and scratch worktrees are context managers that always clean up and never touch
the user's own checkout (b4's `git_temp_worktree`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path

from patchci import proc
from patchci.errors import CommandFailed, InfraError
from patchci.model import Person

log = logging.getLogger(__name__)

GIT_PREFIX: tuple[str, ...] = (
    "git",
    "--no-pager",
    "-c",
    "core.abbrev=no",
    "-c",
    "color.ui=never",
)
DEFAULT_TIMEOUT = 120.0
LOCK_TIMEOUT = 300.0
LOCK_NAME = "patchci-worktree.lock"
# Used only when neither the environment nor git config names a committer.
FALLBACK_IDENTITY = (("user.name", "patchci"), ("user.email", "patchci@localhost"))


class Git:
    """One repository (or worktree). *deadline* (a `time.monotonic()` value) caps every
    command's timeout, so a check can charge all its git calls to its own budget."""

    def __init__(
        self, repo: str | Path, *, timeout: float = DEFAULT_TIMEOUT, deadline: float | None = None
    ) -> None:
        self.repo = Path(repo)
        self.timeout = timeout
        self.deadline = deadline

    def __repr__(self) -> str:
        return f"Git({str(self.repo)!r})"

    # -- running -----------------------------------------------------------------------

    def _timeout(self, timeout: float | None) -> float:
        t = self.timeout if timeout is None else timeout
        if self.deadline is not None:
            t = min(t, max(self.deadline - time.monotonic(), 0.001))
        return t

    def run(
        self,
        *args: str,
        check: bool = True,
        input: bytes | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> proc.Completed:
        """Run `git <args>` in the repository; raise CommandFailed when *check* and rc != 0."""
        return proc.run(
            [*GIT_PREFIX, *args],
            cwd=self.repo,
            timeout=self._timeout(timeout),
            env=env,
            input=input,
            check=check,
        )

    # -- queries -----------------------------------------------------------------------

    def rev_parse(self, rev: str) -> str | None:
        """Full hash of the commit *rev* names, or None if it names none (or is ambiguous)."""
        if not rev or rev.startswith("-"):
            return None
        res = self.run(
            "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}", check=False
        )
        out = res.stdout.strip()
        return out if res.ok and out else None

    def commit_exists(self, sha: str) -> bool:
        return self.rev_parse(sha) is not None

    def is_ancestor(self, a: str, b: str) -> bool:
        """Whether commit *a* is an ancestor of (or equal to) *b*."""
        res = self.run("merge-base", "--is-ancestor", a, b, check=False)
        if res.returncode in (0, 1):
            return res.returncode == 0
        raise CommandFailed(list(res.argv), res.returncode, res.stdout, res.stderr)

    def _show(self, rev: str, fmt: str) -> str:
        return self.run("log", "-1", f"--format={fmt}", "--end-of-options", rev).stdout

    def subject(self, rev: str) -> str:
        return self._show(rev, "%s").strip()

    def message(self, rev: str) -> str:
        """The raw commit message (subject, body and trailers)."""
        return self._show(rev, "%B")

    def _person(self, rev: str, fmt: str) -> Person:
        name, _, email = self._show(rev, fmt).rstrip("\n").partition("\x00")
        return Person(name=name, email=email)

    def author(self, rev: str, *, mailmap: bool = False) -> Person:
        return self._person(rev, "%aN%x00%aE" if mailmap else "%an%x00%ae")

    def committer(self, rev: str, *, mailmap: bool = False) -> Person:
        return self._person(rev, "%cN%x00%cE" if mailmap else "%cn%x00%ce")

    def log_subjects(self, rev_range: str, max_count: int = 1000) -> list[str]:
        """Subjects of the newest *max_count* commits of *rev_range*, newest first."""
        res = self.run(
            "log", f"--max-count={max_count}", "--format=%s", "--end-of-options", rev_range
        )
        return res.stdout.splitlines()

    def changed_files(self, rev: str) -> list[str]:
        """Every path *rev* touches (both sides of a rename), sorted; for a merge (a pulled
        branch), what it brings to its first parent."""
        res = self.run(
            "diff-tree", "-r", "--root", "--no-commit-id", "--name-only", "--no-renames",
            "--diff-merges=first-parent", "-z", "--end-of-options", rev,
        )  # fmt: skip
        return sorted({p for p in res.stdout.split("\x00") if p})

    def config_get(self, key: str) -> str | None:
        res = self.run("config", "--get", key, check=False)
        return res.stdout.strip() if res.ok and res.stdout.strip() else None

    def identity_config(self) -> list[str]:
        """`-c` options naming a committer, only when none is configured (so `am`/`commit`
        work on a bare CI host without overriding a real identity)."""
        args: list[str] = []
        for (key, value), var in zip(
            FALLBACK_IDENTITY, ("GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"), strict=True
        ):
            if not os.environ.get(var) and self.config_get(key) is None:
                args += ["-c", f"{key}={value}"]
        return args

    def common_dir(self) -> Path:
        """The repository's shared git dir (the same for all its worktrees)."""
        key = self.repo.resolve()
        known = _COMMON_DIRS.get(key)
        if known is None:
            out = self.run("rev-parse", "--git-common-dir").stdout.strip()
            p = Path(out)
            known = _COMMON_DIRS[key] = p if p.is_absolute() else (self.repo / p).resolve()
        return known

    # -- scratch worktrees -------------------------------------------------------------

    @contextlib.contextmanager
    def _worktree_lock(self) -> Iterator[None]:
        """File lock serialising worktree add/remove on this repository across jobs."""
        path = self.common_dir() / LOCK_NAME
        with path.open("a") as fh:
            end = time.monotonic() + LOCK_TIMEOUT
            while True:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > end:
                        raise InfraError(
                            f"timed out after {LOCK_TIMEOUT:g}s waiting for {path}; "
                            "is another patchci job stuck?"
                        ) from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    @contextlib.contextmanager
    def scratch_worktree(self, base: str, path: Path | None = None) -> Iterator[Git]:
        """A detached worktree at *base*, removed on exit whatever happens inside.

        The user's checkout (HEAD, index, files, branches) is never modified.
        """
        tmpdir: Path | None = None
        if path is None:
            tmpdir = Path(tempfile.mkdtemp(prefix="patchci-wt-"))
            path = tmpdir / "wt"
        elif path.exists() or path.is_symlink():
            self._clear_stale(path)
        try:
            with self._worktree_lock():
                self.run("worktree", "add", "--detach", "--", str(path), base)
            log.info("created worktree %s at %s", path, base)
            yield Git(path, timeout=self.timeout, deadline=self.deadline)
        finally:
            self._remove_worktree(path)
            if tmpdir is not None:
                shutil.rmtree(tmpdir, ignore_errors=True)

    @contextlib.contextmanager
    def reused_worktree(
        self, base: str, root: Path, *, git_writes_only: bool = False
    ) -> Iterator[Git]:
        """A worktree under *root* (slot-0, slot-1…, one per concurrent user, held by an
        flock) reset to *base* and kept for the next series: a kernel worktree costs minutes
        to create and remove, a reset touches only the files that differ (NIPA does so).
        *git_writes_only*: the caller lets nothing but git write there unless it says so
        (`touched`), so the next reset may skip `git clean`."""
        root.mkdir(parents=True, exist_ok=True)
        with _free_slot(root) as path:
            if path.exists() and self._is_our_worktree(path):
                wt = Git(path, timeout=self.timeout, deadline=self.deadline)
                _reset_worktree(wt, base)
                log.info("reset worktree %s to %s", path, base)
            else:
                if path.exists() or path.is_symlink():  # not ours any more: a crashed add
                    log.warning("removing %s: not a worktree of %s", path, self.repo)
                    shutil.rmtree(path, ignore_errors=True)
                with self._worktree_lock():
                    self.run("worktree", "prune", check=False)
                    self.run("worktree", "add", "--detach", "--", str(path), base)
                log.info("created worktree %s at %s", path, base)
                if (gitdir := _own_git_dir(path)) is not None:
                    (gitdir / CLEAN_MARK).touch()  # as git made it
            if not git_writes_only:
                touched(path)
            yield Git(path, timeout=self.timeout, deadline=self.deadline)

    def _is_our_worktree(self, path: Path) -> bool:
        """Is *path* a worktree of this repository (its `.git` file points into our
        worktrees dir, and that dir points back)? Read from files: no git process."""
        gitdir = _own_git_dir(path)
        if gitdir is None or not (gitdir / "gitdir").is_file():
            return path.resolve() in {p.resolve() for p in self.worktrees()[1:]}
        try:
            back = Path((gitdir / "gitdir").read_text().strip()).parent.resolve()
        except OSError:
            return False
        return back == path.resolve() and gitdir.parent.parent == self.common_dir().resolve()

    def worktrees(self) -> list[Path]:
        """Paths of all worktrees of this repository (the main one first)."""
        out = self.run("worktree", "list", "--porcelain").stdout
        return [Path(line[9:]) for line in out.splitlines() if line.startswith("worktree ")]

    def _clear_stale(self, path: Path) -> None:
        """Remove a worktree a crashed job left at *path*; refuse anything else there."""
        if path.resolve() not in {p.resolve() for p in self.worktrees()[1:]}:
            raise InfraError(
                f"cannot create a worktree at {path}: it exists and is not a worktree of "
                f"{self.repo}; remove it or choose another work directory"
            )
        log.warning("removing stale worktree %s", path)
        self._remove_worktree(path)

    def _remove_worktree(self, path: Path) -> None:
        # Cleanup gets its own time, even when the job's deadline has passed.
        git = Git(self.repo, timeout=DEFAULT_TIMEOUT) if self.deadline is not None else self
        try:
            with git._worktree_lock():
                res = git.run("worktree", "remove", "--force", "--force", str(path), check=False)
                if not res.ok and path.exists():
                    log.warning("git worktree remove %s failed: %s", path, res.output.strip())
                shutil.rmtree(path, ignore_errors=True)
                git.run("worktree", "prune", check=False)
        except InfraError as e:  # cleanup must not hide the original error
            log.error("could not clean up worktree %s: %s", path, e)
            shutil.rmtree(path, ignore_errors=True)
        log.debug("removed worktree %s", path)

    # -- helpers for demos and tests ---------------------------------------------------

    @classmethod
    def init(cls, path: str | Path, *, branch: str = "main") -> Git:
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        g = cls(p)
        g.run("init", "-q", f"--initial-branch={branch}")
        return g

    def add_all(self) -> None:
        self.run("add", "-A")

    def commit(
        self,
        msg: str,
        author: Person | None = None,
        date: datetime | str | None = None,
        *,
        allow_empty: bool = False,
    ) -> str:
        """Commit the index; return the new commit's full hash."""
        env: dict[str, str] = {}
        args = [*self.identity_config(), "commit", "-q", "--no-verify", "-F", "-"]
        if author is not None:
            args.append(f"--author={author.name} <{author.email}>")
        if date is not None:
            stamp = date.isoformat() if isinstance(date, datetime) else date
            env = {"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp}
        if allow_empty:
            args.append("--allow-empty")
        self.run(*args, input=msg.encode("utf-8"), env=env)
        sha = self.rev_parse("HEAD")
        if sha is None:  # pragma: no cover - commit succeeded, HEAD must exist
            raise InfraError(f"commit in {self.repo} left no HEAD")
        return sha


@contextlib.contextmanager
def _free_slot(root: Path) -> Iterator[Path]:
    """The first slot directory under *root* no other thread or process holds."""
    i = 0
    while True:
        fh = open(root / f"slot-{i}.lock", "a+")  # noqa: SIM115 - held across the yield
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            i += 1
            continue
        try:
            yield root / f"slot-{i}"
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()
        return


# repository -> its common git dir: asked once per process (a git process per series).
_COMMON_DIRS: dict[Path, Path] = {}

# In a kept worktree's own git dir: since its last clean, only git wrote to it (git am,
# checkout), so it has no untracked file and `git clean` (a walk of the whole tree, ~110 ms
# of a ~600 ms series on a kernel tree) can be skipped. Whoever lets other code write
# there removes it (`touched`).
CLEAN_MARK = "patchci-clean"


def _own_git_dir(worktree: Path) -> Path | None:
    """A linked worktree's private git dir, from its `.git` file (no git process)."""
    try:
        text = (worktree / ".git").read_text(errors="replace").strip()
    except OSError:
        return None
    if not text.startswith("gitdir:"):
        return None
    return (worktree / text.removeprefix("gitdir:").strip()).resolve()


def touched(worktree: Path) -> None:
    """Something other than git may write into *worktree*: clean it at its next reset."""
    gitdir = _own_git_dir(worktree)
    if gitdir is not None:
        (gitdir / CLEAN_MARK).unlink(missing_ok=True)


def _reset_worktree(wt: Git, base: str) -> None:
    """Back to a clean *base*: an interrupted `git am`, a dirty index, build output and
    untracked files of the last series all go."""
    gitdir = _own_git_dir(wt.repo)
    if gitdir is None or (gitdir / "rebase-apply").exists():
        wt.run("am", "--abort", check=False)
    # --force drops changes to tracked files and the index too (a `reset --hard` first
    # cost another ~0.5 s on a kernel tree)
    wt.run("checkout", "--quiet", "--force", "--detach", base)
    mark = gitdir / CLEAN_MARK if gitdir is not None else None
    if mark is None or not mark.exists():
        wt.run("clean", "-ffdxq")
    if mark is not None:
        mark.touch()
