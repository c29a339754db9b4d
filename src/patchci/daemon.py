"""The long-running service: poll sources → store → check → report → cut the test
branches that are due, and keep going.

Each stage works from the database, so a restart picks up where the last run stopped: a
series is stored with its event (cursor) in one transaction, checked once, and its results
reported through the idempotent delivery ledger.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from types import FrameType
from typing import IO

from sqlalchemy.exc import SQLAlchemyError

from patchci import proc
from patchci.config import GitSource, LoreSource, PatchworkSource, Settings
from patchci.db.results import ResultsStore
from patchci.db.store import Store
from patchci.errors import ConfigError, FetchError, PatchError
from patchci.pipeline import Workspace
from patchci.service.check import (
    _infra_reason,
    make_workspace,
    process_pending,
    prune_worktrees,
    reclaim,
    retry_due,
    series_verdict,
)
from patchci.service.contest import collect_jobs, cut_due, resume_runs, resume_searches
from patchci.service.ingest import (
    expire_incomplete,
    poll_created,
    poll_git,
    poll_lore,
    poll_mail,
    poll_patchwork,
)
from patchci.service.leases import worker_id
from patchci.service.mail import mail_pending
from patchci.service.publish import publish_feed
from patchci.service.remotes import import_remotes
from patchci.service.report import report_pending
from patchci.sources.patchwork import PatchworkClient

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
            elif isinstance(src, GitSource):
                stats["new"] += poll_git(store, settings, src)
            elif isinstance(src, LoreSource):
                stats["new"] += poll_lore(store, src, settings.pwbot_replies(src.name),
                                          settings.data_path / "b4")  # fmt: skip
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
        if settings.pwbot.enabled:
            from patchci.service.pwbot import pwbot_cycle

            bot = pwbot_cycle(store, settings, clients)
            stats["pwbot"], stats["pwbot_failures"] = bot.applied, bot.failed
        if settings.report.email.enabled:
            mailed = mail_pending(store, settings, now=now)
            stats["mailed"], stats["mail_failures"] = mailed.sent, mailed.failed
    except (SQLAlchemyError, OSError) as e:  # the database or the data directory failed
        log.error("%s", storage_reason(e, settings))
        stats["errors"] += 1
        stats["storage_errors"] = 1
        return stats
    if settings.streams and contest_inline:
        when = now or datetime.now(UTC)
        results = ResultsStore(store.engine)
        resume_runs(store, results, settings, clients)
        resume_searches(store, results, settings, clients)
        collect_jobs(store, results, settings, clients)
        import_remotes(settings, results)
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
            resume_searches(store, results, settings, clients)
            for branch in collect_jobs(store, results, settings, clients):
                print(f"contest: branch {branch}: every job has ended, reported", flush=True)
            for name, st in import_remotes(settings, results).items():
                if st.imported:
                    print(f"contest: remote {name}: {st.imported} runs imported", flush=True)
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
                failed = (
                    stats["errors"]
                    or stats["post_failures"]
                    or stats.get("branch_errors")
                    or stats.get("mail_failures")
                )
                return 2 if failed else 0
            # A database or disk fault: back off (up to 10 min) and keep going.
            failures = failures + 1 if stats.get("storage_errors") else 0
            wait = min(interval * 2**failures, max(interval, 600.0)) if failures else interval
            if stop.wait(wait):
                return 0
    finally:
        if lock is not None:
            lock.close()
        if contest is not None:
            stop.set()
            contest.join(timeout=2)  # an idle contest thread ends at once
            if contest.is_alive():
                _exit_during_run()


def _exit_during_run() -> None:
    """Stopping (SIGTERM) while the contest thread runs a branch: its tests are killed and
    the process ends now, before a killed test can be stored as a result; the run keeps
    its lease and is run again at the next start (resume_runs)."""
    n = proc.kill_all()
    log.warning("stopped during a branch run: %d running command(s) killed; the run is run "
                "again at the next start", n)  # fmt: skip
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(0)


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
    if "mailed" in stats:
        line += f", {stats['mailed']} report mails sent, {stats['mail_failures']} failed"
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


def requeue(settings: Settings, series_ids: Sequence[int]) -> int:
    """`patchci requeue ID...`: check stored series again (NIPA's local socket does the
    same), e.g. after fixing a tree or a check. One a worker holds right now, or that
    cannot be checked (malformed, incomplete), is left as it is and said why: exit 2."""
    from patchci.model import CHECKING, INCOMPLETE, MALFORMED, NEW, REPORTING

    store = open_store(settings)
    code = 0
    for sid in series_ids:
        row = store.series_row(sid)  # NotFound: "series N is not in the database", exit 2
        why = {
            CHECKING: "a worker is checking it now",
            REPORTING: "a worker is posting its results now",
            MALFORMED: f"its mail does not parse ({row.state_reason}): nothing to check",
            INCOMPLETE: f"it is incomplete ({row.state_reason}): it is checked once complete",
        }.get(row.state)
        if why is not None:
            print(f"series {sid}: not requeued: {why}", file=sys.stderr)
            code = 2
            continue
        store.set_series_state(sid, NEW, f"requeued by hand (was {row.state})")
        print(f"series {sid}: requeued (was {row.state}); the next `patchci ingest` or "
              "`patchci process` checks it again and posts what changed")  # fmt: skip
    store.close()
    return code


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
