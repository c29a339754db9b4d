"""The web app's pages, JSON API and metrics on a database filled by `patchci demo`."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from patchci.db.store import Store
from patchci.db.tables import utcnow
from patchci.model import Person, worst
from patchci.web import queries
from patchci.web.app import create_app
from patchci.web.routes.metrics import render_metrics
from patchci.web.settings import WebSettings
from tests.web_server import (
    EXECUTOR,
    GROUP,
    STREAM,
    Hostile,
    TestClient,
    client_for,
    contest_branch_name,
    demo_dir,
    hostile,
    settings_for,
)

__all__ = ["demo_dir", "hostile"]  # fixtures, imported so pytest finds them

SOB_SERIES = "[net-next] foo: count dropped packets"  # the demo's "missing Signed-off-by"


@pytest.fixture(scope="module")
def client(demo_dir: Path) -> TestClient:
    return client_for(create_app(settings_for(demo_dir)))


def rows(html: str, cls: str = "series-row") -> list[str]:
    return re.findall(rf'<tr class="{cls}"[^>]*>(.*?)</tr>', html, re.S)


def series_id(client: TestClient, name: str) -> int:
    items = client.get("/api/v1/series", params={"per_page": 200}).json()["items"]
    return next(int(s["id"]) for s in items if s["name"] == name)


@dataclass(frozen=True)
class Facts:
    """What the demo database holds, read without the web code (the oracle)."""

    names: list[str]
    states: Counter[str]
    trees: Counter[str]
    verdicts: Counter[str]
    jobs: Counter[str]
    submitters: list[str]


@pytest.fixture(scope="module")
def facts(demo_dir: Path) -> Facts:
    store = Store.open(f"sqlite:///{demo_dir / 'patchci.db'}", upgrade=False)
    try:
        series = store.list_series(limit=1000)
        verdicts = Counter(
            worst(r.outcome for r in results).value
            for s in series
            if (results := store.latest_results(s.id))
        )
        jobs = Counter(j.status for j in store.jobs())
        submitters = [(store.load_series(s.id).submitter or Person("", "")).email for s in series]
    finally:
        store.close()
    return Facts(
        names=[s.name for s in series],
        states=Counter(s.state for s in series),
        trees=Counter(s.tree for s in series if s.tree),
        verdicts=verdicts,
        jobs=jobs,
        submitters=submitters,
    )


def test_root_redirects_to_series(client: TestClient) -> None:
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "/series"


def test_series_list_shows_every_demo_series(client: TestClient, facts: Facts) -> None:
    r = client.get("/series")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    html = unescape(r.text)
    assert len(rows(r.text)) == len(facts.names) >= 8
    for name in facts.names:
        assert name in html
    assert SOB_SERIES in html
    assert f"{len(facts.names)} series" in html
    assert '<span class="badge o-fail">fail</span>' in r.text


FILTERS: list[tuple[dict[str, str], Callable[[Facts], int]]] = [
    ({"state": "incomplete"}, lambda f: f.states["incomplete"]),
    ({"state": "reported"}, lambda f: f.states["reported"]),
    ({"tree": "net"}, lambda f: f.trees["net"]),
    ({"tree": "net-next"}, lambda f: f.trees["net-next"]),
    ({"outcome": "fail"}, lambda f: f.verdicts["fail"]),
    ({"outcome": "warn"}, lambda f: f.verdicts["warn"]),
    ({"outcome": "crash"}, lambda f: f.verdicts["crash"]),
    ({"submitter": "ADA@example"}, lambda f: sum("ada@example" in e for e in f.submitters)),
    ({"submitter": "nobody"}, lambda f: 0),
    ({"q": "dropped packets"}, lambda f: 1),
    ({"q": "foo_reset()"}, lambda f: 1),  # a patch subject inside a series
    ({"q": "100%"}, lambda f: 0),  # LIKE wildcards are literal
    ({"state": "", "tree": "", "outcome": "", "q": "", "submitter": ""}, lambda f: len(f.names)),
]


@pytest.mark.parametrize(("params", "expected"), FILTERS)
def test_series_list_filters(
    client: TestClient, facts: Facts, params: dict[str, str], expected: Callable[[Facts], int]
) -> None:
    want = expected(facts)
    r = client.get("/series", params=params)
    assert r.status_code == 200
    assert len(rows(r.text)) == want
    api = client.get("/api/v1/series", params=params).json()
    assert api["total"] == want == len(api["items"])


def test_demo_has_what_the_filters_need(facts: Facts) -> None:
    assert facts.states["incomplete"] >= 1 and facts.verdicts["fail"] >= 3
    assert facts.trees["net"] >= 1 and facts.verdicts["warn"] >= 1


def test_series_list_filter_values_are_what_the_rows_show(client: TestClient) -> None:
    r = client.get("/series", params={"tree": "net", "state": "reported"})
    for row in re.findall(r'<tr class="series-row"([^>]*)>', r.text):
        assert 'data-tree="net"' in row and 'data-state="reported"' in row
    assert '<option value="net" selected>' in r.text


def test_series_list_pagination(client: TestClient, facts: Facts) -> None:
    n = len(facts.names)
    pages = -(-n // 3)
    first = client.get("/series", params={"per_page": 3})
    assert len(rows(first.text)) == 3
    assert f"page 1 of {pages}" in first.text
    assert 'rel="next" href="/series?per_page=3&amp;page=2"' in first.text
    last = client.get("/series", params={"per_page": 3, "page": pages})
    assert len(rows(last.text)) == n - 3 * (pages - 1) and 'rel="next"' not in last.text
    ids = [
        int(s["id"])
        for p in range(1, pages + 1)
        for s in client.get("/api/v1/series", params={"per_page": 3, "page": p}).json()["items"]
    ]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == n
    beyond = client.get("/series", params={"page": 50})
    assert beyond.status_code == 200 and len(rows(beyond.text)) == 0


def test_series_page_missing_signed_off_by(client: TestClient) -> None:
    sid = series_id(client, SOB_SERIES)
    r = client.get(f"/series/{sid}")
    assert r.status_code == 200
    html = unescape(r.text)
    row = next(x for x in rows(r.text, "check-row") if "signed_off_by" in x)
    assert 'class="badge o-fail">fail<' in row
    assert "Missing Signed-off-by from author Ada Author <ada@example.com>" in unescape(row)
    # the patch, its series-level checks, state and reason
    assert "foo: count dropped packets" in html and "Clearly marked for net-next" in html
    assert re.search(r'data-check="apply" data-outcome="pass"', r.text)
    assert "reported" in html


def test_series_page_links_patchwork_lore_and_logs(client: TestClient, demo_dir: Path) -> None:
    sid = series_id(client, SOB_SERIES)
    detail = client.get(f"/api/v1/series/{sid}").json()
    html = client.get(f"/series/{sid}").text
    assert f'id="pw-link" href="{detail["series"]["web_url"]}"' in html
    msgid = detail["patches"][0]["msgid"]
    assert msgid.startswith("<")
    lore = "https://lore.kernel.org/r/" + msgid.strip("<>")
    assert detail["lore_url"] == lore and f'href="{lore}"' in html
    logs = re.findall(r'href="(/logs/[^"]+)"', html)
    assert logs, "no log links on the series page"
    for link in logs:
        r = client.get(link)
        assert r.status_code == 200, link
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
    sob = next(link for link in logs if link.endswith("signed_off_by.log"))
    assert "Missing Signed-off-by" in client.get(sob).text
    assert (demo_dir / "logs" / sob.removeprefix("/logs/")).is_file()


def test_series_page_shows_jobs_and_deliveries(client: TestClient) -> None:
    sid = series_id(client, SOB_SERIES)
    detail = client.get(f"/api/v1/series/{sid}").json()
    # one job checked it, one posted its results (each claimed with a lease)
    assert [(j["kind"], j["status"]) for j in detail["jobs"]] == [
        ("checks", "done"), ("report", "done"),
    ]  # fmt: skip
    sent = [d for d in detail["deliveries"] if d["status"] == "sent"]
    assert {d["context"] for d in sent} >= {"signed_off_by", "apply"}
    html = client.get(f"/series/{sid}").text
    assert len(re.findall(r'<tr class="delivery st-sent">', html)) == len(sent)
    assert "patchwork:http://127.0.0.1:" in html


def test_incomplete_series_page(client: TestClient) -> None:
    items = client.get("/api/v1/series", params={"state": "incomplete"}).json()["items"]
    r = client.get(f"/series/{items[0]['id']}")
    assert r.status_code == 200
    assert "2 of 3" in r.text and "no results" in r.text and "no jobs" in r.text


def test_unknown_series_is_404(client: TestClient) -> None:
    assert client.get("/series/99999").status_code == 404
    r = client.get("/api/v1/series/99999")
    assert r.status_code == 404 and "not in the database" in r.json()["detail"]
    assert client.get("/api/v1/series/99999/checks").status_code == 404
    assert client.get("/no/such/page").status_code == 404


def test_api_checks_filters_and_history(client: TestClient) -> None:
    sid = series_id(client, SOB_SERIES)
    latest = client.get(f"/api/v1/series/{sid}/checks").json()
    assert {c["check"] for c in latest} >= {"apply", "signed_off_by", "fixes_tag"}
    fails = client.get(f"/api/v1/series/{sid}/checks", params={"outcome": "fail"}).json()
    assert [(c["check"], c["patch_idx"]) for c in fails] == [("signed_off_by", 0)]
    one = client.get(f"/api/v1/series/{sid}/checks", params={"check": "apply"}).json()
    assert [c["check"] for c in one] == ["apply"] and one[0]["log"].endswith("apply.log")
    history = client.get(f"/api/v1/series/{sid}/checks", params={"history": "true"}).json()
    assert len(history) >= len(latest)


def test_status_page(client: TestClient, facts: Facts) -> None:
    r = client.get("/status")
    assert r.status_code == 200
    html = unescape(r.text)
    assert "demo-pw#created" in html and 'data-source="demo-pw"' in r.text
    assert "ALARM" not in html
    for state, n in facts.states.items():
        assert f'{state}</a></th><td class="num">{n}<' in html
    assert "the queue is empty" in html
    assert "Jobs in error: 0" in html and "Failed deliveries: 0" in html


def test_status_alarm_when_cursor_is_stale(demo_dir: Path) -> None:
    later = utcnow() + timedelta(days=2)
    app = create_app(settings_for(demo_dir), clock=lambda: later)
    c = client_for(app)
    html = c.get("/status").text
    assert 'id="alarm"' in html and "ALARM: no progress for more than 6h 00m from demo-pw" in html
    status = c.get("/api/v1/status").json()
    assert status["alarms"] == ["demo-pw"]
    assert status["sources"][0]["alarm"] is True and status["sources"][0]["age_s"] > 86400
    metrics = c.get("/metrics").text
    assert 'patchci_source_stale{source="demo-pw"} 1' in metrics


def test_status_alarm_threshold_is_configurable(demo_dir: Path) -> None:
    s = settings_for(demo_dir)
    web = WebSettings.from_settings(s, cursor_alarm_after=0.001)
    status = client_for(create_app(s, web)).get("/api/v1/status").json()
    assert status["alarms"] == ["demo-pw"] and status["alarm_after_s"] == 0.001


def test_api_status(client: TestClient, facts: Facts) -> None:
    status = client.get("/api/v1/status").json()
    assert status["series_by_state"] == dict(facts.states)
    assert status["jobs_by_status"] == dict(facts.jobs)
    (src,) = status["sources"]
    assert src["source"] == "demo-pw"
    assert [c["name"] for c in src["cursors"]] == ["demo-pw", "demo-pw#created"]
    assert src["last_event_at"] is not None and src["events_recent"] >= len(facts.names)
    lat = status["latency"]
    assert lat["count"] == sum(facts.verdicts.values())  # the series with a result
    assert 0 <= lat["p50_s"] <= lat["p95_s"] < 600
    assert status["failed_jobs"] == [] and status["check_errors"] == []


def test_metrics(client: TestClient, facts: Facts) -> None:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = dict(
        line.rsplit(" ", 1) for line in r.text.splitlines() if line and not line.startswith("#")
    )
    assert samples['patchci_series{state="reported"}'] == str(facts.states["reported"])
    assert samples['patchci_jobs{status="done"}'] == str(facts.jobs["done"])
    assert int(samples['patchci_check_results{outcome="fail"}']) >= 3
    assert 0 <= float(samples['patchci_source_cursor_age_seconds{source="demo-pw"}']) < 3600
    assert "# TYPE patchci_source_cursor_age_seconds gauge" in r.text


def test_metrics_label_values_are_escaped() -> None:
    text_ = render_metrics({'a"b\\c\nd': 1}, {}, {}, [])
    assert 'patchci_series{state="a\\"b\\\\c\\nd"} 1' in text_


def test_openapi_schema_lists_the_api_only(client: TestClient) -> None:
    schema: dict[str, Any] = client.get("/api/v1/openapi.json").json()
    paths = set(schema["paths"])
    assert {
        "/api/v1/series",
        "/api/v1/series/{series_id}",
        "/api/v1/series/{series_id}/checks",
        "/api/v1/status",
    } <= paths
    assert not any(p.startswith(("/series", "/logs", "/status", "/metrics")) for p in paths)
    assert client.get("/docs").status_code == 404  # Swagger UI would pull a CDN


def test_web_engine_is_read_only(db_url: str) -> None:
    from patchci.db.store import Store
    from patchci.web.app import read_only_engine

    Store.open(db_url).close()  # migrated
    engine = read_only_engine(db_url)
    try:
        with engine.connect() as conn, pytest.raises(DBAPIError):
            conn.execute(text("DELETE FROM series"))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM series")).scalar_one() == 0
    finally:
        engine.dispose()


def test_percentile() -> None:
    assert queries.percentile([], 50) is None
    assert queries.percentile([3.0], 95) == 3.0
    values = [float(x) for x in range(1, 101)]
    assert queries.percentile(values, 50) == 50.0
    assert queries.percentile(values, 95) == 95.0


def test_web_settings_validation(demo_dir: Path) -> None:
    web = WebSettings.from_settings(settings_for(demo_dir))
    assert web.logs_dir == demo_dir.resolve() / "logs"
    with pytest.raises(ValueError):
        WebSettings(logs_dir=demo_dir, cursor_alarm_after=0)
    with pytest.raises(ValueError):
        WebSettings(logs_dir=demo_dir, page_size=0)


def test_serve_migrates_and_binds_loopback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from patchci.web.serve import serve

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    assert serve(settings_for(tmp_path / "fresh")) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8080
    assert (tmp_path / "fresh" / "patchci.db").is_file()
    r = client_for(seen["app"]).get("/series")
    assert r.status_code == 200 and "0 series" in r.text


def test_queries_on_both_backends(db_url: str, tmp_path: Path) -> None:
    """The same pages and API on SQLite and PostgreSQL (ILIKE, CASE ranks, timestamps)."""
    from patchci.config import build_settings
    from patchci.db.store import Store
    from tests.web_server import XSS_SUBJECT, add_hostile_series

    store = Store.open(db_url)
    try:
        sid = add_hostile_series(store)
        store.record_event("pw#created", 7, "2026-01-01T00:00:00", sid)
    finally:
        store.close()
    settings = build_settings({"data_dir": str(tmp_path), "database_url": db_url}, env={})
    c = client_for(create_app(settings))
    page = c.get("/api/v1/series", params={"q": "SCRIPT>", "submitter": "EVE", "outcome": "fail"})
    assert [s["id"] for s in page.json()["items"]] == [sid]
    assert page.json()["items"][0]["outcomes"] == {"error": 1, "fail": 1}
    assert c.get("/api/v1/series", params={"q": "%"}).json()["total"] == 0
    assert c.get(f"/series/{sid}").status_code == 200
    assert c.get(f"/api/v1/series/{sid}").json()["series"]["name"] == XSS_SUBJECT
    status = c.get("/api/v1/status").json()
    assert [s["source"] for s in status["sources"]] == ["pw"]
    assert status["sources"][0]["last_event_id"] == 7
    assert len(status["failed_jobs"]) == len(status["failed_deliveries"]) == 1
    assert status["latency"]["count"] == 1
    assert 'patchci_check_results{outcome="error"} 1' in c.get("/metrics").text
    assert c.get("/status").status_code == 200


# --- contest pages (on the demo copy with six net-next branches) ---------------------------


@pytest.fixture(scope="module")
def contest(hostile: Hostile) -> TestClient:
    return client_for(create_app(settings_for(hostile.data_dir)))


MINE = {"stream": STREAM}  # the fixture's branches, not the demo's own


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, 18),
        ({"outcome": "fail"}, 3),  # broken.sh on the newest three; flaky.sh passed on retry
        ({"branch": contest_branch_name(1)}, 3),
        ({"branches": "2"}, 6),
        ({"name": "FLAKY"}, 6),
        ({"grp": GROUP, "executor": EXECUTOR}, 18),
        ({"executor": "nobody"}, 0),
        ({"branch": "no-such-branch"}, 0),
    ],
)
def test_contest_result_log(contest: TestClient, params: dict[str, str], expected: int) -> None:
    query = {**MINE, **params}
    r = contest.get("/contest", params=query)
    assert r.status_code == 200
    assert len(rows(r.text, "result-row")) == expected
    api = contest.get("/api/v1/contest/results", params=query).json()
    assert api["total"] == expected == len(api["rows"])


def test_contest_result_log_links(contest: TestClient) -> None:
    html = contest.get("/contest", params={**MINE, "branches": "1"}).text
    newest = contest_branch_name(5)
    logs = re.findall(r'href="(/contest/logs/[^"]+)"', html)
    assert len(logs) == 3
    for link in logs:
        r = contest.get(link)
        assert r.status_code == 200 and r.text.startswith(link.split("/")[-2] + f" on {newest}: ")
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert "1 crash</span>" in html  # broken.sh's WARNING on the newest branch
    assert f"/contest/history?grp={GROUP}&amp;name=broken.sh&amp;executor={EXECUTOR}" in html
    limited = contest.get("/contest", params={**MINE, "limit": "2"}).text
    assert len(rows(limited, "result-row")) == 2


def test_demo_contest_logs_are_served(contest: TestClient) -> None:
    """The demo's own executor writes under data_dir/contest/runs: linked and served."""
    html = contest.get("/contest", params={"stream": "net-next"}).text
    logs = re.findall(r'href="(/contest/logs/[^"]+)"', html)
    assert logs
    assert all(contest.get(link).status_code == 200 for link in logs)


