"""Series → commits: `git am -3` each patch in a scratch worktree at the base.

`apply_series` never touches the tree's own checkout and always removes its worktree.
Infrastructure trouble (no worktree, git timing out) becomes status ERROR, never FAILED:
only a patch that does not apply is the patch's fault.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from patchci.errors import InfraError
from patchci.git import Git
from patchci.model import CheckResult, Outcome, Series
from patchci.subject import normalise_space

log = logging.getLogger(__name__)

ALREADY_APPLIED_LOOKBACK = 1000


class ApplyStatus(enum.Enum):
    APPLIED = "applied"
    FAILED = "failed"
    ALREADY_APPLIED = "already_applied"
    ERROR = "error"


@dataclass(frozen=True)
class Applied:
    """The result of applying a series. With status APPLIED, `worktree` (valid only inside
    the `apply_series` block) has HEAD at `commits[-1]`, one commit per patch."""

    worktree: Path
    git: Git
    base: str
    commits: tuple[str, ...]
    status: ApplyStatus
    failed_index: int | None
    output: str
    already_applied: bool
    total: int = 0
    repo: Path | None = None  # the tree's own repository (git is the worktree's)
    pull: str | None = None  # a pull request's "URL REF": commits[0] is its merge

    @property
    def ok(self) -> bool:
        return self.status is ApplyStatus.APPLIED


@dataclass(frozen=True)
class _Step:
    """One `git am` of one patch: the new commit, or none because it failed (ok False) or
    because the base already has its changes (present True)."""

    commit: str | None
    ok: bool
    present: bool
    output: str


@contextlib.contextmanager
def apply_series(
    git: Git, base: str, series: Series, workdir: Path, *, timeout: float = 300,
    reuse: Path | None = None,
) -> Iterator[Applied]:  # fmt: skip
    """Apply *series* on *base* of the tree *git* in a worktree under *workdir*.

    Yields an Applied whatever happens; the worktree is removed when the block exits, or,
    with *reuse* (a directory of persistent worktrees), kept and reset for the next series.
    """
    n = len(series.patches)
    sha = git.rev_parse(base)
    if sha is None:
        msg = f"base {base!r} is not a commit in {git.repo}"
        log.error("series %s: %s", series.key, msg)
        yield dataclasses.replace(_error(git, workdir, base, msg, n), repo=git.repo)
        return
    workdir.mkdir(parents=True, exist_ok=True)
    # A Message-Id key holds <, > and @: not in a path a shell command will name.
    path = workdir / ("wt-" + re.sub(r"[^A-Za-z0-9._-]+", "_", series.key)[:80])
    # the whole apply (worktree checkout included) shares one budget
    scratch = Git(git.repo, timeout=timeout, deadline=time.monotonic() + timeout)
    yielded = False
    try:
        worktree = (
            # git_writes_only: the checks' commands see it read-only, or say they wrote
            scratch.reused_worktree(sha, reuse, git_writes_only=True)
            if reuse
            else scratch.scratch_worktree(sha, path)
        )
        with worktree as wt:
            try:
                applied = _apply_all(wt, sha, series)
            except InfraError as e:
                log.error("series %s: applying failed (infrastructure): %s", series.key, e)
                applied = _error(wt, wt.repo, sha, f"infrastructure error while applying: {e}", n)
            yielded = True
            yield dataclasses.replace(applied, repo=git.repo)
    except InfraError as e:
        if yielded:  # raised by the caller's block: not ours to swallow
            raise
        log.error("series %s: cannot create worktree at %s: %s", series.key, sha[:12], e)
        err = _error(git, path, sha, f"could not create a worktree at {sha}: {e}", n)
        yield dataclasses.replace(err, repo=git.repo)


def _error(git: Git, path: Path, base: str, msg: str, total: int) -> Applied:
    return Applied(path, git, base, (), ApplyStatus.ERROR, None, msg, False, total)


def _am(wt: Git, raw: bytes, ident: Sequence[str]) -> _Step:
    before = wt.rev_parse("HEAD")
    res = wt.run(
        *ident, "-c", "core.hooksPath=/dev/null",
        "am", "-3", "--keep-cr", "--no-gpg-sign",
        input=raw, check=False,
    )  # fmt: skip
    if not res.ok:
        wt.run("am", "--abort", check=False)
        return _Step(None, False, False, res.output)
    after = wt.rev_parse("HEAD")
    # `am -3` says "No changes -- Patch already applied." and makes no commit
    no_change = after is None or after == before
    return _Step(None if no_change else after, True, no_change, res.output)


# A fetch that failed because of what the pull request names (its fault), not the network.
_BAD_PULL = ("does not appear to be a git repository", "couldn't find remote ref",
             "repository not found", "not found", "invalid refspec", "no such file or directory",
             "unable to find remote helper", "transport '", "is not a valid")  # fmt: skip
PULL_PROTOCOLS = ("https", "http", "git", "file")  # not ssh: it would use our keys


def _pull(wt: Git, base: str, url_ref: str) -> Applied:
    """Fetch a pull request's URL and ref and merge it into *base* (NIPA's `git pull`):
    commits[0] is the merge commit, so the checks compare the base with the merge."""
    url, _, ref = url_ref.partition(" ")
    ident = wt.identity_config()
    allow = ["-c", "protocol.allow=never"] + [
        x for p in PULL_PROTOCOLS for x in ("-c", f"protocol.{p}.allow=always")]  # fmt: skip
    fetch = wt.run(*allow, "fetch", "--no-tags", "--no-write-fetch-head", "--", url,
                   f"{ref.strip() or 'HEAD'}:refs/patchci/pull", check=False)  # fmt: skip
    out = [f"=== git fetch {url} {ref}\n{fetch.output.rstrip()}\n"]
    if not fetch.ok:
        low = fetch.output.lower()
        if any(b in low for b in _BAD_PULL):
            out.append(f"cannot fetch {url_ref}\n")
            return Applied(wt.repo, wt, base, (), ApplyStatus.FAILED, 0, "\n".join(out), False,
                           1, pull=url_ref)  # fmt: skip
        raise InfraError(f"git fetch {url} failed: {fetch.output.strip()[-300:]}")
    head = wt.rev_parse("refs/patchci/pull")
    count = wt.run("rev-list", "--count", f"{base}..refs/patchci/pull").stdout.strip()
    merge = wt.run(*ident, "-c", "core.hooksPath=/dev/null", "merge", "--no-ff", "--no-edit",
                   "--no-gpg-sign", "-m", f"Merge {url_ref}", "refs/patchci/pull", check=False)  # fmt: skip
    wt.run("update-ref", "-d", "refs/patchci/pull", check=False)
    out.append(f"=== git merge {str(head)[:12]} ({count} commits)\n{merge.output.rstrip()}\n")
    if not merge.ok:
        wt.run("merge", "--abort", check=False)
        return Applied(wt.repo, wt, base, (), ApplyStatus.FAILED, 0, "\n".join(out), False, 1,
                       pull=url_ref)  # fmt: skip
    sha = wt.rev_parse("HEAD")
    status = ApplyStatus.APPLIED if sha and sha != base else ApplyStatus.ALREADY_APPLIED
    commits = (sha,) if sha and status is ApplyStatus.APPLIED else ()
    return Applied(wt.repo, wt, base, commits, status, None, "\n".join(out),
                   status is ApplyStatus.ALREADY_APPLIED, int(count or 0), pull=url_ref)  # fmt: skip


def _apply_all(wt: Git, base: str, series: Series) -> Applied:
    if series.pull_url:
        return _pull(wt, base, series.pull_url)
    ident = wt.identity_config()
    commits: list[str] = []
    outputs: list[str] = []
    present: list[int] = []  # patches whose changes the base already has
    n = len(series.patches)
    for i, patch in enumerate(series.patches):
        step = _am(wt, patch.raw, ident)
        outputs.append(f"=== patch {i + 1}/{n}: {patch.subject}\n{step.output.rstrip()}\n")
        if step.commit is not None:
            commits.append(step.commit)
        elif step.present:
            present.append(i)
        else:
            return _stopped(wt, base, series, commits, outputs, i)
    if present:
        if len(present) == n:
            outputs.append("every patch is already present in the base\n")
            return _done(wt, base, commits, outputs, ApplyStatus.ALREADY_APPLIED, None, n)
        return _stopped(wt, base, series, commits, outputs, present[0])
    log.info("series %s: applied %d patches on %s", series.key, n, base[:12])
    return _done(wt, base, commits, outputs, ApplyStatus.APPLIED, None, n)


def _stopped(
    wt: Git, base: str, series: Series, commits: list[str], outputs: list[str], index: int
) -> Applied:
    """Patch *index* did not apply (or was already present while others were not)."""
    n = len(series.patches)
    if _all_titles_in_log(wt, base, series):
        outputs.append(f"every patch title is a subject among the last "
                       f"{ALREADY_APPLIED_LOOKBACK} commits of the base\n")  # fmt: skip
        log.info("series %s: already applied to %s", series.key, base[:12])
        return _done(wt, base, commits, outputs, ApplyStatus.ALREADY_APPLIED, None, n)
    outputs.append(f"patch {index + 1}/{n} does not apply\n")
    log.info("series %s: patch %d/%d does not apply", series.key, index + 1, n)
    return _done(wt, base, commits, outputs, ApplyStatus.FAILED, index, n)


def _done(
    wt: Git,
    base: str,
    commits: list[str],
    outputs: list[str],
    status: ApplyStatus,
    failed: int | None,
    n: int,
) -> Applied:
    already = status is ApplyStatus.ALREADY_APPLIED
    return Applied(
        wt.repo, wt, base, tuple(commits), status, failed, "\n".join(outputs), already, n
    )


def _all_titles_in_log(git: Git, base: str, series: Series) -> bool:
    """NIPA's "already applied": every patch title is the subject of a recent base commit."""
    recent = {normalise_space(s) for s in git.log_subjects(base, ALREADY_APPLIED_LOOKBACK)}
    titles = [normalise_space(p.info.title) for p in series.patches]
    return bool(titles) and all(t in recent for t in titles)


