"""A real PostgreSQL server for the test suite, started once per session.

Fixtures:
- `pg_server`: session-scoped throw-away cluster on a unix socket in a temp dir (trust auth).
- `pg_url`: a fresh, empty database on it for one test, dropped afterwards.
- `db_url`: parametrised over "sqlite" and "postgresql", so one test body runs on both.

When the server binaries are missing, PostgreSQL tests fail under `make test` and CI
(tests/prereq.py) or with $PATCHCI_REQUIRE_PG set; only a partial developer run skips them.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from patchci import proc
from tests.prereq import prerequisites_required, unavailable

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
# Runs as this user when the suite runs as root: initdb refuses to run as root.
UNPRIVILEGED_USER = "nobody"
START_TIMEOUT = 60.0


def find_pg_bin() -> Path | None:
    """The directory holding initdb and pg_ctl: $PATCHCI_PG_BIN if set (and only it), else
    the newest Debian-style /usr/lib/postgresql/N/bin, else $PATH."""
    env = os.environ.get("PATCHCI_PG_BIN")
    if env:
        candidates = [Path(env)]
    else:
        candidates = sorted(
            Path("/").glob(PG_BIN_GLOB.lstrip("/")),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
            reverse=True,
        )
        which = shutil.which("initdb")
        if which:
            candidates.append(Path(which).parent)
    for c in candidates:
        if (c / "initdb").is_file() and (c / "pg_ctl").is_file():
            return c
    return None


def pg_required() -> bool:
    return prerequisites_required() or bool(os.environ.get("PATCHCI_REQUIRE_PG"))


@dataclass(frozen=True)
class PgServer:
    bindir: Path
    base: Path  # holds data/, the socket and the server log
    user: str = "postgres"

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def log_path(self) -> Path:
        return self.base / "server.log"

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://{self.user}@/{dbname}?host={self.base}"

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=str(self.base), user=self.user, dbname="postgres", autocommit=True
        )

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:16]}"
        with self.admin() as conn:
            create = sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'")
            conn.execute(create.format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _as_server_user(argv: list[str]) -> list[str]:
    """*argv* run as an unprivileged user when we are root."""
    if os.geteuid() != 0:
        return argv
    pw = pwd.getpwnam(UNPRIVILEGED_USER)
    if shutil.which("setpriv"):
        return [
            "setpriv",
            f"--reuid={pw.pw_uid}",
            f"--regid={pw.pw_gid}",
            "--clear-groups",
            "--",
            *argv,
        ]
    return ["runuser", "-u", UNPRIVILEGED_USER, "--", *argv]


def _run(server: PgServer, argv: list[str], what: str) -> None:
    res = proc.run(_as_server_user(argv), cwd=server.base, timeout=START_TIMEOUT)
    if not res.ok:
        log = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
        raise RuntimeError(f"PostgreSQL {what} failed ({res.returncode}):\n{res.output}\n{log}")


def start_server(bindir: Path) -> PgServer:
    """initdb + pg_ctl start a throw-away cluster, tuned for speed over durability."""
    # Short path in /tmp: the socket path must stay under ~100 bytes, and pytest's tmp dirs
    # are private to root, which the server user could not enter.
    base = Path(tempfile.mkdtemp(prefix="patchci-pg-"))
    if os.geteuid() == 0:
        pw = pwd.getpwnam(UNPRIVILEGED_USER)
        os.chown(base, pw.pw_uid, pw.pw_gid)
    server = PgServer(bindir=bindir, base=base)
    initdb = [str(bindir / "initdb"), "-D", str(server.datadir), "-U", server.user]
    initdb += ["-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]
    opts = (
        f"-k {base} -c listen_addresses='' -F -c full_page_writes=off "
        "-c synchronous_commit=off -c max_connections=50"
    )
    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(server.datadir), "-l", str(server.log_path)]
    try:
        _run(server, initdb, "initdb")
        _run(server, [*pg_ctl, "-w", "-t", str(int(START_TIMEOUT)), "-o", opts, "start"], "start")
    except BaseException:
        stop_server(server)
        raise
    return server


def stop_server(server: PgServer) -> None:
    if (server.datadir / "postmaster.pid").exists():
        pg_ctl = [str(server.bindir / "pg_ctl"), "-D", str(server.datadir)]
        proc.run(_as_server_user([*pg_ctl, "-m", "immediate", "-w", "stop"]), cwd=server.base)
    shutil.rmtree(server.base, ignore_errors=True)


def require_pg_bin() -> Path:
    """The server binaries, or skip the test (fail it when PostgreSQL is required)."""
    bindir = find_pg_bin()
    if bindir is None:
        msg = (
            "PostgreSQL server binaries (initdb, pg_ctl) not found in $PATCHCI_PG_BIN, "
            f"{PG_BIN_GLOB} or $PATH; install the postgresql server package"
        )
        unavailable(msg, required=pg_required())
    return bindir


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server = start_server(require_pg_bin())
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh empty database on the session's server."""
    name = pg_server.create_database()
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop_database(name)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL to an empty database, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'patchci.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url
