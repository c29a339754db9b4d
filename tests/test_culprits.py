"""Culprit search: a regressed test is bisected over the branch's series tips, and only the
series that broke it reads `fail`.

Before, a failing branch posted `fail` to every series in it (one culprit, and each
innocent series of the branch read `fail` too), and `find_culprits` was a linear search
that only the demo called. Now the daemon's contest job opens a search per regression,
probes with the stream's own executor and posts per-series verdicts with the evidence.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from patchci.analysis.bisect import (
    BASE,
    BUDGET,
    CULPRIT,
    FAIL,
    INCONCLUSIVE,
    PASS,
    RUNNING,
    UNKNOWN,
    bisect,
    steps_needed,
)
from patchci.cli import main
from patchci.daemon import open_store, run_cycle
from patchci.db.culprits import CulpritStore
from patchci.db.results import ResultsStore
from patchci.db.store import Store
from patchci.devtools.pwemu import CheckRec, FakePatchwork
from patchci.executor.base import RUN_DONE
from patchci.git import Git
from patchci.model import Outcome
from patchci.report.contest import (
    BLAMED,
    REGRESSION,
    SEARCHING,
    UPSTREAM,
    Attribution,
    ContestSummary,
    Finding,
    attribute,
)
from patchci.service.contest import cut_due
from patchci.sources.patchwork import PatchworkClient
from patchci.web.app import create_app
from tests.gitrepo import commit_file, format_patches, write
from tests.test_contest_schedule import NOW, OFF_GRID, SOB, TESTS_DIR, settings_for
from tests.test_daemon import PROJECT, SOURCE, make_client
from tests.test_daemon import emu as emu  # the FakePatchwork fixture
from tests.web_server import client_for

# ------------------------------------------------------------------ the search, pure


def _search(n: int, first_bad: int, budget: int = 64) -> tuple[str, int | None, int]:
    """Run bisect against a test that fails from point *first_bad* on (0: the base)."""
    probes: dict[int, str] = {}
    while True:
        state = bisect(n, probes, budget)
        if state.status != RUNNING:
            return state.status, state.culprit, len(probes)
        assert state.next_point is not None and state.next_point not in probes
        probes[state.next_point] = FAIL if state.next_point >= first_bad else PASS


@pytest.mark.parametrize("n", range(1, 10))
def test_every_culprit_is_found_within_log2_probes(n: int) -> None:
    for bad in range(1, n + 1):
        status, culprit, probes = _search(n, bad)
        assert (status, culprit) == (CULPRIT, bad)
        assert probes <= steps_needed(n)


def test_a_test_failing_at_the_base_blames_no_series() -> None:
    assert _search(5, 0) == (BASE, None, 1)


@pytest.mark.parametrize(
    ("probes", "budget", "status", "good", "bad"),
    [
        ({}, 0, BUDGET, None, 4),  # no probe allowed: nothing known
        ({0: PASS}, 1, BUDGET, 0, 4),
        ({0: PASS, 2: UNKNOWN}, 8, INCONCLUSIVE, 0, 4),  # a probe that could not tell
        ({0: PASS, 2: FAIL, 3: PASS}, 8, RUNNING, 0, 2),  # a pass above a fail: first failure
        ({0: PASS, 1: PASS, 2: FAIL}, 8, CULPRIT, 1, 2),
        # down to the last series with only the branch run failing there: probe the head
        ({0: PASS, 2: PASS, 3: PASS}, 8, RUNNING, 3, 4),
        ({0: PASS, 2: PASS, 3: PASS}, 3, BUDGET, 3, 4),
        # ... and when it passes there too, the failure did not recur: nobody is blamed
        ({0: PASS, 2: PASS, 3: PASS, 4: PASS}, 8, INCONCLUSIVE, 3, 4),
        ({0: PASS, 2: PASS, 3: PASS, 4: FAIL}, 8, CULPRIT, 3, 4),
    ],
)  # fmt: skip
def test_search_states(
    probes: dict[int, str], budget: int, status: str, good: int | None, bad: int
) -> None:
    state = bisect(4, probes, budget)
    assert (state.status, state.good, state.bad) == (status, good, bad)


# -------------------------------------------------------------- attribution, pure

T = ("vm", "net", "t-sh")


def _summary(kind: str = REGRESSION) -> ContestSummary:
    f = Finding("vm", "net", "t-sh", kind, Outcome.FAIL)
    return ContestSummary("b-1", "fail", "", 3, (f,))


@pytest.mark.parametrize(
    ("search", "series", "state", "kind"),
    [
        (None, 1, "pending", SEARCHING),  # no search yet: nobody is blamed
        (Attribution("running"), 1, "pending", SEARCHING),
        (Attribution("culprit", 2, "base abc pass, series 2 def fail"), 2, "fail", REGRESSION),
        (Attribution("culprit", 2, "base abc pass, series 2 def fail"), 1, "success", BLAMED),
        (Attribution("base", reason="fails at the base"), 1, "warning", UPSTREAM),
        (Attribution("budget", reason="one of series 1, 2"), 1, "pending", SEARCHING),
        (Attribution("inconclusive", reason="did not build"), 2, "pending", SEARCHING),
    ],
)  # fmt: skip
def test_attribution_per_series(
    search: Attribution | None, series: int, state: str, kind: str
) -> None:
    got = attribute(_summary(), series, {T: search} if search else {})
    assert got.state == state
    assert [f.kind for f in got.findings] == [kind]
    if kind == REGRESSION:
        assert "bisected: base abc pass, series 2 def fail" in got.description
    if kind == BLAMED:
        assert "broken by series 2" in got.description


# ------------------------------------------- through the daemon's contest job

BREAKS = "broken"
CHECK = f"""#!/bin/sh
echo "TAP version 13"
echo "1..1"
if grep -q {BREAKS} ../../../../drivers/net/foo.c; then echo "not ok 1 foo"; else echo "ok 1 foo"; fi
"""


@dataclass
class Branchy:
    root: Path
    git: Git
    emu: FakePatchwork
    client: PatchworkClient
    store: Store
    pw_series: list[int]

    def series_ids(self) -> list[int]:
        ids = [self.store.find_series(SOURCE, str(pw)) for pw in self.pw_series]
        assert None not in ids
        return [i for i in ids if i is not None]

    def verdicts(self) -> dict[int, CheckRec]:
        """The newest contest check of each series (by its first patch)."""
        out: dict[int, CheckRec] = {}
        for i, pw in enumerate(self.pw_series):
            pid = self.emu.series_patches(pw)[0][0]
            mine = [c for c in self.emu.checks.values()
                    if c.context == "contest" and c.patch_id == pid]  # fmt: skip
            out[i] = max(mine, key=lambda c: c.id)
        return out


def _tree(root: Path, check: str = CHECK) -> tuple[Git, list[list[bytes]]]:
    """A tree whose one selftest fails once drivers/net/foo.c says "broken", and three
    one-patch series: the second breaks it, the others touch other files."""
    git = Git.init(root)
    write(root, "drivers/net/foo.c", "int foo;\n")
    write(root, "drivers/net/a.c", "int a;\n")
    write(root, "drivers/net/c.c", "int c;\n")
    write(root, f"{TESTS_DIR}/check.sh", check)
    (root / TESTS_DIR / "check.sh").chmod(0o755)
    git.add_all()
    git.commit("net: import\n\n" + SOB)
    series = []
    for path, text, subject in (
        ("drivers/net/a.c", "int a = 1;\n", "a: set a"),
        ("drivers/net/foo.c", f"int foo; /* {BREAKS} */\n", "foo: break it"),
        ("drivers/net/c.c", "int c = 1;\n", "c: set c"),
    ):
        commit_file(git, path, text, f"{subject}\n\n{SOB}")
        series.append(format_patches(git, "HEAD~1..HEAD", prefix="PATCH net-next"))
        git.run("reset", "--quiet", "--hard", "HEAD~1")
    return git, series


@pytest.fixture
def branchy(tmp_path: Path, emu: FakePatchwork) -> Iterator[Branchy]:
    yield from _branchy(tmp_path, emu, CHECK)


def _branchy(tmp_path: Path, emu: FakePatchwork, check: str) -> Iterator[Branchy]:
    git, series = _tree(tmp_path / "tree", check)
    settings = settings_for(tmp_path, emu.url, git.repo,
                            [{"name": "nn", "tree": "net-next", "tests_dir": TESTS_DIR,
                              "retries": 1}])  # fmt: skip
    w = Branchy(tmp_path, git, emu, make_client(emu), open_store(settings), [])
    # the stream's previous branch: the base alone, where the test passes
    (base,) = cut_due(w.store, ResultsStore(w.store.engine), settings,
                      NOW - timedelta(hours=3), {SOURCE: w.client})  # fmt: skip
    assert base.run_status == RUN_DONE and base.errors == ()
    w.pw_series = [emu.add_series_from_mbox(mails) for mails in series]
    # minutes apart, in mail order: the brancher applies them oldest first
    assert run_cycle(w.store, settings, {SOURCE: w.client}, now=OFF_GRID)["checked"] == 3
    yield w
    w.client.close()
    w.store.close()


def test_only_the_series_that_broke_the_test_reads_fail(branchy: Branchy, tmp_path: Path) -> None:
    w = branchy
    settings = settings_for(tmp_path, w.emu.url, w.git.repo,
                            [{"name": "nn", "tree": "net-next", "tests_dir": TESTS_DIR,
                              "retries": 1}])  # fmt: skip
    stats = run_cycle(w.store, settings, {SOURCE: w.client}, now=NOW)  # the daemon's cycle
    assert (stats["branches"], stats["branch_errors"]) == (1, 0)

    results = ResultsStore(w.store.engine)
    (branch,) = [b for b in results.branches_of_series(w.series_ids()[1])]
    row = results.branch(branch)
    assert list(row.series) == w.series_ids()
    (search,) = CulpritStore(w.store.engine).searches(branch)
    assert (search.status, search.culprit_series_id) == ("culprit", w.series_ids()[1])
    # the base, then halving over 3 series: each probe recorded with its commit
    assert [(s.point, s.outcome) for s in search.steps] == [(0, "pass"), (1, "pass"), (2, "fail")]
    assert all(len(s.commit) == 40 and s.log_dir for s in search.steps)

    got = w.verdicts()
    assert got[1].state == "fail"
    first, second = search.steps[1].commit[:12], search.steps[2].commit[:12]
    assert (f"net/check-sh [foo] (bisected: series {w.series_ids()[0]} {first} pass, series "
            f"{w.series_ids()[1]} {second} fail (3 probes))") in got[1].description  # fmt: skip
    for innocent in (0, 2):
        assert got[innocent].state == "success", got[innocent].description
        assert f"broken by series {w.series_ids()[1]}" in got[innocent].description

    # the series page shows the evidence: the culprit's probes, the innocents' pointer
    with client_for(create_app(settings)) as http:
        culprit_page = http.get(f"/series/{w.series_ids()[1]}").text
        innocent_page = http.get(f"/series/{w.series_ids()[0]}").text
        api = http.get(f"/api/v1/series/{w.series_ids()[1]}/culprits").json()
    assert 'id="culprit-searches"' in culprit_page
    assert "this series broke it" in culprit_page
    assert culprit_page.count('class="probe"') == 3 and second in culprit_page
    assert f'broken by <a href="/series/{w.series_ids()[1]}">' in innocent_page
    assert [(a["status"], a["culprit_series_id"]) for a in api] == [("culprit", w.series_ids()[1])]
    assert [st["outcome"] for st in api[0]["steps"]] == ["pass", "pass", "fail"]

    # a second cycle finds nothing to search and posts nothing new
    before = len(w.emu.checks)
    run_cycle(w.store, settings, {SOURCE: w.client}, now=NOW + timedelta(minutes=5))
    assert len(w.emu.checks) == before


def test_a_search_a_kill_interrupted_goes_on_where_it_stopped(
    branchy: Branchy, tmp_path: Path
) -> None:
    """A daemon killed after the base probe: the next cycle takes the search up (its worker
    is gone), keeps the probe it had and makes only the missing one."""
    w = branchy
    settings = settings_for(tmp_path, w.emu.url, w.git.repo,
                            [{"name": "nn", "tree": "net-next", "tests_dir": TESTS_DIR,
                              "retries": 1, "bisect_steps": 1}])  # fmt: skip
    run_cycle(w.store, settings, {SOURCE: w.client}, now=NOW)
    results, culprits = ResultsStore(w.store.engine), CulpritStore(w.store.engine)
    (branch,) = results.branches_of_series(w.series_ids()[0])
    (search,) = culprits.searches(branch)
    # one probe allowed: the budget ran out with the culprit somewhere in the branch, pending
    assert search.status == "budget" and len(search.steps) == 1
    assert "one of series" in search.reason
    assert {v.state for v in w.verdicts().values()} == {"pending"}

    # as if a daemon had died holding it after that probe: reopen it under a dead worker
    with w.store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE bisections SET status='running', worker='host:1:x', "
                             "lease_until=NULL, finished_at=NULL")  # fmt: skip
    more = settings_for(tmp_path, w.emu.url, w.git.repo,
                        [{"name": "nn", "tree": "net-next", "tests_dir": TESTS_DIR,
                          "retries": 1}])  # fmt: skip
    run_cycle(w.store, more, {SOURCE: w.client}, now=NOW + timedelta(minutes=5))
    (search,) = culprits.searches(branch)
    assert (search.status, search.culprit_series_id) == ("culprit", w.series_ids()[1])
    assert [s.point for s in search.steps] == [0, 1, 2]  # the base probe was not made again
    assert w.verdicts()[1].state == "fail" and w.verdicts()[0].state == "success"


def test_cli_branch_now_bisects_and_shows_each_series_verdict(
    branchy: Branchy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`patchci branch --now`, the command a maintainer runs by hand, searches too."""
    w = branchy
    cfg = tmp_path / "patchci.toml"
    cfg.write_text(f"""
data_dir = "{tmp_path / "data"}"
[[sources]]
name = "{SOURCE}"
type = "patchwork"
url = "{w.emu.url}"
project = "{PROJECT}"
[[trees]]
name = "net-next"
path = "{w.git.repo}"
branch = "main"
tags = ["net-next"]
checks = ["signed_off_by"]
[[streams]]
name = "nn"
tree = "net-next"
tests_dir = "{TESTS_DIR}"
retries = 1
[report.patchwork]
enabled = false
""")
    capsys.readouterr()
    assert main(["-c", str(cfg), "branch", "--now"]) == 1  # the branch has a regression
    out = capsys.readouterr().out
    culprit, *innocent = w.series_ids()[1], w.series_ids()[0], w.series_ids()[2]
    assert "culprit searches" in out and f"series {culprit}" in out
    assert f"series {culprit}: fail:" in out
    for sid in innocent:
        assert f"series {sid}: success:" in out


