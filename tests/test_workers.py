"""Executors on worker hosts: a real redis-server, a real `patchci serve` and two real
`patchci worker` processes, each with its own work directory and no database in reach.

Before, every executor ran inside the daemon, on one machine. Now a branch's jobs go to
the workers through Celery; a worker killed mid-job has its job run once more on the
other and the result is stored once, with both starts recorded.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
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
from tests.prereq import unavailable
from tests.workersite import TOKENS, Redis, Site, free_port, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed (make test installs it)")
    d = tmp_path / "redis"
    d.mkdir()
    r = Redis(free_port(), d)
    r.start()
    yield r
    r.stop()


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
    wait_for(lambda: any(j["state"] == "running" for j in site.jobs()), "the job to start", 60)
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
    wait_for(lambda: f'patchci_worker_alive{{worker="{victim}"}} 0' in httpx.get(
        site.url + "/metrics").text, "the killed worker to read silent", 20)  # fmt: skip
    assert f'patchci_worker_alive{{worker="{other}"}} 1' in httpx.get(site.url + "/metrics").text
    page = httpx.get(site.url + "/status").text
    assert f'data-worker="{victim}" data-alive="false"' in page
    assert '<span id="rerun-jobs">1</span>' in page


def test_a_job_that_loses_two_workers_is_an_error_run_not_the_series(site: Site) -> None:
    site.write_config(sleep=30, executors=1)
    site.serve()
    site.worker("w1")
    site.worker("w2")
    branch = site.branch_now()
    wait_for(lambda: any(j["state"] == "running" for j in site.jobs()), "the first start", 60)
    first = str(site.jobs()[0]["worker"])
    site.kill(first)
    second = "w2" if first == "w1" else "w1"
    wait_for(lambda: len(site.jobs()[0]["attempts"]) == 2, "the second start", 60)  # type: ignore[arg-type]
    site.kill(second)
    site.worker(first)  # a host back: the job comes to it a third time
    rc, out = _finish(branch)
    assert rc == 2, out  # ours: an infrastructure error
    (job,) = site.jobs()
    assert job["state"] == ERROR
    (run,) = site.runs()
    assert run["status"] == RUN_ERROR
    err = str(run["error"])
    assert "lost 2 times" in err and first in err and second in err and "not the series'" in err


def test_a_broker_restart_mid_run_loses_nothing(site: Site) -> None:
    """One worker, three jobs: while the first runs, Redis is stopped and started again
    (append-only file); the two waiting jobs are still there and run."""
    site.write_config(sleep=5, executors=3)
    site.serve()
    site.worker("w1")
    branch = site.branch_now()
    wait_for(lambda: any(j["state"] == "running" for j in site.jobs()), "the first job", 60)
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
    wait_for(lambda: "refuses this worker" in site.log("w1"), "the worker to be refused", 30)
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


# ------------------------------------------------------------------ the job API, in-process


def test_uploads_are_size_limited_and_confined_to_the_runs_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from patchci.brancher import Manifest
    from patchci.config import build_settings
    from patchci.web.app import create_app
    from tests.web_server import client_for

    monkeypatch.setenv("TOK_W1", TOKENS["w1"])
    monkeypatch.setenv("TOK_W2", TOKENS["w2"])
    settings = build_settings({
        "data_dir": str(tmp_path / "data"),
        "broker": {"url": "redis://127.0.0.1:1/0", "max_file_bytes": 2048,
                   "max_job_bytes": 3000,
                   "workers": [{"name": w, "token_env": f"TOK_{w.upper()}"} for w in TOKENS]},
    }, env={})  # fmt: skip
    store = JobStore.open(settings.db_url)
    m = Manifest("nn-1", "nn", datetime.now(UTC), "a" * 40, {}, (), (), "b" * 40, False)
    rid = store.start_run(store.save_branch(m), "ex-0", datetime.now(UTC))
    store.add_job(JobSpec("job1", rid, "net-next", "nn-1", "b" * 40, "a" * 40, "/x", "local",
                          50.0, {"name": "ex-0", "kind": "local"}))  # fmt: skip
    api = client_for(create_app(settings))
    w1 = {"authorization": f"Bearer {TOKENS['w1']}"}
    w2 = {"authorization": f"Bearer {TOKENS['w2']}"}
    put = "/api/v1/jobs/job1/files/"
    assert api.put(put + "early.log", content=b"x", headers=w1).status_code == 409  # not started
    r = api.post("/api/v1/jobs/job1/start", json={"worker": "w1"}, headers=w1)
    assert r.json()["decision"] == "run"
    assert api.put(put + "out/a.log", content=b"a" * 1500, headers=w1).status_code == 201
    assert api.put(put + "big.log", content=b"b" * 3000, headers=w1).status_code == 413
    assert api.put(put + "c.log", content=b"c" * 1600, headers=w1).status_code == 413  # job total
    assert api.put(put + "x.log", content=b"x", headers=w2).status_code == 409  # w1's job
    assert api.put(put + "..%2Fescape.log", content=b"x", headers=w1).status_code in (400, 404)
    runs = tmp_path / "data" / "contest" / "runs" / "nn-1" / "ex-0"
    assert sorted(p.name for p in runs.rglob("*") if p.is_file()) == ["a.log"]
    # the result maps the worker's paths to the server's and is stored once
    body = {"executor": "ex-0", "branch": "nn-1", "start": "2026-12-07 10:00:00+00:00",
            "end": "2026-12-07 10:01:00+00:00", "log-dir": "/w/runs/j/ex-0",
            "results": [{"test": "a", "group": "g", "result": "pass",
                         "link": "/w/runs/j/ex-0/out/a.log"}]}  # fmt: skip
    assert api.post("/api/v1/jobs/job1/result", json=body, headers=w1).json()["stored"] is True
    assert api.post("/api/v1/jobs/job1/result", json=body, headers=w1).json()["stored"] is False
    (test,) = store.branch_results("nn-1")[0].tests
    assert test.log_path == str(runs / "out" / "a.log")
    wrong = {**body, "executor": "ex-9"}
    assert api.post("/api/v1/jobs/job1/result", json=wrong, headers=w1).status_code == 409


def test_the_long_lived_daemon_sends_its_branch_to_the_workers(site: Site) -> None:
    """`patchci ingest` (the daemon, not `branch --now`): its contest cuts the stream's
    first branch (due: no branch yet), queues the jobs, two worker hosts run them, and the
    daemon collects both results while it keeps running."""
    site.write_config(sleep=2)
    # every hour is on the stream's grid (NIPA's rule: a cut on an hour divisible by
    # every_hours), so the first branch is due whenever the test runs
    text = site.cfg.read_text()
    site.cfg.write_text(
        text.replace('tree = "net-next"\n', 'tree = "net-next"\nevery_hours = 1\n', 1)
    )
    site.serve()
    site.worker("w1")
    site.worker("w2")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "patchci", "-c", str(site.cfg), "ingest"],
        env=site.env(), cwd=site.root, stdout=(site.root / "daemon.log").open("wb"),
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: len(site.jobs()) == 2 and all(j["state"] == DONE for j in site.jobs())
                 and site.runs() and all(r["status"] == RUN_DONE for r in site.runs()),
                 "the daemon's jobs to be done and collected", 180)  # fmt: skip
        assert daemon.poll() is None, site.log("daemon")  # still running
        assert {j["worker"] for j in site.jobs()} <= {"w1", "w2"}
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
    log = site.log("daemon")
    assert "run queued" in log, log
