"""The job API of worker hosts (`patchci worker`), mounted only with a `[broker]`.

The one writing part of the web app, on its own engine: a worker starts a job, beats,
uploads its logs (streamed, size-limited, under the run's log directory) and posts the
result in NIPA's executor JSON, stored once per job id. Every call carries the worker's
token (`Authorization: Bearer`, one per `[[broker.workers]]` entry); a wrong one is 401,
another worker's job 403/409.
"""

from __future__ import annotations

import hmac
import logging
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from patchci.config import Settings
from patchci.db.jobs import JobStore
from patchci.db.store import NotFound
from patchci.executor.base import RUN_RUNNING, RunResult, namify
from patchci.executor.job import RUNNING
from patchci.executor.nipa_json import run_from_nipa
from patchci.web.security import UnsafePath, check_relative

log = logging.getLogger(__name__)

router = APIRouter(tags=["workers"])

JobId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]
WorkerName = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")]


class StartBody(BaseModel):
    worker: str = Field(max_length=64)
    host: str = Field(default="", max_length=255)


class WorkerBeat(BaseModel):
    host: str = Field(default="", max_length=255)
    queues: list[str] = Field(default_factory=list, max_length=64)
    job_id: str | None = Field(default=None, max_length=64)


class FailBody(BaseModel):
    reason: str = Field(max_length=4000)


def worker_tokens(settings: Settings) -> dict[str, str]:
    """Worker name -> its token, from the server's environment (an unset one: refused)."""
    out = {}
    for w in settings.broker.workers if settings.broker else ():
        tok = w.token()
        if tok is None:
            log.warning("worker %s: %s is not set, its uploads are refused", w.name, w.token_env)
        else:
            out[w.name] = tok
    return out