# The test fails at the base already (subtest "always"); the second series breaks another
# of its subtests. Before, the branch read it as a known failure (failing on the previous
# branch too) and nobody was told; a search judging the whole test would stop at the base.
TWO_SUBTESTS = f"""#!/bin/sh
echo "TAP version 13"
echo "1..2"
echo "not ok 1 always"
if grep -q {BREAKS} ../../../../drivers/net/foo.c; then echo "not ok 2 foo"; else echo "ok 2 foo"; fi
"""


def test_a_new_failing_subtest_of_a_failing_test_is_bisected_to_its_series(
    tmp_path: Path, emu: FakePatchwork
) -> None:
    for w in _branchy(tmp_path, emu, TWO_SUBTESTS):
        settings = settings_for(tmp_path, w.emu.url, w.git.repo,
                                [{"name": "nn", "tree": "net-next", "tests_dir": TESTS_DIR,
                                  "retries": 1}])  # fmt: skip
        run_cycle(w.store, settings, {SOURCE: w.client}, now=NOW)
        results = ResultsStore(w.store.engine)
        (branch,) = results.branches_of_series(w.series_ids()[1])
        (search,) = CulpritStore(w.store.engine).searches(branch)
        assert (search.status, search.culprit_series_id) == ("culprit", w.series_ids()[1])
        # the base probe passes: the subtest that regressed passes there, "always" does not
        assert search.steps[0].outcome == "pass" and search.steps[0].detail == "foo: pass"
        got = w.verdicts()
        assert got[1].state == "fail" and "net/check-sh [foo] (bisected:" in got[1].description
        for innocent in (0, 2):
            assert got[innocent].state != "fail", got[innocent].description


