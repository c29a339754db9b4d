"""fixes_tag: every `Fixes:` line names a real, earlier commit the way the kernel asks.

Re-implements the rules of SFR's verify_fixes (which NIPA runs): the id has at least 12 hex
digits, exists in the target tree and is an ancestor of what the patch applies on, the
`("subject")` matches that commit's subject (a trailing "..." may truncate it), parentheses
and quotes are balanced, the tag is on one line, and no "commit" word precedes the id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from patchci.checks.base import Check, CheckContext, Verdict
from patchci.git import Git
from patchci.model import Outcome, Scope

MIN_SHA_LEN = 12
_FIXES_RE = re.compile(r"^\s*fixes:\s*((?:.*\S)?)\s*$", re.IGNORECASE)
_TRAILER_RE = re.compile(r"^\s*[A-Za-z][A-Za-z0-9-]*:\s")
_ID_RE = re.compile(r"^(commit\s+)?([0-9a-fA-F]+)\b\s*(.*)$", re.IGNORECASE)


@dataclass(frozen=True)
class FixesLine:
    """One Fixes tag as written; `sha`/`subject` are None when they cannot be read."""

    text: str
    sha: str | None
    subject: str | None
    problems: tuple[str, ...]


def _collect(message: str) -> list[tuple[str, bool]]:
    """(value, wrapped) for each Fixes line; a tag whose `("...")` is continued on the next
    non-blank, non-trailer lines is joined and marked wrapped."""
    lines = message.splitlines()
    out: list[tuple[str, bool]] = []
    i = 0
    while i < len(lines):
        m = _FIXES_RE.match(lines[i])
        i += 1
        if not m:
            continue
        value, wrapped = m.group(1), False
        while (
            value.count("(") > value.count(")")
            and i < len(lines)
            and lines[i].strip()
            and not _TRAILER_RE.match(lines[i])
        ):
            value, wrapped = f"{value} {lines[i].strip()}", True
            i += 1
        out.append((value, wrapped))
    return out


def _subject_of(rest: str, problems: list[str]) -> str | None:
    rest = rest.strip()
    if not rest:
        problems.append('no subject: write the tag as Fixes: <sha> ("<subject>")')
        return None
    if rest.count("(") != rest.count(")") or not (rest.startswith("(") and rest.endswith(")")):
        problems.append('subject is not enclosed in balanced parentheses: ("<subject>")')
    enclosed = rest.startswith("(") and rest.endswith(")") and len(rest) >= 2
    inner = (rest[1:-1] if enclosed else rest.strip("()")).strip()
    if len(inner) >= 2 and inner.startswith('"') and inner.endswith('"'):
        return inner[1:-1].strip() or None
    problems.append('subject is not enclosed in double quotes: ("<subject>")')
    return inner.strip('"').strip() or None


def parse_fixes(message: str) -> list[FixesLine]:
    """The Fixes tags of a commit message with the problems visible without git."""
    out = []
    for value, wrapped in _collect(message):
        problems: list[str] = []
        if wrapped:
            problems.append("tag is split across lines; keep it on one line")
        m = _ID_RE.match(value)
        if m is None:
            problems.append("does not start with a commit id")
            out.append(FixesLine(value, None, None, tuple(problems)))
            continue
        if m.group(1):
            problems.append('drop the word "commit" before the id')
        sha = m.group(2)
        if len(sha) < MIN_SHA_LEN:
            problems.append(f"commit id should be at least {MIN_SHA_LEN} digits (has {len(sha)})")
        subject = _subject_of(m.group(3), problems)
        out.append(FixesLine(value, sha, subject, tuple(problems)))
    return out


def subject_matches(given: str, actual: str) -> bool:
    g, a = " ".join(given.split()), " ".join(actual.split())
    if g == a:
        return True
    if g.endswith("...") and len(g) > 3:
        return a.startswith(g[:-3].rstrip())
    return False


def _shallow(git: Git) -> bool:
    res = git.run("rev-parse", "--is-shallow-repository", check=False)
    return res.ok and res.stdout.strip() == "true"


def verify(tag: FixesLine, git: Git, upto: str) -> tuple[list[str], str | None]:
    """Problems found by looking the tag up in *git* (unknown id, not an ancestor of *upto*,
    the patch's parent; subject mismatch), and the tag as it should be written."""
    problems = list(tag.problems)
    if tag.sha is None:
        return problems, None
    full = git.rev_parse(tag.sha)
    if full is None:
        problems.append(f"unknown commit id {tag.sha} (not in the tree, or ambiguous)")
        return problems, None
    if not git.is_ancestor(full, upto):
        problems.append(f"commit {full[:12]} is not an ancestor of the base")
    actual = git.subject(full)
    if tag.subject is not None and not subject_matches(tag.subject, actual):
        problems.append(f'subject does not match the commit: "{actual}"')
    return problems, f'Fixes: {full[:12]} ("{actual}")'


class FixesTag(Check):
    name = "fixes_tag"
    scope = Scope.PATCH
    tools = ("git",)
    default_timeout = 60.0
    description = "Fixes: tags name an existing ancestor commit with its subject"

    def run(self, ctx: CheckContext) -> Verdict:
        wt = Git(ctx.worktree, deadline=ctx.deadline)
        tags = parse_fixes(wt.message(ctx.commit))
        if not tags:
            return Verdict(Outcome.PASS, "No Fixes tags")
        tree_repo = Path(ctx.tree.path)
        # The worktree shares the tree's objects; use the tree itself when it is here.
        git = Git(tree_repo, deadline=ctx.deadline) if tree_repo.is_dir() else wt
        shallow = _shallow(git)
        count = 0
        lines: list[str] = []
        for tag in tags:
            problems, expected = verify(tag, git, ctx.parent)
            unknown = [p for p in problems if p.startswith("unknown commit id")]
            if shallow and unknown:
                # A shallow tree lacks most of its history: the patch is not to blame.
                why = (f"the tree {ctx.tree.name} is a shallow clone, so commit {tag.sha} "
                       "cannot be looked up; unshallow it (git fetch --unshallow) or use a "
                       "'url' tree (patchci clones those in full)")  # fmt: skip
                return Verdict(Outcome.ERROR, why, f"Fixes: {tag.text}\n  - {why}\n")
            count += len(problems)
            lines.append(f"Fixes: {tag.text}")
            lines += [f"  - {p}" for p in problems] or ["  ok"]
            if problems and expected:
                lines.append(f"  expected: {expected}")
        log = "\n".join(lines) + "\n"
        if count:
            return Verdict(Outcome.FAIL, f"Fixes tag problems: {count}", log)
        n = len(tags)
        return Verdict(Outcome.PASS, f"Fixes tag{'s' if n > 1 else ''} look correct ({n})", log)
