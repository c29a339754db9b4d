"""Series → target tree: subject tags first, then file paths, then "which tree does it apply to".

Pure decisions; the only I/O is the optional *applies* callback the caller passes in.
Unlike NIPA's substring regex (where `net` matched `[PATCH net-next]` and `[bpf-next/net]`
went to net), tags match tree tags exactly, token by token.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from patchci.model import Patch, Series, Tree

log = logging.getLogger(__name__)

_DIFF_RE = re.compile(rb"^diff --git a/(\S+) b/(\S+)$", re.MULTILINE)
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Route:
    """Where a series goes and why. `tree` None means nowhere (reason says why)."""

    tree: str | None
    reason: str
    method: str  # "tags" | "paths" | "fixes" | "applies" | "not-local" | "none"
    guessed: bool


# -- tags ---------------------------------------------------------------------------------


def _mails(series: Series) -> list[tuple[str, Patch]]:
    out = [("cover letter", series.cover)] if series.cover is not None else []
    out += [(f"patch {i + 1}", p) for i, p in enumerate(series.patches)]
    return out


def match_tag(token: str, trees: Sequence[Tree]) -> Tree | None:
    """The tree one subject token names: exact (case-insensitive) match of a tree tag, or for
    `a/b` the first component `a` when no tree is tagged `a/b` (never `b`)."""
    tok = token.strip().lower()
    if not tok:
        return None
    candidates = [tok]
    if "/" in tok:
        candidates.append(tok.split("/", 1)[0])
    for cand in candidates:
        for tree in trees:
            if cand in (t.lower() for t in tree.match_tags):
                return tree
    return None


def route_by_tags(series: Series, trees: Sequence[Tree]) -> Route | None:
    """Route by subject tags of the cover letter and patches; None if no tag names a tree."""
    found: dict[str, list[str]] = {}  # tree name -> where it was named
    for where, mail in _mails(series):
        for tok in mail.info.tags:
            tree = match_tag(tok, trees)
            if tree is not None:
                found.setdefault(tree.name, []).append(f"{where} [{tok}]")
    if not found:
        return None
    if len(found) == 1:
        name = next(iter(found))
        return Route(name, f"Clearly marked for {name}", "tags", False)
    parts = [f"{name} ({', '.join(where[:2])})" for name, where in found.items()]
    return Route(None, f"Conflicting tree tags: {' vs '.join(parts)}", "tags", False)


# -- paths --------------------------------------------------------------------------------


def series_files(series: Series) -> list[str]:
    """Every file the series touches; falls back to the raw diff when Patch.files is empty."""
    files: set[str] = set()
    for p in series.patches:
        if p.files:
            files.update(p.files)
        else:
            for m in _DIFF_RE.finditer(p.raw):
                files.update(g.decode("utf-8", errors="replace") for g in m.groups())
    return sorted(files)


def pattern_specificity(pattern: str, path: str) -> int:
    """How specifically a MAINTAINERS `F:` *pattern* covers *path*: 0 if it does not, else
    a score growing with the pattern's depth (literal paths beat globs at the same depth).

    Semantics as get_maintainer.pl: a trailing `/` (or a literal directory) covers everything
    below; otherwise the pattern must have as many components as the path and each
    component is an fnmatch glob (so `*` never crosses `/`).
    """
    pat = pattern.strip()
    comps = [c for c in pat.split("/") if c]
    parts = [c for c in path.split("/") if c]
    if not comps or not parts:
        return 0
    globbed = any(_GLOB_CHARS & set(c) for c in comps)
    if pat.endswith("/") or not globbed:
        # a directory covers everything below it; a literal may also be the file itself
        if len(parts) < len(comps) or (len(parts) == len(comps) and pat.endswith("/")):
            return 0
    elif len(parts) != len(comps):
        return 0
    if not all(fnmatch.fnmatchcase(p, c) for p, c in zip(parts, comps, strict=False)):
        return 0
    return 2 * len(comps) + (0 if globbed else 1)


def _tree_score(patterns: Sequence[str], files: Sequence[str]) -> int | None:
    """Sum over files of the best pattern specificity; None unless every file is covered."""
    total = 0
    for f in files:
        best = max((pattern_specificity(p, f) for p in patterns), default=0)
        if best == 0:
            return None
        total += best
    return total


def rank_by_paths(
    series: Series, trees: Sequence[Tree], path_patterns: Mapping[str, Sequence[str]] | None = None
) -> list[Tree]:
    """Trees whose patterns cover every file of the series, the most specific ones only
    (several when they tie), in configuration order."""
    files = series_files(series)
    if not files:
        return []
    scores: dict[str, int] = {}
    for tree in trees:
        patterns = (path_patterns or {}).get(tree.name, tree.paths)
        score = _tree_score(patterns, files) if patterns else None
        if score is not None:
            scores[tree.name] = score
    if not scores:
        return []
    best = max(scores.values())
    return [t for t in trees if scores.get(t.name) == best]


def route_by_paths(
    series: Series,
    trees: Sequence[Tree],
    path_patterns: Mapping[str, Sequence[str]] | None = None,
) -> Route | None:
    """Route by the files touched. *path_patterns* (tree name → patterns) overrides
    Tree.paths. None when no tree, or more than one equally specific tree, covers all."""
    ranked = rank_by_paths(series, trees, path_patterns)
    if len(ranked) != 1:
        return None
    name = ranked[0].name
    return Route(name, f"Guessed tree name to be {name} (paths)", "paths", True)


# -- the whole decision -------------------------------------------------------------------


def fixed_commits(series: Series) -> list[str]:
    """The commit ids the series' `Fixes:` tags name, in order, once each."""
    from patchci.checks.fixes_tag import parse_fixes

    shas: list[str] = []
    for p in series.patches:
        text = p.raw.decode("utf-8", errors="replace").split("\n---", 1)[0]
        shas += [t.sha for t in parse_fixes(text) if t.sha]
    return list(dict.fromkeys(shas))


