"""The checks statistics page and `/api/v1/checks`: per check, outcomes per UTC day, the
failure rate, durations and the slowest runs (NIPA's contest has no such page; its checks'
outcomes are only on Patchwork, one series at a time)."""

from __future__ import annotations

import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import update

from patchci.config import build_settings
from patchci.db import tables as t
from patchci.db.store import Store
from patchci.model import CheckResult, Outcome, Patch, Person, Series
from patchci.subject import parse_subject
from patchci.web.app import create_app
from tests.test_web_routes import rows
from tests.web_server import TestClient, client_for, demo_dir, settings_for

__all__ = ["demo_dir"]

NOW = datetime(2026, 5, 10, 12, 0, tzinfo=UTC)
P, W, F, E, S = Outcome.PASS, Outcome.WARN, Outcome.FAIL, Outcome.ERROR, Outcome.SKIP


def _series(store: Store, n: int) -> int:
    who = Person("A", "a@example.com")
    subject = f"[PATCH net] stat: series {n}"
    patch = Patch(msgid=f"<stat{n}@x>", subject=subject, author=who, date=NOW,
                  info=parse_subject(subject), raw=b"Subject: x\n\nbody\n", has_diff=True)  # fmt: skip
    return store.save_series(Series(source="stat", key=str(n), name=f"series {n}", version=1,
                                    total=1, patches=(patch,), submitter=who))  # fmt: skip


# (days before NOW, check, outcome, duration): what the scene stores.
PLAN = [
    (0, "build", P, 60.0), (0, "build", F, 300.0), (0, "checkpatch", W, 1.0),
    (1, "build", E, 5.0), (1, "checkpatch", P, 2.0),
    (3, "build", P, 120.0), (3, "checkpatch", F, 0.5),
    (20, "build", F, 999.0),  # outside a 14-day window
]  # fmt: skip


def _scene(url: str) -> None:
    store = Store.open(url)
    try:
        for i, (ago, check, outcome, duration) in enumerate(PLAN):
            sid = _series(store, i)
            job = store.create_job(sid, "checks")
            store.add_results(
                job, sid, [CheckResult(check, outcome, f"r{i}", 0, duration=duration)]
            )
            when = NOW - timedelta(days=ago, hours=1)
            with store.engine.begin() as conn:
                conn.execute(update(t.check_results).where(t.check_results.c.series_id == sid)
                             .values(created_at=when))  # fmt: skip
    finally:
        store.close()


def _client(url: str, data_dir: Path) -> TestClient:
    settings = build_settings({"data_dir": str(data_dir), "database_url": url}, env={})
    return client_for(create_app(settings, clock=lambda: NOW))


def test_api_checks_counts_days_and_slowest(db_url: str, tmp_path: Path) -> None:
    _scene(db_url)
    body = _client(db_url, tmp_path).get("/api/v1/checks", params={"days": 14}).json()
    assert body["days"] == 14 and body["since"].startswith("2026-04-27T00:00:00")
    by = {c["name"]: c for c in body["checks"]}
    assert set(by) == {"build", "checkpatch"}
    build = by["build"]
    assert build["total"] == 4  # the 20-day-old one is outside the window
    assert {k: v for k, v in build["counts"].items() if v} == {"pass": 2, "fail": 1, "error": 1}
    assert build["fail_rate"] == 1 / 3  # error is ours: not among the results that ran
    assert build["median_duration"] == 90.0 and build["max_duration"] == 300.0
    assert [r["duration"] for r in build["slowest"]] == [300.0, 120.0, 60.0, 5.0]
    assert build["slowest"][0]["series_name"] == "series 1"
    days = build["days"]
    assert len(days) == 14 and days[-1]["day"] == "2026-05-10" and days[0]["day"] == "2026-04-27"
    assert [d["total"] for d in days][-4:] == [1, 0, 1, 2]
    assert days[-2]["counts"]["error"] == 1
    cp = by["checkpatch"]
    assert cp["fail_rate"] == 1 / 3 and cp["counts"]["warn"] == 1


def test_api_checks_one_check_and_window(db_url: str, tmp_path: Path) -> None:
    _scene(db_url)
    c = _client(db_url, tmp_path)
    body = c.get("/api/v1/checks", params={"check": "build", "days": 30, "slowest": 1}).json()
    assert [x["name"] for x in body["checks"]] == ["build"]
    assert body["checks"][0]["total"] == 5
    assert [r["duration"] for r in body["checks"][0]["slowest"]] == [999.0]
    assert c.get("/api/v1/checks", params={"check": "nosuch"}).json()["checks"] == []
    for bad in ({"days": 0}, {"days": 1000}, {"check": "a b"}, {"slowest": 0}):
        assert c.get("/api/v1/checks", params=bad).status_code in (400, 422)
    assert "/api/v1/checks" in c.get("/api/v1/openapi.json").json()["paths"]


def test_checks_page(db_url: str, tmp_path: Path) -> None:
    _scene(db_url)
    html = _client(db_url, tmp_path).get("/checks").text
    table = rows(html, "check-row")
    assert len(table) == 2 and ">build</a>" in table[0]
    assert '<td class="num fail-rate">33%</td>' in table[0]
    # today's cell: one pass and one fail, shown as a fail with its count
    assert 'title="2026-05-10: 1 pass, 1 fail">2</td>' in table[0]
    assert 'title="2026-05-08: no result"' in table[1]
    assert html.count('class="slow-row"') == 4 + 3
    assert 'href="/checks"' in html  # in the navigation bar


def test_checks_page_on_the_demo(demo_dir: Path) -> None:
    """The demo's stored results, as the daemon wrote them, counted by hand from SQLite."""
    with sqlite3.connect(demo_dir / "patchci.db") as db:
        expected = Counter(dict(db.execute(
            "SELECT check_name, count(*) FROM check_results GROUP BY check_name").fetchall()))  # fmt: skip
    assert expected["apply"] and expected["signed_off_by"]
    c = client_for(create_app(settings_for(demo_dir)))
    body = c.get("/api/v1/checks", params={"days": 366}).json()
    assert {x["name"]: x["total"] for x in body["checks"]} == dict(expected)
    html = c.get("/checks", params={"days": 366, "check": "apply"}).text
    assert len(rows(html, "check-row")) == 1 and 'id="slowest-apply"' in html
