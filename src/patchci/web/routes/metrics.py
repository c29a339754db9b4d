"""/metrics in the Prometheus text exposition format (no client library needed)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from patchci.web import queries
from patchci.web import status_queries as sq
from patchci.web.routes.deps import Conn, Now, Web
from patchci.web.worker_queries import WorkerStatus, worker_status

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
    hosts: WorkerStatus | None = None,
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
    if hosts is not None:
        lines += [
            *_family(
                "patchci_worker_last_seen_seconds", "gauge",
                "Seconds since the worker host's last heartbeat.", "worker",
                {w.name: w.age_s for w in hosts.workers},
            ),
            *_family(
                "patchci_worker_alive", "gauge",
                "1 when the worker was heard from within the broker's heartbeat_timeout.",
                "worker", {w.name: float(w.alive) for w in hosts.workers},
            ),
            *_family(
                "patchci_queue_depth", "gauge", "Jobs waiting on the broker's queue.",
                "queue", {q.name: q.waiting for q in hosts.queues},
            ),
            *_family(
                "patchci_executor_jobs", "gauge", "Executor jobs of worker hosts, by state.",
                "state", hosts.by_state,
            ),
            *_gauge("patchci_executor_jobs_running", "Executor jobs running on worker hosts.",
                    len(hosts.running)),
            *_gauge("patchci_executor_jobs_rerun", "Jobs run again after a lost worker.",
                    hosts.rerun_jobs),
        ]  # fmt: skip
    return "\n".join(lines) + "\n"


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request, conn: Conn, web: Web, now: Now) -> PlainTextResponse:
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
        worker_status(request.app.state.engine, request.app.state.settings, now),
    )
    return PlainTextResponse(text, media_type=CONTENT_TYPE)
