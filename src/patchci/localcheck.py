"""`patchci check`: local patches against a local tree, results as a table.

The user's tree is never modified: the series is applied in a scratch worktree.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from rich.console import Console

from patchci.checks.base import Check
from patchci.checks.registry import make_check
from patchci.config import DEFAULT_CHECKS, Settings, build_settings, load_settings
from patchci.errors import ConfigError
from patchci.git import Git
from patchci.model import Outcome, Tree
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
    names: tuple[str, ...] = DEFAULT_CHECKS
    tags: tuple[str, ...] = (name,)
    if settings is not None:
        for t in settings.trees:
            if t.name == name:
                names, tags = t.checks, t.tags or (name,)
    if args.checks:
        names = tuple(c.strip() for c in args.checks.split(",") if c.strip())
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
    console.print(f"logs: {logs}")
    if worst_seen & {Outcome.FAIL, Outcome.CRASH, Outcome.TIMEOUT}:
        return 1
    if Outcome.ERROR in worst_seen:
        return 2
    return 0
