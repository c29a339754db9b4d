"""Executors on worker hosts: a real redis-server, a real `patchci serve` and two real
`patchci worker` processes, each with its own work directory and no database in reach.

Before, every executor ran inside the daemon, on one machine. Now a branch's jobs go to
the workers through Celery; a worker killed mid-job has its job run once more on the
other and the result is stored once, with both starts recorded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from patchci.cli import main
from patchci.db import tables as t
from patchci.db.jobs import ALREADY_DONE, BUSY, GIVEN_UP, RUN, JobStore
from patchci.db.migrate import make_engine
from patchci.executor.base import RUN_DONE, RUN_ERROR, RunResult
from patchci.executor.job import DONE, ERROR, JobSpec
from patchci.git import Git
from tests.gitrepo import write
from tests.prereq import unavailable

pytestmark = pytest.mark.slow

TESTS = "tools/testing/selftests/net"
SLOW_TEST = """#!/bin/sh
echo "TAP version 13"
echo "1..2"
sleep {sleep}
echo "ok 1 first"
echo "# a log line from $(hostname)"
echo "ok 2 second"
"""
TOKENS = {"w1": "token-of-w1", "w2": "token-of-w2"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait(cond: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Redis:
    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.dir), "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=(self.dir / "redis.log").open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        _wait(self.ping, "redis-server")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            self.proc = None


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed (make test installs it)")
    d = tmp_path / "redis"
    d.mkdir()
    r = Redis(_free_port(), d)
    r.start()
    yield r
    r.stop()


@dataclass
class Site:
    """A server (data dir, config, `patchci serve`) and its worker hosts."""

    root: Path
    redis: Redis
    port: int = field(default_factory=_free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def cfg(self) -> Path:
        return self.root / "patchci.toml"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db(self) -> Path:
        return self.root / "data" / "patchci.db"

    def env(self, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("PATCHCI_")}
        return {**base, **extra}

    def write_config(self, sleep: float, executors: int = 2, **broker: object) -> None:
        tree = self.root / "tree"
        git = Git.init(tree)
        write(tree, "drivers/net/foo.c", "int foo;\n")
        write(tree, f"{TESTS}/slow.sh", SLOW_TEST.format(sleep=sleep))
        (tree / TESTS / "slow.sh").chmod(0o755)
        git.add_all()
        git.commit("net: import\n\nSigned-off-by: A <a@example.com>")
        names = [f"ex-{i}" for i in range(executors)]
        execs = "".join(f'\n[[executors]]\nname = "{n}"\nkind = "local"\ndeadline = 50\n'
                        for n in names)  # fmt: skip
        settings = {"heartbeat_timeout": 4, "visibility_timeout": 60, **broker}
        extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
        workers = "".join(f'\n[[broker.workers]]\nname = "{w}"\ntoken_env = "TOK_{w.upper()}"\n'
                          for w in TOKENS)  # fmt: skip
        self.cfg.write_text(f"""data_dir = "data"
[[trees]]
name = "net-next"
path = "{tree}"
branch = "main"
tags = ["net-next"]
checks = ["signed_off_by"]
[[streams]]
name = "nn"
tree = "net-next"
tests_dir = "{TESTS}"
executors = {json.dumps(names)}
[report.patchwork]
enabled = false
[sandbox]
isolate = "env"
{execs}
[broker]
url = "{self.redis.url}"
{extra}{workers}""")

    def serve(self) -> None:
        env = self.env(**{f"TOK_{w.upper()}": tok for w, tok in TOKENS.items()})
        self.procs["serve"] = subprocess.Popen(
            [sys.executable, "-m", "patchci", "-c", str(self.cfg), "serve", "--port",
             str(self.port)], env=env, cwd=self.root,
            stdout=(self.root / "serve.log").open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        _wait(lambda: _up(self.url), "patchci serve")

    def worker(self, name: str, token: str | None = None) -> None:
        """A worker host: its own directory, its [worker] file, no database anywhere."""
        home = self.root / f"host-{name}"
        home.mkdir(exist_ok=True)
        (home / "worker.toml").write_text(f"""[worker]
