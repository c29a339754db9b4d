"""The contest schedule: the daemon cuts, tests, posts and reaps test branches on its own.

A tiny tree (one KTAP shell test) and one series on the Patchwork emulator, ingested and
checked by `run_cycle` like in test_daemon; every cycle then gets an injected `now`, so the
branch grid (every 3 hours, UTC) is hit or missed on purpose and nothing sleeps.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from patchci.brancher import branch_name, list_branches
from patchci.cli import main
from patchci.config import Settings, build_settings, load_settings
from patchci.daemon import open_store, run_cycle
from patchci.db.results import ResultsStore
from patchci.db.store import Store
from patchci.devtools.pwemu import CheckRec, FakePatchwork
from patchci.git import Git
from patchci.model import Outcome
from patchci.service.contest import StreamCut, cut_due
from patchci.sources.patchwork import PatchworkClient
from tests.gitrepo import commit_file, format_patches, write
from tests.test_daemon import PROJECT, SOURCE, check_posts, make_client
from tests.test_daemon import emu as emu  # the FakePatchwork fixture

NOW = datetime(2026, 8, 20, 3, 0, tzinfo=UTC)  # on the 3-hour grid
OFF_GRID = datetime(2026, 8, 20, 1, 30, tzinfo=UTC)
TESTS_DIR = "tools/testing/selftests/net"
OK_TEST = '#!/bin/sh\necho "TAP version 13"\necho "1..1"\necho "ok 1 works"\n'
SOB = "Signed-off-by: Test Author <author@example.com>"  # the isolate fixture's author
BRANCH = branch_name("nn-", NOW)


def build_tree(root: Path) -> tuple[Git, list[bytes]]:
    """A tree on `main` with one executable selftest, and one series for it (as mails)."""
    git = Git.init(root)
    write(root, "drivers/net/foo.c", "int foo;\n")
    write(root, f"{TESTS_DIR}/ok.sh", OK_TEST)
    (root / TESTS_DIR / "ok.sh").chmod(0o755)
    git.add_all()
    git.commit("net: import\n\n" + SOB)
    commit_file(git, "drivers/net/foo.c", "int foo;\nint bar;\n", "foo: add bar\n\n" + SOB)
    mails = format_patches(git, "HEAD~1..HEAD", prefix="PATCH net-next")
    git.run("reset", "--quiet", "--hard", "HEAD~1")
    return git, mails


def stream(name: str = "nn", **kw: Any) -> dict[str, Any]:
    return {"name": name, "tree": "net-next", "tests_dir": TESTS_DIR, "retries": 0, **kw}


def settings_for(
    root: Path,
    url: str,
    tree: Path,
    streams: Sequence[Mapping[str, Any]],
    sources: Sequence[Mapping[str, Any]] = (),
    extra_tree: Mapping[str, str] | None = None,
) -> Settings:
    net_next = {"name": "net-next", "path": str(tree), "branch": "main", "tags": ["net-next"]}
    trees: list[dict[str, Any]] = [{**net_next, "checks": ["signed_off_by"]}]
    if extra_tree:
        trees.append({"tags": [extra_tree["name"]], **extra_tree})
    return build_settings(
        {
            "data_dir": str(root / "data"),
            "sources": [
                {"name": SOURCE, "type": "patchwork", "url": url, "project": PROJECT},
                *sources,
            ],
            "trees": trees,
            "streams": list(streams),
        },
        env={},
    )


@dataclass
class World:
    root: Path
    git: Git
    emu: FakePatchwork
    client: PatchworkClient
    store: Store
    settings: Settings
    pw_series: int

    @property
    def results(self) -> ResultsStore:
        return ResultsStore(self.store.engine)

    def with_streams(
        self,
        *streams: Mapping[str, Any],
        sources: Sequence[Mapping[str, Any]] = (),
        extra_tree: Mapping[str, str] | None = None,
    ) -> Settings:
        return settings_for(self.root, self.emu.url, self.git.repo, streams, sources, extra_tree)

    def cycle(self, now: datetime, settings: Settings | None = None) -> dict[str, int]:
        return run_cycle(self.store, settings or self.settings, {SOURCE: self.client}, now=now)

    def cut(self, now: datetime, settings: Settings | None = None) -> list[StreamCut]:
        s = settings or self.settings
        return cut_due(self.store, self.results, s, now, {SOURCE: self.client})

    def branches(self, prefix: str = "nn-") -> list[str]:
        return [name for name, _ in list_branches(self.git, prefix)]

    @property
    def series_id(self) -> int:
        sid = self.store.find_series(SOURCE, str(self.pw_series))
        assert sid is not None
        return sid

    @property
    def patch_ids(self) -> list[int]:
        return [pid for pid, _ in self.emu.series_patches(self.pw_series)]

    def contest_checks(self) -> list[CheckRec]:
        return [c for c in self.emu.checks.values() if c.context == "contest"]


@pytest.fixture
def world(tmp_path: Path, emu: FakePatchwork) -> Iterator[World]:
    """The series ingested, checked and reported by a cycle off the branch grid."""
    git, mails = build_tree(tmp_path / "tree")
    pw = emu.add_series_from_mbox(mails)
    settings = settings_for(tmp_path, emu.url, git.repo, [stream()])
    w = World(tmp_path, git, emu, make_client(emu), open_store(settings), settings, pw)
    first = w.cycle(OFF_GRID)
    assert first["new"] == first["checked"] == 1 and first["posted"] > 0
    assert (first["errors"], first["branches"], first["branch_errors"]) == (0, 0, 0)
    assert w.store.series_row(w.series_id).state == "reported"
    yield w
    w.client.close()
    w.store.close()


def test_a_stream_that_is_not_due_does_nothing(world: World) -> None:
    # off the grid; on the grid of every hour but not of every 3 hours
    for now in (OFF_GRID, NOW + timedelta(hours=1), NOW + timedelta(hours=2, minutes=59)):
        assert world.cut(now) == []
        assert world.cycle(now)["branches"] == 0
    assert world.branches() == []
    assert not (world.root / "data" / "contest").exists()  # no worktree, no test run
    # off the grid not even git runs: a stream whose tree is gone has nothing to say yet
    missing = {"name": "gone", "path": "/nonexistent"}
    gone = world.with_streams(stream("gone", tree="gone"), extra_tree=missing)
    assert world.cut(OFF_GRID, gone) == []
    # nothing but the checkout and the check worker's kept worktree
    kept = str(world.root / "data" / "worktrees")
    assert [p for p in world.git.worktrees()[1:] if not str(p).startswith(kept)] == []
    assert world.contest_checks() == []


def test_a_due_stream_is_cut_tested_and_posted_once(world: World) -> None:
    stats = world.cycle(NOW)
    assert (stats["branches"], stats["branch_errors"]) == (1, 0)
    assert world.branches() == [BRANCH]
    row = world.results.branch(BRANCH)
    assert row.series == (world.series_id,) and row.left_out == ()
    (run,) = world.results.branch_results(BRANCH)
    assert run.status == "done"
    assert {(t.group, t.name): t.outcome for t in run.tests} == {("net", "ok-sh"): Outcome.PASS}
    contest = world.contest_checks()
    assert sorted(c.patch_id for c in contest) == sorted(world.patch_ids)
    assert {c.state for c in contest} == {"success"}
    assert all(BRANCH in (c.description or "") for c in contest)
    posts = len(check_posts(world.emu))

    # the next cycles of the same hour: not due any more, nothing cut, run or posted
    for later in (NOW + timedelta(minutes=2), NOW + timedelta(minutes=59)):
        assert world.cycle(later)["branches"] == 0
    assert world.branches() == [BRANCH]
    assert len(world.results.branch_runs(BRANCH)) == 1
    assert len(check_posts(world.emu)) == posts
    assert Counter(c.patch_id for c in world.contest_checks()) == Counter(world.patch_ids)
    assert world.store.series_row(world.series_id).state == "reported"


def test_branches_older_than_keep_days_are_reaped_here_and_on_the_remote(world: World) -> None:
    remote = Git(world.root / "remote.git")
    world.git.run("init", "--quiet", "--bare", str(remote.repo))
    world.git.run("remote", "add", "origin", str(remote.repo))
    old = ["nn-2026-08-10--00-00", "nn-2026-08-15--00-00"]  # cutoff: 2026-08-15 03:00
    kept = ["nn-2026-08-16--00-00", "nn-manual", "other-2026-08-01--00-00"]
    for name in old + kept:
        world.git.run("branch", name, "main")
        world.git.run("push", "--quiet", "origin", name)
    settings = world.with_streams(stream(keep_days=5, push_remote="origin"))

    (cut,) = world.cut(NOW, settings)

    assert cut.branch == BRANCH and cut.errors == ()
    assert cut.reaped == tuple(old)
    want = {*kept, BRANCH, "main"}
    local = world.git.run("for-each-ref", "--format=%(refname:strip=2)", "refs/heads/")
    assert set(local.stdout.split()) == want
    pushed = remote.run("for-each-ref", "--format=%(refname:strip=2)", "refs/heads/")
    assert set(pushed.stdout.split()) == want - {"main"}
    assert world.results.branch(BRANCH).series == (world.series_id,)


@pytest.mark.parametrize(
    ("broken", "extra_tree", "why"),
    [
        (stream("gone", tree="gone"), {"name": "gone", "path": "missing"}, "missing"),
        (stream("nobase", base_branch="no-such-branch"), {}, "no-such-branch"),
    ],
    ids=["tree path missing", "base branch missing"],
)
def test_one_failing_stream_does_not_stop_the_others(
    world: World,
    broken: dict[str, Any],
    extra_tree: dict[str, str],
    why: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tree = {k: str(world.root / v) if k == "path" else v for k, v in extra_tree.items()}
    settings = world.with_streams(broken, stream(), extra_tree=tree)
    with caplog.at_level(logging.ERROR, logger="patchci.service.contest"):
        stats = world.cycle(NOW, settings)

    assert (stats["branches"], stats["branch_errors"], stats["errors"]) == (1, 1, 0)
    assert f"stream {broken['name']}:" in caplog.text and why in caplog.text
    assert world.branches() == [BRANCH]
    if "path" not in extra_tree:
        assert world.branches(f"{broken['name']}-") == []
    # ours, not the series': its state and checks are untouched, the good stream's verdict
    # is the only contest check
    assert world.store.series_row(world.series_id).state == "reported"
    assert {c.state for c in world.contest_checks()} == {"success"}
    assert len(world.contest_checks()) == len(world.patch_ids)
    # still broken in the next cycle of the hour (retried, recorded), the good one not due
    again = world.cut(NOW + timedelta(minutes=5), settings)
    assert [(c.stream, c.branch) for c in again] == [(broken["name"], None)]
    assert again[0].errors and why in again[0].errors[0]


def test_a_run_that_cannot_start_is_pending_never_a_failure(world: World) -> None:
    """The executor's build tool is missing: the branch is cut and stored with an "error"
    run, the series get a pending contest check, and the stream records the error."""
    settings = world.with_streams(stream(build_command=["/nonexistent/make"]))
    (cut,) = world.cut(NOW, settings)
    assert cut.branch == BRANCH and cut.run_status == "error"
    assert len(cut.errors) == 1 and cut.errors[0].startswith("run: local-nn: build of")
    contest = world.contest_checks()
    assert len(contest) == len(world.patch_ids)
    assert {c.state for c in contest} == {"pending"}
    assert all("infrastructure error" in (c.description or "") for c in contest)
    assert world.store.series_row(world.series_id).state == "reported"


def test_series_from_a_mail_source_are_tested_but_not_posted(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Contest checks go to the Patchwork source each series came from; a series read from
    a directory of patches has none, so it is in the branch and its check is not posted."""
    inbox = world.root / "inbox"
    commit_file(world.git, "drivers/net/baz.c", "int baz;\n", "baz: add baz\n\n" + SOB)
    world.git.run(
        "format-patch", "-q", "-o", str(inbox), "--subject-prefix=PATCH net-next", "HEAD~1..HEAD"
    )
    world.git.run("reset", "--quiet", "--hard", "HEAD~1")
    inbox_source = {"name": "inbox", "type": "patches", "path": str(inbox)}
    settings = world.with_streams(stream(), sources=[inbox_source])
    assert world.cycle(OFF_GRID, settings)["new"] == 1
    (mail_sid,) = [r.id for r in world.store.list_series() if r.source == "inbox"]

    with caplog.at_level(logging.INFO, logger="patchci.service.contest"):
        (cut,) = world.cut(NOW, settings)

    assert cut.errors == () and cut.posted == len(world.patch_ids)
    assert world.results.branch(BRANCH).series == (world.series_id, mail_sid)
    assert sorted(c.patch_id for c in world.contest_checks()) == sorted(world.patch_ids)
    assert f"source inbox is not Patchwork, contest checks of series [{mail_sid}]" in caplog.text


