"""The UI in a real browser: Debian's headless Chromium driven by Playwright.

Screenshots go to test-artifacts/screenshots/ under the repository root (override with
PATCHCI_SCREENSHOT_DIR). Without Chromium the tests skip, except under CI (env CI set),
where a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.prereq import unavailable
from tests.web_server import (
    EXECUTOR,
    STREAM,
    XSS_SUBJECT,
    Hostile,
    LiveServer,
    demo_dir,
    hostile,
    live_server,
)

__all__ = ["demo_dir", "hostile", "live_server"]  # fixtures, imported so pytest finds them

CHROMIUM = os.environ.get("PATCHCI_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parent.parent
SHOTS = Path(os.environ.get("PATCHCI_SCREENSHOT_DIR", REPO / "test-artifacts" / "screenshots"))


def _missing() -> str | None:
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = _missing()
    if reason:
        unavailable(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


class Watched:
    """A page plus what it did that it should not: dialogs, console errors, CSP reports."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", self._dialog)
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def rows(self) -> list[str]:
        texts: list[str] = self.page.locator("tr.series-row").all_inner_texts()
        return texts

    def shot(self, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def page(browser: Any, live_server: LiveServer) -> Iterator[Watched]:
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    w = Watched(context.new_page())
    try:
        yield w
    finally:
        context.close()
    assert w.dialogs == [], "a dialog fired: some script ran"
    assert w.errors == [], "console errors (CSP violations?)"


def test_series_list_filters_in_the_browser(page: Watched) -> None:
    p = page.page
    p.goto("/series")
    assert p.title() == "Series · patchci"
    everything = page.rows()
    total = int(p.locator("p.summary").inner_text().split()[0])
    assert len(everything) == total >= 9  # the demo's and the hostile one
    assert XSS_SUBJECT in everything[0]
    page.shot("series-list")

    # A filter menu submits itself (app.js) and leaves only non-empty fields in the URL.
    with p.expect_navigation():
        p.select_option("select[name=state]", "incomplete")
    assert p.url.endswith("/series?state=incomplete")
    rows = page.rows()
    assert len(rows) == 1 and "incomplete" in rows[0]
    assert p.locator("select[name=state]").input_value() == "incomplete"

    # The text search goes through the Filter button.
    p.goto("/series")
    p.fill("input[name=q]", "dropped packets")
    with p.expect_navigation():
        p.click("form.filters button[type=submit]")
    rows = page.rows()
    assert len(rows) == 1 and "foo: count dropped packets" in rows[0]
    page.shot("series-list-filtered")


def test_series_page_in_the_browser(page: Watched) -> None:
    p = page.page
    p.goto("/series?q=dropped+packets")
    with p.expect_navigation():
        p.click("tr.series-row td.subject a")
    assert p.locator("h1.series-name").inner_text() == "[net-next] foo: count dropped packets"
    sob = p.locator("tr.check-row[data-check=signed_off_by]")
    assert sob.locator(".badge").inner_text() == "fail"
    assert "Missing Signed-off-by from author" in sob.inner_text()
    assert (
        p.locator("#lore-link")
        .get_attribute("href", timeout=1000)
        .startswith("https://lore.kernel.org/r/")
    )
    page.shot("series-page")
    with p.expect_navigation():
        sob.locator("a.log").click()
    assert "outcome: fail" in p.locator("body").inner_text()


def test_hostile_series_stays_inert(page: Watched, hostile: Hostile) -> None:
    p = page.page
    p.goto(f"/series/{hostile.series_id}")
    p.wait_for_load_state("load")
    assert p.locator("h1.series-name").inner_text() == XSS_SUBJECT  # shown, as text
    assert p.evaluate("document.querySelectorAll('script:not([src]), img, iframe').length") == 0
    row = p.locator("tr.check-row[data-check=signed_off_by] td.desc")
    assert '"><img src=x onerror=alert(1)>' in row.inner_text()
    for summary in p.locator("details summary").all():
        summary.click()  # open the details and reproducer: still nothing runs
    p.wait_for_timeout(200)
    page.shot("series-page-hostile")
    p.goto(f"/series?q={XSS_SUBJECT}")
    assert len(page.rows()) == 1


def test_status_page_in_the_browser(page: Watched, hostile: Hostile) -> None:
    p = page.page
    p.goto("/status")
    assert p.locator("tr.source-row[data-source=demo-pw]").count() == 2  # two cursors
    assert p.locator("#alarm").count() == 0
    assert "Jobs in error: 1" in p.locator("#failed-jobs caption").inner_text()
    assert "Failed deliveries: 1" in p.locator("#failed-deliveries caption").inner_text()
    assert "Check results with outcome error: 1" in p.locator("#check-errors caption").inner_text()
    executors = p.locator("#executors tr.executor-row")
    assert {executors.nth(i).get_attribute("data-executor") for i in range(executors.count())} >= {
        "local",
        EXECUTOR,
    }  # the demo's own executor and the fixture's
    page.shot("status")
    with p.expect_navigation():
        p.click("#series-by-state a:text('incomplete')")
    assert len(page.rows()) == 1


def test_contest_and_flakes_in_the_browser(page: Watched) -> None:
    p = page.page
    p.goto(f"/flakes?stream={STREAM}")
    assert p.locator("tr.matrix-row").count() == 2
    assert p.locator("#flakes-matrix td.c-flake").count() == 2
    assert p.locator("#flakes-matrix td.c-crash").count() == 1
    page.shot("flakes")
    with p.expect_navigation():
        p.click("a.sort:text('name')")
    first = p.locator("tr.matrix-row >> nth=0 >> td.subject").inner_text()
    assert first.endswith("broken.sh") and "sort=name" in p.url
    with p.expect_navigation():
        p.click("tr.matrix-row >> nth=1 >> td.subject a")  # flaky.sh, after broken.sh
    assert p.locator("tr.history-row").count() == 6
    assert "2 flaked" in p.locator("#signals").inner_text()
    assert p.locator("svg.duration-chart circle.pt").count() == 6  # one point per result
    assert p.locator("svg.duration-chart circle.c-flake").count() == 2
    page.shot("test-history")
    p.goto(f"/contest?stream={STREAM}")
    assert p.locator("tr.result-row").count() == 18
    with p.expect_navigation():
        p.select_option("select[name=outcome]", "fail")
    assert p.locator("tr.result-row").count() == 3
    page.shot("contest")
    p.goto("/contest?stream=net-next")  # the demo's runs, which have nested subtests
    assert p.locator("tr.subtest-row").count() == 0
    with p.expect_navigation():
        p.click("#subtests-toggle")
    assert p.locator("tr.subtest-row").count() == 20 and "subtests=on" in p.url
    assert p.locator("tr.subtest-row[data-final=fail]").count() >= 1  # foo_queues/queues_16
    page.shot("contest-subtests")


def test_a_contest_fail_leads_to_its_bisection_steps(page: Watched) -> None:
    """The demo's branch breaks foo_queues.sh; only the series that lowered FOO_MAX_QUEUES
    reads `fail`. From an innocent series of that branch, the "broken by" link leads to
    the culprit, whose page shows the probes that convict it."""
    p = page.page
    p.goto("/series?q=foo_reset")
    with p.expect_navigation():
        p.locator("tr.series-row a").first.click()
    innocent = p.locator("#culprit-searches tr.search-row").first
    assert "foo-queues-sh" in innocent.inner_text()
    assert "fail" not in p.locator("#contest-verdict .badge").inner_text()
    with p.expect_navigation():
        innocent.locator("a", has_text="series").click()
    assert "foo: cap the queue count at 8" in p.locator("h1").inner_text()
    assert "bisected:" in p.locator("#contest-verdict").inner_text()
    row = p.locator("#culprit-searches tr.search-row").first
    assert "this series broke it" in row.inner_text()
    outcomes = row.locator("li.probe").evaluate_all("els => els.map(e => e.dataset.outcome)")
    assert outcomes[0] == "pass" and outcomes[-1] == "fail"
    page.shot("culprit-search")