name = "{name}"
queues = ["local"]
work_dir = "work"
server_url = "{self.url}"
heartbeat = 1
http_timeout = 10
upload_patience = 60
visibility_timeout = 60
[worker.sandbox]
isolate = "env"
""")
        env = self.env(PATCHCI_WORKER_TOKEN=token or TOKENS[name],
                       PATCHCI_BROKER_URL=self.redis.url)  # fmt: skip
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "patchci", "-v", "worker", "--worker-config",
             str(home / "worker.toml")], env=env, cwd=home, start_new_session=True,
            stdout=(self.root / f"{name}.log").open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip

    def kill(self, name: str) -> None:
        """kill -9 of the worker host's whole process group (pool, tests and all)."""
        os.killpg(self.procs[name].pid, signal.SIGKILL)
        self.procs.pop(name).wait(timeout=10)

    def branch_now(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "patchci", "-c", str(self.cfg), "branch", "--now"],
            env=self.env(), cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def jobs(self) -> list[dict[str, object]]:
        if not self.db.exists():
            return []
        engine = make_engine(f"sqlite:///{self.db}")
        try:
            with engine.connect() as conn:
                rows = conn.execute(select(t.executor_jobs)).mappings().all()
                return [{**r, "attempts": json.loads(r["attempts"])} for r in rows]
        finally:
            engine.dispose()

    def runs(self) -> list[dict[str, object]]:
        engine = make_engine(f"sqlite:///{self.db}")
        try:
            with engine.connect() as conn:
                return [dict(r) for r in conn.execute(select(t.runs)).mappings().all()]
        finally:
            engine.dispose()

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def close(self) -> None:
        for name, p in self.procs.items():
            if name == "serve":
                p.terminate()
            else:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=20)


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/api/v1/openapi.json", timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


@pytest.fixture
def site(tmp_path: Path, redis: Redis) -> Iterator[Site]:
    s = Site(tmp_path, redis)
    yield s
    s.close()


def _finish(p: subprocess.Popen[bytes], timeout: float = 240) -> tuple[int, str]:
    out, _ = p.communicate(timeout=timeout)
    return p.returncode, out.decode(errors="replace")


def test_two_workers_share_a_branchs_jobs_and_store_each_result_once(site: Site) -> None:
    site.write_config(sleep=3)
    site.serve()
    site.worker("w1")
    site.worker("w2")
    rc, out = _finish(site.branch_now())
    assert rc == 0, out + site.log("w1") + site.log("w2") + site.log("serve")
    jobs = site.jobs()
    assert len(jobs) == 2 and {j["state"] for j in jobs} == {DONE}
    assert {j["worker"] for j in jobs} == {"w1", "w2"}, "the jobs did not spread over both"
    runs = site.runs()
    assert sorted(r["executor"] for r in runs) == ["ex-0", "ex-1"]
    assert {r["status"] for r in runs} == {RUN_DONE}
    # the logs came back over HTTP, under the server's run directory
    for r in runs:
        log_dir = Path(str(r["log_dir"]))
        assert log_dir.is_relative_to(site.root / "data" / "contest" / "runs"), log_dir
        logs = [p for p in log_dir.rglob("*") if p.is_file()]
        assert any("a log line from" in p.read_text(errors="replace") for p in logs), logs
    assert "ex-0: done" in out or "ex-0" in out
    # the worker hosts never saw the database: nothing of the server in their directories
    for w in ("w1", "w2"):
        assert not list((site.root / f"host-{w}").rglob("*.db"))


