"""Contest pages and API: the result log, the flakes matrix, one test branch."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse

from patchci.analysis import cidiff
from patchci.db.store import NotFound
from patchci.model import Outcome
from patchci.service.verdicts import rule_of
from patchci.web import branch_queries as bq
from patchci.web import contest_api as capi
from patchci.web import contest_queries as cq
from patchci.web.render import page
from patchci.web.routes.deps import NAME_OR_EMPTY, OUTCOME_OR_EMPTY, TEXT, Conn, Now, Web

pages = APIRouter(include_in_schema=False)
api = APIRouter(tags=["contest"])

BRANCH_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:+\-]{0,127}$"
BRANCH_OR_EMPTY = "^$|" + BRANCH_NAME
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
LOG_SORT = "^(" + "|".join(cq.LOG_SORTS) + ")$"


def log_query(
    subtests: Annotated[bool, Query(description="each test's subtests under it")] = False,
    sort: Annotated[str, Query(pattern=LOG_SORT)] = "date",
    direction: Annotated[str | None, Query(alias="dir", pattern="^(asc|desc)$")] = None,
    page_no: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
    per_page: Annotated[int | None, Query(ge=1, le=cq.LOG_PER_PAGE_MAX)] = None,
    limit: Annotated[
        int | None, Query(ge=1, le=5000, deprecated=True, description="per_page (at most 1000)")
    ] = None,
) -> cq.LogQuery:
    """The result log's view; `limit`, from before pages, is per_page capped to its bound."""
    size = per_page or min(limit or cq.LOG_PER_PAGE, cq.LOG_PER_PAGE_MAX)
    return cq.LogQuery(
        subtests, sort, direction or cq.LOG_DIRECTIONS.get(sort, "asc"), page_no, size
    )


LogQ = Annotated[cq.LogQuery, Depends(log_query)]


def _menus(conn: Conn) -> dict[str, list[str]]:
    executors, streams = cq.contest_choices(conn)
    return {"executors": executors, "streams": streams, "outcomes": [o.value for o in Outcome]}


def _view_params(view: cq.LogQuery) -> dict[str, str]:
    """The sort and page size of *view* as query parameters, defaults left out."""
    params = {}
    if view.sort != "date":
        params["sort"] = view.sort
    if view.direction != cq.LOG_DIRECTIONS.get(view.sort, "asc"):
        params["dir"] = view.direction
    if view.per_page != cq.LOG_PER_PAGE:
        params["per_page"] = str(view.per_page)
    return params


def _log_link(f: cq.ContestFilter, view: cq.LogQuery) -> str:
    """The query string of the result log showing *view*, with the filters of *f*."""
    params: dict[str, object] = {
        k.name: getattr(f, k.name) for k in fields(f) if getattr(f, k.name) != k.default
    }
    if view.subtests:
        params["subtests"] = "on"
    params.update(_view_params(view))
    if view.page > 1:
        params["page"] = view.page
    return "?" + urlencode(params)


def _log_links(f: cq.ContestFilter, q: cq.LogQuery, log: cq.ResultLog) -> dict[str, str | None]:
    """Pager links and one link per sortable column (the current one flips direction)."""
    flip = {"asc": "desc", "desc": "asc"}
    links: dict[str, str | None] = {
        "prev": _log_link(f, replace(q, page=q.page - 1)) if q.page > 1 else None,
        "next": _log_link(f, replace(q, page=q.page + 1)) if q.page < log.pages else None,
        "subtests": _log_link(f, replace(q, subtests=not q.subtests, page=1)),
    }
    for col in cq.LOG_SORTS:
        way = flip[q.direction] if col == q.sort else cq.LOG_DIRECTIONS.get(col, "asc")
        links["sort_" + col] = _log_link(f, replace(q, sort=col, direction=way, page=1))
    return links


