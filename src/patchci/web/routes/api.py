"""The JSON API under /api/v1: the same data as the pages, as the OpenAPI schema says."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request

from patchci.db.culprits import CulpritStore, SearchRow
from patchci.db.results import ResultsStore
from patchci.web import queries
from patchci.web import status_queries as sq
from patchci.web.routes.deps import (
    NAME_OR_EMPTY,
    OUTCOME_OR_EMPTY,
    Conn,
    Filter,
    Now,
    PageNo,
    PerPage,
    SeriesId,
    Web,
)

router = APIRouter(tags=["patchci"])


@router.get("/series", response_model=queries.SeriesPage)
def api_series_list(
    conn: Conn, web: Web, f: Filter, page_no: PageNo = 1, per_page: PerPage = None
) -> queries.SeriesPage:
    """Series, newest first, filtered like the series page."""
    return queries.list_series(conn, f, page_no, per_page or web.page_size)


@router.get("/series/{series_id}", response_model=queries.SeriesDetail)
def api_series(series_id: SeriesId, conn: Conn, web: Web) -> queries.SeriesDetail:
    """One series with its patches, newest check results, jobs and deliveries."""
    detail = queries.series_detail(conn, series_id, web.logs_dir)
    if detail is None:
        raise HTTPException(404, f"series {series_id} is not in the database")
    return detail


@router.get("/series/{series_id}/culprits", response_model=list[SearchRow])
def api_series_culprits(series_id: SeriesId, conn: Conn, request: Request) -> list[SearchRow]:
    """The culprit searches of the test branches that included the series: which series
    each regression was bisected to, and every probe (commit, outcome, why)."""
    if not queries.series_exists(conn, series_id):
        raise HTTPException(404, f"series {series_id} is not in the database")
    engine = request.app.state.engine
    culprits = CulpritStore(engine)
    return [s for b in ResultsStore(engine).branches_of_series(series_id)
            for s in culprits.searches(b)]  # fmt: skip


@router.get("/series/{series_id}/checks", response_model=list[queries.CheckView])
def api_series_checks(
    series_id: SeriesId,
    conn: Conn,
    web: Web,
    check: Annotated[str | None, Query(max_length=64, pattern=NAME_OR_EMPTY)] = None,
    outcome: Annotated[str | None, Query(max_length=16, pattern=OUTCOME_OR_EMPTY)] = None,
    history: bool = False,
) -> list[queries.CheckView]:
    """The newest result per (patch, check); `history=true` gives every result stored."""
    if not queries.series_exists(conn, series_id):
        raise HTTPException(404, f"series {series_id} is not in the database")
    results = queries.series_checks(conn, series_id, web.logs_dir, history=history)
    return [
        r
        for r in results
        if (not check or r.check == check) and (not outcome or r.outcome == outcome)
    ]


@router.get("/status", response_model=queries.StatusReport)
def api_status(conn: Conn, web: Web, now: Now) -> queries.StatusReport:
    """Sources and their cursors, queues, our own recent errors, check latency."""
    return queries.status_report(
        conn, now, web.recent_window, web.cursor_alarm_after, web.logs_dir, web.sources
    )


@router.get("/expectations", response_model=sq.ExpectationStatus)
def api_expectations(request: Request, now: Now) -> sq.ExpectationStatus:
    """The configured expectations file's entries, each marked expired or not (an expired
    entry no longer applies); `error` when the file cannot be read."""
    return sq.expectation_status(request.app.state.settings, now.date())
