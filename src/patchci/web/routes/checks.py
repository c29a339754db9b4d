"""Check statistics: page and API (per check: outcomes per day, the slowest runs)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from patchci.web import check_queries as cq
from patchci.web.render import page
from patchci.web.routes.deps import NAME_OR_EMPTY, Conn, Now

pages = APIRouter(include_in_schema=False)
api = APIRouter(tags=["patchci"])

Days = Annotated[int, Query(ge=1, le=366)]
CheckName = Annotated[str | None, Query(max_length=64, pattern=NAME_OR_EMPTY)]
Slowest = Annotated[int, Query(ge=1, le=100)]


@pages.get("/checks", response_class=HTMLResponse)
def checks_page(
    request: Request, conn: Conn, now: Now, days: Days = 14, check: CheckName = None,
    slowest: Slowest = 5,
) -> HTMLResponse:  # fmt: skip
    stats = cq.check_stats(conn, now, days, slowest=slowest, check=check or None)
    ctx = {"st": stats, "names": cq.check_names(conn), "check": check or None,
           "outcomes": cq.OUTCOMES, "query": {"days": days, **({"check": check} if check else {})}}  # fmt: skip
    return page(request, "checks.html", ctx)


@api.get("/checks", response_model=cq.CheckStats)
def api_checks(
    conn: Conn, now: Now, days: Days = 14, check: CheckName = None, slowest: Slowest = 5
) -> cq.CheckStats:
    """Per check (or only `check`), over the last `days` UTC days: outcome counts, each
    day's counts, the failure rate (fail, crash, timeout over the results that ran; error
    is ours and counted apart), median and longest duration, the `slowest` runs."""
    return cq.check_stats(conn, now, days, slowest=slowest, check=check or None)
