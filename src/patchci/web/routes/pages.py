"""HTML pages: series list, one series, status. Thin: validate, query, render."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse

from patchci.db.culprits import CulpritStore, SearchRow
from patchci.db.results import ResultsStore
from patchci.model import Outcome, worst
from patchci.report.contest import ContestSummary
from patchci.service.contest import series_verdict
from patchci.web import queries
from patchci.web import status_queries as sq
from patchci.web.render import page
from patchci.web.routes.deps import Conn, Filter, Now, PageNo, PerPage, SeriesId, Web
from patchci.web.worker_queries import worker_status

router = APIRouter(include_in_schema=False)


def _query_string(f: queries.SeriesFilter, per_page: int | None, page_no: int) -> str:
    params = {k: v for k, v in vars(f).items() if v}
    if per_page:
        params["per_page"] = str(per_page)
    if page_no > 1:
        params["page"] = str(page_no)
    return "?" + urlencode(params) if params else ""


@router.get("/series", response_class=HTMLResponse)
def series_list(
    request: Request, conn: Conn, web: Web, f: Filter, page_no: PageNo = 1,
    per_page: PerPage = None,
) -> HTMLResponse:  # fmt: skip
    result = queries.list_series(conn, f, page_no, per_page or web.page_size)
    trees, states = queries.distinct_values(conn)
    links = {
        "prev": _query_string(f, per_page, page_no - 1) if page_no > 1 else None,
        "next": _query_string(f, per_page, page_no + 1) if page_no < result.pages else None,
    }
    return page(
        request,
        "series_list.html",
        {
            "result": result,
            "f": f,
            "trees": trees,
            "states": states,
            "outcomes": [o.value for o in Outcome],
            "links": links,
        },
    )


@router.get("/series/{series_id}", response_class=HTMLResponse)
def series_page(request: Request, series_id: SeriesId, conn: Conn, web: Web) -> HTMLResponse:
    detail = queries.series_detail(conn, series_id, web.logs_dir)
    if detail is None:
        raise HTTPException(404, f"series {series_id} is not in the database")
    contest = _contest_verdict(request, series_id)
    verdict = detail.series.verdict
    contest_outcome = None
    if contest is not None:  # the page said "pass" while `contest: fail` was posted
        contest_outcome = _PW_OUTCOME.get(contest.state, Outcome.PENDING)
        checks = Outcome.stored_or_none(verdict)
        verdict = worst([contest_outcome, *([checks] if checks else [])]).value
    ctx = {"d": detail, "s": detail.series, "contest": contest, "verdict": verdict,
           "kind_labels": KIND_LABELS, "repro": _reproducers(request, contest),
           "contest_outcome": contest_outcome.value if contest_outcome else None,
           "searches": _searches(request, [b.name for b in detail.branches if b.included])}  # fmt: skip
    return page(request, "series.html", ctx)


def _reproducers(request: Request, contest: ContestSummary | None) -> dict[str, str]:
    """"executor|group|name" → how to run that failing test again (the run's command)."""
    if contest is None or not contest.findings:
        return {}
    out = {}
    for run in ResultsStore(request.app.state.engine).branch_results(contest.branch):
        for t in run.tests:
            if t.reproduce or run.reproduce:
                out[f"{run.executor}|{t.group}|{t.name}"] = t.reproduce or run.reproduce
    return out


def _searches(request: Request, branches: list[str]) -> list[SearchRow]:
    """The culprit searches of the branches the series was in: the evidence behind a
    `fail` (or a "broken by series N") of its contest check."""
    store = CulpritStore(request.app.state.engine)
    return [s for name in branches for s in store.searches(name)]


# What each kind of contest finding means, as the series page says it.
KIND_LABELS = {
    "regression": "regression", "known": "failing on the previous branch too",
    "unverified": "failing, no previous branch to compare with", "flaky": "flaky (retry passed)",
    "blamed": "broken by another series", "upstream": "failing at the base too",
    "searching": "being bisected", "known-flaky": "known flaky", "expected": "expected",
}  # fmt: skip

_PW_OUTCOME = {"success": Outcome.PASS, "warning": Outcome.WARN, "fail": Outcome.FAIL,
               "pending": Outcome.PENDING}  # fmt: skip


def _contest_verdict(request: Request, series_id: int) -> ContestSummary | None:
    """The `contest` verdict the series shows on Patchwork (its newest branch's, by the
    rule contest checks are posted with), or None when no branch took it."""
    results = ResultsStore(request.app.state.engine)
    branches = results.branches_of_series(series_id)
    if not branches:
        return None
    return series_verdict(results, series_id, branches[-1], {}, request.app.state.settings)


@router.get("/status", response_class=HTMLResponse)
def status_page(request: Request, conn: Conn, web: Web, now: Now) -> HTMLResponse:
    report = queries.status_report(
        conn, now, web.recent_window, web.cursor_alarm_after, web.logs_dir, web.sources
    )
    return page(
        request,
        "status.html",
        {"r": report, "window": timedelta(seconds=web.recent_window),
         "expect": sq.expectation_status(request.app.state.settings, now.date()),
         "hosts": worker_status(request.app.state.engine, request.app.state.settings, now)},
    )
