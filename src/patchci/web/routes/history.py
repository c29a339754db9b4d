"""One test's history across branches: page and API."""

from __future__ import annotations

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


class TestHistory(BaseModel):
    grp: str
    name: str
    results: list[HistoryRow]
    signals: FlakeSignals | None


@pages.get("/contest/history", response_class=HTMLResponse)
def history_page(
    request: Request, conn: Conn, grp: Group, name: TestName, executor: Executor = None,
    n: Count = 50,
) -> HTMLResponse:  # fmt: skip
    rows, signals = hq.history_of_test(conn.engine, grp, name, executor or None, n)
    ctx = {"rows": rows, "signals": signals, "grp": grp, "name": name, "executor": executor}
    return page(request, "history.html", ctx)


@api.get("/contest/history", response_model=TestHistory)
def api_history(
    conn: Conn, grp: Group, name: TestName, executor: Executor = None, n: Count = 50
) -> TestHistory:
    """The newest results of one test, with its flake signals."""
    rows, signals = hq.history_of_test(conn.engine, grp, name, executor or None, n)
    return TestHistory(grp=grp, name=name, results=rows, signals=signals)
