"""Storage faults are ours, and recoverable (issue: hardening, part 4).

Real faults, not mocks: a tmpfs of a few KB for the log directory (a full disk), and a
tmpfs remounted read-only under the database. Needs root for mount(8), which `make test`
and CI have.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from patchci.daemon import run_cycle
from patchci.devtools.pwemu import FakePatchwork
from patchci.model import RETRY
from tests.prereq import unavailable
from tests.test_daemon import NET_FIX, NO_SOB, SOURCE, Demo, Rig, demo, emu, rig
from tests.test_leases import _config, _ingest

__all__ = ["demo", "emu", "rig"]


@contextlib.contextmanager
def _tmpfs(mnt: Path, size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        unavailable("mounting a tmpfs needs root")
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with _tmpfs(tmp_path / "small", "256k") as mnt:
        yield mnt


@pytest.fixture
def db_fs(tmp_path: Path) -> Iterator[Path]:
    with _tmpfs(tmp_path / "dbfs", "64m") as mnt:
        yield mnt


def _fill(fs: Path) -> Path:
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass  # ENOSPC: full
    finally:
        os.close(fd)
    return filler


def _cycle_at(rig: Rig, minutes: float) -> dict[str, int]:
    now = datetime.now(UTC) + timedelta(minutes=minutes)
    return run_cycle(rig.store, rig.settings, {SOURCE: rig.client}, now=now)


def test_a_full_log_directory_is_ours_pending_and_retried(
    rig: Rig, demo: Demo, small_fs: Path
) -> None:
    """A full log directory put 21 of 28 series in `error` for good: never retried,
    nothing posted, not even `pending`."""
    logs = rig.settings.data_path / "logs"
    logs.parent.mkdir(parents=True, exist_ok=True)
    logs.symlink_to(small_fs, target_is_directory=True)
    filler = _fill(small_fs)
    emu = rig.emu
    pw = emu.add_series_from_mbox(demo.samples[NO_SOB].mbox)

    stats = _cycle_at(rig, 0)

    assert stats["checked"] == 1
    assert rig.state(pw) == RETRY
    (pid,) = rig.patch_ids(pw)
    states = {c.context: c.state for c in emu.checks_for(pid)}
    assert states == {"apply": "pending"}, states  # ours: pending, never fail
    desc = emu.checks_for(pid)[0].description or ""
    assert "no space left" in desc and "checked again" in desc

    assert _cycle_at(rig, 1)["checked"] == 0  # the back-off: not yet
    filler.unlink()  # space is back
    _cycle_at(rig, 6)

    sid = rig.series_id(pw)
    assert sid is not None
    assert rig.state(pw) == "reported", rig.store.series_row(sid).state_reason
    latest = {c.context: c.state for c in emu.checks_for(pid)}  # newest per context last
    assert latest["signed_off_by"] == "fail" and latest["apply"] == "success"


def test_a_read_only_database_is_one_line_and_the_daemon_recovers(
    tmp_path: Path, emu: FakePatchwork, demo: Demo, db_fs: Path
) -> None:
    """A read-only database made the daemon exit 1 with a raw traceback."""
    cfg = _config(tmp_path, emu, demo)
    cfg.write_text(cfg.read_text().replace('data_dir = "data"', f'data_dir = "{db_fs}"'))
    first = _ingest(cfg, emu, "--once")
    assert first.wait(timeout=120) == 0
    emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)
    subprocess.run(["mount", "-o", "remount,ro", str(db_fs)], check=True)
    try:
        p = _ingest(cfg, emu, "--once")
        out, err = p.communicate(timeout=120)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(db_fs)], check=True)

    assert p.returncode == 2, out + err
    assert "Traceback" not in err
    assert err.startswith("patchci: database error: ") and err.count("\n") == 1
    assert "permissions" in err
    again = _ingest(cfg, emu, "--once")
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, out + err
    assert "1 new series, 1 checked" in out