def test_flakes_matrix(contest: TestClient) -> None:
    m = contest.get("/api/v1/contest/flakes", params=MINE).json()
    assert m["branches"] == [contest_branch_name(i) for i in range(5, -1, -1)]
    names = [r["name"] for r in m["rows"]]
    assert names == ["flaky.sh", "broken.sh"]  # stable.sh never flipped
    flaky = m["rows"][0]
    assert flaky["cells"] == ["pass", "pass", "flake", "pass", "flake", "pass"]
    assert flaky["signals"]["retry_flakes"] == 2 and flaky["signals"]["flips"] == 4
    html = contest.get("/flakes", params=MINE).text
    assert len(rows(html, "matrix-row")) == 2
    assert html.count('class="cell c-flake"') == 2 and html.count('class="cell c-fail"') == 2
    assert html.count('class="cell c-crash"') == 1  # broken.sh's WARNING on the newest branch
    every = contest.get("/flakes", params={**MINE, "min_flips": "0", "name": "sh"}).text
    assert len(rows(every, "matrix-row")) == 3


@pytest.mark.parametrize(
    ("sort", "order"),
    [
        ("flaky", ["flaky.sh", "broken.sh", "stable.sh"]),  # retry-flakes first
        ("flips", ["flaky.sh", "broken.sh", "stable.sh"]),  # 4 flips, 1, 0
        ("streak", ["broken.sh", "flaky.sh", "stable.sh"]),  # failing now; shortest pass run
        ("name", ["broken.sh", "flaky.sh", "stable.sh"]),
    ],
)
def test_flakes_matrix_sorts(contest: TestClient, sort: str, order: list[str]) -> None:
    params = {**MINE, "min_flips": "0", "sort": sort}
    m = contest.get("/api/v1/contest/flakes", params=params).json()
    assert [r["name"] for r in m["rows"]] == order
    assert m["total"] == 3 and m["stream"] == STREAM


