"""The status page's contest side: executors seen, runs in progress, branches waiting.

One scene on SQLite and PostgreSQL, built with ResultsStore as the executors write it, read
through web.status_queries directly and through /status, /api/v1/status and /metrics.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import unescape
from pathlib import Path

import pytest

from patchci.config import build_settings
from patchci.db.results import ResultsStore
from patchci.executor.base import RunResult
from patchci.web import status_queries as sq
from patchci.web.app import create_app
from patchci.web.routes.metrics import render_metrics
from tests.pg import db_url as db_url  # fixtures, used by name
from tests.pg import pg_server as pg_server
from tests.pg import pg_url as pg_url
from tests.test_results_db import T0, manifest
from tests.web_server import TestClient, client_for

NOW = T0 + timedelta(days=5)
DAY = 24 * 3600.0
HOSTILE = 'vm-b"<i>'  # an executor name the page must escape


def ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


@dataclass(frozen=True)
class Scene:
    url: str
    branches: list[str]  # manifest(0..5) names, oldest first
    run_ids: dict[str, int]  # the runs in progress, by a short name


def finished(
    rs: ResultsStore, bid: int, executor: str, start: datetime, minutes: float, status: str = "done"
) -> int:
    end = start + timedelta(minutes=minutes)
    error = "" if status == "done" else "the VM did not boot"
    return rs.save_run(bid, RunResult(executor, "", start, end, status, error=error))


def build_scene(rs: ResultsStore) -> dict[str, int]:
    """Six branches, four executors.

    vm-a: 35 done runs; the oldest 15 took 600 min, the newest 20 took 20 or 40 min
    (median 30 min), then a 60 min error run and two runs in progress (70 and 20 min old).
    HOSTILE: one run in progress, nothing done: its expected end is unknown.
    vm-c: one done run on b3 (15 min). vm-old: one done run three days ago.
    """
    b = [rs.save_branch(manifest(n)) for n in range(6)]
    for i in range(35):
        start = NOW - timedelta(days=2) + timedelta(hours=i)
        finished(rs, b[0], "vm-a", start, 600 if i < 15 else 20 if i % 2 else 40)
    finished(rs, b[1], "vm-a", ago(300), 60, status="error")
    finished(rs, b[2], "vm-old", NOW - timedelta(days=3), 30)
    finished(rs, b[3], "vm-c", ago(120), 15)
    return {
        "a-overdue": rs.start_run(b[4], "vm-a", ago(70)),
        "a-ok": rs.start_run(b[3], "vm-a", ago(20)),
        "b-unknown": rs.start_run(b[4], HOSTILE, ago(10)),
    }


@pytest.fixture
def scene(db_url: str) -> Iterator[Scene]:
    rs = ResultsStore.open(db_url)
    try:
        runs = build_scene(rs)
        yield Scene(db_url, [manifest(n).name for n in range(6)], runs)
    finally:
        rs.close()


def client(url: str, data_dir: Path) -> TestClient:
    settings = build_settings({"data_dir": str(data_dir), "database_url": url}, env={})
    return client_for(create_app(settings, clock=lambda: NOW))


def test_executor_status(scene: Scene) -> None:
    rs = ResultsStore.open(scene.url, upgrade=False)
    with rs.engine.connect() as conn:
        got = {e.executor: e for e in sq.executor_status(conn, NOW, DAY)}
    rs.close()
    assert list(got) == sorted(got) == sorted(["vm-a", HOSTILE, "vm-c", "vm-old"])
    a = got["vm-a"]
    # runs started in the last day: i = 24..34, the error run and the two running
    assert (a.last_started_at, a.last_finished_at, a.last_status) == (ago(20), ago(240), "error")
    assert (a.seen_at, a.age_s, a.runs_recent, a.running) == (ago(20), 1200.0, 14, 2)
    h = got[HOSTILE]
    assert (h.last_finished_at, h.last_status, h.age_s, h.runs_recent, h.running) == (
        None, None, 600.0, 1, 1
    )  # fmt: skip
    c = got["vm-c"]
    assert (c.last_status, c.seen_at, c.age_s, c.running) == ("done", ago(105), 6300.0, 0)
    old = got["vm-old"]
    assert (old.runs_recent, old.age_s) == (0, 3 * DAY - 1800)
    assert old.last_started_at.tzinfo is not None and old.seen_at.utcoffset() == timedelta(0)


def test_expected_durations_use_the_last_20_done_runs(scene: Scene) -> None:
    """Not the error run (60 min), nor the 15 older 600 min runs: the median is 30 min."""
    rs = ResultsStore.open(scene.url, upgrade=False)
    with rs.engine.connect() as conn:
        got = sq.expected_durations(conn, ["vm-a", HOSTILE, "vm-c", "vm-a", "nobody"])
    rs.close()
    assert got == {"vm-a": 1800.0, HOSTILE: None, "vm-c": 900.0, "nobody": None}


def test_running_runs(scene: Scene) -> None:
    rs = ResultsStore.open(scene.url, upgrade=False)
    with rs.engine.connect() as conn:
        runs = sq.running_runs(conn, NOW)
        limited = sq.running_runs(conn, NOW, limit=1)
    rs.close()
    ids = scene.run_ids
    assert [r.id for r in runs] == [ids["a-overdue"], ids["a-ok"], ids["b-unknown"]]
    over, ok, unknown = runs
    assert (over.branch, over.stream, over.executor) == (scene.branches[4], "net-next", "vm-a")
    assert (over.age_s, over.expected_s, over.expected_end, over.overdue) == (
        4200.0, 1800.0, ago(40), True
    )  # fmt: skip
    assert (ok.age_s, ok.expected_end, ok.overdue) == (1200.0, NOW + timedelta(minutes=10), False)
    assert (unknown.executor, unknown.expected_s, unknown.expected_end, unknown.overdue) == (
        HOSTILE, None, None, False
    )  # fmt: skip
    assert [r.id for r in limited] == [ids["a-overdue"]]


def test_overdue_is_past_twice_the_expected_duration(scene: Scene) -> None:
    rs = ResultsStore.open(scene.url, upgrade=False)
    with rs.engine.connect() as conn:
        at_60 = sq.running_runs(conn, ago(10))[0]  # the 70-min-old run, 60 min old then
        at_61 = sq.running_runs(conn, ago(9))[0]
    rs.close()
    assert (at_60.age_s, at_60.overdue) == (3600.0, False)
    assert (at_61.age_s, at_61.overdue) == (3660.0, True)


def test_pending_branches(scene: Scene) -> None:
    """b5 has no run, b4 and b3 still run something; b0..b2 are finished (b1 in error)."""
    rs = ResultsStore.open(scene.url, upgrade=False)
    with rs.engine.connect() as conn:
        running = sq.running_runs(conn, NOW, limit=None)
        got = sq.pending_branches(conn, running)
        two = sq.pending_branches(conn, running, limit=2)
        whole = sq.contest_status(conn, NOW, DAY)
    rs.close()
    names = scene.branches
    assert [b.name for b in got] == [names[5], names[4], names[3]]
    counts = [(b.runs_done, b.runs_error, b.runs_running) for b in got]
    assert counts == [(0, 0, 0), (0, 0, 2), (1, 0, 1)]
    # b4 waits for HOSTILE, whose end nobody can tell; b3 only for vm-a's 30-min run
    assert [b.expected_end for b in got] == [None, None, NOW + timedelta(minutes=10)]
    assert got[0].stream == "net-next" and got[0].date == manifest(5).date
    assert [b.name for b in two] == [names[5], names[4]]
    assert whole.pending_branches == got and whole.running_runs == running
    assert [(e.executor, e.running) for e in whole.executors] == [
        ("vm-a", 2), (HOSTILE, 1), ("vm-c", 0), ("vm-old", 0)
    ]  # fmt: skip


def test_status_page_shows_executors_runs_and_branches(scene: Scene, tmp_path: Path) -> None:
    r = client(scene.url, tmp_path).get("/status")
    assert r.status_code == 200
    html = r.text
    assert "<i>" not in html and 'data-executor="vm-b&#34;&lt;i&gt;"' in html
    execs = dict(re.findall(r'<tr class="executor-row" data-executor="([^"]*)"([^>]*)>', html))
    assert [unescape(e) for e in execs] == ["vm-a", HOSTILE, "vm-c", "vm-old"]
    assert execs["vm-a"] == ' data-status="error" data-running="2" data-recent="14"'
    assert execs["vm-old"] == ' data-status="done" data-running="0" data-recent="0"'
    assert execs["vm-b&#34;&lt;i&gt;"] == ' data-status="" data-running="1" data-recent="1"'
    runs = re.findall(r'<tr class="run-row([^"]*)" data-run="(\d+)"[^>]*data-overdue="(\w+)"', html)
    ids = scene.run_ids
    assert runs == [
        (" alarm-row", str(ids["a-overdue"]), "true"),
        ("", str(ids["a-ok"]), "false"),
        ("", str(ids["b-unknown"]), "false"),
    ]
    body = unescape(html)
    assert "OVERDUE" in body and "2026-08-25 03:10:00 UTC (takes 30m 00s)" in body
    branches = re.findall(
        r'<tr class="branch-row" data-branch="([^"]*)"([^>]*)>(.*?)</tr>', html, re.S
    )
    assert [b[0] for b in branches] == [scene.branches[5], scene.branches[4], scene.branches[3]]
    assert branches[1][1] == ' data-done="0" data-error="0" data-running="2"'
    assert "unknown (no run started)" in branches[0][2]
    assert re.search(r">unknown</td>", branches[1][2])
    assert "2026-08-25 03:10:00 UTC" in branches[2][2]


def test_api_status_has_the_contest_side(scene: Scene, tmp_path: Path) -> None:
    status = client(scene.url, tmp_path).get("/api/v1/status").json()["contest"]
    execs = {e["executor"]: e for e in status["executors"]}
    assert execs["vm-a"]["running"] == 2 and execs["vm-a"]["last_status"] == "error"
    assert datetime.fromisoformat(execs["vm-a"]["seen_at"]) == ago(20)
    over, ok, unknown = status["running_runs"]
    assert over["overdue"] is True and over["expected_s"] == 1800.0
    assert datetime.fromisoformat(ok["expected_end"]) == NOW + timedelta(minutes=10)
    assert unknown["executor"] == HOSTILE and unknown["expected_end"] is None
    pending = status["pending_branches"]
    assert [(b["name"], b["runs_running"]) for b in pending] == [
        (scene.branches[5], 0), (scene.branches[4], 2), (scene.branches[3], 1)
    ]  # fmt: skip


def test_metrics_executor_age_and_running(scene: Scene, tmp_path: Path) -> None:
    text_ = client(scene.url, tmp_path).get("/metrics").text
    samples = dict(
        line.rsplit(" ", 1) for line in text_.splitlines() if line and not line.startswith("#")
    )
    assert samples['patchci_executor_last_run_age_seconds{executor="vm-a"}'] == "1200"
    assert samples['patchci_executor_last_run_age_seconds{executor="vm-b\\"<i>"}'] == "600"
    assert samples['patchci_executor_last_run_age_seconds{executor="vm-old"}'] == "257400"
    assert samples["patchci_runs_running"] == "3"
    assert "# TYPE patchci_runs_running gauge" in text_


def test_metrics_without_contest_rows() -> None:
    text_ = render_metrics({}, {}, {}, [])
    assert "\npatchci_runs_running 0\n" in text_
    assert "patchci_executor_last_run_age_seconds{" not in text_


def test_empty_contest_tables(db_url: str, tmp_path: Path) -> None:
    ResultsStore.open(db_url).close()  # migrated, no branch, no run
    c = client(db_url, tmp_path)
    html = unescape(c.get("/status").text)
    assert "no executor has run yet" in html and "no run in progress" in html
    assert "no branch is waiting for results" in html
    status = c.get("/api/v1/status").json()["contest"]
    assert status["executors"] == status["running_runs"] == status["pending_branches"] == []


def test_status_lists_are_capped_but_counts_are_not(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sq, "RUNNING_LIMIT", 2)
    rs = ResultsStore.open(scene.url, upgrade=False)
    with rs.engine.connect() as conn:
        got = sq.contest_status(conn, NOW, DAY)
    rs.close()
    assert [r.id for r in got.running_runs] == [scene.run_ids["a-overdue"], scene.run_ids["a-ok"]]
    assert sum(e.running for e in got.executors) == 3
    assert (
        got.pending_branches[1].runs_running == 2 and got.pending_branches[1].expected_end is None
    )
