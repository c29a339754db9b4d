"""One test's (or subtest's) results across branches, read-only, and its duration chart.

A test's results come from `ResultsStore.last_results`; a subtest's are its rows within
those results (`subtest_results`), so *n* bounds both and a subtest's history costs one
index probe per result. Flake signals come from `analysis.flakes`, so the page shows what
the analysis computes. The chart's geometry is computed here, purely; the template only
draws it (and escapes every text in it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from patchci.analysis.flakes import (
    CELLS,
    FlakeSignals,
    HistoryEntry,
    Result,
    code,
    flake_signals,
)
from patchci.db import tables as t
from patchci.db.results import HistoryRow, ResultsStore
from patchci.model import Outcome
from patchci.web.render import fmt_age

log = logging.getLogger(__name__)

SUBTESTS_SHOWN = 1000  # subtests listed for one result: a kselftest can have thousands


@dataclass(frozen=True)
class SubtestRef:
    """A subtest as the test's newest result has it: what the page links to."""

    path: str
    depth: int
    name: str
    outcome: Outcome
    duration: float | None


@dataclass(frozen=True)
class SubtestHistoryRow:
    """One result of one subtest, with where it ran."""

    test_id: int
    run_id: int
    branch: str
    branch_date: datetime
    stream: str
    executor: str
    path: str
    outcome: Outcome
    retry_outcome: Outcome | None
    duration: float | None

    @property
    def crashed(self) -> bool:
        return False  # a crash belongs to the test: the subtest's own outcome is what it says


@dataclass(frozen=True)
class History:
    """A test's newest results, the subtests of the newest one, and a subtest's results when
    one was asked for."""

    results: list[HistoryRow]  # the test's, newest first
    signals: FlakeSignals | None
    subtests: list[SubtestRef]  # in the newest result (under `subtest` when given)
    more_subtests: bool  # the list was cut at SUBTESTS_SHOWN
    subtest_results: list[SubtestHistoryRow] | None  # newest first; None: no subtest asked
    subtest_signals: FlakeSignals | None


def history_of_test(
    engine: Engine, grp: str, name: str, executor: str | None, n: int
) -> tuple[list[HistoryRow], FlakeSignals | None]:
    """The newest *n* results of one test (newest first) and its flake signals."""
    rows = ResultsStore(engine).last_results(grp, name, n=n, executor=executor)
    if not rows:
        return [], None
    return rows, flake_signals(rows[::-1])


def subtests_of(
    conn: Connection, test_id: int, under: str | None = None
) -> tuple[list[SubtestRef], bool]:
    """The subtests of one test result in run order (below path *under* when given), at
    most SUBTESTS_SHOWN, and whether there were more."""
    sc = t.subtests.c
    q = select(sc.path, sc.depth, sc.name, sc.outcome, sc.duration).where(sc.test_id == test_id)
    if under is not None:
        prefix = under + "/"
        q = q.where(func.substr(sc.path, 1, len(prefix)) == prefix)  # not LIKE: no wildcards
    rows = conn.execute(q.order_by(sc.id).limit(SUBTESTS_SHOWN + 1)).all()
    refs = [
        SubtestRef(r.path, r.depth, r.name, Outcome.stored(r.outcome), r.duration) for r in rows
    ]
    return refs[:SUBTESTS_SHOWN], len(refs) > SUBTESTS_SHOWN


def subtest_results(
    conn: Connection, tests: Sequence[HistoryRow], path: str
) -> list[SubtestHistoryRow]:
    """The results of one subtest (by *path*) within the given results of its test, in
    their order (newest first from last_results).

    Looked up by test id among the test's newest results, not searched through every
    result the test ever had: one index probe per result, whatever the history's size."""
    if not tests:
        return []
    sc = t.subtests.c
    q = (
        select(sc.test_id, sc.outcome, sc.retry_outcome, sc.duration)
        .where(sc.test_id.in_([r.test_id for r in tests]), sc.path == path)
        .order_by(sc.id)
    )
    found: dict[int, list[tuple[Outcome, Outcome | None, float | None]]] = {}
    for s in conn.execute(q):
        result = (Outcome.stored(s.outcome), Outcome.stored_or_none(s.retry_outcome), s.duration)
        found.setdefault(s.test_id, []).append(result)
    return [
        SubtestHistoryRow(r.test_id, r.run_id, r.branch, r.branch_date, r.stream, r.executor,
                          path, *result)
        for r in tests
        for result in found.get(r.test_id, ())
    ]  # fmt: skip