def test_flakes_matrix_pages(contest: TestClient) -> None:
    params = {**MINE, "min_flips": "0", "per_page": "2"}
    first = contest.get("/flakes", params=params).text
    assert len(rows(first, "matrix-row")) == 2 and "page 1 of 2" in first
    nxt = re.search(r'rel="next" href="/flakes(\?[^"]+)"', first)
    assert nxt is not None and 'rel="prev"' not in first
    second = contest.get("/flakes" + unescape(nxt.group(1))).text
    assert len(rows(second, "matrix-row")) == 1 and "stable.sh" in second
    assert 'rel="prev"' in second and 'rel="next"' not in second
    api = contest.get("/api/v1/contest/flakes", params={**params, "page": "2"}).json()
    assert [r["name"] for r in api["rows"]] == ["stable.sh"] and api["page"] == 2
    assert contest.get("/flakes", params={**params, "sort": "bogus"}).status_code == 400


def test_test_history(contest: TestClient) -> None:
    h = contest.get("/api/v1/contest/history", params={"grp": GROUP, "name": "flaky.sh"}).json()
    assert [r["branch"] for r in h["results"]] == [contest_branch_name(i) for i in range(5, -1, -1)]
    assert h["signals"]["retry_flakes"] == 2 and h["signals"]["streak_state"] == "pass"
    html = contest.get("/contest/history", params={"grp": GROUP, "name": "broken.sh"}).text
    assert len(rows(html, "history-row")) == 6
    assert "warning:foo_reset" in html and "3× fail" in html
    none = contest.get("/contest/history", params={"grp": GROUP, "name": "nope"})
    assert none.status_code == 200 and "no results for this test" in none.text
    assert contest.get("/contest/history", params={"grp": GROUP}).status_code == 400


