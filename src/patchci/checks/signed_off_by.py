"""signed_off_by: the author (and, if asked, the committer) signed off the commit.

As SFR's verify_signedoff: the author's name or email must appear in a `Signed-off-by:`
line. patchci applies with `git am` without `-s`, so the committer is patchci itself; the
committer is therefore only checked with the option `require_committer = true` (useful when
checking commits from a pull request or a local branch).
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Sequence

from patchci.checks.base import Check, CheckContext, CheckOptions, Verdict
from patchci.git import Git
from patchci.model import Outcome, Person, Scope

_SOB_RE = re.compile(r"^\s*signed-off-by:\s*((?:.*\S)?)\s*$", re.IGNORECASE | re.MULTILINE)


def sign_offs(message: str) -> list[Person]:
    """The people in a commit message's Signed-off-by lines, in order. Never raises."""
    out = []
    for m in _SOB_RE.finditer(message):
        value = m.group(1)
        if "@" in value:
            name, addr = email.utils.parseaddr(value)
        else:  # a bare name: parseaddr would take its first word for an address
            name, addr = value, ""
        out.append(Person(name.strip(), addr.strip()))
    return out


def _norm(s: str) -> str:
    return " ".join(s.split()).casefold()


def signed_by(person: Person, sobs: Sequence[Person], *aliases: Person) -> bool:
    """Whether *person* (or one of its *aliases*, e.g. its .mailmap form) signed off, by
    name or by email."""
    for who in (person, *aliases):
        for sob in sobs:
            if who.email and _norm(sob.email) == _norm(who.email):
                return True
            if who.name and _norm(sob.name) == _norm(who.name):
                return True
    return False


class SignedOffByOptions(CheckOptions):
    require_committer: bool = False


class SignedOffBy(Check):
    Options = SignedOffByOptions
    opts: SignedOffByOptions
    name = "signed_off_by"
    scope = Scope.PATCH
    tools = ("git",)
    default_timeout = 60.0
    description = "Author (and optionally committer) has a Signed-off-by line"

    def run(self, ctx: CheckContext) -> Verdict:
        git = Git(ctx.worktree, deadline=ctx.deadline)
        rev = ctx.commit
        sobs = sign_offs(git.message(rev))
        author = git.author(rev)
        missing: list[str] = []
        if not signed_by(author, sobs, git.author(rev, mailmap=True)):
            missing.append(f"author {author}")
        if self.opts.require_committer:
            committer = git.committer(rev)
            if not signed_by(committer, sobs, git.committer(rev, mailmap=True)):
                missing.append(f"committer {committer}")
        found = "\n".join(f"  Signed-off-by: {p}" for p in sobs) or "  (none)"
        log = f"commit {rev}\nauthor: {author}\nSigned-off-by lines:\n{found}\n"
        if missing:
            return Verdict(Outcome.FAIL, f"Missing Signed-off-by from {' and '.join(missing)}", log)
        who = "author and committer" if self.opts.require_committer else "author"
        return Verdict(Outcome.PASS, f"Signed-off-by present for {who}", log)
