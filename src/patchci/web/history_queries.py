"""One test's (or subtest's) results across branches, read-only."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from patchci.analysis.flakes import FlakeSignals, flake_table
from patchci.db.results import HistoryRow, ResultsStore


def history_of_test(
    engine: Engine, grp: str, name: str, executor: str | None, n: int
) -> tuple[list[HistoryRow], FlakeSignals | None]:
    """The newest *n* results of one test (newest first) and its flake signals."""
    rows = ResultsStore(engine).last_results(grp, name, n=n, executor=executor)
    if not rows:
        return [], None
    return rows, flake_table((0, r) for r in reversed(rows))[0]
