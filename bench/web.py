"""Web latency on a large contest history: a throw-away PostgreSQL filled by the server
itself (INSERT ... SELECT generate_series), then repeated requests through the real app
(FastAPI's TestClient, an httpx client on the ASGI app) for the flakes matrix, the
contest log's first page with a filter and a series page; p50/p95 per endpoint, with a
ratio against the same request on a tiny database in the same server and run.

    python -m bench web                      # 10M subtests (500 branches x 20 executors)
    python -m bench web --small              # a quick run
    python -m bench web --subtests 2000000 --branches 200
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import dropwhile
from pathlib import Path

import psycopg
from fastapi.testclient import TestClient
from tests.pg import PgServer, find_pg_bin, start_server, stop_server

from patchci.config import Settings
from patchci.db import matrix
from patchci.db.migrate import make_engine, upgrade
from patchci.web.app import create_app

TARGET_P95_S = 0.300
GROUPS = ("net", "net/forwarding", "drivers/net/bonding", "tc-testing", "bpf")


@dataclass(frozen=True)
class Shape:
    branches: int
    executors: int
    tests: int  # per run
    subtests: int  # per test
    series: int

    @property
    def total_subtests(self) -> int:
        return self.branches * self.executors * self.tests * self.subtests


# --- fill ---------------------------------------------------------------------------------
# Outcomes come from a cheap hash of (run, test), so the data is the same on every run.
# One test in ten is flaky (fails a fifth of the time, half of those pass on retry).

_H = "((r.id * 7919 + g.i * 104729) %% 1000)"
_FILL_TESTS = f"""
INSERT INTO tests (id, run_id, grp, name, outcome, retry_outcome, duration,
                   log_path, retry_log_path, reproduce)
SELECT (r.id - 1) * %(tests)s + g.i + 1, r.id,
       (%(groups)s::text[])[g.i %% {len(GROUPS)} + 1], 'test_' || g.i || '.sh',
       CASE WHEN g.i %% 10 = 3 AND {_H} < 200 THEN 'fail'
            WHEN {_H} < 3 THEN 'fail' WHEN {_H} < 60 THEN 'skip' ELSE 'pass' END,
       CASE WHEN g.i %% 10 = 3 AND {_H} < 100 THEN 'pass' END,
       ({_H})::float / 10, '/runs/' || r.id || '/' || g.i || '.log', NULL, 'make run_tests'
FROM runs r CROSS JOIN generate_series(0, %(tests)s - 1) AS g(i)
"""
# Nested subtests: every fifth is a case at depth 1, the four after it its children.
_FILL_SUBTESTS = """
INSERT INTO subtests (test_id, path, depth, name, outcome, retry_outcome, duration)
SELECT t.id,
       CASE WHEN s.i %% 5 = 0 THEN 'case' || s.i / 5
            ELSE 'case' || s.i / 5 || '/sub' || s.i %% 5 END,
       CASE WHEN s.i %% 5 = 0 THEN 1 ELSE 2 END,
       CASE WHEN s.i %% 5 = 0 THEN 'case' || s.i / 5 ELSE 'sub' || s.i %% 5 END,
       CASE WHEN t.outcome = 'fail' AND s.i = 1 THEN 'fail' ELSE 'pass' END,
       NULL, 0.01
FROM tests t CROSS JOIN generate_series(0, %(subtests)s - 1) AS s(i)
WHERE t.id BETWEEN %(lo)s AND %(hi)s
"""
_FILL_CONTEST = f"""
INSERT INTO branches (id, name, stream, date, base, head, merges, new_changes, created_at)
SELECT b, 'net-next-' || lpad(b::text, 6, '0'), 'net-next',
       timestamptz '2026-01-01' + b * interval '3 hours',
       md5(b::text), md5((b + 1)::text), '{{}}', true, now()
FROM generate_series(1, %(branches)s) b;
INSERT INTO runs (id, branch_id, executor, started_at, finished_at, status, error, kernel,
                  config, reproduce, log_dir, link)
SELECT (b - 1) * %(executors)s + e + 1, b, 'exec-' || e,
       timestamptz '2026-01-01' + b * interval '3 hours' + e * interval '1 minute',
       timestamptz '2026-01-01' + b * interval '3 hours' + interval '2 hours', 'done', '',
       '6.12.0', 'defconfig', 'make', NULL, 'https://ci.example.org/' || b || '/' || e
FROM generate_series(1, %(branches)s) b CROSS JOIN generate_series(0, %(executors)s - 1) e;
{_FILL_TESTS};
INSERT INTO crashes (run_id, test_id, kind, fingerprint, title, excerpt, ignored)
SELECT run_id, id, 'oops', md5((id %% 37)::text), 'BUG: something', 'Call Trace:', false
FROM tests WHERE id %% 997 = 0;
"""
_FILL_SERIES = """
INSERT INTO series (id, source, key, name, version, total, complete, submitter_name,
                    submitter_email, date, pw_id, web_url, problems, tree, state,
                    state_reason, created_at, updated_at)
