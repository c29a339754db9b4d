"""The culprit search job: which series of a test branch broke a regressed test.

When every run of a branch has ended, each regression (a test that fails after retries
and passed on the stream's previous branch, report.contest) gets a search, stored in the
`bisections` table (`open_searches`). `search_branch` then bisects over the branch's
series tips (analysis/bisect.py): each probe re-runs only the regressed tests of one
executor at one commit, with the executor's retries, and is recorded before the next, so
a killed search goes on where it stopped. A search is held with a lease like a run;
`run_searches` takes up every search nobody holds (the daemon calls it every contest
cycle). The per-series verdicts that come of it are report.contest.attribute's.

Budget per branch: `bisect_steps` probes per test and `bisect_hours` from the first; when
one runs out the search ends as `budget` and its series' checks stay pending with what is
known.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from patchci.analysis.bisect import (
    BASE,
    BUDGET,
    CULPRIT,
    FAIL,
    INCONCLUSIVE,
    PASS,
    RUNNING,
    UNKNOWN,
)
from patchci.analysis.bisect import bisect as bisect_state
from patchci.config import Settings
from patchci.db.culprits import CulpritStore, SearchRow, Step
from patchci.db.results import BranchRow, ResultsStore
from patchci.db.store import Store
from patchci.errors import InfraError
from patchci.executor.base import RUN_ERROR, RUN_RUNNING, RunResult, TestSpec, namify
from patchci.git import Git
from patchci.model import Outcome
from patchci.report.contest import REGRESSION, Attribution, failed
from patchci.service.leases import holding, worker_dead, worker_id
from patchci.service.runs import contest_summary, run_tests, series_tips, stream_executors

log = logging.getLogger(__name__)

SEARCH_LEASE = 300.0

# (executor, label, commit, regressed (group, name) keys, out dir) → the run at that commit
Probe = Callable[[str, str, str, Sequence[tuple[str, str]], Path], RunResult]


@dataclass(frozen=True)
class Budget:
    steps: int = 8
    hours: float = 12.0


def open_searches(
    results: ResultsStore, culprits: CulpritStore, branch: str, settings: Settings | None = None
) -> int:
    """A search per regression of *branch* once none of its runs is running; how many it
    has in all (0: nothing to search, or runs still going)."""
    runs = results.branch_results(branch)
    if not runs or any(r.status == RUN_RUNNING for r in runs):
        return 0
    found = contest_summary(results, branch, settings).of_kind(REGRESSION)
    if not found:
        return 0
    culprits.open_searches(results.branch(branch).id, [(f.executor, f.group, f.name)
                                                       for f in found])  # fmt: skip
    return len(found)


def probe_outcome(
    run: RunResult, key: tuple[str, str], subtests: Sequence[str] = ()
) -> tuple[str, str]:
    """What a probe says of one test: (pass | fail | unknown, why). With *subtests* (a
    regression of those subtests in a test that failed before too), only they count."""
    if run.status == RUN_ERROR:
        return UNKNOWN, f"the run failed: {run.error}"
    build = next((t for t in run.tests if t.group == "build"), None)
    if build is not None and build.final is Outcome.FAIL:
        return UNKNOWN, f"does not build here ({build.name})"
    t = next((t for t in run.tests if t.key == key), None)
    if t is None:
        return UNKNOWN, "the test did not run"
    if subtests and t.subtests and not t.crashed:
        final = {st.path: st.retry_outcome or st.outcome for st in t.subtests}
        seen = [p for p in subtests if p in final]
        if not seen:
            return UNKNOWN, "its regressed subtests did not run"
        bad = [p for p in seen if final[p].is_patch_failure]
        if bad:
            return FAIL, f"{', '.join(bad[:3])}: {final[bad[0]].value}"
        return PASS, f"{', '.join(seen[:3])}: {final[seen[0]].value}"
    if failed(t):
        return FAIL, f"{t.final.value}" + (" (kernel crash)" if t.crashed else "")
    if t.final in (Outcome.PASS, Outcome.WARN) or t.is_flake:
        return PASS, t.final.value + (" on retry" if t.is_flake else "")
    return UNKNOWN, f"{t.final.value}"


def search_branch(
    store: Store, results: ResultsStore, culprits: CulpritStore, branch: str, tree_path: Path,
    probe: Probe, work_dir: Path, budget: Budget, owner: str, *, take_over: bool = False,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> list[SearchRow]:  # fmt: skip
    """Run *branch*'s open searches to their end (or to the budget); their rows after.
    Nothing is done when another worker holds them."""
    if not culprits.hold(branch, owner, SEARCH_LEASE, take_over=take_over):
        return culprits.searches(branch)
    row = results.branch(branch)
    regressed = {(f.executor, f.group, f.name): f.subtests
                 for f in contest_summary(results, branch).of_kind(REGRESSION)}  # fmt: skip
    renew = lambda: culprits.hold(branch, owner, SEARCH_LEASE)  # noqa: E731
    with holding(renew, f"bisect {branch}", SEARCH_LEASE) as lost:
        points = _points(store, row, Git(tree_path))
        while not lost.is_set():
            todo = [s for s in culprits.searches(branch) if not s.ended]
            if not todo:
                break
            step = _next(culprits, row, todo, points, budget, now())
            if step is None:
                continue  # searches ended; look again
            ex, point, group = step
            _probe(culprits, probe, row, points, ex, point, group, work_dir, regressed)
    return culprits.searches(branch)


def _points(store: Store, row: BranchRow, git: Git) -> list[str] | str:
    """The commits of the points (base, then each series' tip), or why there are none."""
    if not row.series:
        return "the branch has no series"
    sizes = [len(store.load_series(s).patches) for s in row.series]
    try:
        return [row.base, *series_tips(git, row.base, row.head, sizes)]
    except InfraError as e:
        return str(e)


def _next(
    culprits: CulpritStore, row: BranchRow, todo: Sequence[SearchRow],
    points: list[str] | str, budget: Budget, now: datetime,
) -> tuple[str, int, list[SearchRow]] | None:  # fmt: skip
    """End what has ended; else (executor, point, the searches that want it next)."""
    if isinstance(points, str):
        for s in todo:
            culprits.end(s.id, BASE if "no series" in points else INCONCLUSIVE, reason=points)
        return None
    n = len(points) - 1
    wants: dict[tuple[str, int], list[SearchRow]] = {}
    ended = False
    for s in todo:
        probes = {st.point: st.outcome for st in s.steps}
        state = bisect_state(n, probes, budget.steps)
        if state.status == RUNNING and now - s.started > timedelta(hours=budget.hours):
            state = bisect_state(n, probes, len(probes))
        if state.status == CULPRIT:
            assert state.culprit is not None
            culprit = row.series[state.culprit - 1]
            log.info("branch %s: %s/%s broken by series %d (%d probes)", row.name, s.group,
                     s.name, culprit, len(s.steps))  # fmt: skip
            if state.culprit not in probes:  # the head: the branch run saw it fail
                culprits.add_step(s.id, Step(state.culprit, culprit, points[state.culprit],
                                             FAIL, "the branch run"))  # fmt: skip
            culprits.end(s.id, CULPRIT, culprit)
        elif state.status != RUNNING:
            culprits.end(s.id, state.status, reason=_reason(state.status, row, state.good,
                                                            state.bad, s.steps))  # fmt: skip
        else:
            assert state.next_point is not None
            wants.setdefault((s.executor, state.next_point), []).append(s)
            continue
        ended = True
    if ended or not wants:
        return None
    (ex, point), group = next(iter(wants.items()))
    return ex, point, group


def _reason(status: str, row: BranchRow, good: int | None, bad: int, steps: Sequence[Step]) -> str:
    if status == BASE:
        return f"fails at the base {row.base[:12]} too: no series of the branch broke it"
    span = _span(row, good, bad)
    if status == BUDGET:
        return f"budget ran out after {len(steps)} probes; {span}"
    odd = next((s for s in steps if s.outcome == UNKNOWN), None)
    where = f" at {odd.commit[:12]}: {odd.detail}" if odd is not None else ""
    return f"a probe could not tell{where}; {span}"


def _span(row: BranchRow, good: int | None, bad: int) -> str:
    lo = 1 if good is None else good + 1
    ids = row.series[lo - 1 : bad]
    if len(ids) == 1:
        return f"series {ids[0]} is the one left"
    return "one of series " + ", ".join(map(str, ids))


def _probe(
    culprits: CulpritStore, probe: Probe, row: BranchRow, points: Sequence[str], ex: str,
    point: int, group: Sequence[SearchRow], work_dir: Path,
    regressed: Mapping[tuple[str, str, str], Sequence[str]],
) -> None:  # fmt: skip
    commit = points[point]
    label = f"{row.name}@{'base' if point == 0 else f'series-{row.series[point - 1]}'}"
    out = work_dir / "culprits" / row.name / namify(ex) / f"point-{point}"
    keys = [(s.group, s.name) for s in group]
    log.info("branch %s: probing %s at %s for %s", row.name, ex, label, keys)
    run = probe(ex, label, commit, keys, out)
    if run.status == RUN_ERROR:
        # Ours (the VM did not boot, the build step failed): one more try before the
        # probe says "could not tell", which ends the search without a culprit.
        log.warning("branch %s: probe at %s failed (%s); trying it once more", row.name,
                    label, run.error)  # fmt: skip
        run = probe(ex, label, commit, keys, out.with_name(out.name + "-again"))
    for s in group:
        subs = regressed.get((s.executor, s.group, s.name), ())
        outcome, detail = probe_outcome(run, (s.group, s.name), subs)
        sid = row.series[point - 1] if point else None
        culprits.add_step(s.id, Step(point, sid, commit, outcome, detail, run.log_dir or ""))


# -- wired to the configuration ------------------------------------------------------------


def settings_probe(settings: Settings, row: BranchRow) -> tuple[Probe, Path] | None:
    """Probes with the executors of *row*'s stream, as configured, and the tree they run
    in; None when the stream is gone from the configuration."""
    ss = next((s for s in settings.streams if s.name == row.stream), None)
    if ss is None:
        return None
    path = settings.tree_path(settings.tree(ss.tree))
    pairs = {ex.name: (ex, specs) for ex, specs in stream_executors(settings, ss, path, row.base)}

    def probe(ex: str, label: str, commit: str, keys: Sequence[tuple[str, str]],
              out: Path) -> RunResult:  # fmt: skip
        if ex not in pairs:
            now = datetime.now(UTC)
            return RunResult(ex, label, now, now, RUN_ERROR, f"executor {ex} is not configured")
        executor, specs = pairs[ex]
        # a vm executor finds its tests in the tree: the keys select them
        only = [s for s in specs if s.key in keys] or [TestSpec(g, n, "") for g, n in keys]
        # no base: a probe that does not build is "unknown", not a second build of the base
        return run_tests(Git(path), label, commit, executor, only, out)

    return probe, path


def stream_budget(settings: Settings, stream: str) -> Budget:
    ss = next((s for s in settings.streams if s.name == stream), None)
    return Budget() if ss is None else Budget(ss.bisect_steps, ss.bisect_hours)


def run_searches(
    store: Store, results: ResultsStore, culprits: CulpritStore, settings: Settings,
    branches: Sequence[str] | None = None,
) -> dict[str, list[SearchRow]]:  # fmt: skip
    """Open the searches of *branches* (default: none new) and run every search nobody
    holds, a dead worker's included; {branch: its searches} for those it ran."""
    me = worker_id(store)
    for name in branches or ():
        open_searches(results, culprits, name, settings)
    out: dict[str, list[SearchRow]] = {}
    for name in culprits.claimable(worker_dead(me)):
        row = results.branch(name)
        wired = settings_probe(settings, row)
        if wired is None:
            for s in culprits.searches(name):
                if not s.ended:
                    culprits.end(s.id, INCONCLUSIVE, reason=f"stream {row.stream} is no "
                                                            "longer configured")  # fmt: skip
            continue
        probe, path = wired
        out[name] = search_branch(store, results, culprits, name, path, probe,
                                  settings.data_path / "contest",
                                  stream_budget(settings, row.stream), me, take_over=True)  # fmt: skip
    return out


def attributions(culprits: CulpritStore, branch: str) -> dict[tuple[str, str, str], Attribution]:
    """What the searches of *branch* say, for report.contest.attribute."""
    return {
        s.key: Attribution(s.status, s.culprit_series_id, evidence(s), s.reason)
        for s in culprits.searches(branch)
    }


def evidence(s: SearchRow) -> str:
    """What convicts the culprit, short enough for a Patchwork check: the passing probe
    just below it and its own failing one, e.g. `base 89c456916041 pass, series 3
    d2c1e0aa4b7f fail (3 probes)`; every probe is in the search's row."""

    def label(st: Step) -> str:
        who = "base" if st.series_id is None else f"series {st.series_id}"
        return f"{who} {st.commit[:12]} {st.outcome}"

    bad = next((st for st in s.steps if st.outcome == FAIL
                and st.series_id == s.culprit_series_id), None)  # fmt: skip
    if bad is None:
        return ", ".join(label(st) for st in sorted(s.steps, key=lambda st: st.point))
    good = max((st for st in s.steps if st.outcome == PASS and st.point < bad.point),
               key=lambda st: st.point, default=None)  # fmt: skip
    shown = [label(st) for st in (good, bad) if st is not None]
    return f"{', '.join(shown)} ({len(s.steps)} probes)"
