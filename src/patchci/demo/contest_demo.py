"""The contest half of `patchci demo`: passing series → test branch → tests → checks.

Runs after the pipeline has reported the samples. One more sample (clean for the gate
checks, but it lowers FOO_MAX_QUEUES) is posted and checked, then two branches of the
net-next stream are cut: a baseline of the base branch alone, and the branch of every
series that passed the gate. The demo selftests run on both with the local executor (one
is flaky, one makes the "kernel" warn), the results go to the database, the contest
verdict goes to Patchwork, and the regressed test is bisected back to the series that broke
it: that series' check fails with the probes as evidence, the others' do not.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from patchci.brancher import StreamConfig
from patchci.config import PatchworkSource, Settings
from patchci.daemon import make_client, run_cycle
from patchci.db.culprits import CulpritStore
from patchci.db.results import ResultsStore
from patchci.db.store import Store
from patchci.demo.series import contest_samples
from patchci.devtools.pwemu import PatchworkEmulator
from patchci.executor.base import RunResult, TestResult
from patchci.executor.local import LocalExecutor
from patchci.git import Git
from patchci.model import Outcome
from patchci.report.console import plain
from patchci.report.contest import REGRESSION, ContestSummary
from patchci.sandbox import Sandbox
from patchci.service.contest import (
    ContestRun,
    branch_table,
    contest_summary,
    cut_and_run,
    post_contest,
    results_table,
)
from patchci.service.culprits import Budget, open_searches, search_branch
from patchci.service.leases import worker_id
from patchci.service.runs import run_tests, selftest_specs

log = logging.getLogger(__name__)

TREE = "net-next"
TESTS_DIR = "tools/testing/selftests/net"
STATE_ENV = "PATCHCI_DEMO_STATE"
GATE = ("apply", "signed_off_by", "fixes_tag")
QUEUES = ("net", "foo-queues-sh")
LINK = ("net", "foo-link-sh")
STRESS = ("net", "foo-stress-sh")


@dataclass(frozen=True)
class ContestOutcome:
    baseline: ContestRun
    branch: ContestRun
    summary: ContestSummary
    culprits: dict[tuple[str, str], int]
    posted: int
    posted_again: int
    breaker: int | None  # our id of the series that lowers FOO_MAX_QUEUES


def demo_stream() -> StreamConfig:
    return StreamConfig(name=TREE, prefix=f"{TREE}-", base_branch="main", gate_checks=GATE)


def vm_note() -> str:
    """Why the demo runs its tests on the host."""
    reason = "the demo selftests are shell scripts printing KTAP; they need no kernel"
    try:
        from patchci.executor import vm
    except ImportError:
        return f"running locally (no VM): {reason}"
    missing = vm.missing_prerequisites()
    if missing:
        return f"running locally (no VM): {reason}; missing for a VM: {', '.join(missing)}"
    return f"running locally (no VM): {reason} (a VM could run them, skipped for speed)"


def demo_executor(work: Path, name: str, sandbox: Sandbox) -> LocalExecutor:
    """The demo's tests are patch code too: sandboxed like the daemon's. A fresh state
    directory per branch (the flaky test fails once on each), writable in the sandbox."""
    state = work / "state" / name
    state.mkdir(parents=True, exist_ok=True)
    return LocalExecutor("local", retries=1, timeout=60, env={STATE_ENV: str(state)},
                         sandbox=sandbox, writable=(state,))  # fmt: skip


def run_contest(
    root: Path, store: Store, settings: Settings, emu: PatchworkEmulator, now: datetime
) -> ContestOutcome:
    """Everything but the printing (tests call this)."""
    tree_path = settings.tree_path(settings.tree(TREE))
    src = settings.sources[0]
    assert isinstance(src, PatchworkSource)
    client = make_client(src)
    breaking = contest_samples(Git(tree_path))[0]
    pw_id = emu.add_series_from_mbox(breaking.mbox)
    run_cycle(store, settings, {src.name: client})
    breaker = store.find_series(src.name, str(pw_id))
    results = ResultsStore(store.engine)
    stream, work = demo_stream(), root / "contest"
    sandbox = settings.untrusted()
    tests = selftest_specs(tree_path, stream.base_branch, TESTS_DIR, timeout=60)
    base_time = now - timedelta(hours=stream.every_hours)
    baseline = cut_and_run(
        store, results, tree_path=tree_path, tree=TREE, stream=stream,
        executor=demo_executor(work, "baseline", sandbox), tests=tests, now=base_time, work_dir=work,
        include=(),
    )  # fmt: skip
    branch = cut_and_run(
        store, results, tree_path=tree_path, tree=TREE, stream=stream,
        executor=demo_executor(work, "branch", sandbox), tests=tests, now=now, work_dir=work,
    )  # fmt: skip
    name = branch.manifest.name
    summary = contest_summary(results, name)
    # the culprit search the daemon runs, with the demo's executor as its probe
    searches = CulpritStore(store.engine)
    open_searches(results, searches, name)

    def probe(ex: str, label: str, commit: str, keys: Sequence[tuple[str, str]],
              out: Path) -> RunResult:  # fmt: skip
        only = [t for t in tests if t.key in keys]
        return run_tests(
            Git(tree_path), label, commit, demo_executor(work, label, sandbox), only, out
        )

    found = search_branch(store, results, searches, name, tree_path, probe, work, Budget(),
                          worker_id(store))  # fmt: skip
    culprits = {(s.group, s.name): s.culprit_series_id for s in found
                if s.culprit_series_id is not None}  # fmt: skip
    first = post_contest(store, results, client, name)
    again = post_contest(store, results, client, name)
    return ContestOutcome(baseline, branch, summary, culprits, first.posted, again.posted, breaker)


def _find(run: ContestRun, key: tuple[str, str]) -> TestResult | None:
    return next((t for t in run.run.tests if t.key == key), None)


def problems(out: ContestOutcome, store: Store) -> list[str]:
    """What did not end as the demo expects (empty: all fine)."""
    bad = []
    m = out.branch.manifest
    if out.breaker is None or out.breaker not in m.series:
        bad.append("the FOO_MAX_QUEUES series is not in the branch")
    for sid, why in m.left_out:
        if not why.startswith(("check ", "series state", "does not apply")):
            bad.append(f"series {sid} left out for an unexpected reason: {why}")
    queues, link, stress = (_find(out.branch, k) for k in (QUEUES, LINK, STRESS))
    if queues is None or queues.final is not Outcome.FAIL:
        bad.append("foo_queues.sh did not fail on the branch")
    if link is None or not link.is_flake:
        bad.append("foo_link.sh did not fail once and pass on retry")
    if stress is None or not stress.crashed:
        bad.append("no crash recorded for foo_stress.sh")
    if out.culprits.get(QUEUES) != out.breaker:
        bad.append("foo_queues.sh was not traced to the FOO_MAX_QUEUES series")
    if out.summary.state != "fail":
        bad.append(f"contest verdict is {out.summary.state}, not fail")
    expected_posts = sum(len(store.load_series(s).patches) for s in m.series)
    if out.posted != expected_posts or out.posted_again != 0:
        bad.append(
            f"posted {out.posted}+{out.posted_again} contest checks, want {expected_posts}+0"
        )
    return bad


def _culprit_table(out: ContestOutcome, store: Store) -> Table:
    t = Table(title="Which series broke which test", title_justify="left")
    t.add_column("test", no_wrap=True)
    t.add_column("broken by", overflow="fold")
    for f in out.summary.of_kind(REGRESSION):
        sid = out.culprits.get((f.group, f.name))
        who = (
            "not reproduced on any single series"
            if sid is None
            else (f"series {sid}: {store.series_row(sid).name}")
        )
        t.add_row(plain(f.label), plain(who))
    return t


def run_contest_demo(
    root: Path, store: Store, settings: Settings, emu: PatchworkEmulator, console: Console
) -> bool:
    """Run and print the contest half; True when everything ended as expected."""
    console.rule("[bold]contest: test branches")
    console.print(Text(vm_note()))
    with console.status("posting one more series, cutting branches, running selftests"):
        out = run_contest(root, store, settings, emu, datetime.now(UTC))
    results = ResultsStore(store.engine)
    for cut in (out.baseline, out.branch):
        row = results.branch(cut.manifest.name)
        names = {s: store.series_row(s).name for s in (*row.series, *(s for s, _ in row.left_out))}
        console.print(branch_table(row, names))
        console.print(results_table(cut.run))
    console.print(_culprit_table(out, store))
    console.print(Text(f"contest verdict: {out.summary.state}: {out.summary.description}"))
    console.print(
        f"contest checks posted to Patchwork: {out.posted}; "
        f"posted again on a second delivery: {out.posted_again}"
    )
    bad = problems(out, store)
    for b in bad:
        console.print(Text(b, style="bold red"))
    if not bad:
        console.print(Text("the contest ended as expected", style="green"))
    return not bad