def authed_worker(request: Request) -> str:
    """The worker whose token the request carries; 401 without a valid one."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "a worker token is required (Authorization: Bearer ...)",
                            headers={"www-authenticate": "Bearer"})  # fmt: skip
    tokens: dict[str, str] = request.app.state.worker_tokens
    for name, good in tokens.items():
        if hmac.compare_digest(token.encode(), good.encode()):
            return name
    log.warning(
        "job API: a wrong worker token from %s", request.client.host if request.client else "?"
    )
    raise HTTPException(401, "unknown worker token", headers={"www-authenticate": "Bearer"})


Worker = Annotated[str, Depends(authed_worker)]


def _jobs(request: Request) -> JobStore:
    store: JobStore = request.app.state.jobs
    return store


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _own_running(store: JobStore, job_id: str, worker: str) -> Any:
    try:
        job = store.job(job_id)
    except NotFound:
        raise HTTPException(404, f"no job {job_id}") from None
    if job.state != RUNNING or job.worker != worker:
        raise HTTPException(409, f"job {job_id} is {job.state}"
                                 + (f" on {job.worker}" if job.worker else "") + ", not yours")  # fmt: skip
    return job


def run_dir(settings: Settings, branch: str, executor: str) -> Path:
    """Where a run's logs live on the server (as an in-process run's would)."""
    return settings.data_path / "contest" / "runs" / branch / namify(executor)


@router.post("/jobs/{job_id}/start")
def start(job_id: JobId, body: StartBody, worker: Worker, request: Request) -> dict[str, Any]:
    if body.worker != worker:
        raise HTTPException(403, f"this token is worker {worker}'s, not {body.worker}'s")
    store, settings = _jobs(request), _settings(request)
    assert settings.broker is not None
    try:
        ans = store.start(job_id, worker, settings.broker.heartbeat_timeout)
    except NotFound:
        raise HTTPException(404, f"no job {job_id}") from None
    store.seen(worker, body.host, (), job_id if ans.decision == "run" else None)
    return {"decision": ans.decision, "attempt": ans.attempt, "reason": ans.reason}


@router.post("/jobs/{job_id}/heartbeat")
def heartbeat(job_id: JobId, worker: Worker, request: Request) -> dict[str, bool]:
    store = _jobs(request)
    if not store.heartbeat(job_id, worker):
        _own_running(store, job_id, worker)  # says why: 404 or 409
    return {"ok": True}


@router.post("/workers/{name}/heartbeat")
def worker_heartbeat(name: WorkerName, body: WorkerBeat, worker: Worker,
                     request: Request) -> dict[str, bool]:  # fmt: skip
    if name != worker:
        raise HTTPException(403, f"this token is worker {worker}'s, not {name}'s")
    _jobs(request).seen(worker, body.host, body.queues, body.job_id)
    return {"ok": True}


@router.put("/jobs/{job_id}/files/{path:path}", status_code=201)
async def put_file(job_id: JobId, path: str, worker: Worker, request: Request) -> dict[str, Any]:
    store, settings = _jobs(request), _settings(request)
    assert settings.broker is not None
    limit = settings.broker.max_file_bytes
    try:
        rel = check_relative(path)
    except UnsafePath as e:
        raise HTTPException(400, f"bad file path: {e}") from None
    job = await run_in_threadpool(_own_running, store, job_id, worker)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"{path}: {declared} bytes, over the {limit}-byte limit")
    root = run_dir(settings, job.branch, job.executor)
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
    size = 0
    try:
        with os.fdopen(fd, "wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, f"{path}: over the {limit}-byte limit")
                f.write(chunk)
        total = settings.broker.max_job_bytes
        if not await run_in_threadpool(store.take_bytes, job_id, size, total):
            raise HTTPException(413, f"job {job_id}: its uploads passed {total} bytes")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return {"path": rel.as_posix(), "bytes": size}


def _rehome(run: RunResult, worker_dir: str | None, server_dir: Path) -> RunResult:
    """The worker's log paths as the server's (a path outside its run directory: none)."""
    prefix = (worker_dir or "").rstrip("/") + "/"

    def m(p: str | None) -> str | None:
        if p is None or not worker_dir or not p.startswith(prefix):
            return None
        try:
            return str(server_dir / check_relative(p[len(prefix) :]))
        except UnsafePath:
            return None

    tests = tuple(replace(t, log_path=m(t.log_path), retry_log_path=m(t.retry_log_path))
                  for t in run.tests)  # fmt: skip
    return replace(run, tests=tests, log_dir=str(server_dir))


@router.post("/jobs/{job_id}/result")
def result(job_id: JobId, worker: Worker, request: Request,
           body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:  # fmt: skip
    """The run in NIPA's executor JSON (`executor`, `branch`, `start`, `end`, `results`);
    stored once: a second result for the job answers `stored: false`."""
    store, settings = _jobs(request), _settings(request)
    try:
        job = store.job(job_id)
    except NotFound:
        raise HTTPException(404, f"no job {job_id}") from None
    imp = run_from_nipa(body)
    if imp.run is None:
        raise HTTPException(400, f"not a run: {'; '.join(imp.problems)}")
    run = imp.run
    if (run.executor, run.branch) != (job.executor, job.branch):
        raise HTTPException(409, f"job {job_id} is {job.executor} on {job.branch}, not "
                                 f"{run.executor} on {run.branch}")  # fmt: skip
    if run.status == RUN_RUNNING:
        raise HTTPException(400, "a result must be a finished run (results is null)")
    worker_dir = body.get("log-dir") if isinstance(body.get("log-dir"), str) else None
    run = _rehome(run, worker_dir, run_dir(settings, job.branch, job.executor))
    stored = store.finish(job_id, worker, run)
    return {"stored": stored, "problems": list(imp.problems)}


@router.post("/jobs/{job_id}/fail")
def fail(job_id: JobId, body: FailBody, worker: Worker, request: Request) -> dict[str, bool]:
    """The worker could not run the job (ours): an error run with its reason."""
    store = _jobs(request)
    try:
        store.job(job_id)
    except NotFound:
        raise HTTPException(404, f"no job {job_id}") from None
    return {"recorded": store.fail_job(job_id, f"worker {worker}: {body.reason}")}
