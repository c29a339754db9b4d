"""The derived flakes matrix (db/matrix.py), kept by ResultsStore, on SQLite and PostgreSQL:
what it holds always equals a rebuild from the source tables."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta

from alembic import command
from sqlalchemy import select

from patchci.db import matrix
from patchci.db import tables as t
from patchci.db.migrate import alembic_config, make_engine
from patchci.db.results import ResultsStore
from patchci.model import Outcome
from tests.pg import db_url as db_url  # fixtures, used by name
from tests.pg import pg_server as pg_server
from tests.pg import pg_url as pg_url
from tests.test_results_db import KNOWN, WARN, manifest, result, run
from tests.test_results_db import rs as rs

P, F, S = Outcome.PASS, Outcome.FAIL, Outcome.SKIP


def table(rs: ResultsStore) -> dict[tuple[str, str, str, str], str]:
    mc = t.test_matrix.c
    with rs.engine.connect() as conn:
        rows = conn.execute(select(mc.stream, mc.executor, mc.grp, mc.name, mc.codes))
        return {(r.stream, r.executor, r.grp, r.name): r.codes for r in rows}


def rebuilt(rs: ResultsStore) -> dict[tuple[str, str, str, str], str]:
    """What a rebuild from the source tables gives, on a throw-away transaction."""
    with rs.engine.connect() as conn:
        tx = conn.begin()
        matrix.rebuild(conn)
        mc = t.test_matrix.c
        rows = conn.execute(select(mc.stream, mc.executor, mc.grp, mc.name, mc.codes)).all()
        tx.rollback()
    return {(r.stream, r.executor, r.grp, r.name): r.codes for r in rows}


def codes(rs: ResultsStore, name: str, executor: str = "vm1", stream: str = "net-next") -> str:
    return table(rs)[(stream, executor, "selftests-net", name)]


def test_codes_per_branch(rs: ResultsStore) -> None:
    b = [rs.save_branch(manifest(i)) for i in range(3)]
    rs.save_run(b[0], run(manifest(0).name, "vm1", result("a.sh", P), result("b.sh", F, F)))
    rs.save_run(b[2], run(manifest(2).name, "vm1", result("a.sh", F, P), result("b.sh", S)))
    rs.save_run(b[1], run(manifest(1).name, "vm1", result("a.sh", Outcome.TIMEOUT)))
    rs.save_run(b[1], run(manifest(1).name, "vm2", result("a.sh", F, P, crashes=(WARN,))))
    rs.save_run(b[2], run(manifest(2).name, "vm2", result("a.sh", F, P, crashes=(KNOWN,))))
    assert codes(rs, "a.sh") == "ptk"  # pass, timeout, fail-then-pass on retry
    assert codes(rs, "b.sh") == "f.s"  # not run on the middle branch
    assert codes(rs, "a.sh", "vm2") == ".ck"  # a crash is no flake; an ignored one is
    assert table(rs) == rebuilt(rs)


def test_last_recorded_run_of_a_branch_wins_and_a_rerun_replaces(rs: ResultsStore) -> None:
    bid = rs.save_branch(manifest(0))
    name = manifest(0).name
    rs.save_run(bid, run(name, "vm1", result("a.sh", F, F), result("b.sh", P)))
    rs.save_run(bid, run(name, "vm1", result("a.sh", P)))
    assert codes(rs, "a.sh") == "p"
    assert table(rs) == rebuilt(rs)
    rid = rs.start_run(bid, "vm1", run(name, "vm1").started)
    rs.finish_run(rid, replace(run(name, "vm1", result("a.sh", S)), status="error"))
    assert codes(rs, "a.sh") == "s" and table(rs) == rebuilt(rs)


def test_a_branch_arriving_out_of_order_renumbers(rs: ResultsStore) -> None:
    for i in (0, 2):
        bid = rs.save_branch(manifest(i))
        rs.save_run(bid, run(manifest(i).name, "vm1", result("a.sh", P if i else F, F)))
    late = rs.save_branch(manifest(1))  # dated between the two
    rs.save_run(late, run(manifest(1).name, "vm1", result("a.sh", S)))
    assert codes(rs, "a.sh") == "fsp"
    with rs.engine.connect() as conn:
        seqs = conn.execute(select(t.branches.c.name, t.branches.c.seq)).all()
    assert sorted(seqs) == [(manifest(i).name, i + 1) for i in range(3)]
    moved = replace(manifest(0), date=manifest(2).date + timedelta(hours=1))
    rs.save_branch(moved)  # re-saved with a later date: now the newest
    assert codes(rs, "a.sh") == "spf"
    other = replace(manifest(1), stream="net")
    rs.save_branch(other)  # moved to another stream
    assert codes(rs, "a.sh") == "pf" and codes(rs, "a.sh", stream="net") == "s"
    assert table(rs) == rebuilt(rs)


def test_streams_are_apart(rs: ResultsStore) -> None:
    for stream, outcome in (("net-next", P), ("net", F)):
        bid = rs.save_branch(manifest(0, stream))
        rs.save_run(bid, run(manifest(0, stream).name, "vm1", result("a.sh", outcome, outcome)))
    assert codes(rs, "a.sh") == "p" and codes(rs, "a.sh", stream="net") == "f"


def test_incremental_upkeep_equals_a_rebuild(rs: ResultsStore) -> None:
    """Random branches (some out of order), runs, re-runs and crashes: after each step the
    table is what a rebuild from the source tables gives."""
    rnd = random.Random(7)
    outcomes = [P, P, P, F, S, Outcome.TIMEOUT, Outcome.ERROR, Outcome.XFAIL]
    saved: list[int] = []
    for step in range(30):
        if not saved or rnd.random() < 0.3:
            m = manifest(rnd.randrange(40), rnd.choice(["net-next", "net"]))
            saved.append(rs.save_branch(m))
            continue
        bid = rnd.choice(saved)
        with rs.engine.connect() as conn:
            name = conn.execute(
                select(t.branches.c.name).where(t.branches.c.id == bid)
            ).scalar_one()
        tests = [
            result(
                f"t{j}.sh",
                o,
                rnd.choice([None, P, F]),
                crashes=(WARN,) if rnd.random() < 0.1 else (),
            )
            for j in rnd.sample(range(6), rnd.randrange(0, 5))
            for o in [rnd.choice(outcomes)]
        ]
        rs.save_run(bid, run(name, rnd.choice(["vm1", "vm2"]), *tests))
        assert table(rs) == rebuilt(rs), f"step {step}"
    assert len(table(rs)) > 4  # the steps did record results


def test_window(rs: ResultsStore) -> None:
    for i in range(5):
        bid = rs.save_branch(manifest(i))
        tests = [result("a.sh", P), result("b.sh", F, P)] if i != 3 else [result("a.sh", F, F)]
        rs.save_run(bid, run(manifest(i).name, "vm1", *tests))
    other = rs.save_branch(manifest(0, "net"))
    rs.save_run(other, run(manifest(0, "net").name, "vm1", result("c.sh", P)))
    with rs.engine.connect() as conn:
        w = matrix.window(conn, "net-next", 3)
        assert w.branches == [manifest(i).name for i in (4, 3, 2)]
        assert sorted(w.rows) == [
            ("vm1", "selftests-net", "a.sh", "pfp"),
            ("vm1", "selftests-net", "b.sh", "k.k"),
        ]
        only_a = matrix.window(conn, "net-next", 1, name="A.S")
        assert [r[2:] for r in only_a.rows] == [("a.sh", "p")]
        assert matrix.window(conn, "net-next", 5, executor="vm2").rows == []
        assert matrix.window(conn, "net-next", 5, grp="other").rows == []
        newest = matrix.window(conn, None, 10)  # the stream of the newest branch
        assert newest.stream == "net-next" and len(newest.branches) == 5
        assert matrix.window(conn, "no-such-stream", 10).branches == []


def test_migration_builds_the_matrix_from_existing_results(db_url: str) -> None:
    rs = ResultsStore.open(db_url)
    try:
        for i in range(3):
            bid = rs.save_branch(manifest(i))
            rs.save_run(bid, run(manifest(i).name, "vm1", result("a.sh", [P, F, S][i], F)))
        before = table(rs)
        assert before == {("net-next", "vm1", "selftests-net", "a.sh"): "pfs"}
    finally:
        rs.close()
    engine = make_engine(db_url)
    cfg = alembic_config()
    try:
        for target in ("0002", "head"):
            with engine.connect() as conn, conn.begin():
                cfg.attributes["connection"] = conn
                (command.downgrade if target == "0002" else command.upgrade)(cfg, target)
    finally:
        engine.dispose()
    rs = ResultsStore.open(db_url)
    try:
        assert table(rs) == before
    finally:
        rs.close()
