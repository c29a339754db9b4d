"""Contest results store: migration 0002 and ResultsStore, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from patchci.analysis.flakes import flake_table
from patchci.brancher import Manifest
from patchci.db import tables
from patchci.db.migrate import alembic_config, make_engine, upgrade
from patchci.db.results import ResultsStore
from patchci.db.store import NotFound
from patchci.executor.base import CrashRef, RunResult, Subtest, TestResult, TestSpec
from patchci.executor.local import LocalExecutor
from patchci.model import Outcome
from tests.pg import db_url as db_url  # fixtures, used by name
from tests.pg import pg_server as pg_server
from tests.pg import pg_url as pg_url

T0 = datetime(2026, 8, 20, 3, 0, tzinfo=UTC)
CONTEST_TABLES = {"branches", "branch_series", "runs", "tests", "subtests", "crashes"}


def manifest(n: int, stream: str = "net-next", series: tuple[int, ...] = (1, 2)) -> Manifest:
    date = T0 + timedelta(hours=3 * n)
    return Manifest(
        name=f"{stream}-{date:%Y-%m-%d--%H-%M}",
        stream=stream,
        date=date,
        base=f"{n:040x}",
        merges={"net": "okay"},
        series=series,
        left_out=((9, "check build failed"),),
        head=f"{n + 100:040x}",
        new_changes=True,
    )


def result(
    name: str,
    outcome: Outcome,
    retry: Outcome | None = None,
    *,
    crashes: tuple[CrashRef, ...] = (),
    duration: float = 1.5,
) -> TestResult:
    return TestResult(
        group="selftests-net",
        name=name,
        outcome=outcome,
        duration=duration,
        retry_outcome=retry,
        retry_duration=2.25 if retry else None,
        subtests=(
            Subtest("a", 1, "a", Outcome.PASS, 0.5),
            Subtest("a/b", 2, "b", outcome, None, retry),
        ),
        crashes=crashes,
        log_path=f"/logs/{name}/stdout",
        retry_log_path=f"/logs/{name}-retry/stdout" if retry else None,
        reproduce=f"timeout 300 ./{name}",
    )


def run(branch: str, executor: str, *tests: TestResult, hours: int = 0) -> RunResult:
    start = T0 + timedelta(hours=hours, minutes=5)
    return RunResult(
        executor=executor,
        branch=branch,
        started=start,
        finished=start + timedelta(minutes=30),
        status="done",
        tests=tests,
        reproduce="git checkout ...",
        kernel="6.18.0-rc1",
        config="defconfig+kselftest",
        log_dir="/logs",
        link="https://ci.example/results/1",
    )


WARN = CrashRef("warning", "warning:netdev_thing:dev_do_thing", "WARNING: CPU: 0", "excerpt")
KNOWN = CrashRef("kmemleak", "kmemleak:known", "unreferenced object", "", ignored=True)


@pytest.fixture
def rs(db_url: str) -> Iterator[ResultsStore]:
    s = ResultsStore.open(db_url)
    try:
        yield s
    finally:
        s.close()


def test_migration_0002_matches_metadata_and_downgrades(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, tables.metadata) == []
            assert set(inspect(conn).get_table_names()) >= CONTEST_TABLES
            idx = {i["name"] for i in inspect(conn).get_indexes("tests")}
            assert "ix_tests_grp_name_run_id" in idx
        cfg = alembic_config()
        with engine.connect() as conn, conn.begin():
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0001")
        with engine.connect() as conn:
            assert not CONTEST_TABLES & set(inspect(conn).get_table_names())
    finally:
        engine.dispose()
    upgrade(db_url)  # and back up again


def test_branch_roundtrip_and_resave(rs: ResultsStore) -> None:
    m = manifest(0)
    bid = rs.save_branch(m)
    b = rs.branch(m.name)
    assert (b.id, b.name, b.stream, b.date, b.base, b.head) == (
        bid, m.name, "net-next", m.date, m.base, m.head
    )  # fmt: skip
    assert b.date.tzinfo is not None
    assert b.merges == {"net": "okay"} and b.new_changes
    assert b.series == (1, 2) and b.left_out == ((9, "check build failed"),)
    again = Manifest(**{**m.__dict__, "series": (1, 3), "left_out": ()})
    assert rs.save_branch(again) == bid
    b = rs.branch(m.name)
    assert b.series == (1, 3) and b.left_out == ()
    with pytest.raises(NotFound):
        rs.branch("nope")


def test_previous_branch_and_series_membership(rs: ResultsStore) -> None:
    names = [rs.save_branch(manifest(i, series=(1, 2) if i < 2 else (2,))) for i in range(3)]
    other = manifest(1, stream="net", series=(1,))
    rs.save_branch(other)
    b2 = manifest(2).name
    prev = rs.previous_branch(b2)
    assert prev is not None and prev.name == manifest(1).name and prev.id == names[1]
    assert rs.previous_branch(manifest(0).name) is None
    assert rs.branches_of_series(1) == [manifest(0).name, manifest(1).name, other.name]
    assert rs.branches_of_series(9) == []  # left out everywhere


def test_run_roundtrip(rs: ResultsStore) -> None:
    m = manifest(0)
    bid = rs.save_branch(m)
    r = run(
        m.name,
        "vmksft-net",
        result("ok-test", Outcome.PASS),
        result("flaky", Outcome.FAIL, Outcome.PASS),
        result("crashy", Outcome.CRASH, Outcome.CRASH, crashes=(WARN, KNOWN)),
    )
    rid = rs.save_run(bid, r)
    assert rs.load_run(rid) == r
    assert rs.run_tests(rid) == r.tests
    with pytest.raises(NotFound):
        rs.load_run(rid + 100)


def test_start_then_finish_run(rs: ResultsStore) -> None:
    m = manifest(0)
    bid = rs.save_branch(m)
    rid = rs.start_run(bid, "exec", T0, reproduce="make", log_dir="/l")
    (row,) = rs.branch_runs(m.name)
    assert (row.status, row.tests, row.failures, row.finished_at) == ("running", 0, 0, None)
    done = run(m.name, "exec", result("a", Outcome.PASS), result("b", Outcome.FAIL, Outcome.FAIL))
    rs.finish_run(rid, done)
    (row,) = rs.branch_runs(m.name)
    assert (row.id, row.status, row.tests, row.failures) == (rid, "done", 2, 1)
    assert rs.load_run(rid) == done
    with pytest.raises(ValueError, match="status"):
        rs.finish_run(rid, RunResult("exec", m.name, T0, None, "weird"))


def test_branch_runs_counts_and_error_runs(rs: ResultsStore) -> None:
    m = manifest(0)
    bid = rs.save_branch(m)
    rs.save_run(bid, run(m.name, "a", result("x", Outcome.FAIL, Outcome.PASS)))
    broken = RunResult("b", m.name, T0, T0, "error", "build of branch failed (exit 2)")
    rs.save_run(bid, broken)
    rows = {r.executor: r for r in rs.branch_runs(m.name)}
    assert (rows["a"].tests, rows["a"].failures) == (1, 0)  # passed on retry
    assert (rows["b"].status, rows["b"].error, rows["b"].tests) == ("error", broken.error, 0)
    assert {r.executor for r in rs.branch_results(m.name)} == {"a", "b"}


def test_last_results_newest_first_per_executor(rs: ResultsStore) -> None:
    outcomes = [Outcome.PASS, Outcome.FAIL, Outcome.PASS, Outcome.CRASH]
    for i, o in enumerate(outcomes):
        m = manifest(i)
        bid = rs.save_branch(m)
        crashes = (WARN,) if o is Outcome.CRASH else ()
        rs.save_run(bid, run(m.name, "vm", result("t", o, crashes=crashes), hours=3 * i))
        rs.save_run(bid, run(m.name, "hw", result("t", Outcome.SKIP), hours=3 * i))
    hist = rs.last_results("selftests-net", "t", n=3, executor="vm")
    assert [h.outcome for h in hist] == [Outcome.CRASH, Outcome.PASS, Outcome.FAIL]
    assert [h.branch for h in hist] == [manifest(i).name for i in (3, 2, 1)]
    assert hist[0].crashes == (WARN.fingerprint,) and hist[0].crashed and not hist[1].crashed
    assert {h.executor for h in rs.last_results("selftests-net", "t", n=10)} == {"vm", "hw"}
    assert len(rs.last_results("selftests-net", "t", n=10)) == 8
    assert rs.last_results("selftests-net", "other") == []


def test_history_oldest_first_limited_to_recent_branches(rs: ResultsStore) -> None:
    for i in range(4):
        m = manifest(i)
        rs.save_run(rs.save_branch(m), run(m.name, "vm", result("t", Outcome.PASS), hours=3 * i))
    m = manifest(9, stream="net")
    rs.save_run(rs.save_branch(m), run(m.name, "vm", result("t", Outcome.FAIL)))
    hist = rs.history(stream="net-next", branches=2)
    assert [h.branch for h in hist] == [manifest(2).name, manifest(3).name]
    assert len(rs.history(branches=100)) == 5
    assert rs.history(executor="other") == []


def test_flaky_candidates(rs: ResultsStore) -> None:
    for i in range(3):
        m = manifest(i)
        rs.save_run(
            rs.save_branch(m),
            run(
                m.name,
                "vm",
                result("flaky", Outcome.FAIL if i else Outcome.PASS, Outcome.PASS if i else None),
                result("crash-then-ok", Outcome.CRASH, Outcome.PASS, crashes=(WARN,)),
                result("known-leak", Outcome.FAIL, Outcome.PASS, crashes=(KNOWN,)),
                result("solid", Outcome.PASS),
                result("broken", Outcome.FAIL, Outcome.FAIL),
            ),
        )
    rows = rs.flaky_candidates()
    assert [(r.name, r.flakes, r.results) for r in rows] == [
        ("known-leak", 3, 3),  # an ignored crash does not disqualify a flake
        ("flaky", 2, 3),
    ]
    assert rows[1].last_flake == manifest(2).date
    assert rs.flaky_candidates(executor="hw") == []
    since = rs.flaky_candidates(since=manifest(2).date)
    assert [(r.name, r.flakes) for r in since] == [("flaky", 1), ("known-leak", 1)]


def test_durations_from_latest_done_run(rs: ResultsStore) -> None:
    m = manifest(0)
    bid = rs.save_branch(m)
    rs.save_run(bid, run(m.name, "vm", result("a", Outcome.PASS, duration=9.0)))
    rs.save_run(bid, run(m.name, "vm", result("a", Outcome.PASS, duration=4.0), hours=1))
    assert rs.durations("vm") == {("selftests-net", "a"): 4.0}
    assert rs.durations("nobody") == {}


def test_local_run_stored_and_analysed(rs: ResultsStore, tmp_path: Path) -> None:
    """A real LocalExecutor run goes into the store and out again as flake signals."""
    script = tmp_path / "flaky.sh"
    script.write_text(
        '#!/bin/sh\nn=$(cat "$0.n" 2>/dev/null || echo 0); echo $((n + 1)) > "$0.n"\n'
        'echo "TAP version 13"; echo 1..1\n'
        'if [ "$n" = 0 ]; then echo "not ok 1 race"; else echo "ok 1 race"; fi\n'
    )
    script.chmod(0o755)
    spec = TestSpec("g", "flaky", (str(script),), 10)
    for i in range(2):
        m = manifest(i)
        run_ = LocalExecutor("local").run(m.name, tmp_path, [spec], tmp_path / f"out{i}")
        rid = rs.save_run(rs.save_branch(m), run_)
        assert rs.load_run(rid) == run_
    table = flake_table(((h.executor, h.grp, h.name), h) for h in rs.history())
    sig = table[("local", "g", "flaky")]
    assert (sig.results, sig.retry_flakes, sig.streak_state) == (2, 1, "pass")
    assert [(r.name, r.flakes, r.results) for r in rs.flaky_candidates()] == [("flaky", 1, 2)]
    assert rs.durations("local").keys() == {("g", "flaky")}