def test_series_page_lists_contest_branches(contest: TestClient) -> None:
    detail = contest.get("/api/v1/series/1").json()
    mine = [b for b in detail["branches"] if b["name"].startswith(STREAM)]
    assert [b["name"] for b in mine] == [contest_branch_name(i) for i in range(5, -1, -1)]
    assert all(b["included"] for b in mine)
    # three tests on one run each; broken.sh fails on the newest three (flaky.sh retried)
    assert [(b["runs"], b["tests"], b["failed"]) for b in mine] == [(1, 3, 1)] * 3 + [(1, 3, 0)] * 3
    html = contest.get("/series/1").text
    assert html.count('class="branch-results" data-tests="3" data-failed="1"') >= 3
    assert f"/contest?branch={contest_branch_name(5)}&amp;sort=result" in html
    left = contest.get("/series/3").text
    assert left.count("<strong>left out</strong>") >= 6
    assert "&lt;b&gt;check build failed&lt;/b&gt;" in left
    assert "not in any test branch yet" in contest.get("/series/4").text


def test_nav_has_the_contest_pages(client: TestClient) -> None:
    html = client.get("/series").text
    for href in ("/series", "/contest", "/flakes", "/status", "/metrics"):
        assert f'href="{href}"' in html
    empty = client.get("/flakes", params={"stream": STREAM})
    assert empty.status_code == 200 and "no test flipped" in empty.text
    assert "no results match" in client.get("/contest", params={"stream": STREAM}).text


