"""Web test fixtures: a demo database, a hostile copy of it, and a live uvicorn server.

The demo (`run_demo`) is built once per test session and shared; tests that add rows work
on a copy made with SQLite's backup API, so the demo's numbers stay what they are.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import socket
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from patchci.config import Settings, build_settings
from patchci.db.store import Store
from patchci.demo.run import TOKEN_ENV, run_demo
from patchci.model import CheckResult, Outcome, Patch, Person, Series
from patchci.subject import parse_subject
from patchci.web.app import create_app

with warnings.catch_warnings():
    # Starlette 1.x nudges towards httpx2 for its test client; httpx is what we ship.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient as TestClient

XSS_SUBJECT = "<script>alert(1)</script>"
XSS_DESCRIPTION = '"><img src=x onerror=alert(1)>'
XSS_URL = "javascript:alert(1)"

_DEMO: dict[Path, Path] = {}


def _build_demo(root: Path) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        # Session fixtures run before conftest's per-test isolation: isolate here too.
        mp.setenv("HOME", str(root / "home"))
        mp.setenv("GIT_CONFIG_NOSYSTEM", "1")
        for who in ("AUTHOR", "COMMITTER"):
            mp.setenv(f"GIT_{who}_NAME", "Web Test")
            mp.setenv(f"GIT_{who}_EMAIL", "web@example.com")
        mp.delenv(TOKEN_ENV, raising=False)  # run_demo sets it; undone on exit
        with contextlib.redirect_stdout(io.StringIO()):
            code = run_demo(root / "demo")
    assert code == 0, "the demo did not end as expected"
    return root / "demo"


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_dir filled by `patchci demo` (patchci.db and logs/), built once per session."""
    key = tmp_path_factory.getbasetemp()
    if key not in _DEMO:
        _DEMO[key] = _build_demo(tmp_path_factory.mktemp("web-demo"))
    return _DEMO[key]


def client_for(app: Any) -> TestClient:
    """An in-process client; a server error is a 500 response, never an exception."""
    return TestClient(app, raise_server_exceptions=False)


def settings_for(data_dir: Path) -> Settings:
    return build_settings({"data_dir": str(data_dir)}, env={})


def copy_data_dir(src: Path, dst: Path) -> Path:
    """A consistent copy of *src*'s database (WAL included), its logs and contest runs."""
    dst.mkdir(parents=True)
    old, new = str(src.resolve()), str(dst.resolve())
    with sqlite3.connect(src / "patchci.db") as a, sqlite3.connect(dst / "patchci.db") as b:
        a.backup(b)
        # Logs are stored as absolute paths: make them point into the copy.
        for statement in MOVE_LOGS:
            b.execute(statement, {"new": new, "cut": len(old) + 1, "like": f"{old}/%"})
    for sub in ("logs", "contest/runs"):
        if (src / sub).is_dir():
            shutil.copytree(src / sub, dst / sub, symlinks=True)
    return dst


MOVE_LOGS = (
    "UPDATE check_results SET log_path = :new || substr(log_path, :cut) WHERE log_path LIKE :like",
    "UPDATE tests SET log_path = :new || substr(log_path, :cut) WHERE log_path LIKE :like",
    "UPDATE tests SET retry_log_path = :new || substr(retry_log_path, :cut)"
    " WHERE retry_log_path LIKE :like",
)


@dataclass(frozen=True)
class Hostile:
    """A demo copy with one series whose every user-written field attacks the page."""

    data_dir: Path
    series_id: int


def add_hostile_series(store: Store) -> int:
    # U+202E (right-to-left override) in the name reversed the rest of the line.
    who = Person('Eve "<b>bold</b>" \u202eevil\u2066', "eve@example.com<svg onload=alert(1)>")
    patch = Patch(
        msgid="<x'\"><script>alert(2)</script>@example.com>",
        subject=XSS_SUBJECT,
        author=who,
        date=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        info=parse_subject(XSS_SUBJECT),
        raw=b"Subject: x\n\nbody\n",
        has_diff=True,
        files=("<img src=x onerror=alert(3)>.c",),
        web_url=XSS_URL,
    )
    series = Series(
        source="hostile",
        key="1",
        name=XSS_SUBJECT,
        version=1,
        total=1,
        patches=(patch,),
        submitter=who,
        web_url=XSS_URL,
        problems=("<iframe src=javascript:alert(4)>",),
    )
    sid = store.save_series(series)
    store.set_series_state(sid, "checked", "<b onmouseover=alert(5)>why</b>", tree="net")
    job = store.create_job(sid, "checks")
    store.start_job(job, "w1")
    results = [
        CheckResult("signed_off_by", Outcome.FAIL, XSS_DESCRIPTION, patch_index=0,
                    details=(("<k>", "<v onclick=alert(6)>"),),
                    reproducer="</pre><script>alert(7)</script>"),
        CheckResult("apply", Outcome.ERROR, XSS_DESCRIPTION, log_path="../../etc/passwd"),
    ]  # fmt: skip
    store.add_results(job, sid, results)
    store.finish_job(job, "error", XSS_DESCRIPTION)
    store.record_delivery(
        "patchwork:<script>", sid, None, "ctx<script>", "fail", "f", None, "failed",
        XSS_DESCRIPTION,
    )  # fmt: skip
    return sid


