"""series_format: the shape of the series (NIPA merged cover_letter, patch_count and
subject_prefix into this one check).

- 3 or more patches without a cover letter: warn;
- more than `max_patches` (default 15) patches: fail;
- no tree named in the subject (`require_tree_tag`, default true): warn. The pipeline's
  routing decision (`CheckContext.route`) counts when there is one: a guessed route warns;
  without one the subject tags are matched against the tree's tags;
- numbering that does not match the series (`[PATCH 2/5]` in a 3-patch series): warn.
"""

from __future__ import annotations

from pydantic import Field

from patchci.checks.base import Check, CheckContext, CheckOptions, Verdict
from patchci.model import Outcome, Scope, Series, Tree, worst
from patchci.routing import Route, route_by_tags

DEFAULT_MAX_PATCHES = 15
COVER_LETTER_FROM = 3


def _tree_tag_problem(series: Series, tree: Tree, route: Route | None) -> str | None:
    if route is not None:
        if route.guessed or route.tree is None:
            return f"Target tree name not specified in the subject ({route.reason})"
        return None
    routed = route_by_tags(series, [tree])
    if routed is None or routed.tree != tree.name:
        tags = ", ".join(tree.match_tags)
        return f"Target tree name not specified in the subject (expected one of: {tags})"
    return None


def _numbering_problem(series: Series) -> str | None:
    n = len(series.patches)
    if n < 2:
        return None
    numbers = [p.info.number for p in series.patches]
    totals = {p.info.total for p in series.patches}
    if numbers != list(range(1, n + 1)) or totals != {n}:
        shown = ", ".join("?" if x is None else str(x) for x in numbers)
        return f"Patch numbering does not match a {n}-patch series (numbers: {shown})"
    return None


class SeriesFormatOptions(CheckOptions):
    max_patches: int = Field(DEFAULT_MAX_PATCHES, ge=1)
    require_tree_tag: bool = True


class SeriesFormat(Check):
    Options = SeriesFormatOptions
    opts: SeriesFormatOptions
    name = "series_format"
    scope = Scope.SERIES
    needs_apply = False
    default_timeout = 10.0
    description = "Cover letter, series length, tree tag in the subject"

    def run(self, ctx: CheckContext) -> Verdict:
        series = ctx.series
        n = len(series.patches)
        max_patches = self.opts.max_patches
        found: list[tuple[Outcome, str]] = []
        if n > max_patches:
            found.append((Outcome.FAIL, f"Series longer than {max_patches} patches ({n})"))
        if n >= COVER_LETTER_FROM and series.cover is None:
            found.append((Outcome.WARN, f"Series has {n} patches but no cover letter"))
        if self.opts.require_tree_tag:
            problem = _tree_tag_problem(series, ctx.tree, ctx.route)
            if problem:
                found.append((Outcome.WARN, problem))
        numbering = _numbering_problem(series)
        if numbering:
            found.append((Outcome.WARN, numbering))
        log = "".join(f"{o.value}: {msg}\n" for o, msg in found)
        if not found:
            desc = f"Posting correctly formatted ({n} patch{'es' if n != 1 else ''})"
            return Verdict(Outcome.PASS, desc, "subjects:\n  " + "\n  ".join(series.subjects))
        outcome = worst(o for o, _ in found)
        # the most severe problem first: it is what Patchwork shows
        found.sort(key=lambda f: 0 if f[0] is outcome else 1)
        return Verdict(outcome, "; ".join(msg for _, msg in found), log)