def test_a_posted_fail_links_to_its_evidence_and_reproducer(
    branchy: Branchy, tmp_path: Path
) -> None:
    """With `[report.patchwork] web_url`, each contest check links to the series page,
    which lists the finding with its probes and the command that runs the test again."""
    from patchci.config import PatchworkReport, ReportConfig

    w = branchy
    base = settings_for(tmp_path, w.emu.url, w.git.repo,
                        [{"name": "nn", "tree": "net-next", "tests_dir": TESTS_DIR,
                          "retries": 1}])  # fmt: skip
    web = "https://ci.example.org/patchci"
    settings = base.model_copy(
        update={"report": ReportConfig(patchwork=PatchworkReport(web_url=web))}
    )
    run_cycle(w.store, settings, {SOURCE: w.client}, now=NOW)
    culprit = w.series_ids()[1]
    got = w.verdicts()
    assert got[1].state == "fail"
    assert got[1].target_url == f"{web}/series/{culprit}#contest-findings"
    with client_for(create_app(settings)) as http:
        page = http.get(f"/series/{culprit}").text
    finding = page.split('id="contest-findings"')[1].split("</ul>")[0]
    assert 'data-kind="regression"' in finding and "bisected:" in finding
    assert 'class="reproduce"' in finding and "check.sh" in finding