def test_series_page_verdict_includes_the_posted_contest_verdict(client: TestClient) -> None:
    """The series page said "pass" while `contest fail` was posted to Patchwork."""
    sid = series_id(client, "[net-next] foo: cap the queue count at 8")  # breaks foo_queues
    html = client.get(f"/series/{sid}").text
    contest = re.search(r'<dd id="contest-verdict">(.*?)</dd>', html, re.S)
    assert contest is not None and "o-fail" in contest.group(1)
    assert "foo-queues" in unescape(contest.group(1))
    verdict = re.search(r'<dd id="verdict">(.*?)</dd>', html, re.S)
    assert verdict is not None and "o-fail" in verdict.group(1)


def test_api_runs_is_paginated_and_filtered(contest: TestClient, hostile: Hostile) -> None:
    import sqlite3

    with sqlite3.connect(hostile.data_dir / "patchci.db") as db:
        (total,) = db.execute("SELECT count(*) FROM runs").fetchone()
        (mine,) = db.execute("SELECT count(*) FROM runs r JOIN branches b ON b.id = r.branch_id"
                             " WHERE b.stream = ?", (STREAM,)).fetchone()  # fmt: skip
    body = contest.get("/api/v1/runs", params={"per_page": 2}).json()
    assert body["total"] == total and body["pages"] == -(-total // 2) and len(body["items"]) == 2
    pages = [contest.get("/api/v1/runs", params={"per_page": 2, "page": p}).json()["items"]
             for p in range(1, body["pages"] + 1)]  # fmt: skip
    ids = [r["id"] for items in pages for r in items]
    assert len(ids) == len(set(ids)) == total  # every run once over the pages
    got = contest.get("/api/v1/runs", params={"stream": STREAM, "per_page": 200}).json()
    assert got["total"] == mine == 6
    assert [r["branch"] for r in got["items"]] == [contest_branch_name(i) for i in range(5, -1, -1)]
    assert [r["failed"] for r in got["items"]] == [1, 1, 1, 0, 0, 0]  # broken.sh, newest first
    assert all(r["tests"] == 3 and r["status"] == "done" for r in got["items"])
    one = contest.get("/api/v1/runs", params={"branch": contest_branch_name(2)}).json()
    assert [r["executor"] for r in one["items"]] == [EXECUTOR]
    assert contest.get("/api/v1/runs", params={"status": "error"}).json()["total"] == 0
    assert contest.get("/api/v1/runs", params={"status": "bogus"}).status_code in (400, 422)
    assert contest.get("/api/v1/runs", params={"per_page": 0}).status_code in (400, 422)


def test_api_regressions_match_the_branch_pages(contest: TestClient) -> None:
    body = contest.get("/api/v1/regressions", params={"stream": STREAM, "per_page": 50}).json()
    assert body["total"] == 6 and body["pages"] == 1
    (reg,) = body["items"]  # broken.sh starts failing on the fourth branch
    assert (reg["branch"], reg["name"], reg["outcome"]) == (contest_branch_name(3), "broken.sh",
                                                            "fail")  # fmt: skip
    assert reg["search"] is None and reg["culprit_series_id"] is None
    for i in range(6):  # the same findings as each branch's own page
        view = contest.get(f"/api/v1/branches/{contest_branch_name(i)}").json()
        mine = [f["name"] for f in view["findings"] if f["kind"] == "regression"]
        assert mine == [r["name"] for r in body["items"] if r["branch"] == contest_branch_name(i)]
    second = contest.get("/api/v1/regressions", params={"stream": STREAM, "per_page": 2,
                                                        "page": 2}).json()  # fmt: skip
    assert second["pages"] == 3 and [r["branch"] for r in second["items"]] == [
        contest_branch_name(3)]  # fmt: skip
    schema = contest.get("/api/v1/openapi.json").json()["paths"]
    assert {"/api/v1/runs", "/api/v1/regressions"} <= set(schema)
