"""Engines and schema migrations (Alembic, configured in code: no alembic.ini).

`upgrade(url)` brings any database to the newest schema; running it again is a no-op.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url

from patchci.errors import ConfigError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_S = 30
# Serialises concurrent `upgrade` calls on PostgreSQL (daemon and web starting together).
_PG_MIGRATION_LOCK = 0x7061_7463_6863_69  # "patchci"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    """The newest revision shipped with this version of patchci."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def normalise_url(url: str) -> URL:
    """Parse *url*; plain `postgresql://` means psycopg 3, the driver we ship."""
    try:
        u = make_url(url)
    except Exception as e:
        raise ConfigError(f"database url is not valid: {e}") from e
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    backend = u.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"database url: backend {backend!r} is not supported (sqlite, postgresql)"
        )
    return u


def make_engine(url: str) -> Engine:
    """An Engine for *url* set up the way patchci expects.

    SQLite: parent directory created, foreign keys on, WAL journal, busy timeout, and real
    BEGINs so that a transaction covers its reads too. PostgreSQL: connections are pinged
    before use, so a restarted server does not break a long-running daemon.
    """
    u = normalise_url(url)
    if u.get_backend_name() == "sqlite":
        return _sqlite_engine(u)
    return create_engine(u, pool_pre_ping=True)


def _sqlite_engine(u: URL) -> Engine:
    db = u.database or ""
    in_memory = db in ("", ":memory:") or u.query.get("mode") == "memory"
    if not in_memory and not db.startswith("file:"):
        Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(u, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    def on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN instead of pysqlite, which
        # would start transactions only at the first write.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000:d}")
        if not in_memory:
            _wal(cur)
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    def on_begin(conn: Connection) -> None:
        # Writers take the lock up front: a deferred read-then-write transaction in WAL mode
        # fails with SQLITE_BUSY instead of waiting when another writer got in between.
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", on_begin)
    return engine


def _wal(cur: sqlite3.Cursor) -> None:
    """Switch to WAL unless the file already is (it is persistent): two daemons starting on
    a new database at once raced here and one got "database is locked" at once (a journal
    mode change does not wait on the busy timeout)."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def upgrade_engine(engine: Engine) -> None:
    """Migrate the database behind *engine* to the newest revision."""
    cfg = alembic_config()
    with engine.connect() as conn:
        conn.execution_options(sqlite_immediate=True)
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            before = MigrationContext.configure(conn).get_current_revision()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            after = MigrationContext.configure(conn).get_current_revision()
    if before != after:
        log.info("database migrated from %s to %s", before or "empty", after)


def upgrade(url: str) -> None:
    """Migrate the database at *url* to the newest revision (creating it if needed)."""
    engine = make_engine(url)
    try:
        upgrade_engine(engine)
    finally:
        engine.dispose()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def current(url: str) -> str | None:
    """The revision the database at *url* is at, or None if it was never migrated."""
    engine = make_engine(url)
    try:
        return current_revision(engine)
    finally:
        engine.dispose()