def route_series(
    series: Series,
    trees: Sequence[Tree],
    applies: Callable[[Tree], bool] | None = None,
    path_patterns: Mapping[str, Sequence[str]] | None = None,
    has_commits: Callable[[Tree, Sequence[str]], bool] | None = None,
) -> Route:
    """Tags, then paths, then `Fixes:`, then the first tree (in configuration order) the
    series applies to.

    When several trees cover the paths equally well, only those are tried further. With
    `Fixes:` tags and *has_commits*, the first of those trees whose base has every fixed
    commit is chosen, fixes trees (no "next" in the name) first, as NIPA guesses `net`
    when all fixed commits are in net and `net-next` otherwise.
    """
    route = route_by_tags(series, trees)
    if route is not None:
        return _logged(series, route)
    ranked = rank_by_paths(series, trees, path_patterns)
    if len(ranked) == 1:
        name = ranked[0].name
        return _logged(
            series, Route(name, f"Guessed tree name to be {name} (paths)", "paths", True)
        )
    if not ranked:
        foreign = not_for_us(series, trees, path_patterns)
        if foreign is not None:
            return _logged(series, foreign)
    candidates = ranked or list(trees)
    shas = fixed_commits(series) if has_commits is not None else []
    if shas and has_commits is not None:
        for tree in sorted(candidates, key=lambda t: "next" in t.name):
            if has_commits(tree, shas):
                n = len(shas)
                reason = (f"Guessed tree name to be {tree.name} (Fixes: the fixed "
                          f"commit{'s are' if n > 1 else ' is'} in {tree.name})")  # fmt: skip
                return _logged(series, Route(tree.name, reason, "fixes", True))
    how = "paths, applies" if ranked else "applies"
    if applies is not None:
        for tree in candidates:
            if applies(tree):
                reason = f"Guessed tree name to be {tree.name} ({how})"
                return _logged(series, Route(tree.name, reason, "applies", True))
    names = ", ".join(t.name for t in candidates) or "(no trees configured)"
    paths = f"paths match {len(ranked)} trees equally" if ranked else "no path match"
    if applies is None:
        reason = f"no tree tag, {paths}, not tried applying to: {names}"
    else:
        reason = f"no tree tag, {paths}, does not apply to any of: {names}"
    return _logged(series, Route(None, reason, "none", False))


def not_for_us(
    series: Series, trees: Sequence[Tree], path_patterns: Mapping[str, Sequence[str]] | None = None
) -> Route | None:
    """"Not for this CI" when trees declare paths and no file the series touches is under
    any of them (NIPA's "Not a local patch": no patch touches a local path). Such a series
    is recorded, never applied to every tree in turn. None when the rule does not apply:
    no tree has paths, the series has no files, or one file is covered."""
    patterns = [p for t in trees for p in (path_patterns or {}).get(t.name, t.paths)]
    files = series_files(series)
    if not patterns or not files:
        return None
    if any(pattern_specificity(p, f) for f in files for p in patterns):
        return None
    n = len(files)
    reason = (f"Not for this CI: none of its {n} file{'s' if n != 1 else ''} ({files[0]}"
              f"{', ...' if n > 1 else ''}) is under a tree's paths")  # fmt: skip
    return Route(None, reason, "not-local", False)


def _logged(series: Series, route: Route) -> Route:
    log.info("series %s routed to %s: %s", series.key, route.tree or "-", route.reason)
    return route
