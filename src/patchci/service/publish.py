"""The NIPA feed, written every cycle: what NIPA-style executors poll and collectors read.

Per stream, under `[feed] dir` (served at /feed/ by `patchci serve`):

    <stream>/branches.json        branch, date, base, "<git url> <branch>" (NIPA's format)
    <stream>/branches-info.json   per branch: base-pulls, series, new-changes
    <stream>/<executor>/results.json         the executor's manifest (newest runs)
    <stream>/<executor>/results-<cookie>.json one file per finished run

Files are replaced atomically; a finished run's file is written once. A run still going
is listed in the manifest with url null (NIPA's collector shows it as pending).
"""

from __future__ import annotations

import logging
from pathlib import Path

from patchci.brancher import Manifest, branches_info_json, branches_json, write_json_atomic
from patchci.config import Settings
from patchci.db.results import BranchRow, ResultsStore
from patchci.executor.base import RUN_RUNNING, namify
from patchci.executor.nipa_json import mark_running, publish, run_filename

log = logging.getLogger(__name__)


def _manifest(row: BranchRow) -> Manifest:
    return Manifest(row.name, row.stream, row.date, row.base, row.merges, row.series,
                    row.left_out, row.head, row.new_changes)  # fmt: skip


def publish_feed(settings: Settings, results: ResultsStore) -> int:
    """Write the feed of every stream; returns run files newly written."""
    if not settings.feed.enabled:
        return 0
    root = settings.feed_path
    written = 0
    for ss in settings.streams:
        rows = results.stream_branches(ss.name)
        out = root / namify(ss.name)
        tree = settings.tree(ss.tree)
        git_url = settings.feed.git_url or tree.url or str(settings.tree_path(tree))
        manifests = [_manifest(r) for r in rows]
        write_json_atomic(out / "branches.json", branches_json(manifests, git_url))
        write_json_atomic(out / "branches-info.json", branches_info_json(manifests))
        for row in rows:
            written += _publish_runs(settings, results, row, out)
    return written


def _publish_runs(settings: Settings, results: ResultsStore, row: BranchRow, out: Path) -> int:
    n = 0
    base = settings.feed.public_url.rstrip("/")
    for run_row in results.branch_runs(row.name):
        json_dir = out / namify(run_row.executor)
        url_base = f"{base}/{json_dir.relative_to(settings.feed_path).as_posix()}"
        if run_row.status == RUN_RUNNING:
            if (
                not (json_dir / "results.json").exists()
                or row.name not in (json_dir / "results.json").read_text()
            ):
                mark_running(json_dir, row.name, run_row.executor)
            continue
        run = results.load_run(run_row.id)
        if (json_dir / run_filename(run)).exists():
            continue
        publish(run, json_dir, url_base)
        n += 1
    return n
