"""Contest pages and API: the result log, the flakes matrix, one test's history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from patchci.analysis.flakes import FlakeSignals
from patchci.db.results import HistoryRow
from patchci.model import Outcome
from patchci.web import contest_queries as cq
from patchci.web.render import page
from patchci.web.routes.deps import NAME_OR_EMPTY, OUTCOME_OR_EMPTY, TEXT, Conn, Web

pages = APIRouter(include_in_schema=False)
api = APIRouter(tags=["contest"])

BRANCH_OR_EMPTY = r"^$|^[A-Za-z0-9][A-Za-z0-9_.:+\-]{0,127}$"
GROUP = r"^[A-Za-z0-9][A-Za-z0-9_.:+/\-]{0,127}$"
GROUP_OR_EMPTY = "^$|" + GROUP


def contest_filter(
    branch: Annotated[str | None, Query(max_length=128, pattern=BRANCH_OR_EMPTY)] = None,
    branches: Annotated[int, Query(ge=1, le=200)] = 10,
    stream: Annotated[str | None, Query(max_length=64, pattern=NAME_OR_EMPTY)] = None,
    executor: Annotated[str | None, Query(max_length=64, pattern=NAME_OR_EMPTY)] = None,
    outcome: Annotated[str | None, Query(max_length=16, pattern=OUTCOME_OR_EMPTY)] = None,
    grp: Annotated[str | None, Query(max_length=128, pattern=GROUP_OR_EMPTY)] = None,
    name: Annotated[str | None, Query(max_length=200, pattern=TEXT)] = None,
) -> cq.ContestFilter:
    return cq.ContestFilter(
        branch=branch or None, branches=branches, stream=stream or None,
        executor=executor or None, outcome=outcome or None, grp=grp or None,
        name=(name or "").strip() or None,
    )  # fmt: skip


Filter = Annotated[cq.ContestFilter, Depends(contest_filter)]
Limit = Annotated[int, Query(ge=1, le=5000)]
MinFlips = Annotated[int, Query(ge=0, le=1000)]
Group = Annotated[str, Query(max_length=128, pattern=GROUP)]
TestName = Annotated[str, Query(min_length=1, max_length=200, pattern=TEXT)]
Executor = Annotated[str | None, Query(max_length=64, pattern=NAME_OR_EMPTY)]
Count = Annotated[int, Query(ge=1, le=500)]


class TestHistory(BaseModel):
    grp: str
    name: str
    results: list[HistoryRow]
    signals: FlakeSignals | None


def _menus(conn: Conn) -> dict[str, list[str]]:
    executors, streams = cq.contest_choices(conn)
    return {"executors": executors, "streams": streams, "outcomes": [o.value for o in Outcome]}


@pages.get("/contest", response_class=HTMLResponse)
def contest_page(
    request: Request, conn: Conn, web: Web, f: Filter, limit: Limit = 500
) -> HTMLResponse:
    log = cq.result_log(conn, f, web.contest_logs_dir, limit)
    return page(request, "contest.html", {"log": log, "f": f, **_menus(conn)})


@pages.get("/flakes", response_class=HTMLResponse)
def flakes_page(request: Request, conn: Conn, f: Filter, min_flips: MinFlips = 1) -> HTMLResponse:
    matrix = cq.flake_matrix(conn.engine, f, min_flips)
    ctx = {"m": matrix, "f": f, "min_flips": min_flips, **_menus(conn)}
    return page(request, "flakes.html", ctx)


@pages.get("/contest/history", response_class=HTMLResponse)
def history_page(
    request: Request, conn: Conn, grp: Group, name: TestName, executor: Executor = None,
    n: Count = 50,
) -> HTMLResponse:  # fmt: skip
    rows, signals = cq.history_of_test(conn.engine, grp, name, executor or None, n)
    ctx = {"rows": rows, "signals": signals, "grp": grp, "name": name, "executor": executor}
    return page(request, "history.html", ctx)


@api.get("/contest/results", response_model=cq.ResultLog)
def api_results(conn: Conn, web: Web, f: Filter, limit: Limit = 500) -> cq.ResultLog:
    """Per-test results of the newest branches (or one branch), newest first."""
    return cq.result_log(conn, f, web.contest_logs_dir, limit)


@api.get("/contest/flakes", response_model=cq.FlakeMatrix)
def api_flakes(conn: Conn, f: Filter, min_flips: MinFlips = 1) -> cq.FlakeMatrix:
    """Test × branch matrix with flake signals, flakiest first."""
    return cq.flake_matrix(conn.engine, f, min_flips)


@api.get("/contest/history", response_model=TestHistory)
def api_history(
    conn: Conn, grp: Group, name: TestName, executor: Executor = None, n: Count = 50
) -> TestHistory:
    """The newest results of one test, with its flake signals."""
    rows, signals = cq.history_of_test(conn.engine, grp, name, executor or None, n)
    return TestHistory(grp=grp, name=name, results=rows, signals=signals)