def test_each_patchwork_server_gets_the_checks_of_its_own_series(world: World) -> None:
    """Patch ids are per server (both emulators number from 1): posting every series of the
    branch to every source would land checks on the wrong patches."""
    for name in ("baz", "qux"):
        commit_file(world.git, f"drivers/net/{name}.c", "int x;\n", f"{name}: add\n\n" + SOB)
    mails = format_patches(world.git, "HEAD~2..HEAD", prefix="PATCH net-next")
    world.git.run("reset", "--quiet", "--hard", "HEAD~2")
    with FakePatchwork(project=PROJECT, project_name="Other") as other:
        pw2 = other.add_series_from_mbox(mails)
        source = {"name": "pw2", "type": "patchwork", "url": other.url, "project": PROJECT}
        settings = world.with_streams(stream(), sources=[source])
        clients = {SOURCE: world.client, "pw2": make_client(other)}
        assert run_cycle(world.store, settings, clients, now=OFF_GRID)["new"] == 1

        (cut,) = cut_due(world.store, world.results, settings, NOW, clients)

        assert cut.errors == () and cut.posted == 3
        assert len(world.results.branch(BRANCH).series) == 2
        mine = Counter(c.patch_id for c in world.contest_checks())
        theirs = Counter(c.patch_id for c in other.checks.values() if c.context == "contest")
        assert mine == Counter(world.patch_ids)
        assert theirs == Counter(pid for pid, _ in other.series_patches(pw2))
        clients["pw2"].close()