def test_a_probe_that_hits_an_infrastructure_error_is_tried_once_more(
    branchy: Branchy, tmp_path: Path
) -> None:
    """One failed build step (ours) in a probe ended the whole search as inconclusive: in
    the verdicts benchmark, most of the culprits it missed were lost that way."""
    from datetime import UTC, datetime

    from patchci.executor.base import RUN_ERROR, RunResult
    from patchci.service.culprits import Budget, search_branch, settings_probe
    from patchci.service.leases import worker_id

    w = branchy
    streams = [{"name": "nn", "tree": "net-next", "tests_dir": TESTS_DIR, "retries": 1,
                "bisect_steps": 0}]  # fmt: skip
    run_cycle(w.store, settings_for(tmp_path, w.emu.url, w.git.repo, streams),
              {SOURCE: w.client}, now=NOW)  # fmt: skip
    results, culprits = ResultsStore(w.store.engine), CulpritStore(w.store.engine)
    (branch,) = results.branches_of_series(w.series_ids()[0])
    with w.store.engine.begin() as conn:  # the search again, from the start
        conn.exec_driver_sql("UPDATE bisections SET status='running', worker='', "
                             "lease_until=NULL, finished_at=NULL")  # fmt: skip
    settings = settings_for(tmp_path, w.emu.url, w.git.repo, [{**streams[0], "bisect_steps": 8}])
    wired = settings_probe(settings, results.branch(branch))
    assert wired is not None
    real, path = wired
    calls: list[str] = []

    def first_fails(ex: str, label: str, commit: str, keys: object, out: Path) -> RunResult:
        calls.append(label)
        if calls.count(label) == 1:
            now = datetime.now(UTC)
            return RunResult(ex, label, now, now, RUN_ERROR, "the VM never booted")
        return real(ex, label, commit, keys, out)  # type: ignore[arg-type]

    (search,) = search_branch(w.store, results, culprits, branch, path, first_fails,
                              tmp_path / "work", Budget(), worker_id(w.store))  # fmt: skip
    assert (search.status, search.culprit_series_id) == ("culprit", w.series_ids()[1])
    assert len(calls) == 2 * len(search.steps)  # every probe: an error, then the real run


