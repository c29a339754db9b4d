"""Kill campaign: `patchci ingest` killed with SIGKILL at random moments, sometimes two
daemons at once, while the Patchwork emulator injects 5xx (before and after a check is
stored), delays past the client's timeout and drops; then the daemon runs to the end.

    python -m bench faults [--kills 200] [--seed 1]

Printed: kills, rounds with two daemons, series, checks expected / posted / duplicated /
missing, jobs left running, worktrees left on disk. Expected checks come from a reference
run in the same process: the same samples through one undisturbed daemon (the baseline).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from patchci.db.store import Store
from patchci.demo.series import build_samples
from patchci.demo.tree import build_tree
from patchci.devtools.pwemu import FakePatchwork

REPO = Path(__file__).resolve().parents[1]
PROJECT = "demo"
TOKEN_ENV = "PATCHCI_BENCH_PW_TOKEN"
GRACE = 2 + 10 + 2  # a POST cut by a kill is re-checked after the client timeout + 10 s


def _config(root: Path, url: str, tree: Path) -> Path:
    cfg = root / "patchci.toml"
    cfg.write_text(f"""
data_dir = "data"

[[sources]]
name = "pw"
type = "patchwork"
url = "{url}"
project = "{PROJECT}"
token_env = "{TOKEN_ENV}"
retries = 2
timeout = 2
poll_interval = 0.3

[[trees]]
name = "net"
path = "{tree}"
branch = "net"
tags = ["net"]
checks = ["signed_off_by", "fixes_tag", "series_format"]

[[trees]]
name = "net-next"
path = "{tree}"
branch = "main"
tags = ["net-next"]
paths = ["drivers/", "net/", "include/"]
checks = ["signed_off_by", "fixes_tag", "series_format"]
""")
    return cfg


def _argv(cfg: Path, *args: str) -> list[str]:
    exe = REPO / ".venv" / "bin" / "patchci"
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "patchci"]
    return [*argv, "-c", str(cfg), "ingest", *args]


def _ingest(cfg: Path, token: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(_argv(cfg), env={**os.environ, TOKEN_ENV: token},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def _finish(cfg: Path, token: str) -> None:
    """Run to the end: once, past the in-flight grace, and once more."""
    for _ in range(2):
        subprocess.run(_argv(cfg, "--once"), env={**os.environ, TOKEN_ENV: token},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600,
                       check=False)  # fmt: skip
        time.sleep(GRACE)


def _posted(emu: FakePatchwork, pw_series: Sequence[int]) -> list[Counter[tuple[int, str]]]:
    """Per series: (patch position, context) -> times posted."""
    out = []
    for s in pw_series:
        c: Counter[tuple[int, str]] = Counter()
        for pos, (pid, _) in enumerate(emu.series_patches(s)):
            for check in emu.checks_for(pid):
                c[(pos, check.context)] += 1
        out.append(c)
    return out


def _fault(emu: FakePatchwork, rnd: random.Random) -> str:
    kind = rnd.choice(["5xx-get", "5xx-post", "after-post", "delay", "delay-post", "none"])
    status = rnd.choice([500, 502, 503, 504])
    if kind == "5xx-get":
        emu.fail_next(rnd.randint(1, 3), status, method="GET")
    elif kind == "5xx-post":
        emu.fail_next(rnd.randint(1, 2), status, method="POST")
    elif kind == "after-post":
        emu.fail_next(1, 502, method="POST", after=True)  # stored, then a 502
    elif kind == "delay":
        emu.delay_next(1, rnd.uniform(1, 4), method="GET")
    elif kind == "delay-post":
        emu.delay_next(1, rnd.uniform(1, 4), method="POST")  # past the 2 s client timeout
    return kind


def _leftovers(data: Path) -> tuple[int, int, set[str]]:
    store = Store.open(f"sqlite:///{data / 'patchci.db'}")
    try:
        running = len(store.jobs(status="running"))
        states = {store.series_row(s.id).state for s in store.list_series(limit=100000)}
    finally:
        store.close()
    scratch = data / "worktrees"
    wts = sum(1 for p in scratch.glob("*/*") if p.is_dir()) if scratch.exists() else 0
    return running, wts, states


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench faults")
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    args, _ = ap.parse_known_args(argv)
    rnd = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="patchci-bench-faults-") as tmp:
        root = Path(tmp)
        git = build_tree(root / "tree")
        samples = build_samples(git)
        # the baseline: every sample once, one daemon, no fault
        with FakePatchwork(project=PROJECT, project_name="Demo") as ref:
            (root / "ref").mkdir()
            cfg = _config(root / "ref", ref.url, Path(git.repo))
            ref_ids = [ref.add_series_from_mbox(s.mbox) for s in samples]
            _finish(cfg, ref.token)
            expected_of = _posted(ref, ref_ids)
        with FakePatchwork(project=PROJECT, project_name="Demo") as emu:
            (root / "run").mkdir()
            cfg = _config(root / "run", emu.url, Path(git.repo))
            pw: list[tuple[int, int]] = []  # (sample index, series id)
            two = 0
            faults: Counter[str] = Counter()
            t0 = time.monotonic()
            for k in range(args.kills):
                i = k % len(samples)
                pw.append((i, emu.add_series_from_mbox(samples[i].mbox)))
                faults[_fault(emu, rnd)] += 1
                procs = [_ingest(cfg, emu.token)]
                if rnd.random() < 0.15:
                    procs.append(_ingest(cfg, emu.token))
                    two += 1
                time.sleep(rnd.uniform(0.2, 3.0))
                for p in procs:
                    p.send_signal(signal.SIGKILL)
                    p.wait(timeout=30)
            emu.clear_faults()
            _finish(cfg, emu.token)
            elapsed = time.monotonic() - t0
            got = _posted(emu, [s for _, s in pw])
        expected = posted = dup = missing = 0
        for (i, _), have in zip(pw, got, strict=True):
            want = expected_of[i]
            expected += sum(want.values())
            posted += sum(min(have[k], 1) for k in want)
            dup += sum(n - 1 for n in have.values() if n > 1)
            missing += sum(1 for k in want if not have[k])
        running, wts, states = _leftovers(root / "run" / "data")
        print(f"kill campaign: {args.kills} kills (seed {args.seed}), {two} rounds with two "
              f"daemons, {len(pw)} series, {elapsed:.0f} s")  # fmt: skip
        print(f"  faults injected: {dict(sorted(faults.items()))}")
        print(f"  checks expected {expected}, posted {posted}, duplicated {dup}, "
              f"missing {missing}")  # fmt: skip
        print(f"  jobs left running {running}, worktrees on disk {wts} (kept: one per check "
              f"worker and tree), series states "
              f"{sorted(states)}")  # fmt: skip
