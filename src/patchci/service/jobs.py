"""A branch's executors sent to worker hosts through the broker (`[broker]`), and the
daemon's side of keeping them going: a message the broker did not take is sent again, a
job whose worker went silent is handed to another (db/jobs.py decides how often).

One job per (branch, executor), on the executor's queue (its capability). Each job has
its run row from the start, "running", so the UI shows it and the branch is not reported
until every job has ended.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from patchci.brancher import Manifest
from patchci.config import Settings, StreamSettings
from patchci.db.jobs import JobStore
from patchci.executor.job import RUNNING, JobSpec
from patchci.service.runs import stream_executor_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Queued:
    """A branch cut and its jobs sent (or waiting to be, when the broker was down)."""

    manifest: Manifest
    branch_id: int
    jobs: tuple[str, ...]
    unsent: int


@cache
def _app(url: str, visibility_timeout: float) -> Any:
    from patchci.worker.celeryapp import make_celery

    return make_celery(url, visibility_timeout)


def broker_app(settings: Settings) -> Any:
    assert settings.broker is not None
    url = settings.broker.broker_url()
    if url is None:
        from patchci.errors import ConfigError

        raise ConfigError(f"[broker]: no URL (set broker.url or {settings.broker.url_env})")
    return _app(url, settings.visibility_timeout)


def send(settings: Settings, jobs: JobStore, spec: JobSpec) -> bool:
    """Publish *spec*; False (logged, sent again next cycle) when the broker refused."""
    from patchci.worker.celeryapp import send_job

    try:
        send_job(broker_app(settings), spec.to_dict(), queue=spec.queue, job_id=spec.job_id,
                 deadline=spec.deadline)  # fmt: skip
    except Exception as e:  # kombu's OperationalError, a socket error: the broker is down
        log.error("job %s (%s): the broker did not take it: %s; sent again next cycle",
                  spec.job_id, spec.branch, e)  # fmt: skip
        return False
    jobs.sent(spec.job_id)
    return True


def fetch_url(settings: Settings, tree: str) -> str:
    """Where workers fetch the branches of *tree* from: `[feed] git_url`, else its path
    (a host that shares the filesystem)."""
    return settings.feed.git_url or str(settings.tree_path(settings.tree(tree)))


def enqueue_branch(
    settings: Settings, ss: StreamSettings, jobs: JobStore, manifest: Manifest, branch_id: int
) -> Queued:
    ids, unsent = [], 0
    url = fetch_url(settings, ss.tree)
    for ex in stream_executor_settings(settings, ss):
        rid = jobs.start_run(branch_id, ex.name, datetime.now(UTC))
        spec = JobSpec(
            job_id=uuid.uuid4().hex, run_id=rid, tree=ss.tree, branch=manifest.name,
            head=manifest.head, base=manifest.base, fetch_url=url, queue=ex.job_queue,
            deadline=ex.deadline, executor=ex.model_dump(mode="json"),
            durations=[[g, n, s] for (g, n), s in sorted(jobs.durations(ex.name).items())],
        )  # fmt: skip
        jobs.add_job(spec)
        ids.append(spec.job_id)
        if not send(settings, jobs, spec):
            unsent += 1
        log.info("branch %s: job %s (%s) queued on %s", manifest.name, spec.job_id, ex.name,
                 spec.queue)  # fmt: skip
    return Queued(manifest, branch_id, tuple(ids), unsent)


def keep_going(settings: Settings, jobs: JobStore) -> int:
    """Send what the broker did not take, hand on jobs whose worker is silent; how many."""
    assert settings.broker is not None
    n = 0
    for job_id in jobs.unsent():
        n += send(settings, jobs, jobs.spec(job_id))
    b = settings.broker
    for j in jobs.lost(b.heartbeat_timeout, b.requeue_after or settings.visibility_timeout):
        if j.state == RUNNING:
            log.warning("job %s (%s on %s): worker %s silent for over %g s: handing it to "
                        "another worker", j.id, j.executor, j.branch, j.worker,
                        b.heartbeat_timeout)  # fmt: skip
        else:
            log.warning("job %s (%s on %s): no worker started it: sending it again",
                        j.id, j.executor, j.branch)  # fmt: skip
        jobs.requeued(j.id)
        n += send(settings, jobs, jobs.spec(j.id))
    return n
