"""The test history page and API: subtest history, drill-down links, the duration chart.

Route tests run on the `contest` fixture of test_web_routes (six branches of three tests)
plus a stream of our own added here, whose branch, test and subtest names attack the page
and whose subtests and durations are chosen so every number below is known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape, unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from markupsafe import Markup

from patchci.brancher import Manifest
from patchci.db.results import ResultsStore
from patchci.db.store import Store
from patchci.executor.base import RunResult, Subtest, TestResult
from patchci.model import Outcome
from patchci.web import history_queries as hq
from tests.test_web_routes import contest as contest
from tests.test_web_routes import rows
from tests.web_server import GROUP, Hostile, TestClient, contest_branch_name
from tests.web_server import demo_dir as demo_dir
from tests.web_server import hostile as hostile

P, F = Outcome.PASS, Outcome.FAIL

# --- our own stream: four branches, one executor, one test with nested subtests ---------

H_STREAM, H_EXEC, H_GROUP = "histweb", "vm-hist", "histgrp"
H_TEST = '<img src=x onerror=alert(1)>"t".sh'
DEEP = 'case1/sub<2>&"x"'  # a nested subtest whose path needs escaping everywhere
T0 = datetime(2026, 4, 1, tzinfo=UTC)


def h_branch(i: int) -> str:
    return f"hist-{i}-<script>alert({i})</script>"


# Per branch, oldest first: the test's (outcome, retry, duration), then DEEP's.
TEST_PLAN = [(P, None, 2.0), (P, None, None), (F, P, 4.0), (P, None, 3.0)]
DEEP_PLAN = [(P, None, 0.5), (F, P, 0.25), (P, None, None), (F, F, 1.0)]


def _subtests(i: int) -> tuple[Subtest, ...]:
    outcome, retry, duration = DEEP_PLAN[i]
    subs = [
        Subtest("case1", 1, "case1", outcome, None, retry),
        Subtest(DEEP, 2, 'sub<2>&"x"', outcome, duration, retry),
        Subtest("case2", 1, "case2", P, 0.1),
    ]
    if i == 0:
        subs.append(Subtest("gone", 1, "gone", F))  # only in the oldest result
    if i == 3:
        subs.append(Subtest("case3", 1, "case3", P))  # only in the newest one
    return tuple(subs)


def add_history_stream(store: Store) -> None:
    rs = ResultsStore(store.engine)
    for i, (outcome, retry, duration) in enumerate(TEST_PLAN):
        date = T0 + timedelta(hours=3 * i)
        bid = rs.save_branch(
            Manifest(name=h_branch(i), stream=H_STREAM, date=date, base=f"{i:040x}",
                     merges={}, series=(), left_out=(), head=f"{i + 1:040x}",
                     new_changes=True)
        )  # fmt: skip
        test = TestResult(H_GROUP, H_TEST, outcome, duration, retry, subtests=_subtests(i))
        rs.save_run(bid, RunResult(H_EXEC, h_branch(i), date, date, "done", tests=(test,)))


@dataclass(frozen=True)
class Page:
    client: TestClient

    def get(self, **params: str) -> Any:
        return self.client.get("/contest/history", params=params)

    def api(self, **params: str) -> dict[str, Any]:
        r = self.client.get("/api/v1/contest/history", params=params)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


@pytest.fixture(scope="module")
def hist(hostile: Hostile, contest: TestClient) -> Page:
    store = Store.open(f"sqlite:///{hostile.data_dir / 'patchci.db'}")
    try:
        add_history_stream(store)
    finally:
        store.close()
    return Page(contest)


MINE = {"grp": H_GROUP, "name": H_TEST}


def circles(html: str) -> list[tuple[str, float, float, str]]:
    """(class, cx, cy, title text) of every chart point."""
    found = re.findall(
        r'<circle class="pt ([^"]+)" cx="([^"]+)" cy="([^"]+)" r="4"><title>(.*?)</title>', html
    )
    return [(c, float(x), float(y), unescape(t)) for c, x, y, t in found]


# --- the chart geometry (pure) ----------------------------------------------------------


@dataclass(frozen=True)
class R:
    branch: str
    duration: float | None
    outcome: Outcome = P
    retry_outcome: Outcome | None = None
    crashed: bool = False


def test_chart_scales_between_min_and_max_and_keeps_gaps() -> None:
    c = hq.duration_chart([R("a", 1.0), R("b", None), R("c", 3.0), R("d", 2.0)])
    assert c is not None
    # x: 4 slots over 76..628 (step 184), the untimed "b" keeps its slot; y: 3.0 at the top.
    assert [(p.x, p.y) for p in c.points] == [(76.0, 148.0), (444.0, 12.0), (628.0, 80.0)]
    assert c.line == "76.0,148.0 444.0,12.0 628.0,80.0"
    assert (c.max_label, c.min_label) == ("3.00 s", "1.00 s")
    assert (c.left, c.right, c.top, c.bottom) == (76, 628, 12, 148)
    assert [p.title for p in c.points] == ["a: 1.00 s, pass", "c: 3.00 s, pass", "d: 2.00 s, pass"]


def test_chart_of_one_result_or_equal_durations_is_centred() -> None:
    one = hq.duration_chart([R("a", 0.25)])
    assert one is not None and [(p.x, p.y) for p in one.points] == [(352.0, 80.0)]
    same = hq.duration_chart([R("a", 2.0), R("b", 2.0), R("c", 2.0)])
    assert same is not None and {p.y for p in same.points} == {80.0}
    assert [p.x for p in same.points] == [76.0, 352.0, 628.0]


@pytest.mark.parametrize(
    "results", [[], [R("a", None)], [R("a", float("nan")), R("b", float("inf"))]]
)
def test_chart_without_durations_is_none(results: list[R]) -> None:
    assert hq.duration_chart(results) is None


def test_chart_points_are_coloured_by_state() -> None:
    c = hq.duration_chart([
        R("p", 1.0), R("k", 1.0, F, P), R("f", 1.0, F, F), R("c", 1.0, F, P, crashed=True),
        R("t", 1.0, Outcome.TIMEOUT), R("s", 1.0, Outcome.SKIP), R("x", 1.0, Outcome.XFAIL),
    ])  # fmt: skip
    assert c is not None
    assert [p.state for p in c.points] == [
        "pass", "flake", "fail", "crash", "timeout", "skip", "pass",
    ]  # fmt: skip
    assert c.points[1].title == "k: 1.00 s, fail (retry pass)"


def test_chart_text_is_plain_for_the_template_to_escape() -> None:
    """Marking a title Markup would let a branch name through autoescape unescaped."""
    c = hq.duration_chart([R("<script>alert(1)</script>", 0.5)])
    assert c is not None
    (p,) = c.points
    assert p.title == "<script>alert(1)</script>: 500 ms, pass"
    assert not isinstance(p.title, Markup) and not isinstance(c.line, Markup)
    assert re.fullmatch(r"[0-9., ]+", c.line)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0124, "12 ms"), (0.9994, "999 ms"), (1.5, "1.50 s"), (59.5, "59.50 s"),
     (185, "3m 05s"), (7300, "2h 01m")],
)  # fmt: skip
def test_fmt_seconds(seconds: float, text: str) -> None:
    assert hq.fmt_seconds(seconds) == text


# --- the chart on the page ----------------------------------------------------------------


def test_chart_of_a_test_on_the_contest_fixture(contest: TestClient) -> None:
    html = contest.get("/contest/history", params={"grp": GROUP, "name": "broken.sh"}).text
    points = circles(html)
    # Every result took 1.5 s: one height, six slots, oldest left; the newest crashed.
    assert [c for c, *_ in points] == ["c-pass"] * 3 + ["c-fail"] * 2 + ["c-crash"]
    assert {y for _, _, y, _ in points} == {80.0}
    assert [x for _, x, _, _ in points] == [76.0, 186.4, 296.8, 407.2, 517.6, 628.0]
    assert points[0][3] == f"{contest_branch_name(0)}: 1.50 s, pass"
    assert points[-1][3] == f"{contest_branch_name(5)}: 1.50 s, fail (retry fail)"
    assert 'id="chart-max" x="68" y="12">1.50 s<' in html and 'id="chart-empty"' not in html
    flaky = contest.get("/contest/history", params={"grp": GROUP, "name": "flaky.sh"}).text
    assert [c for c, *_ in circles(flaky)].count("c-flake") == 2


def test_chart_of_a_subtest_skips_results_without_duration(hist: Page) -> None:
    html = hist.get(**MINE, subtest=DEEP).text
    assert len(rows(html, "history-row")) == 4
    points = circles(html)
    # Oldest first: 0.5 s pass, 0.25 s flake, (no duration), 1.0 s fail.
    assert [(c, x, y) for c, x, y, _ in points] == [
        ("c-pass", 76.0, 102.7), ("c-flake", 260.0, 148.0), ("c-fail", 628.0, 12.0),
    ]  # fmt: skip
    assert [t for *_, t in points] == [
        f"{h_branch(0)}: 500 ms, pass",
        f"{h_branch(1)}: 250 ms, fail (retry pass)",
        f"{h_branch(3)}: 1.00 s, fail (retry fail)",
    ]
    assert ">1.00 s</text>" in html and ">250 ms</text>" in html
    assert 'points="76.0,102.7 260.0,148.0 628.0,12.0"' in html


def test_empty_state_when_nothing_has_a_duration(hist: Page) -> None:
    html = hist.get(**MINE, subtest="case1").text  # case1 has no durations
    assert len(rows(html, "history-row")) == 4
    assert 'id="chart-empty"' in html and "<svg" not in html
    none = hist.get(**MINE, subtest="no/such/subtest")
    assert none.status_code == 200 and "no results for this subtest" in none.text
    assert 'id="chart-empty"' in none.text and "<svg" not in none.text


# --- subtest history -----------------------------------------------------------------------


def test_subtest_history_api(hist: Page) -> None:
    h = hist.api(**MINE, subtest=DEEP)
    assert h["subtest"] == DEEP and h["name"] == H_TEST
    subs = h["subtest_results"]
    assert [r["branch"] for r in subs] == [h_branch(i) for i in (3, 2, 1, 0)]
    assert [(r["outcome"], r["retry_outcome"], r["duration"]) for r in subs] == [
        ("fail", "fail", 1.0), ("pass", None, None), ("fail", "pass", 0.25), ("pass", None, 0.5),
    ]  # fmt: skip
    assert {r["executor"] for r in subs} == {H_EXEC} and {r["path"] for r in subs} == {DEEP}
    s = h["subtest_signals"]
    # pass, flake, pass, fail: one retry flake, three flips, failing now.
    assert (s["results"], s["retry_flakes"], s["flips"]) == (4, 1, 3)
    assert (s["streak_state"], s["streak"], s["failures"], s["passes"]) == ("fail", 1, 1, 2)
    # The test's own results and signals come along, as without `subtest`.
    assert [r["duration"] for r in h["results"]] == [3.0, 4.0, None, 2.0]
    assert h["signals"]["retry_flakes"] == 1 and h["signals"]["streak_state"] == "pass"


def test_subtest_history_page(hist: Page) -> None:
    html = hist.get(**MINE, subtest=DEEP).text
    text = unescape(html)
    assert f"{H_GROUP} / {H_TEST} / {DEEP}" in text
    assert "4 results: 2 passed, 1 failed, 1 flaked, 3 flips; now 1× fail" in text
    cells = [re.findall(r'class="badge o-(\w+)"', r) for r in rows(html, "history-row")]
    assert cells == [["fail", "fail"], ["pass"], ["fail", "pass"], ["pass"]]
    assert "<th>crashes</th>" not in html
    # Crumbs lead back up: to the test, and to the parent subtest.
    test_link = "/contest/history?" + escape(urlencode(MINE))
    assert f'<a href="{test_link}">' in html
    assert f'<a href="{test_link}&amp;subtest=case1">case1</a>' in html


def test_test_page_lists_the_newest_results_subtests(hist: Page) -> None:
    html = hist.get(**MINE).text
    links = re.findall(r'<tr class="subtest-row">\s*<td class="ind-(\d)"><a href="([^"]+)"', html)
    followed = [(ind, unescape(href)) for ind, href in links]
    subtests = [re.search(r"subtest=([^&]+)$", href) for _, href in followed]
    assert [m.group(1) if m else None for m in subtests] == [
        "case1", "case1%2Fsub%3C2%3E%26%22x%22", "case2", "case3",
    ]  # fmt: skip  # "gone" was only in the oldest result
    assert [ind for ind, _ in followed] == ["0", "1", "0", "0"]
    # Each link is the drill-down: following it shows that subtest's results.
    expected = {"case1": 4, DEEP: 4, "case2": 4, "case3": 1}
    for (_, href), (path, n) in zip(followed, expected.items(), strict=True):
        page = hist.client.get(href)
        assert page.status_code == 200 and len(rows(page.text, "history-row")) == n, path
        assert f"/ {path}</h1>" in unescape(page.text)
    api = hist.api(**MINE)
    assert [s["path"] for s in api["subtests"]] == ["case1", DEEP, "case2", "case3"]
    assert api["subtest_results"] is None and api["more_subtests"] is False


def test_subtest_page_lists_only_what_is_below_it(hist: Page) -> None:
    assert [s["path"] for s in hist.api(**MINE, subtest="case1")["subtests"]] == [DEEP]
    html = hist.get(**MINE, subtest="case1").text
    assert len(rows(html, "subtest-row")) == 1 and 'class="ind-0"' in html
    assert "subtest-row" not in hist.get(**MINE, subtest="case2").text
    for literal in ("case%", "case_", "c%"):  # wildcards are not wildcards
        assert hist.api(**MINE, subtest=literal)["subtests"] == []


def test_subtest_gone_from_the_newest_result_still_has_history(hist: Page) -> None:
    h = hist.api(**MINE, subtest="gone")
    assert [r["branch"] for r in h["subtest_results"]] == [h_branch(0)]
    assert h["subtest_signals"]["failures"] == 1
    # n bounds the test's results looked at: the oldest is not among the newest three.
    old = hist.api(**MINE, subtest="gone", n="3")
    assert old["subtest_results"] == [] and old["subtest_signals"] is None
    assert "no results for this subtest" in hist.get(**MINE, subtest="gone", n="3").text


def test_subtest_history_filters(hist: Page) -> None:
    two = hist.api(**MINE, subtest=DEEP, n="2")["subtest_results"]
    assert [r["branch"] for r in two] == [h_branch(3), h_branch(2)]
    mine = hist.api(**MINE, subtest=DEEP, executor=H_EXEC)["subtest_results"]
    assert len(mine) == 4
    other = hist.api(**MINE, subtest=DEEP, executor="nobody")
    assert other["subtest_results"] == [] and other["subtest_signals"] is None
    assert other["results"] == [] and other["subtests"] == []
    html = hist.get(**MINE, executor=H_EXEC).text  # drill-down keeps the executor
    assert html.count(f"executor={H_EXEC}&amp;subtest=") == len(rows(html, "subtest-row")) == 4
    empty = hist.api(**MINE, subtest="")  # an untouched form field: the test's history
    assert empty["subtest"] is None and empty["subtest_results"] is None


def test_subtest_list_is_bounded(hist: Page, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hq, "SUBTESTS_SHOWN", 2)
    api = hist.api(**MINE)
    assert [s["path"] for s in api["subtests"]] == ["case1", DEEP] and api["more_subtests"]
    html = hist.get(**MINE).text
    assert len(rows(html, "subtest-row")) == 2 and "only the first 2 subtests" in html


@pytest.mark.parametrize(
    ("subtest", "status"),
    [("a" * 512, 200), ("a" * 513, 400), ("case1\x00", 400), ("case1\n", 400),
     ("case\x1b[1m", 400), ("case\x7f", 400), ("ünïcödé ✓/x", 200)],
)  # fmt: skip
def test_subtest_parameter_is_validated(hist: Page, subtest: str, status: int) -> None:
    for url in ("/contest/history", "/api/v1/contest/history"):
        r = hist.client.get(url, params={**MINE, "subtest": subtest})
        assert r.status_code == status, (url, subtest)


def test_test_without_subtests_has_no_subtest_list(contest: TestClient) -> None:
    html = contest.get("/contest/history", params={"grp": GROUP, "name": "flaky.sh"}).text
    assert 'id="subtests"' not in html and len(rows(html, "history-row")) == 6


# --- escaping -------------------------------------------------------------------------------

SVG_TAGS = {"svg", "line", "text", "polyline", "circle", "title"}


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.bad: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for k, v in attrs:
            if k.startswith("on") or k == "style" or (v or "").lower().startswith("javascript:"):
                self.bad.append(f"{tag}[{k}]")


def test_hostile_names_are_escaped(hist: Page) -> None:
    for params in (MINE, {**MINE, "subtest": DEEP}, {**MINE, "subtest": "<svg onload=x>"}):
        r = hist.get(**params)
        assert r.status_code == 200
        p = Tags()
        p.feed(r.text)
        assert p.bad == [], params
        assert "img" not in p.tags and p.tags.count("script") == 1  # the page's own app.js
        assert p.tags.count("svg") <= 1  # the chart, nothing from the names
        assert "<script>alert" not in r.text and "<img src=x" not in r.text
        assert 'sub<2>&"x"' not in r.text
    page = hist.get(**MINE, subtest=DEEP).text
    assert "&lt;script&gt;alert(3)&lt;/script&gt;: 1.00 s, fail" in page  # a point's title
    assert "case1/sub&lt;2&gt;&amp;&#34;x&#34;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;&#34;t&#34;.sh" in page


def test_chart_svg_holds_only_drawing_elements(hist: Page) -> None:
    html = hist.get(**MINE, subtest=DEEP).text
    svg = html[html.index("<svg") : html.index("</svg>")]
    p = Tags()
    p.feed(svg)
    assert set(p.tags) == SVG_TAGS and p.bad == []
    assert "href" not in svg and "<foreignObject" not in svg


def test_chart_css_is_served(hist: Page) -> None:
    r = hist.client.get("/static/style.css")
    assert r.status_code == 200 and "svg.duration-chart .c-flake { fill: var(--warn); }" in r.text
    css = Path(__file__).parent.parent / "src/patchci/web/static/style.css"
    assert css.read_text() == r.text


def test_subtest_history_on_both_backends(db_url: str, tmp_path: Path) -> None:
    """The same rows, order, prefix filter and chart on SQLite and PostgreSQL."""
    from patchci.config import build_settings
    from patchci.web.app import create_app
    from tests.web_server import client_for

    store = Store.open(db_url)
    try:
        add_history_stream(store)
    finally:
        store.close()
    settings = build_settings({"data_dir": str(tmp_path), "database_url": db_url}, env={})
    page = Page(client_for(create_app(settings)))
    h = page.api(**MINE, subtest=DEEP, n="3")
    assert [r["branch"] for r in h["subtest_results"]] == [h_branch(i) for i in (3, 2, 1)]
    assert h["subtest_signals"]["flips"] == 2  # flake, pass, fail
    assert [s["path"] for s in page.api(**MINE, subtest="case1")["subtests"]] == [DEEP]
    assert page.api(**MINE, subtest="case%")["subtests"] == []
    assert len(circles(page.get(**MINE, subtest=DEEP).text)) == 3