@pages.get("/contest", response_class=HTMLResponse)
def contest_page(request: Request, conn: Conn, web: Web, f: Filter, q: LogQ) -> HTMLResponse:
    log = cq.result_log(conn, f, web.contest_logs_dir, q)
    ctx = {
        "log": log, "f": f, "lq": q, "links": _log_links(f, q, log), "hidden": _view_params(q),
        # one branch: which series it tested (no page listed them)
        "branch_series": cq.branch_series(conn, f.branch) if f.branch else [],
        **_menus(conn),
    }  # fmt: skip
    return page(request, "contest.html", ctx)


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


def _flakes(request: Request, conn: Conn, f: cq.ContestFilter, q: MatrixQuery) -> cq.FlakeMatrix:
    rule = rule_of(request.app.state.settings.verdicts)
    return cq.flake_matrix(conn, f, q.min_flips, sort=q.sort, page=q.page, per_page=q.per_page,
                           rule=rule)  # fmt: skip


def _matrix_link(f: cq.ContestFilter, q: MatrixQuery) -> str:
    """The query string of the flakes page showing *q*, with the filters of *f* (one branch
    does not apply to a matrix over branches)."""
    params: dict[str, object] = {k: v for k, v in vars(f).items() if v and k != "branch"}
    params.update(vars(q))
    return "?" + urlencode(params)


def _matrix_links(f: cq.ContestFilter, q: MatrixQuery, m: cq.FlakeMatrix) -> dict[str, str | None]:
    """Pager links and one link per sort order (from the first page)."""
    links: dict[str, str | None] = {
        "prev": _matrix_link(f, replace(q, page=q.page - 1)) if q.page > 1 else None,
        "next": _matrix_link(f, replace(q, page=q.page + 1)) if q.page < m.pages else None,
    }
    for s in cq.FLAKE_SORTS:
        links["sort_" + s] = _matrix_link(f, replace(q, sort=s, page=1))
    return links


@pages.get("/flakes", response_class=HTMLResponse)
def flakes_page(request: Request, conn: Conn, f: Filter, q: MatrixQ) -> HTMLResponse:
    m = _flakes(request, conn, f, q)
    links = _matrix_links(f, q, m)
    ctx = {
        "m": m, "f": f, "min_flips": q.min_flips, "sort": q.sort, "sorts": cq.FLAKE_SORTS,
        "links": links, "rule": rule_of(request.app.state.settings.verdicts), **_menus(conn),
    }  # fmt: skip
    return page(request, "flakes.html", ctx)


@api.get("/contest/results", response_model=cq.ResultLog)
def api_results(conn: Conn, web: Web, f: Filter, q: LogQ) -> cq.ResultLog:
    """Per-test results of the newest branches (or one branch), one page sorted by `sort`
    (date: newest branch first; result: worst first when ascending). With `subtests`, each
    row carries its subtests, and `outcome` and `name` also match subtests (by outcome and
    path): a test is listed when it or one of its subtests matches (`matched` false: only
    for its subtests)."""
    return cq.result_log(conn, f, web.contest_logs_dir, q)


@api.get("/contest/flakes", response_model=cq.FlakeMatrix)
def api_flakes(request: Request, conn: Conn, f: Filter, q: MatrixQ) -> cq.FlakeMatrix:
    """Test × branch matrix of a stream's newest branches with flake signals, one page of
    tests sorted by `sort` (flaky: retry-flakes then flips; flips; streak: failing now,
    longest first; name). `quarantine` lists the tests known flaky by the [verdicts] rule
    (their failures are warnings) and those released since, with the evidence."""
    return _flakes(request, conn, f, q)


BranchName = Annotated[str, PathParam(min_length=1, max_length=200, pattern=BRANCH_NAME)]
StreamQ = Annotated[str | None, Query(max_length=64, pattern=NAME_OR_EMPTY)]
LimitQ = Annotated[int, Query(ge=1, le=1000)]


