"""The contest stage end to end on the demo tree and the Patchwork emulator: passing series
→ branch → local executor → results in the DB → `contest` checks on Patchwork."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest

from patchci.daemon import make_client, open_store, run_cycle
from patchci.db.results import ResultsStore
from patchci.db.store import Store
from patchci.demo.contest_demo import LINK, QUEUES, STRESS, ContestOutcome, problems, run_contest
from patchci.demo.run import SOURCE, TOKEN_ENV, demo_settings
from patchci.demo.series import build_samples
from patchci.demo.tree import build_tree
from patchci.devtools.pwemu import PatchworkEmulator
from patchci.executor.base import RUN_ERROR, RunResult
from patchci.model import Outcome
from patchci.service.contest import (
    candidates,
    contest_posts,
    contest_summary,
    post_contest,
    series_mbox,
    series_verdict,
)
from patchci.sources.patchwork import PatchworkClient

NOW = datetime(2026, 8, 20, 3, 0, tzinfo=UTC)


@dataclass
class Flow:
    store: Store
    results: ResultsStore
    emu: PatchworkEmulator
    client: PatchworkClient
    out: ContestOutcome
    ids: dict[str, int]  # sample label -> our series id


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flow]:
    root = tmp_path_factory.mktemp("contest")
    git = build_tree(root / "trees" / "demo")
    samples = build_samples(git)
    old_token = os.environ.get(TOKEN_ENV)
    with PatchworkEmulator(project="demo", project_name="Demo", list_id="netdev.example") as emu:
        pw_ids = [emu.add_series_from_mbox(s.mbox) for s in samples]
        os.environ[TOKEN_ENV] = emu.token
        settings = demo_settings(root, emu.url)
        store = open_store(settings)
        client = make_client(settings.sources[0])  # type: ignore[arg-type]
        run_cycle(store, settings, {SOURCE: client})
        ids = {}
        for s, pw in zip(samples, pw_ids, strict=True):
            sid = store.find_series(SOURCE, str(pw))
            if sid is not None:
                ids[s.label] = sid
        out = run_contest(root, store, settings, emu, NOW)
        try:
            yield Flow(store, ResultsStore(store.engine), emu, client, out, ids)
        finally:
            store.close()
            if old_token is None:
                os.environ.pop(TOKEN_ENV, None)
            else:
                os.environ[TOKEN_ENV] = old_token


def test_branch_holds_exactly_the_passing_series(flow: Flow) -> None:
    m = flow.out.branch.manifest
    assert m.name == "net-next-2026-08-20--03-00"
    assert flow.out.breaker is not None
    passing = {flow.ids["clean series for net-next"], flow.ids["wrong tree tag"], flow.out.breaker}
    assert set(m.series) == passing
    reasons = dict(m.left_out)
    assert reasons[flow.ids["missing Signed-off-by"]] == "check signed_off_by failed"
    assert reasons[flow.ids["does not apply"]] == "check apply failed"
    # the net fixes are routed to the other tree and never considered here
    assert flow.ids["fix for net with a good Fixes tag"] not in {*m.series, *reasons}
    stored = flow.results.branch(m.name)
    assert set(stored.series) == passing and dict(stored.left_out) == reasons
    assert flow.out.baseline.manifest.series == ()
    assert flow.results.previous_branch(m.name) is not None


def test_results_breaking_flaky_and_crash(flow: Flow) -> None:
    runs = flow.results.branch_results(flow.out.branch.manifest.name)
    assert len(runs) == 1 and runs[0].status == "done"
    tests = {t.key: t for t in runs[0].tests}
    queues, link, stress = tests[QUEUES], tests[LINK], tests[STRESS]
    assert queues.final is Outcome.FAIL
    sub = {s.path: s.outcome for s in queues.subtests}
    assert sub["foo_queues/queues_16"] is Outcome.FAIL
    assert sub["foo_queues/queues_8"] is Outcome.PASS
    assert link.outcome is Outcome.FAIL and link.retry_outcome is Outcome.PASS and link.is_flake
    assert stress.crashed and stress.crashes[0].kind
    assert "foo_xmit" in stress.crashes[0].excerpt
    # on the baseline (base branch alone) foo_queues passes: a regression, traced to the series
    base = {t.key: t for t in flow.out.baseline.run.tests}
    assert base[QUEUES].final is Outcome.PASS
    assert flow.out.summary.state == "fail"
    assert [f.label for f in flow.out.summary.of_kind("regression")] == ["net/foo-queues-sh"]
    assert flow.out.culprits == {QUEUES: flow.out.breaker}
    assert problems(flow.out, flow.store) == []


def test_contest_checks_posted_once(flow: Flow) -> None:
    m = flow.out.branch.manifest
    n_patches = sum(len(flow.store.load_series(s).patches) for s in m.series)
    assert flow.out.posted == n_patches and flow.out.posted_again == 0
    contest = [c for c in flow.emu.checks.values() if c.context == "contest"]
    assert len(contest) == n_patches
    assert all(m.name in (c.description or "") for c in contest)
    # only the series the bisection names fails, with the probes as evidence; the others
    # read the test as broken by it (before, every series of the branch read "fail")
    breaker = set(flow.store.patch_pw_ids(flow.out.breaker or 0))
    failing = {c.patch_id for c in contest if c.state == "fail"}
    assert failing == breaker and breaker
    for c in contest:
        if c.patch_id in breaker:
            # the subtest that broke is named: the rest of the test failed before
            assert "foo-queues-sh [queues_16] (bisected: series " in (c.description or "")
            assert " fail (4 probes))" in (c.description or "")
        else:
            assert c.state != "fail"
            assert f"broken by series {flow.out.breaker}" in (c.description or "")
    # a third delivery still posts nothing
    assert post_contest(flow.store, flow.results, flow.client, m.name).posted == 0
    assert len([c for c in flow.emu.checks.values() if c.context == "contest"]) == n_patches


def test_error_run_yields_pending_not_fail(flow: Flow) -> None:
    """An executor that could not run says nothing about the series: the branch's verdict
    is pending, and each series keeps the verdict it had (pending never replaces it)."""
    m = replace(flow.out.branch.manifest, name="net-next-2026-08-20--06-00",
                date=datetime(2026, 8, 20, 6, 0, tzinfo=UTC))  # fmt: skip
    bid = flow.results.save_branch(m)
    run = RunResult("local", m.name, NOW, NOW, RUN_ERROR, "VM did not boot")
    flow.results.save_run(bid, run)
    summary = contest_summary(flow.results, m.name)
    assert summary.state == "pending" and "infrastructure error" in summary.description
    posts = contest_posts(flow.store, flow.results, m.name)
    earlier = flow.out.branch.manifest.name
    assert posts and {(sid, p.state, p.description) for sid, p in posts} == {
        (sid, v.state, v.description)  # the earlier branch's, which names it
        for sid in m.series
        for v in [series_verdict(flow.results, sid, earlier, {})]
    }
    assert all(earlier in p.description for _, p in posts)
    assert {sid for sid, _ in posts} == set(m.series)


def test_candidates_only_for_the_tree(flow: Flow) -> None:
    net = {c.series_id for c in candidates(flow.store, "net")}
    net_next = {c.series_id for c in candidates(flow.store, "net-next")}
    assert flow.ids["fix for net with a good Fixes tag"] in net
    assert not net & net_next
    clean = next(c for c in candidates(flow.store, "net-next") if c.series_id == flow.out.breaker)
    assert clean.check_outcomes["apply"] is Outcome.PASS


def test_series_mbox_is_an_mbox(flow: Flow) -> None:
    series = flow.store.load_series(flow.ids["clean series for net-next"])
    mbox = series_mbox(series)
    assert mbox.count(b"\nFrom ") + mbox.startswith(b"From ") == len(series.patches) == 3