def apply_result(
    applied: Applied, tree: str | None = None, log_dir: Path | None = None
) -> CheckResult:
    """The `apply` stage result. *tree* names the tree in the description; with *log_dir*
    the am output is written to `<log_dir>/apply.log`."""
    name = tree or (applied.repo or applied.git.repo).name
    n = applied.total or len(applied.commits)
    base = applied.base[:12]
    if applied.pull is not None:
        outcome, desc = _pull_result(applied, name, n)
    elif applied.status is ApplyStatus.APPLIED:
        outcome, desc = (
            Outcome.PASS,
            f"Applied {n} patch{'es' if n != 1 else ''} on {name} (base {base})",
        )
    elif applied.status is ApplyStatus.ALREADY_APPLIED:
        outcome, desc = Outcome.PASS, f"Series already applied to {name} (base {base})"
    elif applied.status is ApplyStatus.FAILED:
        idx = (applied.failed_index or 0) + 1
        outcome, desc = Outcome.FAIL, f"Patch {idx}/{n} does not apply to {name}"
    else:
        outcome, desc = (
            Outcome.ERROR,
            f"Could not apply to {name} (infrastructure): "
            + (applied.output.strip().splitlines() or ["unknown error"])[0],
        )
    log_path: str | None = None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        p = log_dir / "apply.log"
        p.write_text(f"{desc}\n\n{applied.output}", encoding="utf-8")
        log_path = str(p)
    details: tuple[tuple[str, str], ...] = (("status", applied.status.value), ("base", applied.base))
    if applied.pull is not None:
        details += (("pull", applied.pull),)
    return CheckResult("apply", outcome, desc, None, log_path, 0.0, None, details)


def _pull_result(applied: Applied, name: str, n: int) -> tuple[Outcome, str]:
    base = applied.base[:12]
    if applied.status is ApplyStatus.APPLIED:
        return Outcome.PASS, (f"Pulled {applied.pull} into {name} (base {base}): {n} "
                              f"commit{'s' if n != 1 else ''}")  # fmt: skip
    if applied.status is ApplyStatus.ALREADY_APPLIED:
        return Outcome.PASS, f"Pull request already merged in {name} (base {base})"
    if applied.status is ApplyStatus.FAILED:
        return Outcome.FAIL, f"Pull to {name} failed: {_last_error(applied.output)}"[:250]
    return Outcome.ERROR, f"Could not pull into {name} (infrastructure)"


def _last_error(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    picked = [ln for ln in lines if ln.lower().startswith(("fatal:", "conflict", "error:"))]
    return (picked or lines[-1:] or ["unknown"])[0]