@pages.get("/branches", response_class=HTMLResponse)
def branches_page(
    request: Request, conn: Conn, stream: StreamQ = None, limit: LimitQ = 100
) -> HTMLResponse:
    items = bq.list_branches(conn, stream or None, limit)
    return page(request, "branches.html", {"items": items, "stream": stream or None})


@api.get("/branches", response_model=list[bq.BranchItem])
def api_branches(conn: Conn, stream: StreamQ = None, limit: LimitQ = 100) -> list[bq.BranchItem]:
    """Test branches, newest first (of one `stream`), with how many series they took in and
    left out and their runs (running, and error runs: ours, not the series' fault)."""
    return bq.list_branches(conn, stream or None, limit)


def _branch(request: Request, conn: Conn, name: str, now: datetime) -> bq.BranchView:
    try:
        return bq.branch_view(conn, request.app.state.engine, request.app.state.settings, name,
                              now.date())  # fmt: skip
    except NotFound as e:
        raise HTTPException(404, f"{e} is not in the database") from e


@pages.get("/branches/{name}", response_class=HTMLResponse)
def branch_page(request: Request, conn: Conn, name: BranchName, now: Now) -> HTMLResponse:
    b = _branch(request, conn, name, now)
    return page(request, "branch.html", {"b": b, "kinds": cidiff.KINDS})


@api.get("/branches/{name}", response_model=bq.BranchView)
def api_branch(request: Request, conn: Conn, name: BranchName, now: Now) -> bq.BranchView:
    """One test branch: its series (in it, and left out with why), its runs, its contest
    verdict with every finding and its evidence, and `diff`, what changed since the
    stream's previous branch."""
    return _branch(request, conn, name, now)


@api.get("/branches/{name}/diff", response_model=bq.BranchDiff)
def api_branch_diff(request: Request, name: BranchName, now: Now) -> bq.BranchDiff:
    """What changed since the stream's previous branch, per executor, test and subtest:
    newly-failing, fixed, newly-skipped, new and removed (NIPA's cidiff); `expected` names
    the expectations entry that expects a change."""
    try:
        return bq.branch_diff(request.app.state.engine, request.app.state.settings, name,
                              now.date())  # fmt: skip
    except NotFound as e:
        raise HTTPException(404, f"{e} is not in the database") from e


RunStatus = Annotated[str | None, Query(pattern=r"^$|^(running|done|error)$")]
BranchQ = Annotated[str | None, Query(max_length=128, pattern=BRANCH_OR_EMPTY)]
ApiPage = Annotated[int, Query(alias="page", ge=1, le=100_000)]
ApiPerPage = Annotated[int, Query(ge=1, le=200)]


@api.get("/runs", response_model=capi.RunsPage)
def api_runs(
    conn: Conn, branch: BranchQ = None, stream: StreamQ = None,
    executor: Annotated[str | None, Query(max_length=64, pattern=NAME_OR_EMPTY)] = None,
    status: RunStatus = None, page_no: ApiPage = 1, per_page: ApiPerPage = 50,
) -> capi.RunsPage:  # fmt: skip
    """Executor runs, newest branch first, one page: status (`error` is ours, never the
    series' fault), test and failure counts."""
    return capi.list_runs(conn, branch=branch or None, stream=stream or None,
                          executor=executor or None, status=status or None, page=page_no,
                          per_page=per_page)  # fmt: skip


@api.get("/regressions", response_model=capi.RegressionsPage)
def api_regressions(
    request: Request, conn: Conn, stream: StreamQ = None, page_no: ApiPage = 1,
    per_page: Annotated[int, Query(ge=1, le=50)] = 10,
) -> capi.RegressionsPage:  # fmt: skip
    """The regressions of one page of test branches (`per_page` branches, newest first):
    each failing test the contest verdict counts as new on its branch, with the evidence
    and its culprit search (status, and the series it blamed)."""
    return capi.list_regressions(conn, request.app.state.engine, request.app.state.settings,
                                 stream=stream or None, page=page_no, per_page=per_page)  # fmt: skip