def subtest_signals(rows: Sequence[SubtestHistoryRow]) -> FlakeSignals | None:
    """Flake signals of a subtest's results given newest first (as subtest_results)."""
    if not rows:
        return None
    return flake_signals([HistoryEntry(r.outcome, r.retry_outcome) for r in reversed(rows)])


def load_history(
    conn: Connection, grp: str, name: str, executor: str | None, n: int, subtest: str | None
) -> History:
    """Everything the history page and API show for a test, or for one of its subtests."""
    rows, signals = history_of_test(conn.engine, grp, name, executor, n)
    subs, more = subtests_of(conn, rows[0].test_id, subtest) if rows else ([], False)
    if subtest is None:
        return History(rows, signals, subs, more, None, None)
    srows = subtest_results(conn, rows, subtest)
    return History(rows, signals, subs, more, srows, subtest_signals(srows))


# --- the duration chart (pure) ---------------------------------------------------------

WIDTH, HEIGHT = 640, 160
LEFT, RIGHT, TOP, BOTTOM = 76, 12, 12, 12  # margins; LEFT holds the min/max labels
RADIUS = 4


class Charted(Result, Protocol):
    """What a chart point needs (HistoryRow and SubtestHistoryRow both have it)."""

    @property
    def branch(self) -> str: ...

    @property
    def duration(self) -> float | None: ...


@dataclass(frozen=True)
class ChartPoint:
    x: float
    y: float
    state: str  # a flakes-matrix cell name (pass, fail, flake, crash...): the CSS colour
    title: str  # plain text; the template escapes it


@dataclass(frozen=True)
class DurationChart:
    width: int
    height: int
    radius: int
    left: int  # the plot's x range, for the axis lines
    right: int
    top: int  # y of the max label and line
    bottom: int  # y of the min label and line
    max_label: str
    min_label: str
    points: tuple[ChartPoint, ...]  # oldest first
    line: str  # SVG polyline points: numbers only


def fmt_seconds(seconds: float) -> str:
    """A duration precise enough for a chart label: 12 ms, 1.50 s, 3m 05s."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    return fmt_age(seconds)


def _title(r: Charted, duration: float) -> str:
    text = f"{r.branch}: {fmt_seconds(duration)}, {r.outcome.value}"
    return f"{text} (retry {r.retry_outcome.value})" if r.retry_outcome else text


def duration_chart(results: Sequence[Charted]) -> DurationChart | None:
    """The duration of each result (oldest first) at its position along x, scaled between
    the smallest and the largest duration on y; None when no result has a duration.

    Results without a (finite) duration get no point but keep their slot on x, so a
    gap in the points is a gap in the data."""
    timed = [(i, r, r.duration) for i, r in enumerate(results)
             if r.duration is not None and math.isfinite(r.duration)]  # fmt: skip
    if not timed:
        return None
    lo, hi = min(d for _, _, d in timed), max(d for _, _, d in timed)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / (len(results) - 1) if len(results) > 1 else 0.0

    def x(i: int) -> float:
        return round(LEFT + i * step if step else LEFT + plot_w / 2, 1)

    def y(d: float) -> float:
        return round(TOP + (hi - d) / (hi - lo) * plot_h if hi > lo else TOP + plot_h / 2, 1)

    points = tuple(ChartPoint(x(i), y(d), CELLS[code(r)], _title(r, d)) for i, r, d in timed)
    return DurationChart(
        width=WIDTH, height=HEIGHT, radius=RADIUS, left=LEFT, right=WIDTH - RIGHT, top=TOP,
        bottom=HEIGHT - BOTTOM, max_label=fmt_seconds(hi), min_label=fmt_seconds(lo),
        points=points, line=" ".join(f"{p.x},{p.y}" for p in points),
    )  # fmt: skip