def test_a_worker_killed_mid_job_has_it_run_again_once_and_stored_once(site: Site) -> None:
    site.write_config(sleep=12, executors=1)
    site.serve()
    site.worker("w1")
    site.worker("w2")
    branch = site.branch_now()
    _wait(lambda: any(j["state"] == "running" for j in site.jobs()), "the job to start", 60)
    (job,) = site.jobs()
    victim = str(job["worker"])
    site.kill(victim)  # mid-job: the test sleeps 12 s
    rc, out = _finish(branch)
    assert rc == 0, out + site.log("serve")
    (job,) = site.jobs()
    attempts = job["attempts"]
    assert isinstance(attempts, list) and len(attempts) == 2, attempts
    assert attempts[0]["worker"] == victim and attempts[0]["how"].startswith("lost:")
    assert attempts[1]["worker"] != victim and attempts[1]["how"] == "result: done"
    (run,) = site.runs()  # one run row, one result
    assert run["status"] == RUN_DONE
    engine = make_engine(f"sqlite:///{site.db}")
    with engine.connect() as conn:
        tests = conn.execute(select(t.tests.c.name)).scalars().all()
    engine.dispose()
    assert tests == ["slow-sh"], tests  # stored once, not twice
    assert "lost:" in out  # `branch --now` shows the starts
    # the status page and /metrics say so: the killed host silent, the other alive
    metrics = httpx.get(site.url + "/metrics").text
    assert "patchci_executor_jobs_rerun 1" in metrics
    other = "w2" if victim == "w1" else "w1"
    _wait(lambda: f'patchci_worker_alive{{worker="{victim}"}} 0' in httpx.get(
        site.url + "/metrics").text, "the killed worker to read silent", 20)  # fmt: skip
    assert f'patchci_worker_alive{{worker="{other}"}} 1' in httpx.get(site.url + "/metrics").text
    page = httpx.get(site.url + "/status").text
    assert f'data-worker="{victim}" data-alive="false"' in page
    assert '<span id="rerun-jobs">1</span>' in page


def test_a_broker_restart_mid_run_loses_nothing(site: Site) -> None:
    """One worker, three jobs: while the first runs, Redis is stopped and started again
    (append-only file); the two waiting jobs are still there and run."""
    site.write_config(sleep=5, executors=3)
    site.serve()
    site.worker("w1")
    branch = site.branch_now()
    _wait(lambda: any(j["state"] == "running" for j in site.jobs()), "the first job", 60)
    # while it runs: the other two wait on the queue, the first shows its expected end
    metrics = httpx.get(site.url + "/metrics").text
    assert 'patchci_queue_depth{queue="local"} 2' in metrics, metrics
    assert "patchci_executor_jobs_running 1" in metrics
    assert 'class="job-row"' in httpx.get(site.url + "/status").text
    site.redis.stop()
    time.sleep(2)
    site.redis.start()
    rc, out = _finish(branch)
    assert rc == 0, out + site.log("w1")
    jobs = site.jobs()
    assert len(jobs) == 3 and {j["state"] for j in jobs} == {DONE}, jobs
    assert sorted(r["status"] for r in site.runs()) == [RUN_DONE] * 3


def test_a_wrong_upload_token_is_refused(site: Site) -> None:
    site.write_config(sleep=0, executors=1)
    site.serve()
    api = site.url + "/api/v1"
    none = httpx.post(f"{api}/jobs/x/start", json={"worker": "w1"})
    assert none.status_code == 401 and none.headers["www-authenticate"] == "Bearer"
    bad = {"authorization": "Bearer not-a-token"}
    for call in (httpx.post(f"{api}/jobs/x/start", json={"worker": "w1"}, headers=bad),
                 httpx.put(f"{api}/jobs/x/files/a.log", content=b"x", headers=bad),
                 httpx.post(f"{api}/workers/w1/heartbeat", json={}, headers=bad)):  # fmt: skip
        assert call.status_code == 401, call.text
    # a good token speaking for another worker
    w2 = {"authorization": f"Bearer {TOKENS['w2']}"}
    assert httpx.post(f"{api}/workers/w1/heartbeat", json={}, headers=w2).status_code == 403
    # and a worker started with a wrong token runs nothing: its heartbeats are refused
    site.worker("w1", token="wrong")
    _wait(lambda: "refuses this worker" in site.log("w1"), "the worker to be refused", 30)
    assert not site.jobs()


