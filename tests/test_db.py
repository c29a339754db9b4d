"""Storage layer: migrations, Store queries; every test body runs on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Table, func, inspect, select
from sqlalchemy.exc import IntegrityError

from patchci.db import tables
from patchci.db.migrate import (
    MIGRATIONS_DIR,
    alembic_config,
    current,
    head_revision,
    make_engine,
    normalise_url,
    upgrade,
)
from patchci.db.store import NotFound, Store
from patchci.errors import ConfigError
from patchci.model import CheckResult, Outcome, Patch, Person, Series
from patchci.subject import parse_subject
from tests import pg
from tests.pg import db_url as db_url  # fixtures, used by name
from tests.pg import pg_server as pg_server
from tests.pg import pg_url as pg_url

CEST = timezone(timedelta(hours=2))
ALICE = Person("Alice Dev", "alice@example.org")


def make_patch(n: int, total: int, *, raw: bytes | None = None, series_key: str = "s1") -> Patch:
    subject = f"[PATCH net-next v2 {n}/{total}] net: change number {n}"
    msgid = f"<{series_key}-{n}@example.org>"
    return Patch(
        msgid=msgid,
        subject=subject,
        author=ALICE,
        date=datetime(2024, 3, 1, 12, n, tzinfo=CEST),
        info=parse_subject(subject),
        raw=raw if raw is not None else f"From: a\nSubject: {subject}\n\ndiff {n}\n".encode(),
        in_reply_to=None if n == 0 else f"<{series_key}-0@example.org>",
        references=() if n == 0 else (f"<{series_key}-0@example.org>",),
        recipients=(Person("Net Dev, List", "netdev@vger.example"), Person("", "bob@example.org")),
        has_diff=n > 0,
        files=("net/core/dev.c", "include/linux/a b.h") if n > 0 else (),
        pw_id=1000 + n,
        web_url=f"https://pw.example/patch/{1000 + n}/",
    )


def make_series(numbers: tuple[int, ...] = (1, 2, 3), *, total: int = 3, key: str = "s1") -> Series:
    return Series(
        source="pw",
        key=key,
        name="net: change numbers",
        version=2,
        total=total,
        patches=tuple(make_patch(n, total, series_key=key) for n in numbers),
        cover=make_patch(0, total, series_key=key),
        submitter=ALICE,
        date=datetime(2024, 3, 1, 10, 0, tzinfo=UTC),
        complete=len(numbers) == total,
        pw_id=77,
        web_url="https://pw.example/series/77/",
        problems=() if len(numbers) == total else ("patch 2/3 missing",),
    )


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store.open(db_url)
    try:
        yield s
    finally:
        s.close()


def count(store: Store, table: Table) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


# --- migrations ------------------------------------------------------------------------


def test_migration_matches_metadata(db_url: str) -> None:
    assert current(db_url) is None
    upgrade(db_url)
    assert current(db_url) == head_revision()
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(ctx, tables.metadata) == []
            names = set(inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert names == set(tables.metadata.tables) | {"alembic_version"}


def test_upgrade_twice_is_noop(db_url: str) -> None:
    upgrade(db_url)
    s = Store.open(db_url, upgrade=False)
    try:
        sid = s.save_series(make_series())
        upgrade(db_url)
        assert current(db_url) == head_revision()
        assert s.load_series(sid) == make_series()
    finally:
        s.close()


def test_migrations_ship_inside_the_package() -> None:
    assert (MIGRATIONS_DIR / "__init__.py").is_file()
    assert (MIGRATIONS_DIR / "versions" / "__init__.py").is_file()
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()
    assert head_revision() == "0009"


def test_url_normalisation() -> None:
    assert normalise_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalise_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalise_url("sqlite:///x.db").drivername == "sqlite"
    with pytest.raises(ConfigError, match="mysql"):
        normalise_url("mysql://u@h/db")
    with pytest.raises(ConfigError):
        normalise_url("not a url")


def test_sqlite_engine_settings(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "patchci.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    finally:
        engine.dispose()
    assert path.is_file()


def test_foreign_keys_enforced(store: Store) -> None:
    with pytest.raises(IntegrityError):
        store.create_job(series_id=4242, kind="build")
    assert store.jobs() == []


# --- series ----------------------------------------------------------------------------


def test_series_round_trip(store: Store) -> None:
    series = make_series()
    sid = store.save_series(series)
    loaded = store.load_series(sid)
    assert loaded == series
    assert loaded.cover is not None and loaded.cover.info.is_cover
    assert loaded.patches[1].info.tags == ("net-next",)
    assert loaded.patches[0].date is not None and loaded.patches[0].date.tzinfo is not None
    assert store.find_series("pw", "s1") == sid
    assert store.find_series("pw", "nope") is None
    assert store.find_series("mbox", "s1") is None


def test_save_series_is_idempotent(store: Store) -> None:
    sid = store.save_series(make_series())
    before = store.list_series()[0]
    assert store.save_series(make_series()) == sid
    assert store.list_series() == [before]
    assert count(store, tables.patches) == 4


def test_save_series_grows(store: Store) -> None:
    partial = make_series((1, 3))
    sid = store.save_series(partial)
    row = store.list_series()[0]
    assert (row.complete, store.load_series(sid)) == (False, partial)

    full = make_series((1, 2, 3))
    assert store.save_series(full) == sid
    assert store.load_series(sid) == full
    grown = store.list_series()[0]
    assert grown.complete and grown.updated_at > row.updated_at
    assert grown.created_at == row.created_at
    assert count(store, tables.patches) == 4


def test_save_series_ignores_older_smaller_view(store: Store) -> None:
    sid = store.save_series(make_series((1, 2, 3)))
    assert store.save_series(make_series((1, 3))) == sid
    assert store.load_series(sid) == make_series((1, 2, 3))


def test_raw_bytes_round_trip(store: Store) -> None:
    odd = b"Subject: caf\xe9\r\n\r\n\xff\xfe\x00\x80 latin-1 and NUL\n"
    blob = random.Random(0).randbytes(3 * 1024 * 1024)
    series = Series(
        source="mbox",
        key="<raw@x>",
        name="raw",
        version=1,
        total=2,
        patches=(
            make_patch(1, 2, raw=odd, series_key="raw"),
            make_patch(2, 2, raw=blob, series_key="raw"),
        ),
    )
    loaded = store.load_series(store.save_series(series))
    assert loaded.patches[0].raw == odd
    assert loaded.patches[1].raw == blob
    assert loaded.cover is None and loaded.submitter is None and loaded.date is None


def test_series_state_and_listing(store: Store) -> None:
    a = store.save_series(make_series(key="a"))
    b = store.save_series(make_series(key="b"))
    assert [r.id for r in store.list_series()] == [b, a]
    assert store.list_series(limit=1)[0].id == b
    new = store.list_series(state="new")
    assert {r.state for r in new} == {"new"} and len(new) == 2

    store.set_series_state(a, "routed", tree="net-next")
    store.set_series_state(a, "error", "does not apply")
    (row,) = store.list_series(state="error")
    assert (row.id, row.tree, row.state_reason) == (a, "net-next", "does not apply")
    assert row.created_at.tzinfo == UTC and row.updated_at >= row.created_at
    with pytest.raises(NotFound):
        store.set_series_state(9999, "routed")
    with pytest.raises(NotFound):
        store.load_series(9999)


# --- events and cursors ----------------------------------------------------------------


def test_save_series_with_event_is_atomic(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store, "_record_event", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.save_series_with_event(make_series(), "pw", 5, "2024-03-01T10:00:00")
    assert store.find_series("pw", "s1") is None
    assert store.get_cursor("pw") is None
    assert count(store, tables.patches) == 0

    monkeypatch.undo()
    # A real database error after the series rows went in: NOT NULL on event_date.
    with pytest.raises(IntegrityError):
        store.save_series_with_event(make_series(), "pw", 5, None)  # type: ignore[arg-type]
    assert store.find_series("pw", "s1") is None
    assert store.get_cursor("pw") is None

    sid = store.save_series_with_event(make_series(), "pw", 5, "2024-03-01T10:00:00")
    assert store.find_series("pw", "s1") == sid
    assert store.get_cursor("pw") == "2024-03-01T10:00:00"
    assert store.event_seen("pw", 5)


def test_event_dedupe(store: Store) -> None:
    assert not store.event_seen("pw", 1)
    store.record_event("pw", 1, "2024-01-01T00:00:00", None)
    store.record_event("pw", 1, "2024-01-01T00:00:00", None)
    assert store.event_seen("pw", 1)
    assert not store.event_seen("other", 1)
    assert count(store, tables.source_events) == 1
    sid = store.save_series(make_series())
    assert store.save_series_with_event(make_series(), "pw", 1, "2024-01-01T00:00:00") == sid


def test_cursor_only_moves_forward(store: Store) -> None:
    assert store.get_cursor("pw") is None
    store.record_event("pw", 2, "2024-01-02T00:00:00", None)
    store.record_event("pw", 1, "2024-01-01T23:59:59", None)
    assert store.get_cursor("pw") == "2024-01-02T00:00:00"
    store.record_event("pw", 3, "2024-01-02T00:00:01", None)
    assert store.get_cursor("pw") == "2024-01-02T00:00:01"
    assert store.get_cursor("lore") is None


def test_concurrent_event_recording(db_url: str) -> None:
    """Two ingesters on two engines: no event lost, no deadlock, cursor at the maximum."""
    stores = [Store.open(db_url), Store.open(db_url, upgrade=False)]
    errors: list[BaseException] = []

    def ingest(s: Store, offset: int) -> None:
        try:
            for i in range(offset, 40, 2):
                s.record_event("pw", i, f"2024-01-01T00:00:{i:02d}", None)
        except BaseException as e:  # surfaced by the assert below
            errors.append(e)

    threads = [threading.Thread(target=ingest, args=(s, n)) for n, s in enumerate(stores)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
    try:
        assert errors == []
        assert count(stores[0], tables.source_events) == 40
        assert stores[1].get_cursor("pw") == "2024-01-01T00:00:39"
    finally:
        for s in stores:
            s.close()


# --- jobs, results, deliveries ---------------------------------------------------------


def test_job_lifecycle(store: Store) -> None:
    sid = store.save_series(make_series())
    job = store.create_job(sid, "build")
    (row,) = store.jobs(status="queued")
    assert (row.id, row.kind, row.attempts, row.started_at) == (job, "build", 0, None)
    store.start_job(job, worker="w1")
    store.start_job(job, worker="w2")
    (row,) = store.jobs(status="running")
    assert (row.attempts, row.worker) == (2, "w2")
    assert row.started_at is not None and row.started_at.tzinfo == UTC
    store.finish_job(job, "error", "VM did not boot")
    assert store.jobs(status="running") == []
    (row,) = store.jobs()
    assert (row.status, row.error) == ("error", "VM did not boot")
    assert row.finished_at is not None
    with pytest.raises(ValueError):
        store.finish_job(job, "queued")
    with pytest.raises(NotFound):
        store.start_job(job + 100)


def test_latest_results_newest_per_key(store: Store) -> None:
    sid = store.save_series(make_series())
    j1, j2 = store.create_job(sid, "checks"), store.create_job(sid, "checks")
    store.add_results(
        j1,
        sid,
        [
            CheckResult("build", Outcome.FAIL, "old build", patch_index=0),
            CheckResult("build", Outcome.PASS, "build ok", patch_index=1),
            CheckResult("kunit", Outcome.ERROR, "VM died", details=(("vm", "qemu"),)),
        ],
    )
    store.add_results(
        j2,
        sid,
        [
            CheckResult("build", Outcome.PASS, "new build", patch_index=0, duration=1.5),
            CheckResult(
                "kunit", Outcome.PASS, "42 tests", log_path="/l/k.log", reproducer="make kunit"
            ),
        ],
    )
    store.add_results(j2, sid, [])
    latest = store.latest_results(sid)
    assert latest == [
        CheckResult(
            "kunit", Outcome.PASS, "42 tests", log_path="/l/k.log", reproducer="make kunit"
        ),
        CheckResult("build", Outcome.PASS, "new build", patch_index=0, duration=1.5),
        CheckResult("build", Outcome.PASS, "build ok", patch_index=1),
    ]
    other = store.save_series(make_series(key="other"))
    assert store.latest_results(other) == []


def test_deliveries_lookup(store: Store) -> None:
    sid = store.save_series(make_series())
    target = "patchwork:https://pw.example"
    assert store.last_delivery(target, 1001, "build") is None
    store.record_delivery(target, sid, 1001, "build", "success", "fp1", "c1")
    store.record_delivery(target, sid, 1001, "build", "fail", "fp2", "c2")
    store.record_delivery(target, sid, 1001, "build", "warning", "fp3", None, "failed", "HTTP 502")
    store.record_delivery(target, sid, 1002, "build", "success", "fp4", "c4")
    store.record_delivery(target, sid, None, "series", "success", "fp5", None)
    last = store.last_delivery(target, 1001, "build")
    assert last is not None
    assert (last.state, last.fingerprint, last.remote_id, last.status) == (
        "fail",
        "fp2",
        "c2",
        "sent",
    )
    assert last.created_at.tzinfo == UTC
    assert store.last_delivery(target, 1001, "kunit") is None
    assert store.last_delivery("email:netdev@vger.example", 1001, "build") is None
    series_wide = store.last_delivery(target, None, "series")
    assert series_wide is not None and series_wide.fingerprint == "fp5"
    with pytest.raises(ValueError):
        store.record_delivery(target, sid, 1001, "build", "success", "fp", None, "maybe")


# --- the PostgreSQL fixture itself -----------------------------------------------------


def test_missing_pg_binaries_skip_or_fail(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATCHCI_PG_BIN", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("PATCHCI_REQUIRE_PG", raising=False)
    monkeypatch.delenv("PATCHCI_REQUIRE_PREREQS", raising=False)
    assert pg.find_pg_bin() is None
    with pytest.raises(pytest.skip.Exception, match="initdb"):
        pg.require_pg_bin()
    monkeypatch.setenv("PATCHCI_REQUIRE_PG", "1")
    with pytest.raises(pytest.fail.Exception, match="required"):
        pg.require_pg_bin()


def test_sqlite_file_is_a_real_sqlite_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    Store.open(url).close()
    with sqlite3.connect(tmp_path / "x.db") as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert set(tables.metadata.tables) <= names


def test_downgrade_and_upgrade_across_the_lease_migrations_keep_every_result(
    db_url: str,
) -> None:
    """0005 and 0006 were batch migrations: on SQLite they copied `jobs` and `runs` and
    dropped the old tables, and with foreign keys on the drop cascaded into every check
    result (and every test result)."""
    from alembic import command

    store = Store.open(db_url)
    try:
        sid = store.save_series(make_series())
        job = store.create_job(sid, "checks")
        store.add_results(job, sid, [CheckResult("apply", Outcome.PASS, "ok")])
    finally:
        store.close()
    engine = make_engine(db_url)
    cfg = alembic_config()
    try:
        for target in ("0004", "head"):
            with engine.connect() as conn, conn.begin():
                cfg.attributes["connection"] = conn
                (command.downgrade if target == "0004" else command.upgrade)(cfg, target)
    finally:
        engine.dispose()
    store = Store.open(db_url)
    try:
        assert [r.check for r in store.latest_results(sid)] == ["apply"]
    finally:
        store.close()