SELECT s, 'pw', 'key-' || s, 'net: series number ' || s, 1, 3, true, 'Dev', 'dev@example.org',
       timestamptz '2026-01-01' + s * interval '10 minutes', s, NULL, '[]', 'net-next',
       'done', '', now(), now()
FROM generate_series(1, %(series)s) s;
INSERT INTO patches (series_id, idx, is_cover, msgid, subject, author_name, author_email,
                     tags, pw_id, web_url, raw, date, in_reply_to, refs, recipients,
                     has_diff, files)
SELECT s, p, p = 0, '<' || s || '.' || p || '@example.org>', '[PATCH net-next ' || p || '/3] x',
       'Dev', 'dev@example.org', '[]', s * 10 + p, NULL, '\\x00'::bytea, now(), NULL, '',
       '[]', p > 0, '["net/core/dev.c"]'
FROM generate_series(1, %(series)s) s CROSS JOIN generate_series(0, 3) p;
INSERT INTO jobs (id, series_id, kind, status, attempts, error, created_at, started_at,
                  finished_at, worker)
SELECT s, s, 'check', 'done', 1, '', now(), now(), now(), 'w1'
FROM generate_series(1, %(series)s) s;
INSERT INTO check_results (job_id, series_id, patch_idx, check_name, outcome, description,
                           log_path, duration, reproducer, details, created_at)
SELECT s, s, NULLIF(p, 0), c, CASE WHEN (s + p) %% 7 = 0 THEN 'warn' ELSE 'pass' END, 'ok',
       NULL, 1.0, NULL, '[]', now()
FROM generate_series(1, %(series)s) s CROSS JOIN generate_series(0, 3) p
     CROSS JOIN unnest(array['build', 'checkpatch', 'sparse', 'kdoc']) c;
INSERT INTO deliveries (target, series_id, patch_pw_id, context, state, fingerprint,
                        remote_id, status, error, created_at)
SELECT 'patchwork:x', s, s * 10 + 1, 'build', 'success', md5(s::text), NULL, 'sent', '', now()
FROM generate_series(1, %(series)s) s;
INSERT INTO branch_series (branch_id, series_id, included, reason)
SELECT b.id, s, true, '' FROM branches b
CROSS JOIN LATERAL generate_series(b.id * 10 %% %(series)s + 1,
                                   b.id * 10 %% %(series)s + 10) s;