@pytest.fixture(scope="module")
def hostile(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Hostile:
    data = copy_data_dir(demo_dir, tmp_path_factory.mktemp("web-hostile") / "data")
    store = Store.open(f"sqlite:///{data / 'patchci.db'}")
    try:
        sid = add_hostile_series(store)
        add_contest(store, data, series=(1, 2, sid), left_out=3)
        return Hostile(data, sid)
    finally:
        store.close()


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass(frozen=True)
class LiveServer:
    url: str
    data_dir: Path


@contextlib.contextmanager
def run_server(settings: Settings) -> Iterator[str]:
    """uvicorn serving create_app(settings) on 127.0.0.1 in a thread; yields the base url."""
    sock = free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def live_server(hostile: Hostile) -> Iterator[LiveServer]:
    """The web app on the hostile demo copy, over real HTTP."""
    with run_server(settings_for(hostile.data_dir)) as url:
        yield LiveServer(url, hostile.data_dir)


# --- contest data ------------------------------------------------------------------------

BRANCH_T0 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
# Apart from the demo's own contest rows (stream net-next, executor local, group net).
STREAM, EXECUTOR, GROUP = "webtest", "vm-web", "webnet"
# Per branch, oldest first: (outcome, retry outcome) of each test.
CONTEST_PLAN: dict[str, list[tuple[Outcome, Outcome | None]]] = {
    "stable.sh": [(Outcome.PASS, None)] * 6,
    "flaky.sh": [(Outcome.PASS, None), (Outcome.FAIL, Outcome.PASS), (Outcome.PASS, None),
                 (Outcome.FAIL, Outcome.PASS), (Outcome.PASS, None), (Outcome.PASS, None)],
    "broken.sh": [(Outcome.PASS, None)] * 3 + [(Outcome.FAIL, Outcome.FAIL)] * 3,
}  # fmt: skip


def contest_branch_name(i: int) -> str:
    return f"{STREAM}-{BRANCH_T0 + timedelta(hours=3 * i):%Y-%m-%d--%H-%M}"


def add_contest(store: Store, data_dir: Path, series: tuple[int, ...], left_out: int) -> None:
    """Six branches of STREAM, one executor, three tests (stable, flaky, broken)."""
    from patchci.brancher import Manifest
    from patchci.db.results import ResultsStore
    from patchci.executor.base import CrashRef, RunResult, TestResult

    rs = ResultsStore(store.engine)
    logs = data_dir / "contest" / "runs"
    for i in range(6):
        name = contest_branch_name(i)
        date = BRANCH_T0 + timedelta(hours=3 * i)
        bid = rs.save_branch(
            Manifest(name=name, stream=STREAM, date=date, base=f"{i:040x}",
                     merges={"net": "okay"}, series=series,
                     left_out=((left_out, "<b>check build failed</b>"),),
                     head=f"{i + 100:040x}", new_changes=True)
        )  # fmt: skip
        tests = []
        for test, plan in CONTEST_PLAN.items():
            outcome, retry = plan[i]
            log = logs / name / EXECUTOR / test / "stdout"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(f"{test} on {name}: {outcome.value}\n")
            crash = (CrashRef("warning", "warning:foo_reset", "WARNING: foo"),)
            tests.append(
                TestResult(GROUP, test, outcome, 1.5, retry, 2.0 if retry else None,
                           crashes=crash if test == "broken.sh" and i == 5 else (),
                           log_path=str(log), reproduce=f"./{test}")
            )  # fmt: skip
        start = date + timedelta(minutes=5)
        rs.save_run(
            bid,
            RunResult(EXECUTOR, name, start, start + timedelta(minutes=20), "done",
                      tests=tuple(tests), link="https://ci.example/run/1"),
        )  # fmt: skip
