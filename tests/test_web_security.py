"""Web security: escaping, injection in every parameter, log path escapes, headers.

The hostile fixture stores a series whose every user-written field is an XSS payload
(subject, author, check description, details, reproducer, job error, delivery...).
"""

from __future__ import annotations

import http.client
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from patchci.web.app import create_app
from patchci.web.security import (
    LOG_CSP,
    PAGE_CSP,
    UnsafePath,
    check_relative,
    log_relpath,
    lore_url,
    resolve_log,
    safe_url,
)
from tests.web_server import (
    GROUP,
    XSS_DESCRIPTION,
    XSS_SUBJECT,
    Hostile,
    LiveServer,
    TestClient,
    client_for,
    demo_dir,
    hostile,
    live_server,
    settings_for,
)

__all__ = ["demo_dir", "hostile", "live_server"]  # fixtures, imported so pytest finds them


@pytest.fixture(scope="module")
def client(hostile: Hostile) -> TestClient:
    return client_for(create_app(settings_for(hostile.data_dir)))


class ActiveContent(HTMLParser):
    """Collects whatever in a page could run script or load from elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {k for k, _ in attrs}
        inline_script = tag == "script" and names != {"src", "defer"}
        if inline_script or tag in ("iframe", "object", "embed", "svg", "img", "base"):
            self.found.append(f"<{tag}>")
        if tag == "meta" and "http-equiv" in names:
            self.found.append("<meta http-equiv>")
        for k, v in attrs:
            if k.startswith("on") or k == "style":
                self.found.append(f"{tag}[{k}]")
            if tag == "link" and k == "href" and v == "data:,":
                continue  # the empty favicon, so browsers do not ask for /favicon.ico
            if k in ("href", "src", "action") and v:
                scheme = urlsplit(v.strip()).scheme.lower()
                if scheme not in ("", "http", "https"):
                    self.found.append(f"{tag}[{k}={v}]")
            if k == "src" and v and not v.startswith("/static/"):
                self.found.append(f"{tag}[src={v}]")


def active_content(html: str) -> list[str]:
    p = ActiveContent()
    p.feed(html)
    return p.found


def pages(hostile: Hostile) -> list[str]:
    sid = hostile.series_id
    return [
        "/series",
        f"/series?q={XSS_SUBJECT}",
        f"/series/{sid}",
        "/status",
        "/series/99999",
        "/series?tree=<script>alert(1)</script>",
        "/no/<script>alert(1)</script>",
    ]


# --- escaping ------------------------------------------------------------------------------


def test_hostile_series_is_escaped_in_every_page(client: TestClient, hostile: Hostile) -> None:
    for url in pages(hostile):
        r = client.get(url)
        assert r.status_code in (200, 400, 404), url
        assert active_content(r.text) == [], url
        assert "<script>alert" not in r.text and "<img src=x" not in r.text, url


def test_hostile_values_are_shown_as_text(client: TestClient, hostile: Hostile) -> None:
    listing = client.get("/series").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in listing
    page = client.get(f"/series/{hostile.series_id}").text
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in page  # the description
    assert "&lt;/pre&gt;&lt;script&gt;alert(7)&lt;/script&gt;" in page  # the reproducer
    assert "&lt;b onmouseover=alert(5)&gt;why&lt;/b&gt;" in page  # the state reason
    status = client.get("/status").text
    assert status.count("&#34;&gt;&lt;img src=x onerror=alert(1)&gt;") >= 3  # job, delivery, check


def test_bidi_controls_in_user_text_reach_no_page(client: TestClient, hostile: Hostile) -> None:
    """A U+202E (right-to-left override) in an author name reversed the rest of the line
    on the web pages (date, e-mail, link labels)."""
    for url in pages(hostile):
        text = client.get(url).text
        assert "\u202e" not in text and "\u2066" not in text, url
    assert "evil" in client.get(f"/series/{hostile.series_id}").text


def test_bidi_controls_reach_no_console_table() -> None:
    from rich.console import Console

    from patchci.model import CheckResult, Outcome
    from patchci.report.console import results_table

    console = Console(record=True, width=120)
    r = CheckResult("signed_off_by", Outcome.FAIL, "no sign-off by Eve \u202elive")
    console.print(results_table("x \u202ey", [r], 1))
    out = console.export_text()
    assert "\u202e" not in out and "Eve live" in out


def test_javascript_urls_are_not_linked(client: TestClient, hostile: Hostile) -> None:
    page = client.get(f"/series/{hostile.series_id}").text
    assert 'id="pw-link"' not in page and "javascript:" not in page.replace(
        "src=javascript:alert(4)", ""
    )  # the only javascript: left is the escaped text of a problem
    detail = client.get(f"/api/v1/series/{hostile.series_id}").json()
    assert detail["series"]["web_url"] is None and detail["patches"][0]["web_url"] is None
    assert detail["lore_url"].startswith("https://lore.kernel.org/r/x%27%22%3E%3Cscript%3E")


def test_log_path_outside_logs_is_not_linked(client: TestClient, hostile: Hostile) -> None:
    checks = client.get(f"/api/v1/series/{hostile.series_id}/checks").json()
    apply = next(c for c in checks if c["check"] == "apply")
    assert apply["log"] is None


def test_api_returns_raw_text_as_json(client: TestClient, hostile: Hostile) -> None:
    r = client.get(f"/api/v1/series/{hostile.series_id}")
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.json()["series"]["name"] == XSS_SUBJECT
    descriptions = {c["description"] for c in r.json()["patches"][0]["checks"]}
    assert descriptions == {XSS_DESCRIPTION}


# --- injection in every parameter ------------------------------------------------------------

PAYLOADS = [
    "' OR 1=1 --",
    "1; DROP TABLE series",
    "%27",
    "' UNION SELECT id, name FROM series --",
    '" OR ""="',
    "1' AND (SELECT 1 FROM sqlite_master)--",
    "1 OR 1=1",
    "-1",
    "0",
    "99999999999999999999999",
    "\x00",
    "%",
    "_",
    "\\",
    "ünïcödé ✓",
    "x" * 5000,
    "<script>alert(1)</script>",
]
SERIES_PARAMS = ("tree", "state", "outcome", "submitter", "q", "page", "per_page")
CONTEST_PARAMS = ("branch", "branches", "stream", "executor", "outcome", "grp", "name")
MATRIX_PARAMS = ("min_flips", "sort", "page", "per_page")
LOG_PARAMS = ("limit", "subtests", "sort", "dir", "page", "per_page")
HISTORY = {"grp": GROUP, "name": "flaky.sh"}  # a test the fixture has: rows to compare
WIDEST = {"min_flips": "0"}  # the baseline shows every test, so no payload can show more
ROUTES: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "/series": (SERIES_PARAMS, {}),
    "/api/v1/series": (SERIES_PARAMS, {}),
    "/series/{sid}": (("unknown",), {}),
    "/api/v1/series/{sid}": (("unknown",), {}),
    "/api/v1/series/{sid}/checks": (("check", "outcome", "history"), {}),
    "/status": (("unknown",), {}),
    "/api/v1/status": (("unknown",), {}),
    "/metrics": (("unknown",), {}),
    "/contest": ((*CONTEST_PARAMS, *LOG_PARAMS), {}),
    "/api/v1/contest/results": ((*CONTEST_PARAMS, *LOG_PARAMS), {}),
    "/flakes": ((*CONTEST_PARAMS, *MATRIX_PARAMS), WIDEST),
    "/api/v1/contest/flakes": ((*CONTEST_PARAMS, *MATRIX_PARAMS), WIDEST),
    "/contest/history": (("grp", "name", "executor", "n", "subtest"), HISTORY),
    "/api/v1/contest/history": (("grp", "name", "executor", "n", "subtest"), HISTORY),
    "/checks": (("check", "days", "slowest"), {}),
    "/api/v1/runs": (("branch", "stream", "executor", "status", "page", "per_page"), {}),
    "/api/v1/regressions": (("stream", "page", "per_page"), {}),
    "/api/v1/checks": (("check", "days", "slowest"), {}),
}
CASES = [(route, param) for route, (params, _) in ROUTES.items() for param in params]
FREE_TEXT = {"q", "submitter", "name"}


def count_rows(r_text: str, is_api: bool, json_body: object) -> int:
    if is_api and isinstance(json_body, dict):
        for key in ("items", "rows", "results", "checks"):
            if key in json_body:
                return len(json_body[key])
    if is_api and isinstance(json_body, list):
        return len(json_body)
    return len(re.findall(r'<tr class="(?:series|check|result|matrix|history)-row"', r_text))


@pytest.mark.parametrize(("route", "param"), CASES, ids=[f"{r}:{p}" for r, p in CASES])
def test_injection_in_query_parameters(
    client: TestClient, hostile: Hostile, route: str, param: str
) -> None:
    url = route.format(sid=hostile.series_id)
    base = ROUTES[route][1]
    is_api = url.startswith("/api/")
    stored = client.get("/api/v1/series").json()["total"]
    baseline = client.get(url, params=base)
    assert baseline.status_code == 200
    normal = count_rows(baseline.text, is_api, baseline.json() if is_api else None)
    for payload in PAYLOADS:
        r = client.get(url, params={**base, param: payload})
        assert r.status_code in (200, 400), (param, payload, r.status_code)
        if r.status_code == 400:
            continue
        body = r.json() if is_api else None
        got = count_rows(r.text, is_api, body)
        if param in FREE_TEXT and any(ch in payload for ch in "'\";<"):
            assert got <= 1, (param, payload)  # a literal search, never "everything"
        else:
            assert got <= normal, (param, payload)
    assert client.get("/api/v1/series").json()["total"] == stored  # nothing was dropped


def test_free_text_search_is_literal(client: TestClient, hostile: Hostile) -> None:
    found = client.get("/api/v1/series", params={"q": "<script>alert(1)</script>"}).json()
    assert [s["id"] for s in found["items"]] == [hostile.series_id]
    assert client.get("/api/v1/series", params={"q": "' OR 1=1 --"}).json()["total"] == 0
    assert client.get("/api/v1/series", params={"submitter": "%"}).json()["total"] == 0


@pytest.mark.parametrize(
    "path",
    ["' OR 1=1 --", "1; DROP TABLE series", "%27", "1 OR 1=1", "0", "-1", "1.5",
     "99999999999999999999999", "1e3", "<script>"],
)  # fmt: skip
def test_injection_in_path_parameters(client: TestClient, path: str) -> None:
    for template in ("/series/{}", "/api/v1/series/{}", "/api/v1/series/{}/checks"):
        r = client.get(template.format(path))
        assert r.status_code in (400, 404), (template, path, r.status_code)


def test_bad_parameters_answer_400_with_a_reason(client: TestClient) -> None:
    r = client.get("/api/v1/series", params={"page": "0"})
    assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["query", "page"]
    html = client.get("/series", params={"state": "DROP TABLE"})
    assert html.status_code == 400 and "state:" in html.text
    assert client.get("/series", params={"per_page": "201"}).status_code == 400


# --- headers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["/series", "/series/1", "/status", "/metrics", "/api/v1/series", "/api/v1/status",
     "/api/v1/openapi.json", "/static/style.css", "/static/app.js", "/series/99999",
     "/series?page=x"],
)  # fmt: skip
def test_security_headers_everywhere(client: TestClient, url: str) -> None:
    r = client.get(url)
    assert r.headers["content-security-policy"] == PAGE_CSP
    assert "default-src 'self'" in PAGE_CSP and "unsafe-inline" not in PAGE_CSP
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"


def test_pages_have_no_inline_script_or_style(client: TestClient) -> None:
    for url in ("/series", "/series/1", "/status"):
        html = client.get(url).text
        assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
        assert "<style" not in html and " style=" not in html


# --- logs ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def log_tree(hostile: Hostile) -> Path:
    """Next to the demo logs: a secret outside, and symlinks out of and inside logs/."""
    logs = hostile.data_dir / "logs"
    (hostile.data_dir / "secret.txt").write_text("TOP SECRET\n")
    (logs / "escape.log").symlink_to("../secret.txt")
    (logs / "abs.log").symlink_to("/etc/passwd")
    (logs / "sub").mkdir()
    (logs / "sub" / "deep.log").symlink_to("../../secret.txt")
    (logs / "inside.log").write_text("inside\n")
    (logs / "sub" / "link-in.log").symlink_to("../inside.log")
    (logs / "page.html").write_text("<script>alert(1)</script>\n")
    (logs / "data.json").write_text('{"a": 1}\n')
    (logs / "loop.log").symlink_to("loop.log")
    return logs


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/logs/..%2fsecret.txt", 400),
        ("/logs/..%2F..%2Fetc%2Fpasswd", 400),
        ("/logs/%2e%2e/secret.txt", 400),
        ("/logs/sub/%2e%2e/%2e%2e/secret.txt", 400),
        ("/logs/%2fetc%2fpasswd", 400),
        ("/logs//etc/passwd", 400),
        ("/logs/..%5csecret.txt", 400),
        ("/logs/inside.log%00.txt", 400),
        ("/logs/./inside.log", 200),  # httpx normalises the dot away: a plain request
        ("/logs/escape.log", 404),
        ("/logs/abs.log", 404),
        ("/logs/sub/deep.log", 404),
        ("/logs/loop.log", 404),
        ("/logs/sub", 404),
        ("/logs/missing.log", 404),
        ("/logs/inside.log", 200),
        ("/logs/sub/link-in.log", 200),
        ("/contest/logs/..%2f..%2flogs%2finside.log", 400),
        ("/contest/logs/%2e%2e/%2e%2e/secret.txt", 400),
        ("/contest/logs/%2fetc%2fpasswd", 400),
        ("/contest/logs/..%2f..%2fpatchci.db", 400),
    ],
)
def test_log_paths(client: TestClient, log_tree: Path, path: str, status: int) -> None:
    r = client.get(path)
    assert r.status_code == status, r.text[:200]
    assert "TOP SECRET" not in r.text and "root:" not in r.text
    if status == 200:
        assert r.text == "inside\n"


def test_log_paths_over_raw_http(live_server: LiveServer, log_tree: Path) -> None:
    """Unnormalised `..` only reaches the app when no client library cleans the URL."""
    host = urlsplit(live_server.url)
    conn = http.client.HTTPConnection(host.hostname or "", host.port, timeout=10)
    try:
        for path in ("/logs/../secret.txt", "/logs/sub/../../secret.txt", "/logs/../../etc/passwd",
                     "/logs/.", "/logs/sub/./deep.log", "/contest/logs/../../secret.txt",
                     "/contest/logs/../../patchci.db", "/static/../settings.py",
                     "/static/../../web/app.py"):  # fmt: skip
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read().decode()
            assert r.status in (400, 404), path
            assert "TOP SECRET" not in body and "root:" not in body and "SQLite" not in body
            assert r.getheader("content-security-policy") is not None
    finally:
        conn.close()


def test_logs_are_served_inert(client: TestClient, log_tree: Path) -> None:
    r = client.get("/logs/page.html")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["content-security-policy"] == LOG_CSP
    assert r.headers["x-content-type-options"] == "nosniff"
    js = client.get("/logs/data.json")
    assert js.headers["content-type"] == "application/json" and js.json() == {"a": 1}


def test_check_relative() -> None:
    assert str(check_relative("series-1/job-2/apply.log")) == "series-1/job-2/apply.log"
    for bad in ("", "/etc/passwd", "../x", "a/../../x", "a/./b", "a\\..\\b", "a\x00b", "C:/x",
                "..", "."):  # fmt: skip
        with pytest.raises(UnsafePath):
            check_relative(bad)


def test_resolve_log(tmp_path: Path) -> None:
    root = tmp_path / "logs"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.log").write_text("x")
    (tmp_path / "out.log").write_text("out")
    (root / "a" / "out.log").symlink_to(tmp_path / "out.log")
    assert resolve_log(root, "a/x.log") == (root / "a" / "x.log").resolve()
    assert resolve_log(root, "a/out.log") is None
    assert resolve_log(root, "a") is None
    assert resolve_log(root, "a/none.log") is None
    with pytest.raises(UnsafePath):
        resolve_log(root, "../out.log")


def test_log_relpath(tmp_path: Path) -> None:
    root = tmp_path / "logs"
    assert log_relpath(str(root / "s-1" / "a.log"), root) == "s-1/a.log"
    assert log_relpath("s-1/a.log", root) == "s-1/a.log"
    assert log_relpath(str(tmp_path / "elsewhere.log"), root) is None
    assert log_relpath(str(root / ".." / "x.log"), root) is None
    assert log_relpath("../../etc/passwd", root) is None
    assert log_relpath(None, root) is None and log_relpath("", root) is None


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://patchwork.kernel.org/project/netdevbpf/list/?series=1", True),
        ("http://127.0.0.1:8000/x", True),
        ("javascript:alert(1)", False),
        (" JavaScript:alert(1)", False),
        ("data:text/html,<script>", False),
        ("//evil.example/x", False),
        ("https:///nohost", False),
        ("", False),
        (None, False),
    ],
)
def test_safe_url(url: str | None, ok: bool) -> None:
    assert (safe_url(url) is not None) is ok


def test_lore_url() -> None:
    assert (
        lore_url("<20240101.abc@kernel.org>") == "https://lore.kernel.org/r/20240101.abc@kernel.org"
    )
    assert lore_url("<a/b?c#d@x>") == "https://lore.kernel.org/r/a%2Fb%3Fc%23d@x"
    assert lore_url("<>") is None and lore_url(None) is None


def test_hostile_fixture_is_not_the_demo(hostile: Hostile, demo_dir: Path) -> None:
    assert hostile.data_dir != demo_dir and os.path.exists(hostile.data_dir / "patchci.db")
