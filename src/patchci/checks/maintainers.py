"""cc_maintainers and maintainers_entry: the MAINTAINERS file against the mail and the tree.

cc_maintainers (patch) options:

- `source`: "maintainers" (default; our own parser of the tree's MAINTAINERS) or
  "get_maintainer" (the tree's `scripts/get_maintainer.pl --no-git --no-git-fallback`).
- `ignore` (list of addresses never required, default `["linux-kernel@vger.kernel.org"]`).
- `policy`: "netdev" (default, NIPA's): every wanted address (maintainers, reviewers,
  lists) counts alike; missing ones WARN when more than one wanted address was CCed, FAIL
  otherwise. "strict": a missing maintainer (M:) FAILs, a missing reviewer or list WARNs.
- `blamed` (bool, default true): the authors of the commits the patch's `Fixes:` tags
  name are wanted too, and one missing FAILs under either policy (NIPA's "blamed authors
  not CCed"), unless stale.
- `stale_months` (int, default 36; 0: never stale): a blamed author with no commit in the
  tree (as author, or named in a commit message: trailers) for that long, counted back
  from the base commit's date, has moved on and is not required (NIPA asks lore the same
  question; a history shorter than the window never makes anyone stale).
- `aliases` (list of `.mailmap`-format lines): added to the tree's `.mailmap`; a wanted
  address counts as CCed when another address of its mailmap line is on the mail.

The addresses are compared, case-insensitively, with the mail's From, To and Cc.
Description: "CCed 5 of 6 maintainers", "1 maintainers not CCed: x@y",
"1 blamed authors not CCed: a@b; 0 maintainers not CCed: ".

maintainers_entry (series) options:

- `broad_threshold` (int, default 500): an entry covering at least this many files of
  the tree is a subsystem-wide one and does not count as covering a new file.
- `exclude` (list of path prefixes, default `["Documentation/", "tools/testing/"]`).

A file the series adds that no specific entry covers gets WARN "expecting a MAINTAINERS
entry for <file>". The entries are read after the series, so one it adds counts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
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
    blamed: list[str] = field(default_factory=list)  # authors of the commits it fixes

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
        if kind.startswith("blamed_fixes"):  # get_maintainer's --fixes (on by default)
            exp.add("blamed", person.email)
        elif kind in MAINTAINER_ROLES:
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


_EMAIL_RE = re.compile(r"<([^<>\s]+@[^<>\s]+)>")


def mailmap_aliases(lines: Iterable[str]) -> dict[str, set[str]]:
    """Address → every address sharing a `.mailmap` line with it (joined through shared
    addresses), lower-cased; `# comments` skipped."""
    groups: dict[str, set[str]] = {}
    for line in lines:
        found = [a.lower() for a in _EMAIL_RE.findall(line.split("#", 1)[0])]
        if len(found) < 2:
            continue
        merged = set(found)
        for a in found:
            merged |= groups.get(a, set())
        for a in merged:
            groups[a] = merged
    return groups


@dataclass(frozen=True)
class CcFindings:
    found: list[str]
    missing: list[str]
    missing_blamed: list[str]
    mapped: list[str]  # counted as CCed through an alias
    stale: list[str]


def cc_findings(
    exp: Expected, present: set[str], ignore: Sequence[str],
    aliases: Mapping[str, set[str]] | None = None, stale: Iterable[str] = (),
    kinds: Sequence[str] = ("maintainers", "reviewers", "lists"),
) -> CcFindings:  # fmt: skip
    """Who of *kinds* and the blamed authors is on the mail (directly or by an alias)."""
    skip = {a.lower() for a in ignore}
    gone = {a.lower() for a in stale}
    aliases = aliases or {}
    wanted = list(dict.fromkeys(a.lower() for k in kinds for a in getattr(exp, k)))
    blamed = [a.lower() for a in exp.blamed if a.lower() not in gone]
    wanted = [a for a in dict.fromkeys([*wanted, *blamed]) if a not in skip]
    mapped = [a for a in wanted if a not in present and aliases.get(a, set()) & present]
    found = [a for a in wanted if a in present or a in mapped]
    missing = [a for a in wanted if a not in found]
    return CcFindings(found, missing, [a for a in blamed if a in missing and a not in skip],
                      mapped, sorted(gone & {a.lower() for a in exp.blamed}))  # fmt: skip


def cc_verdict(
    exp: Expected, present: set[str], ignore: Sequence[str], policy: str = "strict",
    aliases: Mapping[str, set[str]] | None = None, stale: Iterable[str] = (),
) -> tuple[Outcome, str]:  # fmt: skip
    f = cc_findings(exp, present, ignore, aliases, stale)
    if f.missing_blamed:
        others = [a for a in f.missing if a not in f.missing_blamed]
        return Outcome.FAIL, (f"{len(f.missing_blamed)} blamed authors not CCed: "
                              f"{' '.join(f.missing_blamed)}; {len(others)} maintainers not "
                              f"CCed: {' '.join(others)}").rstrip()  # fmt: skip
    if policy == "netdev":
        if f.missing:
            outcome = Outcome.WARN if len(f.found) > 1 else Outcome.FAIL
            return outcome, f"{len(f.missing)} maintainers not CCed: {' '.join(f.missing)}"
        if not f.found:
            return Outcome.PASS, "no MAINTAINERS entry covers the touched files"
        return Outcome.PASS, f"CCed {len(f.found)} of {len(f.found)} maintainers"
    skip = {a.lower() for a in ignore}

    def absent(addrs: list[str]) -> list[str]:
        return [a for a in addrs if a in f.missing]

    maint = [a for a in dict.fromkeys(a.lower() for a in exp.maintainers) if a not in skip]
    miss_m = absent(maint)
    miss_other = absent(list(dict.fromkeys(a.lower() for a in exp.reviewers + exp.lists)))
    head = f"CCed {len(maint) - len(miss_m)} of {len(maint)} maintainers"
    if miss_m:
        return Outcome.FAIL, f"{head}, missing: {', '.join(miss_m)}"
    if miss_other:
        return Outcome.WARN, f"{head}; missing reviewers/lists: {', '.join(miss_other)}"
    if not f.found and not f.missing:
        return Outcome.PASS, "no MAINTAINERS entry covers the touched files"
    return Outcome.PASS, head


class CcMaintainersOptions(CheckOptions):
    source: Literal["maintainers", "get_maintainer"] = "maintainers"
    ignore: tuple[str, ...] = DEFAULT_IGNORE
    policy: Literal["netdev", "strict"] = "netdev"
    blamed: bool = True
    stale_months: int = Field(36, ge=0)
    aliases: tuple[str, ...] = ()


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
        if not self.opts.blamed:
            exp.blamed = []
        elif self._source() == "maintainers":
            for addr in blamed_authors(git, patch):
                exp.add("blamed", addr)
        present = mail_addresses(patch)
        aliases = self._aliases(ctx)
        findings = cc_findings(exp, present, self.opts.ignore, aliases)
        stale = [a for a in findings.missing_blamed
                 if is_stale(git, a, ctx.base, self.opts.stale_months)]  # fmt: skip
        outcome, desc = cc_verdict(exp, present, self.opts.ignore, self.opts.policy, aliases,
                                   stale)  # fmt: skip
        final = cc_findings(exp, present, self.opts.ignore, aliases, stale)
        body = (f"{source_log}\n\npolicy: {self.opts.policy}\n"
                f"maintainers: {', '.join(exp.maintainers)}\n"
                f"reviewers: {', '.join(exp.reviewers)}\nlists: {', '.join(exp.lists)}\n"
                f"blamed (authors of the commits it fixes): {', '.join(exp.blamed) or '-'}\n"
                f"stale (no commit in {self.opts.stale_months} months): {', '.join(stale) or '-'}\n"
                f"mapped (an alias is on the mail): {', '.join(final.mapped) or '-'}\n"
                f"on the mail: {', '.join(sorted(present))}\n"
                f"missing: {', '.join(final.missing) or '-'}\n")  # fmt: skip
        return Verdict(outcome, desc, body)

    def _aliases(self, ctx: CheckContext) -> dict[str, set[str]]:
        path = ctx.worktree / ".mailmap"
        lines = list(self.opts.aliases)
        if path.is_file():
            lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
        return mailmap_aliases(lines)


def blamed_authors(git: Git, patch: Patch) -> list[str]:
    """The authors' addresses of the commits the patch's `Fixes:` tags name (those the tree
    has; an unknown id is fixes_tag's to report)."""
    from patchci.checks.fixes_tag import parse_fixes

    text = patch.raw.decode("utf-8", errors="replace").split("\n---", 1)[0]
    out: list[str] = []
    for tag in parse_fixes(text):
        if not tag.sha:
            continue
        res = git.run("log", "-1", "--format=%aE", tag.sha, "--", check=False)
        addr = res.stdout.strip() if res.ok else ""
        if addr and addr not in out:
            out.append(addr)
    return out


def is_stale(git: Git, addr: str, base: str, months: int) -> bool:
    """No commit by *addr*, nor naming it in its message, in the *months* before *base*'s
    date; False when the history does not reach back that far (it cannot tell)."""
    if months <= 0:
        return False
    ts = git.run("log", "-1", "--format=%ct", base, "--", check=False).stdout.strip()
    if not ts.isdigit():
        return False
    since = datetime.fromtimestamp(int(ts)) - timedelta(days=30 * months)
    window = f"--since={since:%Y-%m-%d}"
    older = git.run("log", "-1", "--format=%H", f"--until={since:%Y-%m-%d}", base, "--",
                    check=False).stdout.strip()  # fmt: skip
    if not older:
        return False  # the whole history is inside the window
    for pattern in (f"--author={addr}", f"--grep={addr}"):
        res = git.run("log", "-1", "--format=%H", "-F", "-i", window, pattern, base, "--",
                      check=False)  # fmt: skip
        if res.stdout.strip():
            return False
    return True


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
