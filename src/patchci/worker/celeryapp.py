"""The Celery application both sides use: the daemon sends jobs, `patchci worker` runs them.

The settings are the ones jobs of hours need. A job is acknowledged only when it has
ended (`task_acks_late`), and a worker process that dies (kill -9, OOM, a lost host)
hands it back (`task_reject_on_worker_lost`); a worker takes one job at a time
(prefetch 1) so a second waits on the queue for a free host, not behind a long job; and
Redis's visibility timeout exceeds the longest deadline, or Redis would give a running
job to a second worker. No result backend: results go to the server's HTTP API.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from patchci.executor.job import TASK_NAME


def make_celery(broker_url: str, visibility_timeout: float) -> Any:
    """A Celery app on *broker_url* (redis://, rediss://, amqp://); nothing connects yet."""
    app = Celery("patchci", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        broker_transport_options={"visibility_timeout": visibility_timeout},
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a broker restart is waited out, not fatal
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_enable_remote_control=False,  # no pidbox queues: nothing to steer remotely
        task_default_queue="local",
        broker_heartbeat=0,
    )
    return app


def send_job(app: Any, payload: dict[str, Any], *, queue: str, job_id: str,
             deadline: float) -> None:  # fmt: skip
    """Publish a job; a broker that refuses for 30 s raises (kombu.exceptions.OperationalError).

    The time limits back up the executor's own deadline: soft first (the task can still
    report), then the pool process is killed (handed back; a second loss is an error)."""
    app.send_task(
        TASK_NAME, args=[payload], queue=queue, task_id=job_id,
        soft_time_limit=deadline + 300, time_limit=deadline + 600,
        retry=True, retry_policy={"max_retries": 5, "interval_start": 1, "interval_step": 2,
                                  "interval_max": 10},
    )  # fmt: skip
