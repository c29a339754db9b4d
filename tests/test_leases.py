"""Several processes on one database, and processes killed with -9 (issue: hardening,
part 3), through `patchci ingest` as an operator runs it, against the Patchwork emulator.

Two daemons on one config posted 12–35 % of the checks twice and checked every series
twice; jobs of killed daemons stayed `running` forever and their worktrees stayed on disk.
Work is now claimed with a lease (a job row; SKIP LOCKED on PostgreSQL).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from patchci.db.store import Store
from patchci.devtools.pwemu import FakePatchwork
from tests.test_daemon import (
    PROJECT,
    SOURCE,
    Demo,
    Rig,
    assert_once_each,
    demo,
    emu,
    rig,
)

__all__ = ["demo", "emu", "rig"]
REPO = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path, emu: FakePatchwork, demo: Demo) -> Path:
    cfg = tmp_path / "patchci.toml"
    cfg.write_text(
        f"""
data_dir = "data"

[[sources]]
name = "{SOURCE}"
type = "patchwork"
url = "{emu.url}"
project = "{PROJECT}"
token_env = "PATCHCI_TEST_PW_TOKEN"
retries = 2
timeout = 5
poll_interval = 0.5

[[trees]]
name = "net"
path = "{demo.tree}"
branch = "net"
tags = ["net"]
checks = ["signed_off_by", "fixes_tag", "series_format"]

[[trees]]
name = "net-next"
path = "{demo.tree}"
branch = "main"
tags = ["net-next"]
paths = ["drivers/", "net/", "include/"]
checks = ["signed_off_by", "fixes_tag", "series_format"]
"""
    )
    return cfg


def _ingest(cfg: Path, emu: FakePatchwork, *args: str) -> subprocess.Popen[str]:
    exe = REPO / ".venv" / "bin" / "patchci"
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "patchci"]
    env = {**os.environ, "PATCHCI_TEST_PW_TOKEN": emu.token}
    return subprocess.Popen([*argv, "-c", str(cfg), "ingest", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def _series_patches(emu: FakePatchwork, pw_ids: list[int]) -> list[int]:
    return [pid for s in pw_ids for pid, _ in emu.series_patches(s)]


def _jobs_per_series(store: Store, kind: str) -> Counter[int]:
    return Counter(j.series_id for j in store.jobs(status="done") if j.kind == kind)


def test_two_daemons_on_one_database_check_and_post_each_series_once(
    tmp_path: Path, emu: FakePatchwork, demo: Demo
) -> None:
    pw = [emu.add_series_from_mbox(s.mbox) for s in demo.samples[:7]]
    cfg = _config(tmp_path, emu, demo)

    procs = [_ingest(cfg, emu, "--once") for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]

    assert [p.returncode for p in procs] == [0, 0], outs
    assert_once_each(emu, _series_patches(emu, pw))
    store = Store.open(f"sqlite:///{tmp_path / 'data' / 'patchci.db'}")
    try:
        checked = _jobs_per_series(store, "checks")
        assert set(checked.values()) == {1} and len(checked) == len(pw)
        assert store.jobs(status="running") == []
    finally:
        store.close()
    # The two overlapped: the second said so.
    assert any("another patchci daemon" in err for _, err in outs), outs


def test_a_dead_workers_jobs_are_taken_up_again(rig: Rig, demo: Demo) -> None:
    """Jobs of a killed daemon stayed `running` forever (30 ghosts on /status after 160
    kills), and their series were never checked or posted."""
    emu = rig.emu
    a = emu.add_series_from_mbox(demo.samples[1].mbox)
    b = emu.add_series_from_mbox(demo.samples[2].mbox)
    rig.cycle()
    # Both put back as if claimed by workers that died: one on another host whose lease
    # has ended, one a pid of this host that no longer exists (its lease still runs).
    store = rig.store
    other_host = "gone-host:1:x"
    dead_pid = f"{socket.gethostname()}:999999999:x"
    for pw_series, owner, lease in ((a, other_host, -1.0), (b, dead_pid, 3600.0)):
        sid = rig.series_id(pw_series)
        assert sid is not None
        store.set_series_state(sid, "new")
        assert store.claim_series("new", "checking", "checks", owner, lease) is not None
    assert len(store.jobs(status="running")) == 2

    rig.cycle()

    assert store.jobs(status="running") == []
    reclaimed = [j for j in store.jobs(status="error") if j.error.startswith("lease expired")]
    assert {j.worker for j in reclaimed} == {other_host, dead_pid}
    assert rig.state(a) == "reported" and rig.state(b) == "reported"
    assert_once_each(emu, rig.patch_ids(a) + rig.patch_ids(b))


def test_a_series_that_keeps_killing_its_worker_ends_in_error(rig: Rig, demo: Demo) -> None:
    emu = rig.emu
    pw = emu.add_series_from_mbox(demo.samples[1].mbox)
    rig.cycle()
    sid = rig.series_id(pw)
    assert sid is not None
    for n in range(3):
        rig.store.set_series_state(sid, "new")
        assert rig.store.claim_series("new", "checking", "checks", f"h:{n}:x", -1.0)
        rig.store.reclaim_expired({"checking": "new"})
    row = rig.store.series_row(sid)
    assert row.state == "error" and "stopped the worker 3 times" in row.state_reason


def test_stale_worktrees_are_pruned_at_start_up(
    tmp_path: Path, emu: FakePatchwork, demo: Demo
) -> None:
    """41 scratch worktrees of killed daemons stayed on disk (~1.5 GB each for a kernel)."""
    cfg = _config(tmp_path, emu, demo)
    stale = tmp_path / "data" / "logs" / "series-1" / "job-7" / "work" / "wt-x"
    stale.mkdir(parents=True)
    (stale / "big.o").write_bytes(b"\0" * 1000)

    p = _ingest(cfg, emu, "--once")
    out, err = p.communicate(timeout=120)

    assert p.returncode == 0, out + err
    assert not stale.parent.exists()
    assert (tmp_path / "data" / "logs" / "series-1" / "job-7").is_dir()  # its logs stay


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_nothing_and_posts_nothing_twice(
    tmp_path: Path, emu: FakePatchwork, demo: Demo
) -> None:
    """A small kill campaign: the daemon is killed with SIGKILL at random moments while
    series arrive and the server answers some requests with 502; then it runs to the end.
    Every check is posted once, no job is left running."""
    cfg = _config(tmp_path, emu, demo)
    rnd = random.Random(7)
    pw: list[int] = []
    for i in range(5):
        pw.append(emu.add_series_from_mbox(demo.samples[i % 7].mbox))
        emu.fail_next(2, 502, path_contains="/mbox/")
        p = _ingest(cfg, emu)
        time.sleep(rnd.uniform(0.5, 2.5))
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=30)
    emu.clear_faults()  # the faults the kills left unused
    done = _ingest(cfg, emu, "--once")
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, out + err
    time.sleep(16)  # past the in-flight grace of a POST cut by a kill (5 s + 10 s)
    last = _ingest(cfg, emu, "--once")
    out, err = last.communicate(timeout=300)
    assert last.returncode == 0, out + err

    assert_once_each(emu, _series_patches(emu, pw))
    store = open_store_for(tmp_path)
    try:
        assert store.jobs(status="running") == []
        assert {store.series_row(s.id).state for s in store.list_series()} == {"reported"}
    finally:
        store.close()


def open_store_for(tmp_path: Path) -> Store:
    return Store.open(f"sqlite:///{tmp_path / 'data' / 'patchci.db'}")
