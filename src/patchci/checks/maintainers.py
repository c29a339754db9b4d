"""cc_maintainers and maintainers_entry: the MAINTAINERS file against the mail and the tree.

cc_maintainers (patch) options:

- `source`: "maintainers" (default; our own parser of the tree's MAINTAINERS) or
  "get_maintainer" (the tree's `scripts/get_maintainer.pl --no-git --no-git-fallback`).
- `ignore` (list of addresses never required, default `["linux-kernel@vger.kernel.org"]`).

The addresses of the touched entries are compared, case-insensitively, with the mail's
From, To and Cc. A missing maintainer (M:) is FAIL; a missing reviewer (R:) or list (L:)
is WARN. Description: "CCed 5 of 6 maintainers, missing: x@y".

maintainers_entry (series) options:

- `broad_threshold` (int, default 500): an entry covering at least this many files of
  the tree is a subsystem-wide one and does not count as covering a new file.
- `exclude` (list of path prefixes, default `["Documentation/", "tools/testing/"]`).

A file the series adds that no specific entry covers gets WARN "expecting a MAINTAINERS
entry for <file>". The entries are read after the series, so one it adds counts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from patchci import maintainers as mnt
from patchci.checks.base import Check, CheckContext, CheckOptions, Verdict
from patchci.errors import ConfigError
from patchci.git import Git
from patchci.model import Outcome, Patch, Person, Scope
from patchci.sources.mail import MalformedMail, parse_mail

log = logging.getLogger(__name__)

DEFAULT_IGNORE = ("linux-kernel@vger.kernel.org",)
MAINTAINER_ROLES = ("maintainer", "supporter", "odd fixer", "orphan minder",
                    "obsolete minder", "chief penguin")  # fmt: skip


@dataclass
class Expected:
    """Who should be on a patch's mail, by kind, in the order found."""

    maintainers: list[str] = field(default_factory=list)
    reviewers: list[str] = field(default_factory=list)
    lists: list[str] = field(default_factory=list)

    def add(self, kind: str, addr: str) -> None:
        bucket = getattr(self, kind)
        if addr.lower() not in (a.lower() for a in bucket):
            bucket.append(addr)


def expected_from_entries(entries: Iterable[mnt.Entry]) -> Expected:
    exp = Expected()
    for e in entries:
        for p in e.maintainers:
            if p.email.lower() not in mnt.CHIEF_PENGUINS:  # as get_maintainer does
                exp.add("maintainers", p.email)
        for p in e.reviewers:
            exp.add("reviewers", p.email)
        for ml in e.lists:
            if not ml.subscribers_only:
                exp.add("lists", ml.address)
    return exp


def expected_from_get_maintainer(rows: Iterable[tuple[Person, str]]) -> Expected:
    """Sort get_maintainer's `Name <addr> (role:SECTION)` rows into the three kinds."""
    exp = Expected()
    for person, role in rows:
        kind = role.split(":", 1)[0].strip().lower()
        if kind in MAINTAINER_ROLES:
            exp.add("maintainers", person.email)
        elif kind == "reviewer":
            exp.add("reviewers", person.email)
        elif "list" in kind:
            exp.add("lists", person.email)
    return exp


def mail_addresses(patch: Patch) -> set[str]:
    """From, To and Cc of the patch's mail, lower-cased."""
    people = [patch.author, *patch.recipients]
    if patch.raw:
        try:
            parsed = parse_mail(patch.raw)
            people += [parsed.author, *parsed.recipients]
        except MalformedMail:
            log.debug("patch %s: cannot re-read the mail headers", patch.msgid)
    return {p.email.lower() for p in people if p.email}


def cc_verdict(exp: Expected, present: set[str], ignore: Sequence[str]) -> tuple[Outcome, str]:
    skip = {a.lower() for a in ignore}

    def missing(addrs: list[str]) -> list[str]:
        return [a for a in addrs if a.lower() not in present and a.lower() not in skip]

    wanted = [a for a in exp.maintainers if a.lower() not in skip]
    miss_m = missing(exp.maintainers)
    miss_other = missing(exp.reviewers) + missing(exp.lists)
    head = f"CCed {len(wanted) - len(miss_m)} of {len(wanted)} maintainers"
    if miss_m:
        return Outcome.FAIL, f"{head}, missing: {', '.join(miss_m)}"
    if miss_other:
        return Outcome.WARN, f"{head}; missing reviewers/lists: {', '.join(miss_other)}"
    if not wanted and not exp.reviewers and not exp.lists:
        return Outcome.PASS, "no MAINTAINERS entry covers the touched files"
    return Outcome.PASS, head


class CcMaintainersOptions(CheckOptions):
    source: Literal["maintainers", "get_maintainer"] = "maintainers"
    ignore: tuple[str, ...] = DEFAULT_IGNORE


class MaintainersEntryOptions(CheckOptions):
    # NIPA's: an entry covering fewer files than `specific_threshold` is specific (pass);
    # below `broad_threshold` it is broad (warn); only subsystem-wide ones (or none): fail.
    specific_threshold: int = Field(75, ge=1)
    broad_threshold: int = Field(500, ge=1)
    exclude: tuple[str, ...] = ("Documentation/", "tools/testing/")


