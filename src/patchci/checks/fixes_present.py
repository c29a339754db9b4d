"""fixes_present: a series for a fixes tree (`net`, `mptcp-net`) carries a `Fixes:` tag.

As NIPA's fixes_present: a tree whose name contains "next" passes (new features need no
Fixes:); otherwise the series passes when one of its patches has a `Fixes:` line, or when
it only touches documentation and MAINTAINERS (`exempt`). Configure it on the fixes trees.
"""

from __future__ import annotations

from patchci.checks.base import Check, CheckContext, CheckOptions, Verdict
from patchci.checks.fixes_tag import parse_fixes
from patchci.git import Git
from patchci.model import Outcome, Scope


class FixesPresentOptions(CheckOptions):
    # Path prefixes (or whole paths) a series may touch without a Fixes: tag.
    exempt: tuple[str, ...] = ("Documentation/", "MAINTAINERS")
    # A tree whose name contains this is not a fixes tree: the check passes there.
    next_marker: str = "next"


class FixesPresent(Check):
    """Options: `exempt` (paths a series may touch without Fixes:, default
    `["Documentation/", "MAINTAINERS"]`), `next_marker` (a tree named with it passes,
    default `"next"`)."""

    Options = FixesPresentOptions
    opts: FixesPresentOptions
    name = "fixes_present"
    scope = Scope.SERIES
    tools = ("git",)
    default_timeout = 60.0
    description = "A series for a fixes tree carries a Fixes: tag"

    def run(self, ctx: CheckContext) -> Verdict:
        marker = self.opts.next_marker
        if marker and marker in ctx.tree.name:
            return Verdict(Outcome.PASS, f"{ctx.tree.name} is not a fixes tree")
        wt = Git(ctx.worktree, deadline=ctx.deadline)
        tagged = [i for i, c in enumerate(ctx.commits) if parse_fixes(wt.message(c))]
        if tagged:
            n = len(tagged)
            return Verdict(Outcome.PASS, f"Fixes: tag on {n} of {len(ctx.commits)} patches")
        files = [f for p in ctx.series.patches for f in p.files]
        exempt = self.opts.exempt
        if files and all(any(f == e or f.startswith(e) for e in exempt) for f in files):
            return Verdict(Outcome.PASS, "only documentation and MAINTAINERS: no Fixes: needed")
        return Verdict(
            Outcome.FAIL,
            f"Series targets {ctx.tree.name}, a fixes tree, but doesn't contain any Fixes tags",
            "No patch has a Fixes: line. A fix for a fixes tree names the commit it fixes:\n"
            '  Fixes: <12+ hex digits> ("<subject of that commit>")\n'
            f"Touched: {', '.join(files) or '(nothing)'}\n",
        )
