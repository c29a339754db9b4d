"""A git remote's refs as series (`type = "git"`): forks' branches, Patchew-style tags.

Each poll lists the remote's refs (`git ls-remote`, only those matching `refs`); a ref at a
commit not seen before (new, moved or force-pushed) becomes a series: the commits from its
merge base with the tree's branch, formatted as patch mails (`git format-patch`), keyed
`<ref>@<sha>` so that the same commit is one series however often it is polled. Fetched
objects live in a bare cache repository of the source under the data directory.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from patchci.errors import CommandFailed, CommandTimeout, FetchError
from patchci.git import Git
from patchci.model import Series
from patchci.sources.mail import MalformedMail, parse_mail
from patchci.sources.mbox import group_series

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 600.0


@dataclass(frozen=True)
class RefSeries:
    """What one ref at one commit gave: a series, or why none (`problem`)."""

    ref: str
    sha: str
    series: Series | None
    problem: str | None = None  # too many commits, no commit, a mail that does not parse


def series_key(ref: str, sha: str) -> str:
    return f"{ref}@{sha}"


def list_refs(cache: Git, url: str, patterns: Sequence[str]) -> dict[str, str]:
    """ref → commit of the remote's refs matching *patterns* (fnmatch); FetchError when
    the remote cannot be read (ours: retried next poll)."""
    try:
        res = cache.run("ls-remote", "--", url, check=False, timeout=FETCH_TIMEOUT)
    except CommandTimeout as e:
        raise FetchError(f"git ls-remote {url}: timed out") from e
    if not res.ok:
        raise FetchError(f"git ls-remote {url}: {res.output.strip()[-300:]}")
    out = {}
    for line in res.stdout.splitlines():
        sha, _, ref = line.partition("\t")
        if ref.endswith("^{}"):  # the commit an annotated tag points to
            ref = ref[:-3]
        elif f"{ref}^{{}}" in res.stdout:
            continue  # the tag object itself: the peeled line names the commit
        if any(fnmatch.fnmatchcase(ref, p) for p in patterns):
            out[ref] = sha
    return out


def _fetch(cache: Git, url: str, refspec: str) -> None:
    try:
        res = cache.run("fetch", "--no-tags", "--quiet", "--", url, refspec, check=False,
                        timeout=FETCH_TIMEOUT)  # fmt: skip
    except CommandTimeout as e:
        raise FetchError(f"git fetch {url}: timed out") from e
    if not res.ok:
        raise FetchError(f"git fetch {url} {refspec}: {res.output.strip()[-300:]}")


def open_cache(path: Path) -> Git:
    if not (path / "HEAD").is_file():
        path.mkdir(parents=True, exist_ok=True)
        Git(path).run("init", "--quiet", "--bare")
    return Git(path)


def ref_series(
    cache: Git, *, source: str, url: str, ref: str, sha: str, base_url: str,
    base_branch: str, tree: str, max_commits: int,
) -> RefSeries:  # fmt: skip
    """Fetch *ref* of *url* and the tree's *base_branch* (from *base_url*) into *cache*;
    the commits of *ref* since their merge base as a series tagged for *tree*."""
    _fetch(cache, base_url, f"+refs/heads/{base_branch}:refs/patchci/base")
    _fetch(cache, url, f"+{ref}:refs/patchci/ref")
    head = cache.rev_parse("refs/patchci/ref")
    if head is None:
        raise FetchError(f"{url} {ref}: fetched, but no commit")
    mb = cache.run("merge-base", "refs/patchci/base", head, check=False)
    if not mb.ok:
        return RefSeries(ref, sha, None, f"no common history with {tree}'s {base_branch}")
    base = mb.stdout.strip()
    commits = cache.run("rev-list", "--reverse", "--no-merges", f"{base}..{head}").stdout.split()
    if not commits:
        return RefSeries(ref, sha, None, f"nothing on top of {tree}'s {base_branch}")
    if len(commits) > max_commits:
        return RefSeries(ref, sha, None, f"{len(commits)} commits on top of {tree}'s "
                         f"{base_branch} (more than max_commits = {max_commits})")  # fmt: skip
    try:
        mbox = cache.run("format-patch", "--stdout", "--thread=shallow", "--no-signature",
                         f"--subject-prefix=PATCH {tree}", f"{base}..{head}").stdout  # fmt: skip
    except CommandFailed as e:
        raise FetchError(f"git format-patch {ref}: {e}") from e
    mails = []
    for part in _split(mbox.encode("utf-8", errors="surrogateescape")):
        try:
            mails.append((ref, parse_mail(part)))
        except MalformedMail as e:
            return RefSeries(ref, sha, None, f"a commit does not format as a mail: {e}")
    grouped = group_series(mails, source)
    if len(grouped.series) != 1:
        return RefSeries(ref, sha, None, f"formatted as {len(grouped.series)} series, not one")
    s = grouped.series[0]
    short = ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
    named = dataclasses.replace(s, key=series_key(ref, sha),
                                name=f"{short}: {s.patches[0].info.title or s.name}")  # fmt: skip
    return RefSeries(ref, sha, named)


def _split(mbox: bytes) -> list[bytes]:
    """format-patch's mbox, one mail per `From <sha> Mon Sep 17 00:00:00 2001` line."""
    parts: list[bytes] = []
    for line in mbox.splitlines(keepends=True):
        if line.startswith(b"From ") and line.rstrip().endswith(b"2001"):
            parts.append(b"")
        if parts:
            parts[-1] += line
    return parts
