"""The report job: post each checked series' results to its Patchwork, once."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from patchci.config import Settings
from patchci.db.store import SeriesRow, Store
from patchci.model import (
    CHECKED,
    DONE,
    MALFORMED,
    REPORTED,
    REPORTING,
    RETRY,
    CheckResult,
    Outcome,
)
from patchci.report.deliver import DeliveryStats, deliver_checks
from patchci.service.leases import LEASE, worker_id
from patchci.sources.patchwork import PatchworkClient

log = logging.getLogger(__name__)

# Infrastructure errors are retried: the n-th retry waits RETRY_FIRST_WAIT * 2^n seconds
# (5 min, 10 min ... 10.7 h after 8), then the series keeps its last results, said so.
RETRY_FIRST_WAIT = 300.0
RETRY_ATTEMPTS = 8


def _after_errors(store: Store, series_id: int) -> str:
    """Where a reported series with an infrastructure error goes: RETRY, or REPORTED once
    it has been checked RETRY_ATTEMPTS times (the reason then says so)."""
    attempts = store.job_count(series_id, "checks")
    if attempts < RETRY_ATTEMPTS:
        return RETRY
    log.warning("series %s: infrastructure errors after %d attempts: giving up, results "
                "stay pending", series_id, attempts)  # fmt: skip
    return REPORTED


def log_url(settings: Settings) -> Callable[[CheckResult], str | None]:
    base = settings.report.patchwork.log_url
    logs = settings.data_path / "logs"

    def url(r: CheckResult) -> str | None:
        if not base or not r.log_path:
            return None
        try:
            rel = Path(r.log_path).resolve().relative_to(logs.resolve())
        except ValueError:
            return None
        return f"{base.rstrip('/')}/{rel.as_posix()}"

    return url


def _report_rows(store: Store, only: int | None) -> Iterator[tuple[SeriesRow, int | None]]:
    """Checked series, each claimed (state `reporting`, a job with a lease) so that two
    daemons never post one series twice; then malformed series not posted yet."""
    owner = worker_id(store)
    last = 0
    while True:
        claimed = store.claim_series(CHECKED, REPORTING, "report", owner, LEASE, after=last,
                                     series_id=only)  # fmt: skip
        if claimed is None:
            break
        last = claimed[0]
        yield store.series_row(claimed[0]), claimed[1]
        if only is not None:
            break
    if only is None:
        for row in store.malformed_unreported():
            yield row, None


def report_pending(
    store: Store, settings: Settings, clients: dict[str, PatchworkClient],
    only: int | None = None,
) -> DeliveryStats:  # fmt: skip
    """Post the results of checked series (of series *only*, when given)."""
    total = DeliveryStats()
    for row, job in _report_rows(store, only):
        client = clients.get(row.source)
        malformed = row.state == MALFORMED  # stays malformed; the ledger says it was posted
        if client is None or not settings.report.patchwork.enabled:
            if not malformed:
                errors = any(r.outcome is Outcome.ERROR for r in store.latest_results(row.id))
                state = _after_errors(store, row.id) if errors else DONE
                store.set_series_state(row.id, state, row.state_reason)
            if job is not None:
                store.finish_job(job, "done")
            continue
        series = store.load_series(row.id)
        ids = [p.pw_id for p in series.patches if p.pw_id is not None]
        results = store.latest_results(row.id)
        stats = deliver_checks(
            store,
            client,
            target=f"patchwork:{client.url}",
            series_id=row.id,
            results=results,
            patch_ids=ids,
            log_url=log_url(settings),
            context_prefix=settings.report.patchwork.context_prefix,
        )
        if not malformed:
            done = stats.failed == 0 and stats.deferred == 0
            # not all posted: back to `checked`, the next cycle tries the rest; posted with
            # an infrastructure error among them: checked again later
            state = REPORTED if done else CHECKED
            if done and any(r.outcome is Outcome.ERROR for r in results):
                state = _after_errors(store, row.id)
            store.set_series_state(row.id, state, row.state_reason, tree=row.tree)
        if job is not None:
            store.finish_job(job, "done" if stats.failed == 0 else "error",
                             "" if stats.failed == 0 else f"{stats.failed} post(s) failed")  # fmt: skip
        total += stats
    return total
