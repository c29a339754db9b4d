"""The long-running service: poll sources → store → check → report → cut the test
branches that are due, and keep going.

Each stage works from the database, so a restart picks up where the last run stopped: a
series is stored with its event (cursor) in one transaction, checked once, and its results
reported through the idempotent delivery ledger.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import IO
from urllib.parse import quote

from sqlalchemy.exc import SQLAlchemyError

from patchci import proc
from patchci.checks.base import Check
from patchci.config import MailSource, PatchworkSource, Settings
from patchci.contest import cut_due
from patchci.db.results import ResultsStore
from patchci.db.store import SeriesRow, Store
from patchci.errors import ConfigError, FetchError, InfraError, PatchError
from patchci.model import (
    CHECKED,
    CHECKING,
    DONE,
    ERROR,
    EXPIRED,
    INCOMPLETE,
    MALFORMED,
    NEW,
    REPORTED,
    REPORTING,
    RETRY,
    CheckResult,
    Outcome,
    Patch,
    Person,
    Series,
    worst,
)
from patchci.pipeline import check_series
from patchci.report.deliver import DeliveryStats, deliver_checks
from patchci.sources.mail import MalformedMail, parse_mail
from patchci.sources.mbox import load_series
from patchci.sources.patchwork import PatchworkClient, PatchworkNotFound, PwEvent, PwPatchRef
from patchci.subject import parse_subject

log = logging.getLogger(__name__)

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


# A 404 for a series the server has just listed is retried this many times, the waits
# doubling from GONE_FIRST_WAIT seconds (30 s, 1, 2 and 4 min: about 7.5 min in all),
# before the series is recorded as gone.
GONE_ATTEMPTS = 5
GONE_FIRST_WAIT = 30.0


@dataclass(frozen=True)
class Unparsed:
    """A mail of a series that did not parse: the patch's fault (MalformedMail) unless the
    parser itself failed (`ours`)."""

    index: int | None  # position in Series.patches; None for the cover letter
    pw_id: int
    reason: str
    ours: bool = False


@dataclass(frozen=True)
class Fetched:
    series: Series
    unparsed: tuple[Unparsed, ...] = ()


def _unparsed_patch(ref: PwPatchRef, raw: bytes, author: Person) -> Patch:
    """A stand-in for a mail that did not parse, from what Patchwork says of it; the raw
    bytes are kept."""
    return Patch(
        msgid=ref.msgid, subject=ref.name, author=author, date=None,
        info=parse_subject(ref.name), raw=raw, pw_id=ref.id, web_url=ref.web_url,
    )  # fmt: skip


def _pw_patch(
    client: PatchworkClient, ref: PwPatchRef, author: Person
) -> tuple[Patch, str | None, bool]:
    """(patch, why it did not parse or None, whether that is our parser's fault)."""
    raw = client.patch_mbox(ref)
    try:
        p = parse_mail(raw)
    except MalformedMail as e:
        return _unparsed_patch(ref, raw, author), str(e), False
    except Exception as e:  # a parser bug: recorded as ours, and the source goes on
        log.exception("patch %s: mail parser failed", ref.id)
        return _unparsed_patch(ref, raw, author), f"{type(e).__name__}: {e}", True
    return dataclasses.replace(p, pw_id=ref.id, web_url=ref.web_url), None, False


def fetch_pw_series(client: PatchworkClient, source: str, series_id: int) -> Fetched:
    pw = client.get_series(series_id)
    unparsed: list[Unparsed] = []
    patches: list[Patch] = []
    for i, ref in enumerate(pw.patches):
        p, why, ours = _pw_patch(client, ref, pw.submitter)
        patches.append(p)
        if why is not None:
            unparsed.append(Unparsed(i, ref.id, why, ours))
    cover = None
    if pw.cover is not None:
        cover, why, ours = _pw_patch(client, pw.cover, pw.submitter)
        if why is not None:
            unparsed.append(Unparsed(None, pw.cover.id, why, ours))
    problems = (
        ()
        if pw.received_all
        else (f"incomplete: {pw.received_total} of {pw.total} patches received",)
    )
    series = Series(
        source=source,
        key=str(pw.id),
        name=pw.name,
        version=pw.version,
        total=pw.total,
        patches=tuple(patches),
        cover=cover,
        submitter=patches[0].author if patches else None,
        date=patches[0].date if patches else None,
        complete=pw.received_all,
        pw_id=pw.id,
        web_url=pw.web_url,
        problems=problems,
    )
    return Fetched(series, tuple(unparsed))


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


def poll_patchwork(
    store: Store,
    src: PatchworkSource,
    client: PatchworkClient,
    *,
    log_dir: Path | None = None,
    now: datetime | None = None,
) -> int:
    """Store every series completed since our cursor. A fetch failure stops this poll
    without moving the cursor past the series, so the next poll retries it; a series whose
    mail does not parse is stored as `malformed` and the poll goes on."""
    new = retry_listed(store, src.name, client, log_dir=log_dir, now=now)
    since = store.get_cursor(src.name)
    if since is None:
        # No event seen yet: a new source, or a project name that matches nothing.
        check_project(client)
    for ev in client.iter_series_completed(since, lookback=EVENT_LOOKBACK):
        if store.event_seen(src.name, ev.id):
            continue
        fetched = _fetch_or_retry(store, client, src.name, src.name, ev, now)
        if fetched is None:
            continue
        sid = _store_fetched(store, fetched, log_dir, (src.name, ev.id, ev.date))
        log.info("source %s: event %s stored series %s (%s)", src.name, ev.id, sid,
                 fetched.series.name)  # fmt: skip
        new += 1
    return new


def poll_created(
    store: Store,
    src: PatchworkSource,
    client: PatchworkClient,
    *,
    log_dir: Path | None = None,
    now: datetime | None = None,
) -> int:
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
        fetched = _fetch_or_retry(store, client, src.name, cursor_name, ev, now)
        if fetched is None:
            continue
        if fetched.series.complete:
            # its series-completed event will bring it; only move the cursor
            store.record_event(cursor_name, ev.id, ev.date, None)
            continue
        _store_fetched(store, fetched, log_dir, (cursor_name, ev.id, ev.date))
        n += 1
    return n


def _store_fetched(
    store: Store, fetched: Fetched, log_dir: Path | None, event: tuple[str, int, str] | None
) -> int:
    """Store a fetched series, with its *event* (cursor, id, date) in the same transaction
    when given; a series with a mail that does not parse is stored `malformed`."""
    if not fetched.unparsed:
        if event is None:
            return store.save_series(fetched.series)
        return store.save_series_with_event(fetched.series, *event)
    results = [_unparsed_result(fetched.series, u, log_dir) for u in fetched.unparsed]
    first = fetched.unparsed[0]
    where = "cover letter" if first.index is None else f"patch {first.index + 1}"
    reason = f"{where} (Patchwork {first.pw_id}): mail does not parse: {first.reason}"
    if len(fetched.unparsed) > 1:
        reason += f" (and {len(fetched.unparsed) - 1} more)"
    return store.save_malformed_series(fetched.series, reason, results, event)


def _unparsed_result(series: Series, u: Unparsed, log_dir: Path | None) -> CheckResult:
    mail = series.cover if u.index is None else series.patches[u.index]
    log_path = None
    if log_dir is not None and mail is not None:
        # The raw bytes, as served: for the author and for whoever fixes the parser.
        d = log_dir / "malformed" / f"{series.source}-{series.key}"
        try:
            d.mkdir(parents=True, exist_ok=True)
            path = d / f"{u.pw_id}.mbox"
            path.write_bytes(mail.raw)
            log_path = str(path)
        except OSError as e:
            log.error("series %s: cannot keep the unparsed mail %s: %s", series.key, u.pw_id, e)
    if u.ours:
        return CheckResult("mail", Outcome.ERROR,
                           f"infrastructure error (not the patch): mail parser failed: {u.reason}",
                           patch_index=u.index, log_path=log_path)  # fmt: skip
    return CheckResult("mail", Outcome.FAIL, f"the mail does not parse: {u.reason}",
                       patch_index=u.index, log_path=log_path)  # fmt: skip


def _fetch_or_retry(
    store: Store, client: PatchworkClient, source: str, cursor: str, ev: PwEvent,
    now: datetime | None,
) -> Fetched | None:  # fmt: skip
    """The event's series, or None when it answered 404: Patchwork has just listed it, so
    it is queued for GONE_ATTEMPTS retries over minutes (retry_listed) and the event is
    recorded, so one missing series cannot stop the source. Any other failure propagates
    and the cursor stays before the event."""
    if store.retry_queued(source, ev.series_id):  # its other event met the 404 first
        store.record_event(cursor, ev.id, ev.date, None)
        return None
    try:
        return fetch_pw_series(client, source, ev.series_id)
    except PatchworkNotFound as e:
        when = (now or datetime.now(UTC)) + timedelta(seconds=GONE_FIRST_WAIT)
        log.warning("source %s: event %s: series %s answered 404, will retry: %s",
                    source, ev.id, ev.series_id, e)  # fmt: skip
        store.add_retry(cursor, source, ev.id, ev.date, ev.series_id, str(e), when)
        return None


def retry_listed(
    store: Store, source: str, client: PatchworkClient, *, log_dir: Path | None = None,
    now: datetime | None = None,
) -> int:  # fmt: skip
    """Fetch again the series that answered 404 and are due; store those that are back,
    give up (status `gone`, recorded) after GONE_ATTEMPTS. Returns how many were stored.
    Their events were recorded when they were queued."""
    now = now or datetime.now(UTC)
    stored = 0
    for r in store.due_retries(source, now):
        try:
            fetched = fetch_pw_series(client, source, r.remote_id)
        except PatchworkNotFound as e:
            if r.attempts + 1 >= GONE_ATTEMPTS:
                age = (now - r.first_at).total_seconds() / 60
                why = f"{e} ({r.attempts + 1} fetches over {age:.0f} min)"
                log.warning("source %s: series %s is gone: %s", source, r.remote_id, why)
                store.update_retry(r.id, status="gone", error=why)
            else:
                wait = GONE_FIRST_WAIT * 2**r.attempts
                store.update_retry(r.id, status="retrying", error=str(e),
                                   next_at=now + timedelta(seconds=wait))  # fmt: skip
            continue
        sid = _store_fetched(store, fetched, log_dir, None)
        store.update_retry(r.id, status="done", error=f"stored as series {sid}")
        log.info("source %s: series %s is back after %d 404s: stored as series %s",
                 source, r.remote_id, r.attempts, sid)  # fmt: skip
        stored += 1
    return stored


def poll_mail(store: Store, src: MailSource) -> int:
    ingested = load_series(Path(src.path), source=src.name)
    for rej in ingested.rejected:
        log.warning("source %s: skipped %s: %s", src.name, rej.location, rej.reason)
    new = 0
    for series in ingested.series:
        existed = store.find_series(src.name, series.key)
        store.save_series(series)
        new += existed is None
    return new


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


# A claimed job's lease, renewed every LEASE / 3 s while it runs: a daemon killed with -9
# leaves jobs whose lease ends, and another (or the restarted one) takes them up again.
LEASE = 90.0


def worker_id(store: Store) -> str:
    """Who holds a lease: host, pid (what an operator greps for) and the store's instance
    tag (a daemon restarted in the same process, as tests do, is another worker)."""
    return f"{socket.gethostname()}:{os.getpid()}:{store.instance}"


def _worker_dead(me: str) -> Callable[[str], bool]:
    """Is the worker certainly gone? Only known for this host: an earlier instance in this
    pid, or a pid that no longer exists. Other hosts' workers are gone when their lease
    ends."""
    host, pid, _ = me.split(":", 2)

    def dead(worker: str) -> bool:
        parts = worker.split(":")
        if len(parts) != 3 or parts[0] != host or worker == me:
            return False
        if not parts[1].isdigit():
            return False
        if parts[1] == pid:
            return True
        try:
            os.kill(int(parts[1]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    return dead


@contextlib.contextmanager
def _holding(store: Store, job: int, owner: str) -> Iterator[threading.Event]:
    """Renew *job*'s lease in the background while the body runs; the event is set when
    the lease was lost (it expired and the work went to another worker)."""
    lost, done = threading.Event(), threading.Event()

    def beat() -> None:
        while not done.wait(LEASE / 3):
            try:
                if not store.renew_lease(job, owner, LEASE):
                    lost.set()
                    return
            except Exception:  # a database hiccup: try again at the next beat
                log.warning("job %s: lease renewal failed, will retry", job, exc_info=True)

    t = threading.Thread(target=beat, name=f"lease-{job}", daemon=True)
    t.start()
    try:
        yield lost
    finally:
        done.set()
        t.join(timeout=5)


def process_series(
    store: Store, settings: Settings, series_id: int, job: int | None = None,
    owner: str | None = None,
) -> list[CheckResult]:  # fmt: skip
    """Check a series whose job (claimed by claim_series) is *job*; without one, a job is
    made for it here (`patchci process` on one series, tests)."""
    owner = owner or worker_id(store)
    if job is None:
        job = store.create_job(series_id, "checks")
        store.start_job(job, worker=owner)
    series = store.load_series(series_id)
    log_dir = settings.data_path / "logs" / f"series-{series_id}" / f"job-{job}"
    try:
        with _holding(store, job, owner) as lost:
            verdict = check_series(series, settings.model_trees(), checks_for_tree(settings),
                                   log_dir, sandbox=settings.untrusted(),
                                   progress=_progress(settings, series_id))  # fmt: skip
        if lost.is_set():
            log.warning("series %s job %s: lease lost while checking; results dropped "
                        "(another worker took the series up)", series_id, job)  # fmt: skip
            return []
    except PatchError as e:  # the patch's fault: a result to report, not an error of ours
        log.warning("series %s job %s: the patch's fault: %s", series_id, job, e)
        store.add_results(job, series_id, [CheckResult("series", Outcome.FAIL, str(e))])
        store.finish_job(job, "done")
        store.set_series_state(series_id, CHECKED, f"the patch's fault: {e}")
        return []
    except (InfraError, OSError) as e:
        # Ours (a full disk, a tool gone, git failing): `pending` is posted and the series is
        # checked again later (retry_due), never left in `error` for good.
        why = _infra_reason(e)
        log.error("series %s job %s: infrastructure error: %s", series_id, job, why)
        store.finish_job(job, "error", why)
        # Named after the first stage, so the next attempt's `apply` replaces it on Patchwork.
        result = CheckResult("apply", Outcome.ERROR, f"{why}; will be checked again")
        try:
            store.add_results(job, series_id, [result])
        except Exception:  # the database itself may be what failed
            log.exception("series %s job %s: cannot store the error result", series_id, job)
        store.set_series_state(series_id, CHECKED, f"infrastructure error: {why}")
        return []
    except Exception as e:  # a bug must not leave the series "new" to crash every restart
        log.exception("series %s job %s: internal error", series_id, job)
        store.finish_job(job, "error", f"{type(e).__name__}: {e}")
        store.set_series_state(series_id, ERROR, f"internal error: {type(e).__name__}: {e}")
        return []
    finally:
        _remove_worktrees(log_dir)
    store.add_results(job, series_id, verdict.results)
    store.finish_job(job, "done")
    store.set_series_state(series_id, CHECKED, verdict.route.reason, tree=verdict.route.tree)
    log.info("series %s job %s: %s", series_id, job, verdict.outcome.value)
    if settings.progress:
        print(f"  series {series_id}: {verdict.outcome.value} ({series.name})", flush=True)
    return list(verdict.results)


def series_verdict(store: Store, series_id: int) -> str:
    """The worst outcome of a series' latest results, "-" before any."""
    results = store.latest_results(series_id)
    return worst((r.outcome for r in results), default=Outcome.PASS).value if results else "-"


def _progress(settings: Settings, series_id: int) -> Callable[[str], None] | None:
    """What `ingest` prints while a series is checked (a kernel series takes minutes)."""
    if not settings.progress:
        return None
    return lambda msg: print(f"  series {series_id}: {msg}", flush=True)


def process_pending(
    store: Store, settings: Settings, clients: dict[str, PatchworkClient] | None = None,
    *, limit: int = 1000,
) -> tuple[int, DeliveryStats]:  # fmt: skip
    """Check the new series one claim at a time; with *clients*, post each series'
    results as soon as they exist (the whole backlog was checked before anything was
    posted, so a kill lost every post of the cycle)."""
    owner = worker_id(store)
    n = 0
    posted = DeliveryStats()
    while n < limit:
        claimed = store.claim_series(NEW, CHECKING, "checks", owner, LEASE)
        if claimed is None:
            break
        sid, job = claimed
        process_series(store, settings, sid, job, owner)
        n += 1
        if clients is not None:
            posted += report_pending(store, settings, clients, only=sid)
    return n, posted


# Infrastructure errors are retried: the n-th retry waits RETRY_FIRST_WAIT * 2^n seconds
# (5 min, 10 min ... 10.7 h after 8), then the series keeps its last results, said so.
RETRY_FIRST_WAIT = 300.0
RETRY_ATTEMPTS = 8


def _infra_reason(e: BaseException) -> str:
    """One line: which path or tool, and what to do."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on {e.filename or 'a file system of the data directory'} (free space; the series is checked again)"
    if isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write {e.filename or 'a file'}: {e.strerror} (fix the permissions or mount)"
    return str(e) or type(e).__name__


def _after_errors(store: Store, series_id: int) -> str:
    """Where a reported series with an infrastructure error goes: RETRY, or REPORTED once
    it has been checked RETRY_ATTEMPTS times (the reason then says so)."""
    attempts = store.job_count(series_id, "checks")
    if attempts < RETRY_ATTEMPTS:
        return RETRY
    log.warning("series %s: infrastructure errors after %d attempts: giving up, results "
                "stay pending", series_id, attempts)  # fmt: skip
    return REPORTED


def retry_due(store: Store, now: datetime | None = None) -> int:
    """Series in RETRY whose wait is over (RETRY_FIRST_WAIT * 2^(attempts-1)) go back to
    NEW, to be checked again."""
    now = now or datetime.now(UTC)
    n = 0
    for row in store.list_series(state=RETRY, limit=10000):
        attempts = store.job_count(row.id, "checks")
        wait = RETRY_FIRST_WAIT * 2 ** max(attempts - 1, 0)
        updated = row.updated_at if row.updated_at.tzinfo else row.updated_at.replace(tzinfo=UTC)
        if (now - updated).total_seconds() < wait:
            continue
        store.set_series_state(row.id, NEW, f"checked again after an infrastructure error "
                               f"(attempt {attempts + 1} of {RETRY_ATTEMPTS})")  # fmt: skip
        n += 1
    return n


def reclaim(store: Store, settings: Settings) -> int:
    """Take up the work of dead workers (expired leases) and remove their worktrees."""
    dead = store.reclaim_expired({CHECKING: NEW, REPORTING: CHECKED},
                                 dead=_worker_dead(worker_id(store)))  # fmt: skip
    for job in dead:
        _remove_worktrees(settings.data_path / "logs" / f"series-{job.series_id}" / f"job-{job.id}")
    return len(dead)


def prune_worktrees(store: Store, settings: Settings) -> int:
    """At start-up: scratch worktrees of jobs that are not running (a kill -9 left them,
    ~1.5 GB each for a kernel tree), and the trees' stale worktree entries."""
    running = {j.id for j in store.jobs(status="running")}
    n = 0
    for work in (settings.data_path / "logs").glob("series-*/job-*/work"):
        job = work.parent.name.removeprefix("job-")
        if job.isdigit() and int(job) in running:
            continue
        n += _remove_worktrees(work.parent)
    for tree in settings.model_trees():
        if Path(tree.path, ".git").exists():
            proc.run(["git", "worktree", "prune"], cwd=tree.path, timeout=120)
    if n:
        log.info("removed %d stale scratch worktree(s)", n)
    return n


def _remove_worktrees(job_dir: Path) -> int:
    work = job_dir / "work"
    if not work.is_dir():
        return 0
    shutil.rmtree(work, ignore_errors=True)
    return 1


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
            log_url=_log_url(settings),
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
    stats = {"new": 0, "checked": 0, "posted": 0, "errors": 0, "post_failures": 0}
    for src in settings.sources:
        if only and src.name != only:
            continue
        try:
            if isinstance(src, PatchworkSource):
                logs = settings.data_path / "logs"
                client = clients[src.name]
                stats["new"] += poll_patchwork(store, src, client, log_dir=logs, now=now)
                poll_created(store, src, client, log_dir=logs, now=now)
                expire_incomplete(store, src.incomplete_after, source=src.name)
            else:
                stats["new"] += poll_mail(store, src)
        except (FetchError, OSError, PatchError) as e:
            log.error("source %s: poll failed, will retry: %s", src.name, _infra_reason(e))
            stats["errors"] += 1
        except SQLAlchemyError as e:
            log.error("source %s: %s", src.name, storage_reason(e, settings))
            stats["errors"] += 1
            stats["storage_errors"] = 1
        except Exception:  # a bug in one source must not stop the others
            log.exception("source %s: poll crashed, will retry", src.name)
            stats["errors"] += 1
    try:
        reclaim(store, settings)
        retry_due(store, now)
        # Leftovers of earlier cycles first, then each new series is posted once checked: a
        # POST is tried once per cycle (see report.deliver).
        leftovers = report_pending(store, settings, clients)
        stats["checked"], delivered = process_pending(store, settings, clients)
        stats["posted"] = (leftovers + delivered).posted
        stats["post_failures"] = (leftovers + delivered).failed
    except (SQLAlchemyError, OSError) as e:  # the database or the data directory failed
        log.error("%s", storage_reason(e, settings))
        stats["errors"] += 1
        stats["storage_errors"] = 1
        return stats
    if settings.streams:
        when = now or datetime.now(UTC)
        cuts = cut_due(store, ResultsStore(store.engine), settings, when, clients)
        stats["branches"] = sum(c.branch is not None for c in cuts)
        stats["branch_errors"] = sum(bool(c.errors) for c in cuts)
    return stats


def token_problems(settings: Settings) -> list[str]:
    """Patchwork sources whose token variable is unset: every check post would be refused
    (403), and nothing said so before."""
    return [
        f"sources.{s.name}: ${s.token_env} is not set: no check can be posted to {s.url} "
        "(export a maintainer's API token)"
        for s in settings.sources
        if isinstance(s, PatchworkSource) and settings.report.patchwork.enabled and not s.token()
    ]


def storage_reason(e: BaseException, settings: Settings) -> str:
    """One line for a database or disk error: what failed, where, what to do."""
    orig = getattr(e, "orig", None) or e
    text = str(orig).splitlines()[0] if str(orig) else type(orig).__name__
    where = settings.db_url.split("@")[-1] if "://" in settings.db_url else settings.db_url
    if isinstance(e, OSError):
        return f"storage error (ours), will retry: {_infra_reason(e)}"
    hint = "free space, check permissions, or that the server is up"
    if "readonly" in text or "read-only" in text:
        hint = "the database file or its directory is read-only: fix the permissions"
    elif "disk" in text and "full" in text:
        hint = "the disk is full: free space"
    return f"database error (ours), will retry: {text} ({where}; {hint})"


def run_ingest(settings: Settings, *, once: bool, source: str | None = None) -> int:
    from patchci.config import path_problems
    from patchci.sandbox import describe

    problems = path_problems(settings)
    if problems:  # checking against a missing tree would mark every series done, wrongly
        raise ConfigError("; ".join(problems))

    sandbox = settings.untrusted()
    (log.info if sandbox.isolated else log.warning)("%s", describe(sandbox))
    for line in token_problems(settings):
        print(f"patchci: warning: {line}", file=sys.stderr, flush=True)
    store = open_store(settings)
    clients = {s.name: make_client(s) for s in settings.sources if isinstance(s, PatchworkSource)}
    if source and source not in {s.name for s in settings.sources}:
        raise ConfigError(f"--source: no source named {source!r}")
    lock = _announce(store, settings)
    reclaim(store, settings)
    prune_worktrees(store, settings)
    stop = threading.Event()

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    if not once:
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    interval = min(
        (s.poll_interval for s in settings.sources if isinstance(s, PatchworkSource)), default=60.0
    )
    failures = 0
    try:
        while True:
            started = datetime.now(UTC)
            stats = run_cycle(store, settings, clients, source)
            print(_cycle_line(stats), flush=True)
            if once:
                _print_summary(store, started)
                failed = stats["errors"] or stats["post_failures"] or stats.get("branch_errors")
                return 2 if failed else 0
            # A database or disk fault: back off (up to 10 min) and keep going.
            failures = failures + 1 if stats.get("storage_errors") else 0
            wait = min(interval * 2**failures, max(interval, 600.0)) if failures else interval
            if stop.wait(wait):
                return 0
    finally:
        if lock is not None:
            lock.close()


def _announce(store: Store, settings: Settings) -> IO[str] | None:
    """Say so when another daemon works on this database (an operator mistake that
    happens): the two share the work through job leases, nothing is done twice. Returns
    the lock file, held for the process's life (None when it cannot be written)."""
    try:
        settings.data_path.mkdir(parents=True, exist_ok=True)
        fh = (settings.data_path / "ingest.lock").open("a+")
    except OSError as e:  # a read-only or full data directory: the cycle says what to do
        log.error("%s", storage_reason(e, settings))
        return None
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        fh.seek(0)
        fh.truncate()
        fh.write(f"{worker_id(store)}\n")
        fh.flush()
    except BlockingIOError:
        fh.seek(0)
        other = fh.read().strip() or "another process"
        msg = (
            f"another patchci daemon ({other}) is running on {settings.data_path}: "
            "both share the work through job leases, nothing is checked or posted twice"
        )
        print(f"patchci: warning: {msg}", file=sys.stderr, flush=True)
        log.warning("%s", msg)
    others = [w for w in store.live_workers() if w != worker_id(store)]
    if others:
        log.warning("workers %s hold leases on this database: work is shared with them",
                    ", ".join(others))  # fmt: skip
    return fh


def _print_summary(store: Store, since: datetime) -> None:
    """The series this run moved, with their state and verdict (`ingest --once` named
    none of them)."""
    rows = [r for r in store.list_series(limit=1000) if r.updated_at >= since]
    if not rows:
        return
    from rich.console import Console
    from rich.table import Table

    from patchci.report.console import plain

    t = Table(title="series this run")
    for col in ("id", "name", "state", "verdict"):
        t.add_column(col)
    for r in reversed(rows):
        t.add_row(*(plain(v) for v in (str(r.id), r.name, r.state, series_verdict(store, r.id))))
    Console().print(t)


def _cycle_line(stats: dict[str, int]) -> str:
    line = (
        f"ingest: {stats['new']} new series, {stats['checked']} checked, "
        f"{stats['posted']} checks posted, {stats['post_failures']} posts failed, "
        f"{stats['errors']} source errors"
    )
    if "branches" in stats:
        line += f", {stats['branches']} branches cut, {stats['branch_errors']} stream errors"
    return line


def run_process(settings: Settings) -> int:
    store = open_store(settings)
    clients = {s.name: make_client(s) for s in settings.sources if isinstance(s, PatchworkSource)}
    reclaim(store, settings)
    leftovers = report_pending(store, settings, clients)
    n, delivered = process_pending(store, settings, clients)
    posted = (leftovers + delivered).posted
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
        for col in ("id", "source", "name", "v", "tree", "state", "verdict", "reason"):
            t.add_column(col)
        for r in store.list_series(limit=200):
            cells = (str(r.id), r.source, r.name, str(r.version), r.tree or "-", r.state,
                     series_verdict(store, r.id), r.state_reason)  # fmt: skip
            t.add_row(*(plain(v) for v in cells))
        console.print(t)
        return 0
    series = store.load_series(series_id)
    results = store.latest_results(series_id)
    console.print(results_table(f"{series.name} (v{series.version})", results, len(series.patches)))
    return 0


def _sleep(seconds: float) -> None:
    time.sleep(seconds)
