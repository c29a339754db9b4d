"""One job on a worker host: fetch the branch, run its executor, upload logs and result.

The server decides whether this start may run (`start`: not when a result is stored, nor
while another worker runs it, nor after a second lost worker). Patch code builds and runs
in the sandbox of `[worker.sandbox]`: a minimal environment without the upload token,
the worker's configuration hidden. What fails on our side (the fetch, the executor) is
posted as an error run, the infrastructure's; only a missing server leaves the job to be
handed to another worker.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from patchci.config import WorkerSettings
from patchci.errors import ConfigError, InfraError
from patchci.executor.base import RUN_ERROR, RunResult, namify
from patchci.executor.job import BadJob, JobSpec
from patchci.executor.nipa_json import run_to_nipa
from patchci.git import Git
from patchci.sandbox import Sandbox, find_bwrap
from patchci.service.leases import holding
from patchci.service.runs import executor_tests, make_executor, run_tests
from patchci.worker.client import JobClient

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 1800.0
RUN = "run"


def host_name() -> str:
    return socket.gethostname()


def worker_sandbox(ws: WorkerSettings, config_path: Path | None) -> Sandbox:
    cfg = ws.sandbox
    bwrap = None if cfg.isolate == "env" else find_bwrap()
    if bwrap is None and cfg.isolate == "bwrap":
        raise ConfigError("worker.sandbox.isolate: 'bwrap' but bubblewrap is not installed")
    if ws.token_env in cfg.pass_env:
        raise ConfigError(f"worker.sandbox.pass_env: {ws.token_env} is the upload token; "
                          "patch code must not see it")  # fmt: skip
    hide = [Path(os.path.expanduser(h)).resolve() for h in cfg.hide]
    if config_path is not None:
        hide.append(config_path.resolve())
    return Sandbox(hide=tuple(hide), pass_env=cfg.pass_env, bwrap=bwrap, network=cfg.network)


def fetch_branch(cache: Path, spec: JobSpec) -> Git:
    """The job's branch in this host's cache repository (one per tree, kept between jobs
    so a fetch brings only what is new)."""
    if not (cache / "HEAD").exists():
        cache.mkdir(parents=True, exist_ok=True)
        Git(cache).run("init", "-q", "--bare")
    git = Git(cache, timeout=FETCH_TIMEOUT)
    ref = f"refs/patchci/{spec.branch}"
    git.run("fetch", "--quiet", "--no-tags", "--", spec.fetch_url,
            f"+refs/heads/{spec.branch}:{ref}")  # fmt: skip
    for what, sha in (("head", spec.head), ("base", spec.base)):
        if not git.commit_exists(sha):
            raise InfraError(f"{spec.fetch_url} branch {spec.branch} lacks the job's {what} "
                             f"{sha[:12]} (the branch was cut again or reaped?)")  # fmt: skip
    return git


def upload(client: JobClient, job_id: str, out: Path) -> int:
    """Every regular file under *out*, by its path relative to it; bytes sent."""
    sent = 0
    if not out.is_dir():
        return 0
    for p in sorted(out.rglob("*")):
        if p.is_symlink() or not p.is_file():
            continue  # a link made by patch code could point anywhere on this host
        client.put_file(job_id, p.relative_to(out).as_posix(), p)
        sent += p.stat().st_size
    return sent


def run_job(
    payload: Any, ws: WorkerSettings, client: JobClient, *, config_path: Path | None = None
) -> str:
    """Run one job; returns what became of it (for the worker's log)."""
    try:
        spec = JobSpec.from_dict(payload)
    except BadJob as e:
        log.error("a message that is no job: %s", e)
        return f"bad job: {e}"
    ex = spec.settings()
    if ws.executors and ex.name not in ws.executors:
        why = (f"worker {ws.name} does not run executor {ex.name} (its executors are "
               f"{', '.join(ws.executors)}) but took it from queue {spec.queue}")  # fmt: skip
        log.error("job %s: %s", spec.job_id, why)
        client.fail(spec.job_id, why)
        return why
    ans = client.start(spec.job_id, host_name())
    if ans.decision != RUN:
        log.info("job %s (%s on %s): not run: %s (%s)", spec.job_id, ex.name, spec.branch,
                 ans.decision, ans.reason)  # fmt: skip
        return ans.decision
    log.info("job %s: %s on %s, attempt %d", spec.job_id, ex.name, spec.branch, ans.attempt)
    work = ws.work_path
    out = work / "runs" / namify(spec.job_id) / namify(ex.name)
    shutil.rmtree(out.parent, ignore_errors=True)  # an earlier attempt's, on this host
    # renewed every `heartbeat` s; the server hands the job on when the beats stop
    with holding(lambda: client.heartbeat(spec.job_id), f"job {spec.job_id[:8]}",
                 3 * ws.heartbeat):  # fmt: skip
        run = _run(spec, ws, out, config_path)
    upload(client, spec.job_id, out)
    body = run_to_nipa(run)
    body["log-dir"] = str(out)  # what the server maps log paths from
    stored = client.result(spec.job_id, body)
    shutil.rmtree(out.parent, ignore_errors=True)
    state = "stored" if stored else "already stored"
    log.info("job %s: %s, %d tests, result %s", spec.job_id, run.status, len(run.tests), state)
    return f"{run.status} ({state})"


def _run(spec: JobSpec, ws: WorkerSettings, out: Path, config_path: Path | None) -> RunResult:
    ex = spec.settings()
    started = datetime.now(UTC)
    try:
        git = fetch_branch(ws.work_path / "git" / namify(spec.tree), spec)
        root = ws.work_path / "executors" / namify(ex.name) / namify(spec.tree)
        executor = make_executor(ex, root=root, ccache=ws.work_path / "ccache",
                                 sandbox=worker_sandbox(ws, config_path))  # fmt: skip
        executor.previous_durations = spec.duration_map()
        tests = executor_tests(ex, git.repo, spec.base)
    except (InfraError, ConfigError, OSError) as e:
        log.error("job %s: %s", spec.job_id, e)
        return RunResult(ex.name, spec.branch, started, datetime.now(UTC), RUN_ERROR,
                         f"worker {ws.name}: {e}")  # fmt: skip
    return run_tests(git, spec.branch, spec.head, executor, tests, out, spec.base)
