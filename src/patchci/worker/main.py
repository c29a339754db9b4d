"""`patchci worker`: a Celery worker (prefork pool) on an executor host.

It needs its `[worker]` file, a broker URL and an upload token, and nothing of the
server's: no database URL, no Patchwork token. It says it is alive to the server every
`heartbeat` seconds (the status page's "workers seen"), job or not.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from patchci.config import WorkerSettings
from patchci.errors import ConfigError, InfraError
from patchci.executor.job import TASK_NAME
from patchci.worker.celeryapp import make_celery
from patchci.worker.client import JobClient, Refused
from patchci.worker.run import host_name, run_job

log = logging.getLogger(__name__)


def _client(ws: WorkerSettings, token: str) -> JobClient:
    return JobClient(ws.server_url, token, ws.name, timeout=ws.http_timeout,
                     patience=ws.upload_patience)  # fmt: skip


def make_worker_app(ws: WorkerSettings, broker: str, token: str,
                    config_path: Path | None) -> Any:  # fmt: skip
    app = make_celery(broker, ws.visibility_timeout)

    @app.task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
    def run(payload: Any) -> str:
        client = _client(ws, token)
        try:
            return run_job(payload, ws, client, config_path=config_path)
        except SoftTimeLimitExceeded:
            job = payload.get("job_id", "?") if isinstance(payload, dict) else "?"
            why = f"worker {ws.name}: the job's time limit passed (executor deadline + 300 s)"
            log.error("job %s: %s", job, why)
            client.fail(str(job), why)
            return why
        finally:
            client.close()

    return app


def _beat_forever(ws: WorkerSettings, token: str, stop: threading.Event) -> None:
    client = _client(ws, token)
    client.patience = ws.heartbeat  # one try per beat: the next beat is the retry
    while True:
        try:
            client.worker_heartbeat(host_name(), list(ws.queues), None)
        except Refused as e:
            log.error("the server refuses this worker: %s (check %s and [[broker.workers]])",
                      e, ws.token_env)  # fmt: skip
        except InfraError as e:
            log.warning("worker heartbeat: %s", e)
        if stop.wait(ws.heartbeat):
            return


def cmd_worker(ws: WorkerSettings, config_path: Path | None, *, loglevel: str = "INFO") -> int:
    token = ws.token()
    if token is None:
        raise ConfigError(f"worker {ws.name}: no upload token: set {ws.token_env} (the "
                          "server's [[broker.workers]] entry names the same variable)")  # fmt: skip
    broker = ws.broker()
    if broker is None:
        raise ConfigError(f"worker {ws.name}: no broker: set worker.broker_url or "
                          f"{ws.broker_url_env} (e.g. redis://host:6379/0)")  # fmt: skip
    ws.work_path.mkdir(parents=True, exist_ok=True)
    app = make_worker_app(ws, broker, token, config_path)
    stop = threading.Event()
    beat = threading.Thread(target=_beat_forever, args=(ws, token, stop), daemon=True,
                            name="worker-heartbeat")  # fmt: skip
    beat.start()
    print(f"patchci worker {ws.name}: queues {', '.join(ws.queues)}, concurrency "
          f"{ws.concurrency}, work dir {ws.work_path}, server {ws.server_url}", flush=True)  # fmt: skip
    try:
        app.worker_main([
            "worker", f"--loglevel={loglevel}", f"--queues={','.join(ws.queues)}",
            f"--concurrency={ws.concurrency}", f"--hostname={ws.name}@%h", "--pool=prefork",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ])  # fmt: skip
    finally:
        stop.set()
    return 0
