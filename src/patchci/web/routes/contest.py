"""Contest pages and API: the result log, the flakes matrix, one test's history."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

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


def _menus(conn: Conn) -> dict[str, list[str]]:
    executors, streams = cq.contest_choices(conn)
    return {"executors": executors, "streams": streams, "outcomes": [o.value for o in Outcome]}


@pages.get("/contest", response_class=HTMLResponse)
def contest_page(
    request: Request, conn: Conn, web: Web, f: Filter, limit: Limit = 500
) -> HTMLResponse:
    log = cq.result_log(conn, f, web.contest_logs_dir, limit)
    return page(request, "contest.html", {"log": log, "f": f, **_menus(conn)})


@dataclass(frozen=True)
class MatrixQuery:
    min_flips: int
    sort: str
    page: int
    per_page: int


def matrix_query(
    min_flips: Annotated[int, Query(ge=0, le=1000)] = 1,
    sort: Annotated[str, Query(pattern="^(" + "|".join(cq.FLAKE_SORTS) + ")$")] = "flaky",
    page_no: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
    per_page: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> MatrixQuery:
    return MatrixQuery(min_flips, sort, page_no, per_page)


MatrixQ = Annotated[MatrixQuery, Depends(matrix_query)]


def _flakes(conn: Conn, f: cq.ContestFilter, q: MatrixQuery) -> cq.FlakeMatrix:
    return cq.flake_matrix(conn, f, q.min_flips, sort=q.sort, page=q.page, per_page=q.per_page)


def _matrix_link(f: cq.ContestFilter, q: MatrixQuery, page_no: int) -> str:
    params = {k: v for k, v in vars(f).items() if v and k != "branch"}
    params.update(min_flips=q.min_flips, sort=q.sort, per_page=q.per_page, page=page_no)
    return "?" + urlencode(params)


@pages.get("/flakes", response_class=HTMLResponse)
def flakes_page(request: Request, conn: Conn, f: Filter, q: MatrixQ) -> HTMLResponse:
    m = _flakes(conn, f, q)
    links = {
        "prev": _matrix_link(f, q, q.page - 1) if q.page > 1 else None,
        "next": _matrix_link(f, q, q.page + 1) if q.page < m.pages else None,
    }
    ctx = {
        "m": m, "f": f, "min_flips": q.min_flips, "sort": q.sort, "sorts": cq.FLAKE_SORTS,
        "links": links, **_menus(conn),
    }  # fmt: skip
    return page(request, "flakes.html", ctx)


@api.get("/contest/results", response_model=cq.ResultLog)
def api_results(conn: Conn, web: Web, f: Filter, limit: Limit = 500) -> cq.ResultLog:
    """Per-test results of the newest branches (or one branch), newest first."""
    return cq.result_log(conn, f, web.contest_logs_dir, limit)


@api.get("/contest/flakes", response_model=cq.FlakeMatrix)
def api_flakes(conn: Conn, f: Filter, q: MatrixQ) -> cq.FlakeMatrix:
    """Test × branch matrix of a stream's newest branches with flake signals, one page of
    tests sorted by `sort` (flaky: retry-flakes then flips; flips; streak: failing now,
    longest first; name)."""
    return _flakes(conn, f, q)
