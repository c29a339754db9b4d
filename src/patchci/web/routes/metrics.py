"""/metrics in the Prometheus text exposition format (no client library needed)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from patchci.web import queries
from patchci.web import status_queries as sq
from patchci.web.routes.deps import Conn, Now, Web

router = APIRouter(include_in_schema=False)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(
    name: str, kind: str, help_text: str, label: str, values: Mapping[str, float]
) -> Iterable[str]:
    yield f"# HELP {name} {help_text}"
    yield f"# TYPE {name} {kind}"
    for key, value in sorted(values.items()):
        yield f'{name}{{{label}="{_label(key)}"}} {value:g}'


def _gauge(name: str, help_text: str, value: float) -> Iterable[str]:
    yield f"# HELP {name} {help_text}"
    yield f"# TYPE {name} gauge"
    yield f"{name} {value:g}"


def render_metrics(
    series: Mapping[str, int],
    jobs: Mapping[str, int],
    results: Mapping[str, int],
    sources: Iterable[queries.SourceStatus],
    executors: Iterable[sq.ExecutorStatus] = (),
    undelivered: Mapping[str, int] | None = None,
) -> str:
    """The exposition text; pure, so tests can pin the format."""
    sources = list(sources)
    executors = list(executors)
    seen = {e.executor: e.age_s for e in executors}
    ages = {c.name: c.age_s for s in sources for c in s.cursors}
    stale = {s.source: float(s.alarm) for s in sources}
    lines = [
        *_family("patchci_series", "gauge", "Series stored, by state.", "state", series),
        *_family("patchci_jobs", "gauge", "Jobs, by status.", "status", jobs),
        *_family(
            "patchci_check_results", "gauge", "Check results stored, by outcome.", "outcome",
            results,
        ),
        *_family(
            "patchci_source_cursor_age_seconds", "gauge",
            "Seconds since the source's cursor last moved.", "source", ages,
        ),
        *_family(
            "patchci_source_stale", "gauge",
            "1 when a source's cursor has not moved for longer than the alarm threshold.",
            "source", stale,
        ),
        *_family(
            "patchci_executor_last_run_age_seconds", "gauge",
            "Seconds since the executor last started or finished a run.", "executor", seen,
        ),
        *_gauge(
            "patchci_runs_running", "Contest runs in progress.",
            sum(e.running for e in executors),
        ),
        *_family(
            "patchci_checks_undelivered", "gauge",
            "Checks whose newest post failed (retried each cycle), by target.", "target",
            undelivered or {},
        ),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(conn: Conn, web: Web, now: Now) -> PlainTextResponse:
    sources = queries.source_status(
        conn, now, web.recent_window, web.cursor_alarm_after, web.sources
    )
    text = render_metrics(
        queries.series_by_state(conn),
        queries.jobs_by_status(conn),
        queries.results_by_outcome(conn),
        sources,
        sq.executor_status(conn, now, web.recent_window),
        sq.undelivered(conn),
    )
    return PlainTextResponse(text, media_type=CONTENT_TYPE)
