"""The benchmarks still run (tiny sizes): a benchmark that rots is found here, not when
someone needs its numbers. No timing is asserted; `python -m bench` reports those."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from bench import parsers, scaling, web

from tests.pg import require_pg_bin

ROW = re.compile(r"^  (?P<name>.+?)\s+p50\s+[\d.]+ ms\s+p95\s+[\d.]+ ms\s+\(\s*[\d.]+x tiny-DB")


def test_web_bench_measures_every_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    require_pg_bin()
    web.main(["--subtests", "8000", "--branches", "20", "--executors", "4", "--tests", "10",
              "--series", "50", "--flake-branches", "10", "-n", "2"])  # fmt: skip
    out = capsys.readouterr().out
    assert "filled 8,000 subtests (800 tests" in out
    assert "flakes matrix derived from the 800 tests" in out
    names = [m["name"] for line in out.splitlines() if (m := ROW.match(line))]
    assert names == [
        "flakes matrix (10 branches)",
        "contest log, outcome=fail",
        "contest log, executor+grp",
        "series page",
        "contest log, subtests, outcome=fail",
        "test history (flaky test)",
        "status page",
    ]


def test_parser_bench_reports_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    parsers.main()
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == ["ktap.parse_lines", "crash.detect"]
    assert all(re.search(r"[\d,]+ lines/s \([\d.]+x of a regex scan", ln) for ln in lines)


def test_scaling_bench_covers_every_parser(capsys: pytest.CaptureFixture[str]) -> None:
    scaling.main((0.01, 0.02))
    rows = [ln.split()[0] for ln in capsys.readouterr().out.splitlines()[1:]]
    assert rows == [name for name in scaling.PARSERS for _ in range(2)]


def test_worktrees_bench_reports_ratios(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench import worktrees

    from tests.gitrepo import make_repo

    make_repo(tmp_path / "tree", {f"net/f{i}.c": f"int f{i};\n" for i in range(3)})
    worktrees.main(["--tree", str(tmp_path / "tree"), "--series", "3"])
    out = capsys.readouterr().out
    assert "3-file tree, 3 series" in out
    labels = ["raw git am (floor)", "patchci, kept worktree", "patchci, fresh worktree"]
    for label in labels:
        assert re.search(rf"{re.escape(label)}\s+\d+ ms\s+\(\s*[\d.]+x raw", out), out


def test_latency_bench_measures_with_and_without_a_branch_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bench import latency

    latency.main(["--series", "1", "--poll", "0.5"])
    out = capsys.readouterr().out
    for label in ("no branch run", "branch run in progress"):
        assert re.search(rf"{label}\s+median\s+[\d.]+ s\s+max\s+[\d.]+ s", out), out


def test_verdicts_bench_blames_only_with_evidence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A small history through the real daemon: culprits planted by the seed are found,
    no series is blamed for a test that only a planted marker can break unless it planted
    it, and no infrastructure fault is ever anyone's."""
    from bench import verdicts

    t = verdicts.simulate(14, seed=3, work=tmp_path, culprit_rate=0.3)
    assert t.truth >= 3, "the seed plants culprits"
    assert t.found >= 1
    assert t.infra_blamed == 0
    deterministic = [w for w in t.wrong if not any(f in w for f in verdicts.FLAKY)]
    assert deterministic == []
    verdicts.main(["--branches", "3", "--seed", "1"])
    out = capsys.readouterr().out
    assert "verdicts: 3 branches" in out and "precision" in out and "baseline" in out


def test_ktap_bench_compares_with_kunit_parser(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import ktap as ktap_bench

    ktap_bench.main(["--lines", "3000", "--repeat", "1"])
    out = capsys.readouterr().out
    assert re.search(r"KUnit output, 3,0\d\d lines, [\d,]+ tests \(both parsers agree\)", out)
    for row in ("patchci tree", "patchci streaming"):
        assert re.search(rf"{row}\s+[\d.]+ s CPU\s+[\d.]+x kunit_parser", out), out
    assert re.search(r"streaming \d+ KB \(target < 50 MB\)", out)
    assert "kselftest runner output" in out


def test_workers_bench_reports_each_mode(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import workers

    workers.main(["--jobs", "2", "--sleep", "0"])
    out = capsys.readouterr().out
    for what in ("in-process (no broker)", "1 worker ", "2 workers ",
                 "throughput, 2 workers against 1:", "enqueue -> start", "round trip overhead"):  # fmt: skip
        assert what in out, out
