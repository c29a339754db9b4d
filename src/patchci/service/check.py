"""The check job: claim a new series, route, apply and check it in a kept worktree, store
the results; infrastructure errors are retried with back-off, dead workers' jobs reclaimed.
"""

from __future__ import annotations

import errno
import logging
import shutil
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from patchci import proc
from patchci.checks.base import Check
from patchci.config import Settings
from patchci.db.store import Store
from patchci.errors import InfraError, PatchError
from patchci.model import (
    CHECKED,
    CHECKING,
    ERROR,
    NEW,
    REPORTING,
    RETRY,
    CheckResult,
    Outcome,
    worst,
)
from patchci.pipeline import Workspace, check_series
from patchci.report.deliver import DeliveryStats
from patchci.service.leases import LEASE, holding, worker_dead, worker_id
from patchci.service.report import RETRY_ATTEMPTS, RETRY_FIRST_WAIT, report_pending
from patchci.sources.patchwork import PatchworkClient
from patchci.trees import TreeSync

log = logging.getLogger(__name__)


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


def _infra_reason(e: BaseException) -> str:
    """One line: which path or tool, and what to do."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on {e.filename or 'a file system of the data directory'} (free space; the series is checked again)"
    if isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write {e.filename or 'a file'}: {e.strerror} (fix the permissions or mount)"
    return str(e) or type(e).__name__


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
