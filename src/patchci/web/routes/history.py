"""One test's (or subtest's) history across branches: page and API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from patchci.analysis.flakes import FlakeSignals
from patchci.db.results import HistoryRow
from patchci.web import history_queries as hq
from patchci.web.render import page
from patchci.web.routes.contest import GROUP
from patchci.web.routes.deps import NAME_OR_EMPTY, TEXT, Conn

pages = APIRouter(include_in_schema=False)
api = APIRouter(tags=["contest"])

Group = Annotated[str, Query(max_length=128, pattern=GROUP)]
TestName = Annotated[str, Query(min_length=1, max_length=200, pattern=TEXT)]
Executor = Annotated[str | None, Query(max_length=64, pattern=NAME_OR_EMPTY)]
Count = Annotated[int, Query(ge=1, le=500)]
# A subtest's "/"-joined path from the test down ("case1/sub2"); "" is an untouched field.
SubtestPath = Annotated[str | None, Query(max_length=512, pattern=TEXT)]


class TestHistory(BaseModel):
    grp: str
    name: str
    executor: str | None
    subtest: str | None
    results: list[HistoryRow]  # the test's, newest first
    signals: FlakeSignals | None  # the test's
    subtests: list[hq.SubtestRef]  # in the newest result, below `subtest` when given
    more_subtests: bool  # the list stops at hq.SUBTESTS_SHOWN
    # `subtest`'s rows within `results` (newest first); None when no subtest was asked for.
    subtest_results: list[hq.SubtestHistoryRow] | None
    subtest_signals: FlakeSignals | None


def _load(
    conn: Conn, grp: str, name: str, executor: str | None, n: int, subtest: str | None
) -> hq.History:
    return hq.load_history(conn, grp, name, executor or None, n, subtest or None)


@pages.get("/contest/history", response_class=HTMLResponse)
def history_page(
    request: Request, conn: Conn, grp: Group, name: TestName, executor: Executor = None,
    n: Count = 50, subtest: SubtestPath = None,
) -> HTMLResponse:  # fmt: skip
    h = _load(conn, grp, name, executor, n, subtest)
    shown: Sequence[hq.Charted] = h.results if h.subtest_results is None else h.subtest_results
    ctx = {
        "h": h, "rows": shown, "signals": h.signals if subtest is None else h.subtest_signals,
        "chart": hq.duration_chart(shown[::-1]), "grp": grp, "name": name,
        "executor": executor or None, "subtest": subtest or None,
        "test_query": {"grp": grp, "name": name, **({"executor": executor} if executor else {})},
    }  # fmt: skip
    return page(request, "history.html", ctx)


@api.get("/contest/history", response_model=TestHistory)
def api_history(
    conn: Conn, grp: Group, name: TestName, executor: Executor = None, n: Count = 50,
    subtest: SubtestPath = None,
) -> TestHistory:  # fmt: skip
    """The newest *n* results of one test with its flake signals and the subtests of its
    newest result; with `subtest`, that subtest's results within them and its signals."""
    h = _load(conn, grp, name, executor, n, subtest)
    return TestHistory(
        grp=grp, name=name, executor=executor or None, subtest=subtest or None,
        results=h.results, signals=h.signals, subtests=h.subtests,
        more_subtests=h.more_subtests, subtest_results=h.subtest_results,
        subtest_signals=h.subtest_signals,
    )  # fmt: skip
