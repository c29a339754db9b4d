"""`patchci export junit|kcidb BRANCH`: a stored test branch in another tool's format."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from patchci.config import Settings
from patchci.db.results import ResultsStore
from patchci.db.store import Store
from patchci.errors import NotFound
from patchci.report.exports import junit_xml, kcidb


def export_text(settings: Settings, fmt: str, branch: str, origin: str = "patchci") -> str:
    """The branch *branch* as JUnit XML or KCIDB v5 JSON; NotFound for an unknown branch."""
    store = Store.open(settings.db_url)
    try:
        results = ResultsStore(store.engine)
        row = results.branch(branch)
        runs = results.branch_results(branch)
        if fmt == "junit":
            return junit_xml(branch, runs)
        stream = next((s for s in settings.streams if s.name == row.stream), None)
        tree = stream.tree if stream is not None else row.stream
        url = settings.feed.git_url
        if url is None and stream is not None:
            url = settings.tree(stream.tree).url
        patches, msgids = [], []
        for sid in row.series:
            series = store.load_series(sid)
            patches += [p.raw for p in series.patches]
            first = series.cover or (series.patches[0] if series.patches else None)
            if first is not None:
                msgids.append(first.msgid)
        data = kcidb(origin=origin, branch=branch, stream=row.stream, tree=tree, date=row.date,
                     head=row.head, repo_url=url, patches=patches, message_ids=msgids,
                     runs=runs)  # fmt: skip
        return json.dumps(data, indent=1, sort_keys=True) + "\n"
    finally:
        store.close()


def cmd_export(settings: Settings, fmt: str, branch: str, output: str | None, origin: str) -> int:
    if not re.fullmatch(r"[a-z0-9_]+", origin):
        print(f"export: --origin {origin!r}: KCIDB origins are [a-z0-9_]+", file=sys.stderr)
        return 2
    try:
        text = export_text(settings, fmt, branch, origin)
    except NotFound as e:
        print(f"export: not found: {e}", file=sys.stderr)
        return 2
    if output in (None, "-"):
        sys.stdout.write(text)
    else:
        Path(output).write_text(text, encoding="utf-8")
        print(f"{fmt}: {branch} written to {output}")
    return 0
