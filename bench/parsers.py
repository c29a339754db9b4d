"""Parser throughput: KTAP and crash detection on the largest real fixtures, as lines/s,
with a ratio against a baseline measured in the same run (one regex scan over the same
lines: the least any line-oriented parser must do)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from patchci import crash, ktap

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
RESULT_RE = re.compile(r"^\s*(not ok|ok) (\d+)")


def _rate(fn: Callable[[list[str]], object], lines: list[str], min_time: float = 1.0) -> float:
    n = 0
    start = time.perf_counter()
    while True:
        fn(lines)
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return n * len(lines) / elapsed


def _baseline(lines: list[str]) -> int:
    return sum(1 for ln in lines if RESULT_RE.match(ln))


def _largest(pattern: str) -> Path:
    return max(DATA.glob(pattern), key=lambda p: p.stat().st_size)


def main() -> None:
    tap = _largest("ktap/*.tap")
    tap_lines = tap.read_text(errors="replace").splitlines() * 50
    console = _largest("console/*.log")
    con_lines = console.read_text(errors="replace").splitlines() * 20
    base_tap = _rate(_baseline, tap_lines)
    base_con = _rate(_baseline, con_lines)
    k = _rate(ktap.parse_lines, tap_lines)
    c = _rate(crash.detect, con_lines)
    print(
        f"ktap.parse_lines  {tap.name}: {k:,.0f} lines/s "
        f"({k / base_tap:.2f}x of a regex scan at {base_tap:,.0f} lines/s)"
    )
    print(
        f"crash.detect      {console.name}: {c:,.0f} lines/s "
        f"({c / base_con:.2f}x of a regex scan at {base_con:,.0f} lines/s)"
    )