class CcMaintainers(Check):
    Options = CcMaintainersOptions
    opts: CcMaintainersOptions
    name = "cc_maintainers"
    scope = Scope.PATCH
    tools = ("git",)
    default_timeout = 120.0
    description = "The maintainers of the touched files are on the mail"

    def applies(self, ctx: CheckContext) -> str | None:
        if not (ctx.worktree / "MAINTAINERS").is_file():
            return "skipped: the tree has no MAINTAINERS file"
        if (
            self._source() == "get_maintainer"
            and not (ctx.worktree / "scripts/get_maintainer.pl").is_file()
        ):
            return "skipped: the tree has no scripts/get_maintainer.pl"
        return None

    def _source(self) -> str:
        src = self.opts.source
        if src not in ("maintainers", "get_maintainer"):
            raise ConfigError(
                f"cc_maintainers: source must be maintainers or get_maintainer, not {src!r}"
            )
        return src

    def run(self, ctx: CheckContext) -> Verdict:
        patch = ctx.patch
        if patch is None:
            return Verdict(Outcome.SKIP, "skipped: not a patch")
        git = Git(ctx.worktree, deadline=ctx.deadline)
        diff = git.run("format-patch", "-1", "--stdout", "--no-signature", ctx.commit).stdout
        if self._source() == "get_maintainer":
            path = ctx.log_dir / f"{(ctx.patch_index or 0) + 1}-cc_maintainers.patch"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(diff, encoding="utf-8")
            res = ctx.run(["perl", "scripts/get_maintainer.pl", "--no-git", "--no-git-fallback",
                           "--", str(path)])  # fmt: skip
            if not res.ok:
                return Verdict(
                    Outcome.ERROR, f"get_maintainer.pl failed (exit {res.returncode})", res.output
                )
            exp = expected_from_get_maintainer(mnt.get_maintainer_output(res.stdout.splitlines()))
            source_log = res.stdout
        else:
            text = (ctx.worktree / "MAINTAINERS").read_text(encoding="utf-8", errors="replace")
            entries = mnt.entries_for(
                git.changed_files(ctx.commit), mnt.parse_maintainers(text), diff
            )
            exp = expected_from_entries(entries)
            source_log = "\n".join(f"entry: {e.name}" for e in entries)
        present = mail_addresses(patch)
        ignore = self.opts.ignore
        outcome, desc = cc_verdict(exp, present, ignore)
        body = (f"{source_log}\n\nmaintainers: {', '.join(exp.maintainers)}\n"
                f"reviewers: {', '.join(exp.reviewers)}\nlists: {', '.join(exp.lists)}\n"
                f"on the mail: {', '.join(sorted(present))}\n")  # fmt: skip
        return Verdict(outcome, desc, body)


class MaintainersEntry(Check):
    Options = MaintainersEntryOptions
    opts: MaintainersEntryOptions
    name = "maintainers_entry"
    scope = Scope.SERIES
    tools = ("git",)
    default_timeout = 300.0
    description = "New files are covered by a specific MAINTAINERS entry"

    def applies(self, ctx: CheckContext) -> str | None:
        if not (ctx.worktree / "MAINTAINERS").is_file():
            return "skipped: the tree has no MAINTAINERS file"
        return None

    def run(self, ctx: CheckContext) -> Verdict:
        git = Git(ctx.worktree, deadline=ctx.deadline)
        exclude = self.opts.exclude
        broad = self.opts.broad_threshold
        specific = min(self.opts.specific_threshold, broad)
        added = git.run("diff", "--name-only", "--diff-filter=A", "--no-renames", "-z",
                        ctx.base, ctx.commit).stdout.split("\x00")  # fmt: skip
        new = [f for f in added if f and not f.startswith(exclude)]
        if not new:
            return Verdict(Outcome.PASS, "no new files outside the excluded paths")
        text = (ctx.worktree / "MAINTAINERS").read_text(encoding="utf-8", errors="replace")
        entries = mnt.parse_maintainers(text)
        tree_files = git.run("ls-tree", "-r", "-z", "--name-only", ctx.commit).stdout.split("\x00")
        tree_files = [f for f in tree_files if f]
        sizes: dict[str, int] = {}
        uncovered: list[str] = []  # only subsystem-wide entries, or none: fail
        loose: list[str] = []  # the most specific entry is broad: warn
        lines: list[str] = []
        for f in new:
            found = mnt.entries_for([f], entries)
            for e in found:
                if e.name not in sizes:
                    sizes[e.name] = sum(1 for t in tree_files if mnt.file_depth(e, t) is not None)
            covering = ", ".join(f"{e.name} ({sizes[e.name]} files)" for e in found) or "none"
            lines.append(f"{f}: {covering}")
            smallest = min((sizes[e.name] for e in found if sizes[e.name] > 0), default=None)
            if smallest is None or smallest >= broad:
                uncovered.append(f)
            elif smallest >= specific:
                loose.append(f)
        lines.append(f"(specific: < {specific} files, broad: < {broad})")
        body = "\n".join(lines) + "\n"
        if uncovered:
            return Verdict(
                Outcome.FAIL,
                f"expecting a MAINTAINERS entry for {', '.join(uncovered)}"[:250],
                body,
            )
        if loose:
            return Verdict(
                Outcome.WARN,
                f"only a broad MAINTAINERS entry (>= {specific} files) for {', '.join(loose)}"[
                    :250
                ],
                body,
            )
        return Verdict(Outcome.PASS, f"new files covered: {len(new)}", body)
