"""The long-running service: poll sources → store → check → report → cut the test
branches that are due, and keep going.

Each stage works from the database, so a restart picks up where the last run stopped: a
series is stored with its event (cursor) in one transaction, checked once, and its results
reported through the idempotent delivery ledger.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from urllib.parse import quote

from patchci.checks.base import Check
from patchci.config import MailSource, PatchworkSource, Settings
from patchci.contest import cut_due
from patchci.db.results import ResultsStore
from patchci.db.store import Store
from patchci.errors import FetchError, InfraError, PatchError
from patchci.model import CheckResult, Patch, Series
from patchci.pipeline import check_series
from patchci.report.deliver import DeliveryStats, deliver_checks
from patchci.sources.mail import parse_mail
from patchci.sources.mbox import load_series
from patchci.sources.patchwork import PatchworkClient, PatchworkNotFound, PwEvent, PwPatchRef

log = logging.getLogger(__name__)

# Series states, in the order a series normally moves through them.
NEW, INCOMPLETE, EXPIRED, CHECKED, REPORTED, DONE, ERROR = (
    "new",
    "incomplete",
    "expired",
    "checked",
    "reported",
    "done",
    "error",
)


# Each poll re-reads this much of the server's own clock before the cursor: Patchwork dates
# events in naive local time, which repeats an hour when DST ends (Australia/Canberra by
# default), and a slow transaction can commit an event dated before one we already saw.
# Events already stored are skipped by id.
EVENT_LOOKBACK = 3600.0


def open_store(settings: Settings) -> Store:
    settings.data_path.mkdir(parents=True, exist_ok=True)
    return Store.open(settings.db_url)


def make_client(src: PatchworkSource) -> PatchworkClient:
    return PatchworkClient(
        src.url,
        src.project,
        src.token(),
        timeout=src.timeout,
        retries=src.retries,
        api_version=src.api_version,
    )


# ---------------------------------------------------------------- ingest


def _pw_patch(client: PatchworkClient, ref: PwPatchRef) -> Patch:
    p = parse_mail(client.patch_mbox(ref))
    return dataclasses.replace(p, pw_id=ref.id, web_url=ref.web_url)


def fetch_pw_series(client: PatchworkClient, source: str, series_id: int) -> Series:
    pw = client.get_series(series_id)
    patches = tuple(_pw_patch(client, ref) for ref in pw.patches)
    cover = _pw_patch(client, pw.cover) if pw.cover is not None else None
    problems = (
        ()
        if pw.received_all
        else (f"incomplete: {pw.received_total} of {pw.total} patches received",)
    )
    return Series(
        source=source,
        key=str(pw.id),
        name=pw.name,
        version=pw.version,
        total=pw.total,
        patches=patches,
        cover=cover,
        submitter=patches[0].author if patches else None,
        date=patches[0].date if patches else None,
        complete=pw.received_all,
        pw_id=pw.id,
        web_url=pw.web_url,
        problems=problems,
    )


def check_project(client: PatchworkClient) -> None:
    """Fail loudly if the project does not exist: Patchwork answers an unknown `project=`
    filter with `200 []`, so a typo would otherwise look like a quiet project forever."""
    url = client.api(f"projects/{quote(client.project, safe='')}/")
    try:
        client.fetch_mbox(url)  # a plain GET with the client's retries; body unused
    except PatchworkNotFound as e:
        raise FetchError(
            f"project {client.project!r} not found on {client.url}: check the source's "
            "'project' (Patchwork's link name, e.g. netdev)"
        ) from e


def poll_patchwork(store: Store, src: PatchworkSource, client: PatchworkClient) -> int:
    """Store every series completed since our cursor. A fetch failure stops this poll
    without moving the cursor past the series, so the next poll retries it."""
    new = 0
    since = store.get_cursor(src.name)
    if since is None:
        # No event seen yet: a new source, or a project name that matches nothing.
        check_project(client)
    for ev in client.iter_series_completed(since, lookback=EVENT_LOOKBACK):
        if store.event_seen(src.name, ev.id):
            continue
        series = _fetch_or_skip(store, client, src.name, src.name, ev)
        if series is None:
            continue
        sid = store.save_series_with_event(series, src.name, ev.id, ev.date)
        _set_arrival_state(store, sid, series)
        log.info("source %s: event %s stored series %s (%s)", src.name, ev.id, sid, series.name)
        new += 1
    return new


def poll_created(store: Store, src: PatchworkSource, client: PatchworkClient) -> int:
    """Record series that were created but are not complete yet, so a series whose last
    patch never arrives becomes a visible, explained state instead of silence."""
    cursor_name = f"{src.name}#created"
    n = 0
    since = store.get_cursor(cursor_name)
    for ev in client.iter_events("series-created", since, lookback=EVENT_LOOKBACK):
        if store.event_seen(cursor_name, ev.id):
            continue
        sid = store.find_series(src.name, str(ev.series_id))
        if sid is not None:
            store.record_event(cursor_name, ev.id, ev.date, sid)
            continue
        series = _fetch_or_skip(store, client, src.name, cursor_name, ev)
        if series is None:
            continue
        if series.complete:
            # its series-completed event will bring it; only move the cursor
            store.record_event(cursor_name, ev.id, ev.date, None)
            continue
        sid = store.save_series_with_event(series, cursor_name, ev.id, ev.date)
        _set_arrival_state(store, sid, series)
        n += 1
    return n


def _fetch_or_skip(
    store: Store, client: PatchworkClient, source: str, cursor: str, ev: PwEvent
) -> Series | None:
    """The event's series, or None when it is gone from the server (404): that event is
    then recorded as done, so one deleted series cannot stop the source for good. Any
    other failure propagates and the cursor stays before the event."""
    try:
        return fetch_pw_series(client, source, ev.series_id)
    except PatchworkNotFound as e:
        log.warning("source %s: event %s: series %s is gone, skipped: %s",
                    source, ev.id, ev.series_id, e)  # fmt: skip
        store.record_event(cursor, ev.id, ev.date, None)
        return None


def poll_mail(store: Store, src: MailSource) -> int:
    ingested = load_series(Path(src.path), source=src.name)
    for rej in ingested.rejected:
        log.warning("source %s: skipped %s: %s", src.name, rej.location, rej.reason)
    new = 0
    for series in ingested.series:
        existed = store.find_series(src.name, series.key)
        sid = store.save_series(series)
        _set_arrival_state(store, sid, series)
        new += existed is None
    return new


def _set_arrival_state(store: Store, sid: int, series: Series) -> None:
    state = store.series_row(sid).state
    if not series.complete:
        if state in (NEW, INCOMPLETE):
            store.set_series_state(sid, INCOMPLETE, "; ".join(series.problems) or "incomplete")
    elif state in (INCOMPLETE, EXPIRED):
        store.set_series_state(sid, NEW, "completed")


def expire_incomplete(
    store: Store, max_age: float, now: datetime | None = None, *, source: str | None = None
) -> int:
    """Give up on incomplete series (of *source*, or all) older than *max_age* seconds."""
    now = now or datetime.now(UTC)
    n = 0
    for row in store.list_series(state=INCOMPLETE, limit=100000):
        if source is not None and row.source != source:
            continue
        created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
        age = (now - created).total_seconds()
        if age > max_age:
            have = len(store.load_series(row.id).patches)
            missing = max(row.total - have, 0)
            reason = (
                f"never completed: {missing} of {row.total} patches missing "
                f"after {age / 3600:.1f}h ({row.state_reason})"
            )
            store.set_series_state(row.id, EXPIRED, reason)
            n += 1
    return n


# ---------------------------------------------------------------- check


def checks_for_tree(settings: Settings) -> Callable[..., list[Check]]:
    from patchci.localcheck import build_checks

    def checks_for(tree: object) -> list[Check]:
        name = getattr(tree, "name", "")
        return build_checks(settings.tree(name).checks, settings)

    return checks_for


def process_series(store: Store, settings: Settings, series_id: int) -> list[CheckResult]:
    job = store.create_job(series_id, "checks")
    store.start_job(job, worker=f"pid-{threading.get_native_id()}")
    series = store.load_series(series_id)
    log_dir = settings.data_path / "logs" / f"series-{series_id}" / f"job-{job}"
    try:
        verdict = check_series(series, settings.model_trees(), checks_for_tree(settings), log_dir)
    except (InfraError, PatchError, OSError) as e:
        log.exception("series %s job %s: infrastructure error", series_id, job)
        store.finish_job(job, "error", str(e))
        store.set_series_state(series_id, ERROR, f"infrastructure error: {e}")
        return []
    except Exception as e:  # a bug must not leave the series "new" to crash every restart
        log.exception("series %s job %s: internal error", series_id, job)
        store.finish_job(job, "error", f"{type(e).__name__}: {e}")
        store.set_series_state(series_id, ERROR, f"internal error: {type(e).__name__}: {e}")
        return []
    store.add_results(job, series_id, verdict.results)
    store.finish_job(job, "done")
    store.set_series_state(series_id, CHECKED, verdict.route.reason, tree=verdict.route.tree)
    log.info("series %s job %s: %s", series_id, job, verdict.outcome.value)
    return list(verdict.results)


def process_pending(store: Store, settings: Settings) -> int:
    rows = store.list_series(state=NEW, limit=1000)
    for row in rows:
        process_series(store, settings, row.id)
    return len(rows)


# ---------------------------------------------------------------- report


def _log_url(settings: Settings) -> Callable[[CheckResult], str | None]:
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


def report_pending(
    store: Store, settings: Settings, clients: dict[str, PatchworkClient]
) -> DeliveryStats:
    total = DeliveryStats()
    for row in store.list_series(state=CHECKED, limit=1000):
        client = clients.get(row.source)
        if client is None or not settings.report.patchwork.enabled:
            store.set_series_state(row.id, DONE, row.state_reason)
            continue
        series = store.load_series(row.id)
        ids = [p.pw_id for p in series.patches if p.pw_id is not None]
        stats = deliver_checks(
            store,
            client,
            target=f"patchwork:{client.url}",
            series_id=row.id,
            results=store.latest_results(row.id),
            patch_ids=ids,
            log_url=_log_url(settings),
            context_prefix=settings.report.patchwork.context_prefix,
        )
        if stats.failed == 0:
            store.set_series_state(row.id, REPORTED, row.state_reason, tree=row.tree)
        total = DeliveryStats(
            *(
                a + b
                for a, b in zip(dataclasses.astuple(total), dataclasses.astuple(stats), strict=True)
            )
        )
    return total


# ---------------------------------------------------------------- loop


def run_cycle(
    store: Store,
    settings: Settings,
    clients: dict[str, PatchworkClient],
    only: str | None = None,
    *,
    now: datetime | None = None,
) -> dict[str, int]:
    """One pass: poll every source, check what is new, report, then (with streams
    configured) cut the branches due at *now*. Never raises for one source's or one
    stream's failure: it is logged and the others go on."""
    stats = {"new": 0, "checked": 0, "posted": 0, "errors": 0}
    for src in settings.sources:
        if only and src.name != only:
            continue
        try:
            if isinstance(src, PatchworkSource):
                stats["new"] += poll_patchwork(store, src, clients[src.name])
                poll_created(store, src, clients[src.name])
                expire_incomplete(store, src.incomplete_after, source=src.name)
            else:
                stats["new"] += poll_mail(store, src)
        except (FetchError, OSError, PatchError) as e:
            log.error("source %s: poll failed, will retry: %s", src.name, e)
            stats["errors"] += 1
        except Exception:  # a bug in one source must not stop the others
            log.exception("source %s: poll crashed, will retry", src.name)
            stats["errors"] += 1
    stats["checked"] = process_pending(store, settings)
    stats["posted"] = report_pending(store, settings, clients).posted
    if settings.streams:
        when = now or datetime.now(UTC)
        cuts = cut_due(store, ResultsStore(store.engine), settings, when, clients)
        stats["branches"] = sum(c.branch is not None for c in cuts)
        stats["branch_errors"] = sum(bool(c.errors) for c in cuts)
    return stats