"""


def _fill(url: str, shape: Shape) -> None:
    """Fill the contest and series tables; subtests go in per slice of tests so no single
    statement holds the whole set, with their index built once at the end."""
    params = {
        "branches": shape.branches, "executors": shape.executors, "tests": shape.tests,
        "subtests": shape.subtests, "series": shape.series, "groups": list(GROUPS),
    }  # fmt: skip
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '256MB'")
        conn.execute("SET session_replication_role = replica")  # no FK triggers per row
        with conn.transaction():
            for stmt in (_FILL_CONTEST + _FILL_SERIES).split(";"):
                if stmt.strip():
                    conn.execute(stmt, params)
        conn.execute("DROP INDEX ix_subtests_test_id")
        conn.execute("DROP INDEX ix_subtests_test_final")
        conn.execute("ALTER TABLE subtests DROP CONSTRAINT pk_subtests")
        n_tests = shape.branches * shape.executors * shape.tests
        step = max(1, 1_000_000 // max(1, shape.subtests))
        for lo in range(1, n_tests + 1, step):
            conn.execute(_FILL_SUBTESTS, {**params, "lo": lo, "hi": lo + step - 1})
        conn.execute("ALTER TABLE subtests ADD CONSTRAINT pk_subtests PRIMARY KEY (id)")
        conn.execute("CREATE INDEX ix_subtests_test_id ON subtests (test_id)")
        conn.execute(
            "CREATE INDEX ix_subtests_test_final ON subtests "
            "(test_id, coalesce(retry_outcome, outcome))"
        )
        for table in ("branches", "runs", "tests", "series", "jobs"):
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
        conn.execute("VACUUM ANALYZE")


def _libpq(url: str) -> str:
    """The psycopg conninfo of a PgServer url."""
    db = url.split("@/", 1)[1].split("?", 1)[0]
    host = url.split("host=", 1)[1]
    return f"host={host} user=postgres dbname={db}"


# --- measure ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    p50: float
    p95: float


def _time(client: TestClient, path: str, n: int) -> Timing:
    r = client.get(path)  # warm-up: plan caches, pool, templates
    if r.status_code != 200:
        raise RuntimeError(f"GET {path}: {r.status_code} {r.text[:300]}")
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        r = client.get(path)
        samples.append(time.perf_counter() - start)
        if r.status_code != 200:
            raise RuntimeError(f"GET {path}: {r.status_code}")
    samples.sort()
    return Timing(statistics.median(samples), samples[min(n - 1, int(0.95 * n))])


def _endpoints(shape: Shape, flake_branches: int) -> dict[str, str]:
    middle = max(1, shape.series // 2)
    return {
        f"flakes matrix ({flake_branches} branches)": f"/flakes?branches={flake_branches}",
        "contest log, outcome=fail": "/contest?outcome=fail",
        "contest log, executor+grp": f"/contest?executor=exec-{shape.executors - 1}&grp=bpf",
        "series page": f"/series/{middle}",
        # Beyond the three: the other pages a maintainer opens on the same history.
        "contest log, subtests, outcome=fail": "/contest?outcome=fail&subtests=on",
        "test history (flaky test)": f"/contest/history?grp={GROUPS[3]}&name=test_3.sh",
        "status page": "/status",
    }


@contextmanager
def _client(url: str, data_dir: Path) -> Iterator[TestClient]:
    app = create_app(Settings(data_dir=str(data_dir), database_url=url))
    try:
        with TestClient(app) as client:
            yield client
    finally:
        app.state.engine.dispose()


def _database(server: PgServer, shape: Shape) -> tuple[str, float, float]:
    """A filled database: (url, fill seconds, seconds to derive the flakes matrix)."""
    url = server.url(server.create_database())
    upgrade(url)
    start = time.perf_counter()
    _fill(url, shape)
    filled = time.perf_counter()
    engine = make_engine(url)
    try:
        with engine.begin() as conn:  # as the migration that added it does
            matrix.rebuild(conn)
    finally:
        engine.dispose()
    return url, filled - start, time.perf_counter() - filled


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench web", description=__doc__)
    p.add_argument("--subtests", type=int, default=10_000_000, help="total subtest rows")
    p.add_argument("--branches", type=int, default=500)
    p.add_argument("--executors", type=int, default=20)
    p.add_argument("--tests", type=int, default=50, help="tests per run")
    p.add_argument("--series", type=int, default=5000)
    p.add_argument("--flake-branches", type=int, default=100)
    p.add_argument("-n", "--requests", type=int, default=40, help="timed requests each")
    p.add_argument("--small", action="store_true", help="200k subtests, 10 requests each")
    return p.parse_args(argv)


def _shape(a: argparse.Namespace) -> Shape:
    if a.small:
        a.subtests, a.branches, a.executors, a.requests = 200_000, 100, 10, 10
    runs_tests = a.branches * a.executors * a.tests
    return Shape(a.branches, a.executors, a.tests, max(1, a.subtests // runs_tests), a.series)


def main(argv: list[str] | None = None) -> None:
    if argv is None:  # `python -m bench web --flags`: the flags after the bench names
        argv = list(dropwhile(lambda x: not x.startswith("-"), sys.argv[1:]))
    a = _args(argv)
    shape = _shape(a)
    tiny = Shape(branches=a.flake_branches, executors=2, tests=5, subtests=4, series=20)
    bindir = find_pg_bin()
    if bindir is None:
        raise SystemExit("web bench: PostgreSQL server binaries (initdb, pg_ctl) not found")
    server = start_server(bindir)
    try:
        with tempfile.TemporaryDirectory(prefix="patchci-bench-") as tmp:
            _run(server, shape, tiny, a, Path(tmp))
    finally:
        stop_server(server)


def _run(server: PgServer, shape: Shape, tiny: Shape, a: argparse.Namespace, tmp: Path) -> None:
    big_url, fill_s, matrix_s = _database(server, shape)
    tiny_url, _, _ = _database(server, tiny)
    n_tests = shape.branches * shape.executors * shape.tests
    print(
        f"web: filled {shape.total_subtests:,} subtests ({n_tests:,} tests, "
        f"{shape.branches} branches x {shape.executors} executors x {shape.tests} tests x "
        f"{shape.subtests} subtests, {shape.series} series) in {fill_s:.1f}s; "
        f"flakes matrix derived from the {n_tests:,} tests in {matrix_s:.1f}s"
    )
    paths = _endpoints(shape, a.flake_branches)
    tiny_paths = _endpoints(tiny, a.flake_branches)
    with _client(tiny_url, tmp) as c:
        base = {k: _time(c, tiny_paths[k], a.requests) for k in paths}
    with _client(big_url, tmp) as c:
        big = {k: _time(c, p, a.requests) for k, p in paths.items()}
    for k, tm in big.items():
        ok = "ok" if tm.p95 < TARGET_P95_S else f"OVER {TARGET_P95_S * 1000:.0f} ms"
        print(
            f"  {k:36} p50 {tm.p50 * 1000:7.1f} ms  p95 {tm.p95 * 1000:7.1f} ms  "
            f"({tm.p95 / base[k].p95:5.1f}x tiny-DB p95 {base[k].p95 * 1000:.1f} ms)  {ok}"
        )