# ---------------------------------------------------------------- `patchci branch`


def write_config(world: World, every_hours: int) -> Path:
    cfg = world.root / "patchci.toml"
    cfg.write_text(
        f"""
data_dir = "{world.root / "data"}"

[[sources]]
name = "{SOURCE}"
type = "patchwork"
url = "{world.emu.url}"
project = "{PROJECT}"
token_env = "PATCHCI_TEST_PW_TOKEN"
retries = 1
timeout = 5

[[trees]]
name = "net-next"
path = "{world.git.repo}"
branch = "main"
tags = ["net-next"]
checks = ["signed_off_by"]

[[streams]]
name = "nn"
tree = "net-next"
tests_dir = "{TESTS_DIR}"
every_hours = {every_hours}
retries = 0
"""
    )
    return cfg


def test_cli_branch_cuts_the_due_stream(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATCHCI_TEST_PW_TOKEN", world.emu.token)
    cfg = write_config(world, every_hours=1)  # every hour is on the grid; no branch yet

    assert main(["-c", str(cfg), "branch"]) == 0

    out = capsys.readouterr().out
    (name,) = world.branches()
    assert name.startswith("nn-20")
    assert "stream nn: 1 contest checks posted; reaped: none" in out
    assert [c.patch_id for c in world.contest_checks()] == world.patch_ids


def test_cli_branch_without_a_due_stream_exits_0(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    # a branch of this hour exists, and 24 hours never pass before the next hour comes
    this_hour = branch_name("nn-", datetime.now(UTC))
    world.git.run("branch", this_hour, "main")
    cfg = write_config(world, every_hours=24)

    assert main(["-c", str(cfg), "branch"]) == 0

    assert "no stream due" in capsys.readouterr().out
    assert world.branches() == [this_hour]
    assert not (world.root / "data" / "contest").exists()


def test_cli_ingest_once_cuts_the_due_branch(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATCHCI_TEST_PW_TOKEN", world.emu.token)
    cfg = write_config(world, every_hours=1)

    assert main(["-c", str(cfg), "ingest", "--once"]) == 0

    assert (
        "0 posts failed, 0 source errors, 1 branches cut, 0 stream errors"
        in capsys.readouterr().out
    )
    assert len(world.branches()) == 1
    assert [c.patch_id for c in world.contest_checks()] == world.patch_ids


def test_a_newer_revision_goes_in_and_the_older_is_left_out_as_superseded(
    world: World,
) -> None:
    """With v1 and v2 of a series stored, the brancher tested v1 and left v2 out."""
    commit_file(world.git, "drivers/net/foo.c", "int foo;\nint bar2;\n", "foo: add bar\n\n" + SOB)
    v2 = format_patches(world.git, "HEAD~1..HEAD", prefix="PATCH net-next v2")
    world.git.run("reset", "--quiet", "--hard", "HEAD~1")
    pw_v2 = world.emu.add_series_from_mbox(v2)
    world.cycle(OFF_GRID)  # v2 ingested and checked
    new = world.store.find_series(SOURCE, str(pw_v2))
    assert new is not None
    assert world.cycle(NOW)["branches"] == 1
    row = world.results.branch(BRANCH)
    assert row.series == (new,)
    ((old, why),) = row.left_out
    assert old == world.series_id
    assert why == f"superseded by series {new} (v2, same submitter and name)"


def test_a_series_accepted_in_patchwork_stays_out_with_the_reason(world: World) -> None:
    world.emu.set_patch_state(world.patch_ids[0], "accepted")
    assert world.cycle(NOW)["branches"] == 1
    row = world.results.branch(BRANCH)
    assert row.series == () and row.left_out == ((world.series_id, "Patchwork state: accepted"),)
    # the page of the branch shows why
    from patchci.web.app import create_app
    from tests.web_server import client_for

    with client_for(create_app(world.settings)) as http:
        page = http.get(f"/contest?branch={BRANCH}").text
    assert "Patchwork state: accepted" in page


def _running_runs(world: World) -> list[int]:
    from sqlalchemy import select

    from patchci.db import tables as t

    with world.store.engine.connect() as conn:
        q = select(t.runs.c.id).where(t.runs.c.status == "running")
        return [r for (r,) in conn.execute(q)]


def test_a_run_killed_mid_way_is_run_again_once_and_stored_once(
    world: World, tmp_path: Path
) -> None:
    """Jobs of a killed daemon stayed `running` forever; a killed branch run was never run
    again (its branch existed, so it was not due) and its series never got a verdict."""
    import multiprocessing
    import os
    import signal

    from patchci.service.contest import cmd_branch_now

    mark = tmp_path / "slow"
    mark.touch()
    slow = f"#!/bin/sh\n[ -e {mark} ] && sleep 120\n" + OK_TEST.split("\n", 1)[1]
    write(world.git.repo, f"{TESTS_DIR}/ok.sh", slow)
    world.git.add_all()
    world.git.commit("selftests: slow when asked\n\n" + SOB)
    child = multiprocessing.get_context("fork").Process(
        target=cmd_branch_now, args=(world.settings, "nn")
    )
    child.start()
    deadline = time.monotonic() + 60
    while not _running_runs(world) and time.monotonic() < deadline:
        time.sleep(0.2)
    (rid,) = _running_runs(world)
    time.sleep(1)  # the test is sleeping inside the run now
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    mark.unlink()
    stats = world.cycle(OFF_GRID)  # the restarted daemon: nothing due, the run is resumed
    assert stats["branch_errors"] == 0
    assert _running_runs(world) == []
    (branch,) = world.branches()
    runs = world.results.branch_runs(branch)
    assert [(r.id, r.status) for r in runs] == [(rid, "done")]  # stored once, in its row
    (test,) = world.results.branch_results(branch)[0].tests
    assert test.outcome is Outcome.PASS
    # its series got its contest verdict once the run was done
    assert sorted(c.patch_id for c in world.contest_checks()) == sorted(world.patch_ids)


def test_a_run_interrupted_twice_is_an_error_of_ours(world: World) -> None:
    from sqlalchemy import update

    from patchci.db import tables as t

    assert world.cut(NOW) and world.branches() == [BRANCH]
    (run,) = world.results.branch_runs(BRANCH)
    with world.store.engine.begin() as conn:  # as a worker that died on its 2nd attempt
        conn.execute(update(t.runs).where(t.runs.c.id == run.id).values(
            status="running", worker="nohost:1:x", attempts=2, lease_until=None))  # fmt: skip
    world.cycle(OFF_GRID)
    (after,) = world.results.branch_runs(BRANCH)
    assert after.status == "error" and "interrupted 2 times" in after.error
    assert {c.state for c in world.contest_checks()} <= {"success", "pending"}


def test_the_nipa_feed_is_written_every_cycle_and_served(world: World) -> None:
    """branches.json and the results manifests existed as functions only the demo called."""
    import json

    from patchci.executor.nipa_json import load_run_file, parse_manifest
    from patchci.web.app import create_app
    from tests.web_server import client_for

    world.cycle(NOW)
    feed = world.root / "data" / "feed" / "nn"
    (entry,) = json.loads((feed / "branches.json").read_text())
    assert entry["branch"] == BRANCH and entry["url"] == f"{world.git.repo} {BRANCH}"
    info = json.loads((feed / "branches-info.json").read_text())
    assert info[BRANCH]["series"] == [world.series_id]
    (m,) = parse_manifest(json.loads((feed / "local-nn" / "results.json").read_text()))
    assert m.branch == BRANCH and m.url is not None
    run_file = feed / "local-nn" / m.url.rsplit("/", 1)[1]
    imported = load_run_file(run_file)
    assert [(t.name, t.outcome) for t in imported.run.tests] == [("ok-sh", Outcome.PASS)]
    before = run_file.stat().st_mtime_ns
    world.cycle(NOW + timedelta(minutes=5))  # written once
    assert run_file.stat().st_mtime_ns == before
    with client_for(create_app(world.settings)) as http:
        served = http.get("/feed/nn/branches.json")
        assert served.status_code == 200 and served.json() == [entry]
        assert http.get(f"/feed/nn/local-nn/{run_file.name}").status_code == 200


def test_the_daemon_posts_new_checks_while_a_branch_run_is_in_progress(
    tmp_path: Path, emu: FakePatchwork
) -> None:
    """Branch runs ran inside the daemon's loop: polling and checks stopped for as long as
    a branch took (NIPA's take hours). The real daemon (`patchci ingest`, a subprocess)
    now runs them in its contest thread."""
    import os
    import subprocess
    import sys

    git, mails = build_tree(tmp_path / "tree")
    mark = tmp_path / "slow"
    mark.touch()
    slow = f"#!/bin/sh\nwhile [ -e {mark} ]; do sleep 0.2; done\n" + OK_TEST.split("\n", 1)[1]
    write(git.repo, f"{TESTS_DIR}/ok.sh", slow)
    git.add_all()
    git.commit("selftests: wait for the test to say go\n\n" + SOB)
    emu.add_series_from_mbox(mails)
    cfg = tmp_path / "patchci.toml"
    cfg.write_text(f"""
data_dir = "{tmp_path / "data"}"
[[sources]]
name = "{SOURCE}"
type = "patchwork"
url = "{emu.url}"
project = "{PROJECT}"
token_env = "PATCHCI_TEST_PW_TOKEN"
poll_interval = 1
[[trees]]
name = "net-next"
path = "{git.repo}"
branch = "main"
tags = ["net-next"]
checks = ["signed_off_by"]
[[streams]]
name = "nn"
tree = "net-next"
tests_dir = "{TESTS_DIR}"
every_hours = 1
retries = 0
""")
    exe = Path(sys.executable).parent / "patchci"
    daemon = subprocess.Popen([str(exe), "-c", str(cfg), "ingest"], text=True,
                              env={**os.environ, "PATCHCI_TEST_PW_TOKEN": emu.token},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    store = open_store(load_settings(cfg))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _running(store):
            time.sleep(0.3)
        assert _running(store), "the branch run did not start"
        # a new series arrives while the run waits: it is checked and posted meanwhile
        commit_file(git, "drivers/net/foo.c", "int foo;\nint baz;\n", "foo: add baz\n\n" + SOB)
        second = emu.add_series_from_mbox(format_patches(git, "HEAD~1..HEAD",
                                                         prefix="PATCH net-next"))  # fmt: skip
        git.run("reset", "--quiet", "--hard", "HEAD~1")
        (pid,) = [p for p, _ in emu.series_patches(second)]
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60 and not emu.checks_for(pid):
            time.sleep(0.2)
        posted_after = time.monotonic() - t0
        assert emu.checks_for(pid), "no check posted while the branch run was in progress"
        assert _running(store), "the run ended before the check was posted: nothing shown"
        assert posted_after < 30
        # stopped in the middle of the run: it ends now, the run keeps its row and lease
        daemon.terminate()
        _, err = daemon.communicate(timeout=30)
        assert daemon.returncode == 0 and "stopped during a branch run" in err, err
        assert _running(store)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate()
    assert "Traceback" not in err, err
    mark.unlink()
    # the next start runs it again, in the same row, and it passes
    env = {**os.environ, "PATCHCI_TEST_PW_TOKEN": emu.token}
    again = subprocess.run([str(exe), "-c", str(cfg), "ingest", "--once"], env=env,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert not _running(store)
    results = ResultsStore(store.engine)
    (branch,) = results.stream_branches("nn")
    (run,) = results.branch_results(branch.name)
    assert run.status == "done" and [t.outcome for t in run.tests] == [Outcome.PASS]
    store.close()


def _running(store: Store) -> bool:
    from sqlalchemy import select

    from patchci.db import tables as t

    with store.engine.connect() as conn:
        return (
            conn.execute(select(t.runs.c.id).where(t.runs.c.status == "running")).first()
            is not None
        )
