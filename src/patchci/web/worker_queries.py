"""Worker hosts on the status page and /metrics (with a `[broker]`): the workers seen by
their heartbeats, how many jobs wait on each queue, the jobs running with their expected
end (start + deadline), and the jobs run again after a lost worker.

The queue depth is the broker's own count where it is Redis (LLEN of the queue's lists,
one short call); without an answer it is the server's count of jobs no worker started.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine

from patchci.config import Settings
from patchci.db.jobs import JobRow, JobStore
from patchci.executor.job import QUEUED, RUNNING

log = logging.getLogger(__name__)

JOB_LIMIT = 200
# kombu's Redis transport keeps priorities 3, 6, 9 in lists beside the queue's own
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


@dataclass(frozen=True)
class WorkerView:
    name: str
    host: str
    queues: tuple[str, ...]
    last_seen: datetime
    age_s: float
    alive: bool  # heard from within the broker's heartbeat_timeout
    job_id: str | None


@dataclass(frozen=True)
class QueueView:
    name: str
    waiting: int  # on the broker, or the server's count when the broker did not say
    queued_here: int  # jobs the server has queued there and no worker started
    from_broker: bool


@dataclass(frozen=True)
class WorkerStatus:
    workers: list[WorkerView]
    queues: list[QueueView]
    running: list[JobRow]
    rerun_jobs: int  # jobs started more than once (a worker was lost)
    requeues: int  # messages sent again by the server
    by_state: dict[str, int]


def broker_depths(url: str | None, queues: list[str]) -> dict[str, int] | None:
    """LLEN of each queue on a Redis broker; None for another broker or no answer."""
    if not url or not url.startswith(("redis://", "rediss://", "unix://")) or not queues:
        return None
    import redis

    try:
        client: Any = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            return {q: sum(int(client.llen(q + s)) for s in PRIORITY_SUFFIXES) for q in queues}
        finally:
            client.close()
    except (redis.RedisError, OSError) as e:
        log.warning("status: the broker did not say its queue lengths: %s", e)
        return None


def worker_status(engine: Engine, settings: Settings, now: datetime) -> WorkerStatus | None:
    if settings.broker is None:
        return None
    store = JobStore(engine)
    jobs = store.jobs(limit=10_000)
    timeout = settings.broker.heartbeat_timeout
    workers = []
    for w in store.workers():
        age = max(0.0, (now - w.last_seen).total_seconds())
        workers.append(WorkerView(w.name, w.host, w.queues, w.last_seen, age, age <= timeout,
                                  w.job_id))  # fmt: skip
    queued = Counter(j.queue for j in jobs if j.state == QUEUED)
    names = sorted({*queued, *(e.job_queue for e in settings.executors),
                    *(q for w in workers for q in w.queues)})  # fmt: skip
    depths = broker_depths(settings.broker.broker_url(), names)
    queues = [QueueView(q, depths[q] if depths else queued[q], queued[q], depths is not None)
              for q in names]  # fmt: skip
    running = [j for j in jobs if j.state == RUNNING][:JOB_LIMIT]
    return WorkerStatus(
        workers, queues, running, sum(1 for j in jobs if j.reruns), sum(j.requeues for j in jobs),
        dict(Counter(j.state for j in jobs)),
    )  # fmt: skip
