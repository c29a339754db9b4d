"""Render check results as terminal tables (rich). Rendering only; the CLI prints."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text

from patchci.model import CheckResult, Outcome, strip_bidi

STYLE = {
    Outcome.PASS: "green",
    Outcome.XFAIL: "green",
    Outcome.WARN: "yellow",
    Outcome.FAIL: "bold red",
    Outcome.CRASH: "bold red",
    Outcome.TIMEOUT: "red",
    Outcome.ERROR: "magenta",
    Outcome.SKIP: "dim",
    Outcome.PENDING: "cyan",
}


def outcome_text(o: Outcome) -> Text:
    return Text(o.value, style=STYLE[o])


def plain(s: str) -> Text:
    """User-controlled text (subjects, names, descriptions) never goes through markup:
    `[net-next,1/3]` is a subject prefix, not a style tag, and bidi controls are dropped."""
    return Text(strip_bidi(s))


def _scope(r: CheckResult, total: int) -> str:
    return "series" if r.patch_index is None else f"{r.patch_index + 1}/{total}"


def results_table(title: str, results: Sequence[CheckResult], total: int) -> Table:
    """One row per result: scope (series or n/m), check, outcome, description."""
    t = Table(title=plain(title), title_justify="left", expand=False, show_lines=False)
    t.add_column("patch", no_wrap=True)
    t.add_column("check", no_wrap=True)
    t.add_column("outcome", no_wrap=True)
    t.add_column("description", overflow="fold")
    for r in results:
        t.add_row(_scope(r, total), plain(r.check), outcome_text(r.outcome), plain(r.description))
    return t


def summary_row_cells(results: Sequence[CheckResult]) -> dict[str, Outcome]:
    """Per check name, the worst outcome over patches (for a compact series × check grid)."""
    from patchci.model import worst

    by: dict[str, list[Outcome]] = {}
    for r in results:
        by.setdefault(r.check, []).append(r.outcome)
    return {k: worst(v) for k, v in by.items()}


def grid_table(
    title: str, rows: Sequence[tuple[str, str, Sequence[CheckResult]]], checks: Sequence[str]
) -> Table:
    """Series × check grid: rows are (series label, state, results)."""
    t = Table(title=title, title_justify="left")
    t.add_column("series", overflow="fold", max_width=48)
    t.add_column("state", no_wrap=True)
    for c in checks:
        t.add_column(c, no_wrap=True)
    for label, state, results in rows:
        cells = summary_row_cells(results)
        t.add_row(
            plain(label),
            plain(state),
            *[outcome_text(cells[c]) if c in cells else Text("-", style="dim") for c in checks],
        )
    return t
