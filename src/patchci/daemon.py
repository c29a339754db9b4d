"""The long-running service: poll sources → store → check → report → cut the test
branches that are due, and keep going.

Each stage works from the database, so a restart picks up where the last run stopped: a
series is stored with its event (cursor) in one transaction, checked once, and its results
reported through the idempotent delivery ledger.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO

from sqlalchemy.exc import SQLAlchemyError

from patchci import proc
from patchci.checks.base import Check
from patchci.config import PatchworkSource, Settings
from patchci.contest import cut_due, resume_runs
from patchci.db.results import ResultsStore
from patchci.db.store import SeriesRow, Store
from patchci.errors import ConfigError, FetchError, InfraError, PatchError
from patchci.model import (
    CHECKED,
    CHECKING,
    DONE,
    ERROR,
    MALFORMED,
    NEW,
    REPORTED,
    REPORTING,
    RETRY,
    CheckResult,
    Outcome,
    worst,
)
from patchci.pipeline import Workspace, check_series
from patchci.report.deliver import DeliveryStats, deliver_checks
from patchci.service.ingest import expire_incomplete, poll_created, poll_mail, poll_patchwork
from patchci.service.leases import LEASE, holding, worker_dead, worker_id
from patchci.service.publish import publish_feed
from patchci.sources.patchwork import PatchworkClient
from patchci.trees import TreeSync

log = logging.getLogger(__name__)


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


# ---------------------------------------------------------------- check


def checks_for_tree(settings: Settings) -> Callable[..., list[Check]]:
    from patchci.localcheck import build_checks

    def checks_for(tree: object) -> list[Check]:
        name = getattr(tree, "name", "")
        return build_checks(settings.tree(name).checks, settings)

    return checks_for


def make_workspace(settings: Settings) -> Workspace:
    """Trees fetched when due (one TreeSync per process: it remembers the last fetches) and
    a persistent worktree per check worker under data_dir/worktrees/<tree>."""
    return Workspace(base=TreeSync().base, worktrees=settings.data_path / "worktrees")


def process_series(
    store: Store, settings: Settings, series_id: int, job: int | None = None,
    owner: str | None = None, workspace: Workspace | None = None,
) -> list[CheckResult]:  # fmt: skip
    """Check a series whose job (claimed by claim_series) is *job*; without one, a job is
    made for it here (`patchci process` on one series, tests)."""
    owner = owner or worker_id(store)
    ws = workspace or make_workspace(settings)
    if job is None:
        job = store.create_job(series_id, "checks")
        store.start_job(job, worker=owner)
    series = store.load_series(series_id)
    log_dir = settings.data_path / "logs" / f"series-{series_id}" / f"job-{job}"
    try:
        with holding(lambda: store.renew_lease(job, owner, LEASE), f"job {job}") as lost:
            verdict = check_series(series, settings.model_trees(), checks_for_tree(settings),
                                   log_dir, sandbox=settings.untrusted(), workspace=ws,
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
    *, limit: int = 1000, workspace: Workspace | None = None,
) -> tuple[int, DeliveryStats]:  # fmt: skip
    """Check the new series one claim at a time; with *clients*, post each series'
    results as soon as they exist (the whole backlog was checked before anything was
    posted, so a kill lost every post of the cycle)."""
    owner = worker_id(store)
    ws = workspace or make_workspace(settings)
    lock = threading.Lock()
    count = [0]
    posted = [DeliveryStats()]

    def work() -> None:
        while True:
            with lock:
                if count[0] >= limit:
                    return
                count[0] += 1
            claimed = store.claim_series(NEW, CHECKING, "checks", owner, LEASE)
            if claimed is None:
                with lock:
                    count[0] -= 1
                return
            sid, job = claimed
            process_series(store, settings, sid, job, owner, ws)
            if clients is not None:
                stats = report_pending(store, settings, clients, only=sid)
                with lock:
                    posted[0] += stats

    if settings.workers <= 1:
        work()
    else:  # `workers` series at once, each in its own worktree (flock'd slots)
        threads = [
            threading.Thread(target=work, name=f"check-{i}") for i in range(settings.workers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return count[0], posted[0]


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
                                 dead=worker_dead(worker_id(store)))  # fmt: skip
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
        git_dir = Path(tree.path)
        if (git_dir / ".git").exists() or (git_dir / "HEAD").is_file():
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
    workspace: Workspace | None = None,
    contest_inline: bool = True,
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
        stats["checked"], delivered = process_pending(store, settings, clients,
                                                      workspace=workspace)  # fmt: skip
        stats["posted"] = (leftovers + delivered).posted
        stats["post_failures"] = (leftovers + delivered).failed
    except (SQLAlchemyError, OSError) as e:  # the database or the data directory failed
        log.error("%s", storage_reason(e, settings))
        stats["errors"] += 1
        stats["storage_errors"] = 1
        return stats
    if settings.streams and contest_inline:
        when = now or datetime.now(UTC)
        results = ResultsStore(store.engine)
        resume_runs(store, results, settings, clients)
        cuts = cut_due(store, results, settings, when, clients)
        stats["branches"] = sum(c.branch is not None for c in cuts)
        stats["branch_errors"] = sum(bool(c.errors) for c in cuts)
    if settings.streams:
        _publish(store, settings)
    return stats


def _publish(store: Store, settings: Settings) -> None:
    try:
        publish_feed(settings, ResultsStore(store.engine))
    except (SQLAlchemyError, OSError) as e:  # ours; the next cycle writes it again
        log.error("feed: not written: %s", _infra_reason(e))


# The contest thread looks for due branches and interrupted runs this often.
CONTEST_TICK = 30.0


def contest_loop(
    store: Store, settings: Settings, clients: dict[str, PatchworkClient], stop: threading.Event
) -> None:
    """The daemon's contest job, in its own thread: branch runs take hours, and polling and
    per-patch checks go on meanwhile (they stopped for as long as a branch took)."""
    results = ResultsStore(store.engine)
    while True:
        try:
            resume_runs(store, results, settings, clients)
            for cut in cut_due(store, results, settings, datetime.now(UTC), clients):
                if cut.branch or cut.errors:
                    print(f"contest: stream {cut.stream}: branch {cut.branch or '-'}, run "
                          f"{cut.run_status or '-'}, {cut.posted} checks posted"
                          + (f", errors: {'; '.join(cut.errors)}" if cut.errors else ""),
                          flush=True)  # fmt: skip
        except (SQLAlchemyError, OSError) as e:
            log.error("contest: %s", storage_reason(e, settings))
        except Exception:  # a bug must not stop the thread: the next tick tries again
            log.exception("contest: crashed, will retry")
        if stop.wait(CONTEST_TICK):
            return


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
    workspace = make_workspace(settings)
    stop = threading.Event()
    contest: threading.Thread | None = None
    if not once and settings.streams:
        contest = threading.Thread(target=contest_loop, args=(store, settings, clients, stop),
                                   name="contest", daemon=True)  # fmt: skip
        contest.start()

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
            stats = run_cycle(store, settings, clients, source, workspace=workspace,
                              contest_inline=contest is None)  # fmt: skip
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
