"""What every query class shares: an engine, and transactions that read or write."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Self

from sqlalchemy import Connection, Engine

from patchci.db.migrate import make_engine, upgrade_engine


class Database:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Tells this connection pool's owner from an earlier one in the same process (the
        # lease owner's tag, see daemon.worker_id).
        self.instance = secrets.token_hex(3)

    @classmethod
    def open(cls, url: str, *, upgrade: bool = True) -> Self:
        engine = make_engine(url)
        if upgrade:
            upgrade_engine(engine)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        # BEGIN IMMEDIATE on SQLite: take the write lock up front, no "database is locked"
        # half way through a transaction.
        with self.engine.connect() as conn:
            conn.execution_options(sqlite_immediate=True)
            with conn.begin():
                yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn
