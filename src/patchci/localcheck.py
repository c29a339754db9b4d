"""`patchci check`: local patches against a local tree, results as a table.

The user's tree is never modified: the series is applied in a scratch worktree.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from patchci.checks.base import Check
from patchci.checks.registry import make_check
from patchci.config import Settings, build_settings, load_settings
from patchci.errors import ConfigError
from patchci.git import Git
from patchci.model import CheckResult, Outcome, Tree
from patchci.pipeline import check_series
from patchci.report.console import plain, results_table
from patchci.sources.mbox import load_series

log = logging.getLogger(__name__)


def build_checks(names: tuple[str, ...], settings: Settings | None) -> list[Check]:
    out: list[Check] = []
    for name in names:
        if name in ("tree_selection", "apply"):
            continue
        if settings is not None:
            kind, options, timeout = settings.check_spec(name)
        else:
            kind, options, timeout = name, {}, None
        chk = make_check(kind, name=name, options=options, timeout=timeout)
        chk.when_paths = settings.check_paths(name) if settings is not None else ()
        out.append(chk)
    return out


# Checks that need no more than git and the patch: run on any tree.
ANY_TREE = ("signed_off_by", "fixes_tag", "series_format", "source_inline", "header_inline",
            "deprecated_api")  # fmt: skip
# The rest run when the tree (at the base) and this host have what they need.
NEEDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # name: (tree files, host tools)
    "build": (("Makefile",), ("make", "gcc")),
    "build_tools": (("tools/testing/selftests/Makefile",), ("make", "gcc")),
    "checkpatch": (("scripts/checkpatch.pl",), ("perl",)),
    "kdoc": (("scripts/kernel-doc",), ("perl",)),
    "cc_maintainers": (("MAINTAINERS",), ()),
    "maintainers_entry": (("MAINTAINERS",), ()),
    "check_selftest": (("tools/testing/selftests",), ()),
    "shellcheck": ((), ("shellcheck",)),
    "pylint": ((), ("pylint",)),
    "ruff": ((), ("ruff",)),
    "yamllint": ((), ("yamllint",)),
}
NOT_BY_DEFAULT = {
    "fixes_present": "for a fixes tree only (give --checks, or the tree's checks in a config)",
    "external": "runs a command of yours (configure it in a config file)",
}


def default_checks(git: Git, base: str) -> tuple[tuple[str, ...], list[tuple[str, str]]]:
    """Every check that applies to the tree at *base* on this host, and those left out
    with why: a kernel tree gets build, checkpatch, kdoc and the MAINTAINERS checks."""
    import shutil

    names, left_out = list(ANY_TREE), []
    for name, (files, tools) in NEEDS.items():
        missing = [f for f in files if not git.run("cat-file", "-e", f"{base}:{f}", check=False).ok]
        absent = [t for t in tools if shutil.which(t) is None]
        if missing:
            left_out.append((name, f"the tree has no {', '.join(missing)}"))
        elif absent:
            left_out.append((name, f"{', '.join(absent)} not installed here"))
        else:
            names.append(name)
    left_out += sorted(NOT_BY_DEFAULT.items())
    return tuple(names), left_out


def run_local_check(args: argparse.Namespace) -> int:
    console = Console()
    tree_dir = Path(args.tree).expanduser().resolve()
    if not (tree_dir / ".git").exists():
        raise ConfigError(f"--tree: {tree_dir} is not a git tree")
    base = Git(tree_dir).rev_parse(args.base)
    if base is None:
        raise ConfigError(f"--base: {args.base!r} is not a commit in {tree_dir}")
    settings = load_settings(args.config) if args.config else None
    name = args.name or tree_dir.name
    names: tuple[str, ...] | None = None
    left_out: list[tuple[str, str]] = []
    tags: tuple[str, ...] = (name,)
    if settings is not None:
        for t in settings.trees:
            if t.name == name:
                names, tags = t.checks, t.tags or (name,)
    if args.checks:
        names = tuple(c.strip() for c in args.checks.split(",") if c.strip())
    if names is None:
        names, left_out = default_checks(Git(tree_dir), base)
        console.print(plain(f"checks: {', '.join(names)}"))
        for check, why in left_out:
            console.print(plain(f"  left out: {check}: {why}"), style="dim")
    checks = build_checks(names, settings)
    tree = Tree(name=name, path=str(tree_dir), branch=base, tags=tags)

    ingested = load_series(Path(args.path))
    for rej in ingested.rejected:
        console.print(plain(f"skipped {rej.location}: {rej.reason}"), style="yellow")
    if not ingested.series:
        console.print(plain(f"no patch series found in {args.path}"), style="red")
        return 2
    logs = Path(args.logs).resolve() if args.logs else Path(tempfile.mkdtemp(prefix="patchci-"))
    # The patches' code runs sandboxed here too: a local mbox is as untrusted as a list's.
    sandbox = (settings or build_settings({}, env={})).untrusted()
    worst_seen: set[Outcome] = set()
    for n, series in enumerate(ingested.series, 1):
        if not series.complete:
            console.print(
                plain(
                    f"series {series.name!r} is incomplete: "
                    f"{'; '.join(series.problems)}; checking what arrived"
                ),
                style="yellow",
            )
        with console.status(plain(f"checking {series.name}")) as status:

            def show(msg: str, label: str = series.name) -> None:
                status.update(plain(f"{label}: {msg}"))

            verdict = check_series(
                series, [tree], lambda _t: checks, logs / f"series-{n}", progress=show,
                sandbox=sandbox,
            )  # fmt: skip
        console.print(
            results_table(
                f"{series.name} (v{series.version}, {len(series.patches)} patches)",
                verdict.results,
                len(series.patches),
            )
        )
        worst_seen.update(r.outcome for r in verdict.results)
        _print_new_warnings(console, verdict.results)
    console.print(f"logs: {logs}")
    if worst_seen & {Outcome.FAIL, Outcome.CRASH, Outcome.TIMEOUT}:
        return 1
    if Outcome.ERROR in worst_seen:
        return 2
    return 0


def _print_new_warnings(console: Console, results: Sequence[CheckResult]) -> None:
    """Under the table: the new warnings of each failed build (its log's "New" section)."""
    for r in results:
        if r.check != "build" or r.outcome is not Outcome.FAIL or not r.log_path:
            continue
        try:
            text = Path(r.log_path).read_text(errors="replace")
        except OSError:
            continue
        start = text.find("New warnings and errors (")
        if start < 0:
            continue
        block = text[start:].split("\n\n", 1)[0]
        where = f"patch {r.patch_index + 1}" if r.patch_index is not None else "series"
        console.print(plain(f"build, {where}: {block}"))