def test_the_series_that_broke_a_test_gets_one_contest_mail(
    branchy: Branchy, tmp_path: Path
) -> None:
    """Issue 13: a contest `fail` (a regression bisected to the series) is mailed to its
    author in its thread, with the evidence and the failing test's reproduce command; the
    innocent series of the same branch get nothing, and a later cycle sends nothing again."""
    from email import message_from_bytes, policy

    from patchci.config import EmailReport

    w = branchy
    base = settings_for(tmp_path, w.emu.url, w.git.repo,
                        [{"name": "nn", "tree": "net-next", "tests_dir": TESTS_DIR,
                          "retries": 1}])  # fmt: skip
    email = EmailReport(enabled=True, dry_run=True, cc=("netdev@vger.example.org",))
    settings = base.model_copy(update={"report": base.report.model_copy(update={"email": email})})
    outbox = settings.data_path / "outbox"
    run_cycle(w.store, settings, {SOURCE: w.client}, now=NOW)  # the branch, the search
    assert w.verdicts()[1].state == "fail"
    run_cycle(w.store, settings, {SOURCE: w.client}, now=NOW + timedelta(minutes=5))
    (eml,) = outbox.glob("*.eml")
    msg = message_from_bytes(eml.read_bytes(), policy=policy.default)
    culprit = w.store.load_series(w.series_ids()[1])
    assert msg["In-Reply-To"] == culprit.patches[0].msgid
    assert msg["Subject"] == f"Re: {culprit.patches[0].subject}"
    assert "netdev@vger.example.org" in msg["Cc"]
    body = msg.get_content()
    assert "* the test branch nn-" in body
    assert "contest: FAIL - " in body and "bisected: series" in body
    assert "reproduce: " in body
    run_cycle(w.store, settings, {SOURCE: w.client}, now=NOW + timedelta(minutes=10))
    assert len(list(outbox.glob("*.eml"))) == 1  # once, by the ledger
