"""The contest result log: subtests on/off, sorting, server-side pages, reproduce commands.

Runs on the `contest` fixture of test_web_routes (the demo's net-next branches, whose tests
have KTAP subtests, plus the six `webtest` branches), and on a copy of it with one more
branch whose subtests and reproduce command are hostile or awkward to order.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from patchci.db.store import Store
from patchci.model import OUTCOME_PRIORITY, Outcome
from patchci.web.app import create_app
from tests.test_web_routes import contest, rows
from tests.test_web_security import active_content
from tests.web_server import (
    STREAM,
    Hostile,
    TestClient,
    client_for,
    contest_branch_name,
    copy_data_dir,
    demo_dir,
    hostile,
    settings_for,
)

__all__ = ["contest", "demo_dir", "hostile"]  # fixtures, imported so pytest finds them

DEMO = {"stream": "net-next"}  # the demo's two branches: 8 tests, 20 subtests
MINE = {"stream": STREAM}  # six branches x stable/flaky/broken, no subtests


def api(client: TestClient, **params: str) -> dict[str, Any]:
    r = client.get("/api/v1/contest/results", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def shown_names(html: str) -> list[str]:
    """The test column of each result row."""
    return [unescape(n).strip() for n in re.findall(r'<td class="subject">([^<]+)<', html)]


def subtest_cells(html: str) -> list[str]:
    """The subtest column of each subtest row, as text."""
    cells = re.findall(
        r'<tr class="subtest-row".*?<td class="subject sub[^"]*">(.*?)</td>', html, re.S
    )
    return [unescape(re.sub(r"<[^>]+>", "", c)) for c in cells]


# --- subtests on/off -----------------------------------------------------------------------


def test_subtests_are_off_by_default(contest: TestClient) -> None:
    html = contest.get("/contest", params=DEMO).text
    assert len(rows(html, "result-row")) == 8 and "subtest-row" not in html
    assert all(r["subtests"] == [] for r in api(contest, **DEMO)["rows"])
    assert "subtests <strong>off</strong>" in html


def test_subtests_on_come_under_their_test_in_path_order(contest: TestClient) -> None:
    html = contest.get("/contest", params={**DEMO, "subtests": "on"}).text
    assert len(rows(html, "result-row")) == 8
    assert len(rows(html, "subtest-row")) == 20
    # Newest branch first; there foo-queues-sh's tree: its case, then the case's children.
    queues = html.index("foo-queues-sh")
    after = subtest_cells(html[queues:])[:4]
    assert after == [
        "foo_queues",
        "foo_queues/queues_16",
        "foo_queues/queues_4",
        "foo_queues/queues_8",
    ]
    assert 'class="subject sub d1">foo_queues</td>' in html
    assert html.count('class="subject sub d2"') == 10  # 2 x (2 xmit_* + 3 queues_*)
    body = api(contest, **DEMO, subtests="true")
    queues_row = next(r for r in body["rows"] if r["name"] == "foo-queues-sh")
    assert [s["path"] for s in queues_row["subtests"]] == [
        "foo_queues", "foo_queues/queues_16", "foo_queues/queues_4", "foo_queues/queues_8",
    ]  # fmt: skip
    assert queues_row["subtests"][1] == {
        "path": "foo_queues/queues_16", "depth": 2, "name": "queues_16", "outcome": "fail",
        "retry_outcome": "fail", "final": "fail", "duration": None,
    }  # fmt: skip
    assert body["subtests"] is True and all(r["matched"] for r in body["rows"])


@pytest.mark.parametrize(
    ("params", "tests", "context", "subtests"),
    [
        # Only the newer foo-queues-sh failed; of its subtests the case and queues_16.
        ({"outcome": "fail"}, 1, 0, ["foo_queues", "foo_queues/queues_16"]),
        # Crashed tests whose subtests passed: the tests alone.
        ({"outcome": "crash"}, 2, 0, []),
        # Passing subtests list the crashed and failed tests as their context.
        ({"outcome": "pass"}, 8, 3, None),
        # No test is named so; two subtests are, under two context rows.
        ({"name": "queues_16"}, 2, 2, ["foo_queues/queues_16"] * 2),
        ({"name": "XMIT"}, 4, 4, ["foo_stress/xmit_burst", "foo_stress/xmit_reset", "foo_xmit"] * 2),
        # A test found by its name brings its whole tree.
        ({"name": "foo-queues"}, 2, 0, ["foo_queues", "foo_queues/queues_16", "foo_queues/queues_4",
                                        "foo_queues/queues_8"] * 2),
        ({"name": "queues", "outcome": "fail"}, 1, 0, ["foo_queues", "foo_queues/queues_16"]),
        ({"name": "%"}, 0, 0, []),  # literal, not a LIKE wildcard
    ],
)  # fmt: skip
def test_filters_apply_to_subtests(
    contest: TestClient,
    params: dict[str, str],
    tests: int,
    context: int,
    subtests: list[str] | None,
) -> None:
    html = contest.get("/contest", params={**DEMO, **params, "subtests": "on"}).text
    assert len(rows(html, "result-row")) == tests
    assert html.count('data-context="subtests"') == context
    body = api(contest, **DEMO, **params, subtests="on")
    assert body["total"] == len(body["rows"]) == tests
    assert sum(not r["matched"] for r in body["rows"]) == context
    got = [s["path"] for r in body["rows"] for s in r["subtests"]]
    if subtests is not None:
        assert sorted(got) == sorted(subtests)
        assert sorted(subtest_cells(html)) == sorted(subtests)
    if "outcome" in params:
        assert all(s["final"] == params["outcome"] for r in body["rows"] for s in r["subtests"])


def test_subtest_filters_only_with_subtests_on(contest: TestClient) -> None:
    assert api(contest, **DEMO, name="queues_16")["total"] == 0
    assert api(contest, **DEMO, outcome="pass")["total"] == 5
    assert api(contest, **DEMO, outcome="pass", subtests="off")["total"] == 5


# --- sorting -------------------------------------------------------------------------------


def test_default_order_is_newest_branch_first(contest: TestClient) -> None:
    body = api(contest, **MINE)
    branches = [r["branch_date"] for r in body["rows"]]
    assert branches == sorted(branches, reverse=True)
    assert body["sort"] == "date" and body["direction"] == "desc"
    oldest = api(contest, **MINE, dir="asc")["rows"]
    assert [r["branch_date"] for r in oldest] == sorted(branches)


def test_sort_by_result_worst_first(contest: TestClient) -> None:
    rank = {o.value: i for i, o in enumerate(OUTCOME_PRIORITY)}
    worst = [rank[r["final"]] for r in api(contest, **DEMO, sort="result")["rows"]]
    assert worst == sorted(worst) and worst[0] == rank[Outcome.CRASH.value]
    best = [rank[r["final"]] for r in api(contest, **DEMO, sort="result", dir="desc")["rows"]]
    assert best == sorted(best, reverse=True)


def test_sort_by_time_and_test_and_executor(contest: TestClient) -> None:
    every = {"branches": "20", "per_page": "1000"}  # the fixture's 1.5 s and the demo's ms
    slow = [r["duration"] for r in api(contest, **every, sort="time")["rows"]]
    assert slow == sorted(slow, reverse=True) and slow[0] == 1.5 and slow[-1] < 1.5
    fast = [r["duration"] for r in api(contest, **every, sort="time", dir="asc")["rows"]]
    assert fast == sorted(slow)
    names = [(r["grp"], r["name"]) for r in api(contest, **DEMO, sort="test")["rows"]]
    assert names == sorted(names)
    both = {"branches": "20", "sort": "executor"}
    assert api(contest, **both)["rows"][0]["executor"] == "local"
    assert api(contest, **both, dir="desc")["rows"][0]["executor"] == "vm-web"


def test_column_headers_sort_and_flip(contest: TestClient) -> None:
    html = contest.get("/contest", params={**MINE, "sort": "test"}).text
    assert html.count("aria-sort=") == 1 and 'aria-sort="ascending"' in html
    found = re.findall(r'href="/contest(\?[^"]*)" title="sort by (\w+)"', html)
    links = {col: unescape(query) for query, col in found}
    assert links == {
        "date": f"?stream={STREAM}",  # newest first, the default
        "executor": f"?stream={STREAM}&sort=executor",
        "test": f"?stream={STREAM}&sort=test&dir=desc",  # the current column flips
        "result": f"?stream={STREAM}&sort=result",
        "time": f"?stream={STREAM}&sort=time",  # slowest first
    }
    flipped = contest.get("/contest" + links["test"]).text
    assert 'aria-sort="descending"' in flipped
    names = shown_names(flipped)
    assert len(names) == 18 and names == sorted(names, reverse=True)


def test_bad_sort_and_page_parameters_are_400(contest: TestClient) -> None:
    for bad in ({"sort": "bogus"}, {"dir": "up"}, {"page": "0"}, {"per_page": "1001"},
                {"per_page": "0"}, {"limit": "5001"}, {"subtests": "maybe"}):  # fmt: skip
        assert contest.get("/contest", params=bad).status_code == 400, bad
        assert contest.get("/api/v1/contest/results", params=bad).status_code == 400, bad


# --- pages ---------------------------------------------------------------------------------


def test_pages_cover_every_row_once_and_keep_the_filters(contest: TestClient) -> None:
    everything = [(r["branch"], r["name"]) for r in api(contest, **MINE)["rows"]]
    assert len(everything) == 18
    url: str | None = "/contest?" + f"stream={STREAM}&sort=test&per_page=5"
    seen: list[str] = []
    pages = 0
    while url is not None:
        html = contest.get(url).text
        pages += 1
        assert f"page {pages} of 4" in html and "18 tests" in html
        seen += shown_names(html)
        assert ('rel="prev"' in html) == (pages > 1)
        nxt = re.search(r'rel="next" href="(/contest\?[^"]+)"', html)
        url = unescape(nxt.group(1)) if nxt else None
        if url:
            assert f"stream={STREAM}" in url and "sort=test" in url and "per_page=5" in url
    assert pages == 4 and len(seen) == 18
    assert seen == sorted(name for _b, name in everything)
    page2 = api(contest, **MINE, per_page="5", page="2")
    assert page2["page"] == 2 and page2["pages"] == 4 and page2["total"] == 18
    assert [(r["branch"], r["name"]) for r in page2["rows"]] == everything[5:10]


def test_page_past_the_end_is_empty_but_counted(contest: TestClient) -> None:
    views = [({}, 8), ({"outcome": "pass"}, 5), ({"subtests": "on", "name": "queues_16"}, 2)]
    for view, total in views:
        body = api(contest, **DEMO, **view, per_page="1", page="50")
        assert body["rows"] == [] and body["total"] == total and body["pages"] == total


def test_pager_keeps_subtests_and_filters(contest: TestClient) -> None:
    params = {**DEMO, "subtests": "on", "outcome": "pass", "per_page": "3", "page": "2"}
    html = contest.get("/contest", params=params).text
    assert len(rows(html, "result-row")) == 3 and "page 2 of 3" in html
    for rel in ("prev", "next"):
        link = re.search(rf'rel="{rel}" href="(/contest\?[^"]+)"', html)
        assert link is not None
        query = unescape(link.group(1))
        for part in ("stream=net-next", "outcome=pass", "subtests=on", "per_page=3"):
            assert part in query, (rel, query)
    assert 'name="subtests" value="on" checked' in html
    assert '<input type="hidden" name="per_page" value="3">' in html


def test_limit_is_still_the_page_size(contest: TestClient) -> None:
    """`limit` came before pages: API clients that send it get that many rows."""
    body = api(contest, **MINE, limit="2")
    assert len(body["rows"]) == 2 and body["per_page"] == body["limit"] == 2
    assert body["total"] == 18 and body["pages"] == 9
    assert api(contest, **MINE, limit="5000")["per_page"] == 1000  # capped to per_page's bound
    assert api(contest, **MINE, limit="2", per_page="4")["per_page"] == 4


# --- reproduce and retry time ----------------------------------------------------------------


def test_reproduce_command_and_retry_time(contest: TestClient) -> None:
    body = api(contest, **MINE, name="flaky", outcome="pass")
    retried = [r for r in body["rows"] if r["retry_outcome"] is not None]
    assert len(retried) == 2 and all(r["retry_duration"] == 2.0 for r in retried)
    assert all(r["reproduce"] == "./flaky.sh" for r in body["rows"])
    html = contest.get("/contest", params={**MINE, "name": "flaky"}).text
    assert html.count('<code class="copy">./flaky.sh</code>') == 6
    assert html.count('title="retry time">retry 2s</span>') == 2
    assert '<link rel="stylesheet" href="/static/style.css">' in html
    assert "code.copy" in contest.get("/static/style.css").text


def test_flakes_page_keeps_its_own_filters(contest: TestClient) -> None:
    html = contest.get("/flakes", params=MINE).text
    assert 'name="min_flips"' in html and 'name="subtests"' not in html
    assert 'name="outcome"' not in html
    log = contest.get("/contest", params=MINE).text
    assert 'name="subtests"' in log and 'name="outcome"' in log and 'name="min_flips"' not in log


# --- subtests only for the page, one query -------------------------------------------------


@pytest.fixture
def statements(contest: TestClient) -> Iterator[list[str]]:
    """The SQL the app runs during a test."""
    seen: list[str] = []
    engine = contest.app.state.engine

    def record(*args: Any) -> None:
        seen.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_subtests_off_never_read_subtests(contest: TestClient, statements: list[str]) -> None:
    contest.get("/contest", params={**DEMO, "outcome": "fail", "name": "queues"})
    assert statements and not any("subtests" in s for s in statements)


def test_subtests_on_read_once_for_the_page(contest: TestClient, statements: list[str]) -> None:
    contest.get("/contest", params={**DEMO, "subtests": "on", "per_page": "3"})
    reads = [s for s in statements if "FROM subtests" in s]
    assert len(reads) == 1 and "subtests.test_id IN" in reads[0]
    statements.clear()
    contest.get("/contest", params={**DEMO, "subtests": "on", "outcome": "fail"})
    # One to pick the tests (with their count), one for the page's subtests.
    assert len([s for s in statements if "subtests" in s]) == 2


# --- awkward and hostile subtests ------------------------------------------------------------

SUB_STREAM, SUB_EXEC = "subtree", "vm-sub"
HOSTILE_NAME = "<script>alert(1)</script>.sh"
HOSTILE_REPRO = "</code></details><script>alert(2)</script>"
# Stored shuffled; shown by path components, where text order would put "a-x" and "a.y"
# between "a" and "a/b" ("-" and "." sort before "/").
PATH_ORDER = [
    "<img src=x onerror=alert(3)>", "a", "a/b", "a/b/c", "a-x", "a.y",
    "deep/1/2/3/4/5/6/7/8/9",
]  # fmt: skip


@pytest.fixture(scope="module")
def awkward(hostile: Hostile, tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    from patchci.brancher import Manifest
    from patchci.db.results import ResultsStore
    from patchci.executor.base import RunResult, Subtest, TestResult

    data = copy_data_dir(hostile.data_dir, tmp_path_factory.mktemp("web-subtests") / "data")
    store = Store.open(f"sqlite:///{data / 'patchci.db'}")
    try:
        rs = ResultsStore(store.engine)
        date = datetime(2026, 4, 1, tzinfo=UTC)
        bid = rs.save_branch(
            Manifest(name="subtree-1", stream=SUB_STREAM, date=date, base="0" * 40,
                     merges={}, series=(), left_out=(), head="1" * 40, new_changes=True)
        )  # fmt: skip
        subs = tuple(
            Subtest(p, p.count("/") + 1, p.rsplit("/", 1)[-1], Outcome.PASS, 0.5)
            for p in reversed(PATH_ORDER)
        )
        test = TestResult("sub", HOSTILE_NAME, Outcome.PASS, 1.0, subtests=subs,
                          reproduce=HOSTILE_REPRO)  # fmt: skip
        rs.save_run(
            bid, RunResult(SUB_EXEC, "subtree-1", date, date + timedelta(minutes=1), "done",
                           tests=(test,))
        )  # fmt: skip
    finally:
        store.close()
    return client_for(create_app(settings_for(Path(data))))


def test_subtests_in_path_component_order(awkward: TestClient) -> None:
    body = api(awkward, stream=SUB_STREAM, subtests="on")
    assert [s["path"] for s in body["rows"][0]["subtests"]] == PATH_ORDER
    html = awkward.get("/contest", params={"stream": SUB_STREAM, "subtests": "on"}).text
    assert subtest_cells(html) == PATH_ORDER
    assert 'class="subject sub d8"><span class="muted">deep/1/2/3/4/5/6/7/8/</span>9</td>' in html


def test_hostile_subtests_and_reproduce_are_text(awkward: TestClient) -> None:
    html = awkward.get("/contest", params={"stream": SUB_STREAM, "subtests": "on"}).text
    assert active_content(html) == []
    assert "&lt;/code&gt;&lt;/details&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(3)&gt;" in html
    assert "<script>alert" not in html and "<img src=x" not in html
    found = awkward.get("/contest", params={"stream": SUB_STREAM, "subtests": "on", "name": "<img"})
    assert len(rows(found.text, "subtest-row")) == 1


@pytest.mark.parametrize("payload", ["' OR 1=1 --", "%", "q_e", "\\", "<script>alert(1)</script>"])
def test_subtest_search_is_literal(contest: TestClient, payload: str) -> None:
    for outcome in ("", "fail"):
        params = {**DEMO, "subtests": "on", "name": payload, "outcome": outcome}
        assert api(contest, **params)["total"] == 0
        assert contest.get("/contest", params=params).status_code == 200


def test_a_branch_page_lists_its_series(contest: TestClient, hostile: Hostile) -> None:
    """No page listed the series of a test branch."""
    html = contest.get("/contest", params={"branch": contest_branch_name(2)}).text
    table = re.search(r'<table class="results" id="branch-series">(.*?)</table>', html, re.S)
    assert table is not None
    got = re.findall(r'<tr class="branch-series-row" data-included="(yes|no)"><td>(.*?)</td>',
                     table.group(1), re.S)  # fmt: skip
    included = [unescape(re.sub(r"<[^>]+>", "", cell)) for flag, cell in got if flag == "yes"]
    left_out = [unescape(re.sub(r"<[^>]+>", "", cell)) for flag, cell in got if flag == "no"]
    assert included == ["1", "2", str(hostile.series_id)] and left_out == ["3"]
    assert "&lt;b&gt;check build failed&lt;/b&gt;" in table.group(1)  # the reason, escaped
    assert f'href="/series/{hostile.series_id}"' in table.group(1)
    assert 'id="branch-series"' not in contest.get("/contest").text  # only for one branch
