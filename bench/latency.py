"""Time from a series completing on Patchwork to its first check posted, while a branch
run is in progress (the contest thread) and while none is (the baseline, same run).

The real daemon (`patchci ingest`, a subprocess) polls the Patchwork emulator every
`--poll` seconds (10 by default, the target being a median <= 30 s); the branch's test
waits until the bench ends, so the run lasts the whole measurement.

    python -m bench latency [--series N] [--poll SECONDS]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import dropwhile
from pathlib import Path

from patchci.devtools.pwemu import FakePatchwork
from patchci.git import Git

SOB = "Signed-off-by: Bench <bench@example.com>"
TESTS = "tools/testing/selftests/net"


def _tree(root: Path, mark: Path) -> Git:
    git = Git.init(root)
    (root / "net").mkdir()
    (root / "net" / "core.c").write_text("int core;\n")
    test = root / TESTS / "wait.sh"
    test.parent.mkdir(parents=True)
    test.write_text(f'#!/bin/sh\nwhile [ -e {mark} ]; do sleep 0.5; done\necho "TAP version 13"\n'
                    'echo "1..1"\necho "ok 1 waited"\n')  # fmt: skip
    test.chmod(0o755)
    git.add_all()
    git.commit("net: import\n\n" + SOB)
    return git


def _mail(git: Git, i: int) -> list[bytes]:
    (git.repo / "net" / f"f{i}.c").write_text(f"int f{i};\n")
    git.add_all()
    git.commit(f"net: add f{i}\n\n{SOB}")
    raw = git.run("format-patch", "--stdout", "-1", "HEAD", "--subject-prefix=PATCH net-next")
    git.run("reset", "--quiet", "--hard", "HEAD~1")
    return [raw.stdout.encode()]


def _config(root: Path, emu: FakePatchwork, git: Git, poll: float, streams: bool) -> Path:
    cfg = root / ("with-run.toml" if streams else "no-run.toml")
    data = root / ("data-run" if streams else "data-idle")
    stream = (f'[[streams]]\nname = "nn"\ntree = "net-next"\ntests_dir = "{TESTS}"\n'
              "every_hours = 1\nretries = 0\n") if streams else ""  # fmt: skip
    cfg.write_text(
        f'data_dir = "{data}"\n[[sources]]\nname = "pw"\ntype = "patchwork"\n'
        f'url = "{emu.url}"\nproject = "bench"\ntoken_env = "BENCH_PW_TOKEN"\n'
        f'poll_interval = {poll}\n[[trees]]\nname = "net-next"\npath = "{git.repo}"\n'
        'branch = "main"\ntags = ["net-next"]\nchecks = ["signed_off_by"]\n' + stream
    )
    return cfg


def _measure(cfg: Path, emu: FakePatchwork, git: Git, n: int, first: int, wait_run: bool,
             db: Path) -> list[float]:  # fmt: skip
    exe = Path(sys.executable).parent / "patchci"
    env = {**os.environ, "BENCH_PW_TOKEN": emu.token}
    daemon = subprocess.Popen([str(exe), "-c", str(cfg), "ingest"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        if wait_run:
            t0 = time.monotonic()
            while not _running(db) and time.monotonic() - t0 < 300:
                time.sleep(0.5)
            if not _running(db):
                raise SystemExit("latency bench: the branch run never started")
        out = []
        for i in range(first, first + n):
            pw = emu.add_series_from_mbox(_mail(git, i))
            (pid,) = [p for p, _ in emu.series_patches(pw)]
            t0 = time.monotonic()
            while not emu.checks_for(pid):
                if time.monotonic() - t0 > 300:
                    raise SystemExit(f"latency bench: series {i} never got a check")
                time.sleep(0.1)
            out.append(time.monotonic() - t0)
        if wait_run and not _running(db):
            raise SystemExit("latency bench: the branch run ended during the measurement")
        return out
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)


def _running(db: Path) -> bool:
    import sqlite3

    if not db.exists():
        return False
    try:
        with sqlite3.connect(db) as conn:
            return (
                conn.execute("select 1 from runs where status = 'running'").fetchone() is not None
            )
    except sqlite3.Error:
        return False


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench latency")
    ap.add_argument("--series", type=int, default=5)
    ap.add_argument("--poll", type=float, default=10.0)
    if argv is None:
        argv = list(dropwhile(lambda x: not x.startswith("-"), sys.argv[1:]))
    a = ap.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="bench-latency-") as t,
        FakePatchwork(project="bench", project_name="Bench") as emu,
    ):
        root = Path(t)
        mark = root / "hold"
        mark.touch()
        git = _tree(root / "tree", mark)
        emu.add_series_from_mbox(_mail(git, 0))  # the series the branch run takes
        idle = _measure(_config(root, emu, git, a.poll, False), emu, git, a.series, 1, False,
                        root / "data-idle" / "patchci.db")  # fmt: skip
        busy = _measure(_config(root, emu, git, a.poll, True), emu, git, a.series,
                        1 + a.series, True, root / "data-run" / "patchci.db")  # fmt: skip
        mark.unlink()
    base = statistics.median(idle)
    print(f"series completed -> first check posted, poll every {a.poll:g} s, {a.series} series:")
    for label, xs in (("no branch run", idle), ("branch run in progress", busy)):
        med = statistics.median(xs)
        print(f"  {label:<24} median {med:5.1f} s  max {max(xs):5.1f} s  "
              f"({med / max(base, 1e-3):4.2f}x no-run)")  # fmt: skip