def run_ingest(settings: Settings, *, once: bool, source: str | None = None) -> int:
    store = open_store(settings)
    clients = {s.name: make_client(s) for s in settings.sources if isinstance(s, PatchworkSource)}
    if source and source not in {s.name for s in settings.sources}:
        from patchci.errors import ConfigError

        raise ConfigError(f"--source: no source named {source!r}")
    stop = threading.Event()

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    if not once:
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    interval = min(
        (s.poll_interval for s in settings.sources if isinstance(s, PatchworkSource)), default=60.0
    )
    while True:
        stats = run_cycle(store, settings, clients, source)
        print(_cycle_line(stats), flush=True)
        if once:
            return 2 if stats["errors"] or stats.get("branch_errors") else 0
        if stop.wait(interval):
            return 0


def _cycle_line(stats: dict[str, int]) -> str:
    line = (
        f"ingest: {stats['new']} new series, {stats['checked']} checked, "
        f"{stats['posted']} checks posted, {stats['errors']} source errors"
    )
    if "branches" in stats:
        line += f", {stats['branches']} branches cut, {stats['branch_errors']} stream errors"
    return line


def run_process(settings: Settings) -> int:
    store = open_store(settings)
    clients = {s.name: make_client(s) for s in settings.sources if isinstance(s, PatchworkSource)}
    n = process_pending(store, settings)
    posted = report_pending(store, settings, clients).posted
    print(f"process: {n} series checked, {posted} checks posted")
    return 0


def show_series(settings: Settings, series_id: int | None) -> int:
    from rich.console import Console
    from rich.table import Table

    from patchci.report.console import plain, results_table

    store = open_store(settings)
    console = Console()
    if series_id is None:
        t = Table(title="series")
        for col in ("id", "source", "name", "v", "tree", "state", "reason"):
            t.add_column(col)
        for r in store.list_series(limit=200):
            t.add_row(
                *(
                    plain(v)
                    for v in (
                        str(r.id),
                        r.source,
                        r.name,
                        str(r.version),
                        r.tree or "-",
                        r.state,
                        r.state_reason,
                    )
                )
            )
        console.print(t)
        return 0
    series = store.load_series(series_id)
    results = store.latest_results(series_id)
    console.print(results_table(f"{series.name} (v{series.version})", results, len(series.patches)))
    return 0


def _sleep(seconds: float) -> None:
    time.sleep(seconds)