def test_without_a_broker_the_jobs_run_inside_the_daemon(tmp_path: Path) -> None:
    """The embedded default: no [broker], no Redis, the same branch runs in-process."""
    site = Site(tmp_path, Redis(0, tmp_path))
    site.write_config(sleep=0, executors=2)
    text = site.cfg.read_text()
    site.cfg.write_text(text[: text.index("[broker]")])
    assert main(["-c", str(site.cfg), "branch", "--now"]) == 0
    assert site.jobs() == []
    assert sorted((r["executor"], r["status"]) for r in site.runs()) == [
        ("ex-0", RUN_DONE), ("ex-1", RUN_DONE)]  # fmt: skip


# ------------------------------------------------------------------ the store, directly


@pytest.fixture
def jobs(tmp_path: Path) -> JobStore:
    from patchci.brancher import Manifest

    store = JobStore.open(f"sqlite:///{tmp_path / 'j.db'}")
    m = Manifest("nn-1", "nn", datetime.now(UTC), "a" * 40, {}, (), (), "b" * 40, False)
    bid = store.save_branch(m)
    rid = store.start_run(bid, "ex-0", datetime.now(UTC))
    store.add_job(JobSpec("job1", rid, "net-next", "nn-1", "b" * 40, "a" * 40, "/x", "local",
                          50.0, {"name": "ex-0", "kind": "local"}))  # fmt: skip
    return store


def _run(status: str = RUN_DONE) -> RunResult:
    now = datetime.now(UTC)
    return RunResult("ex-0", "nn-1", now, now, status)


def test_a_result_is_stored_once_per_job(jobs: JobStore) -> None:
    assert jobs.start("job1", "w1", stale_after=60).decision == RUN
    assert jobs.start("job1", "w2", stale_after=60).decision == BUSY  # w1 is heard from
    assert jobs.finish("job1", "w1", _run()) is True
    assert jobs.finish("job1", "w1", _run()) is False  # a retried upload
    assert jobs.start("job1", "w2", stale_after=60).decision == ALREADY_DONE
    assert jobs.job("job1").state == DONE


def test_a_job_that_loses_two_workers_is_our_error_with_the_evidence(jobs: JobStore) -> None:
    t0 = datetime.now(UTC)
    assert jobs.start("job1", "w1", 5, now=t0).decision == RUN
    assert jobs.start("job1", "w2", 5, now=t0 + timedelta(seconds=10)).decision == RUN
    third = jobs.start("job1", "w1", 5, now=t0 + timedelta(seconds=20))
    assert third.decision == GIVEN_UP
    assert "lost 2 times" in third.reason and "w1" in third.reason and "w2" in third.reason
    job = jobs.job("job1")
    assert job.state == ERROR and job.reruns == 1
    (run,) = jobs.branch_results("nn-1")
    assert run.status == RUN_ERROR and "not the series'" in run.error


def test_visibility_timeout_below_a_deadline_is_refused(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    site = Site(tmp_path, Redis(6379, tmp_path))
    site.write_config(sleep=0, executors=1, visibility_timeout=30)
    assert main(["config", "check", str(site.cfg)]) == 2
    assert "would hand its running job to a second worker" in capsys.readouterr().err


def test_a_worker_without_token_or_broker_says_which_to_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PATCHCI_WORKER_TOKEN", raising=False)
    monkeypatch.delenv("PATCHCI_BROKER_URL", raising=False)
    assert main(["worker", "--name", "w1", "--work-dir", str(tmp_path)]) == 2
    assert "set PATCHCI_WORKER_TOKEN" in capsys.readouterr().err
    monkeypatch.setenv("PATCHCI_WORKER_TOKEN", "t")
    assert main(["worker", "--name", "w1", "--work-dir", str(tmp_path)]) == 2
    assert "PATCHCI_BROKER_URL" in capsys.readouterr().err
    assert main(["worker"]) == 2  # no name and no file
    assert "--worker-config" in capsys.readouterr().err
