"""Worker hosts through Redis: a synthetic branch of N jobs (each a local executor whose one
test sleeps S seconds) run by `patchci branch --now` in-process (the baseline, no broker),
then with one and with two `patchci worker` processes (real redis-server, real
`patchci serve`), all in this run.

Prints the wall time of each, the throughput of 2 workers against 1, the enqueue -> start
latency of the jobs an idle worker took at once, and a job's round trip overhead (through
the broker, a git fetch, uploads and the result over HTTP) against the same job in-process.

    python -m bench workers [--jobs N] [--sleep S]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

from tests.workersite import Redis, Site, free_port, wait_for


def _dt(v: object) -> datetime:
    return v if isinstance(v, datetime) else datetime.fromisoformat(str(v))


def _branch(site: Site) -> float:
    t0 = time.monotonic()
    p = site.branch_now()
    out, _ = p.communicate(timeout=1800)
    if p.returncode != 0:
        raise SystemExit(f"branch --now failed ({p.returncode}):\n{out.decode(errors='replace')}")
    return time.monotonic() - t0


def _with_workers(root: Path, jobs: int, sleep: float, workers: int) -> tuple[float, list[float]]:
    root.mkdir()
    (root / "redis").mkdir()
    redis = Redis(free_port(), root / "redis")
    redis.start()
    site = Site(root, redis)
    try:
        site.write_config(sleep=sleep, executors=jobs)
        site.serve()
        for name in ("w1", "w2")[:workers]:
            site.worker(name)
            wait_for(lambda n=name: "ready" in site.log(n), f"worker {name}", 60)
        wall = _branch(site)
        rows = site.jobs()
        first = sorted(rows, key=lambda j: _dt(j["started_at"]))[:workers]
        lat = [(_dt(j["started_at"]) - _dt(j["enqueued_at"])).total_seconds() for j in first]
        return wall, lat
    finally:
        site.close()
        redis.stop()


def _in_process(root: Path, jobs: int, sleep: float) -> float:
    root.mkdir()
    site = Site(root, Redis(0, root))
    site.write_config(sleep=sleep, executors=jobs)
    text = site.cfg.read_text()
    site.cfg.write_text(text[: text.index("[broker]")])
    return _branch(site)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench workers")
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--sleep", type=float, default=2.0)
    args = ap.parse_args(argv or [])
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        base = _in_process(Path(tmp) / "inproc", args.jobs, args.sleep)
        one, lat1 = _with_workers(Path(tmp) / "one", args.jobs, args.sleep, 1)
        two, lat2 = _with_workers(Path(tmp) / "two", args.jobs, args.sleep, 2)
    n = args.jobs
    print(f"workers: {n} jobs of a {args.sleep:g} s test each (wall time of branch --now)")
    print(f"  in-process (no broker)  {base:7.1f} s  (baseline)")
    print(f"  1 worker                {one:7.1f} s  ({one / base:.2f}x the baseline)")
    print(f"  2 workers               {two:7.1f} s  ({two / base:.2f}x the baseline)")
    print(f"  throughput, 2 workers against 1: {one / two:.2f}x")
    lat = lat1 + lat2
    print(f"  enqueue -> start (idle worker): median {statistics.median(lat) * 1000:.0f} ms, "
          f"max {max(lat) * 1000:.0f} ms over {len(lat)} jobs")  # fmt: skip
    print(f"  round trip overhead per job (1 worker against in-process): "
          f"{(one - base) / n:+.2f} s")  # fmt: skip
