"""Contest stage: series that passed their gate → test branch → executor → results → checks.

Wires the pure and adapter pieces together, as NIPA's brancher + executors + contest
reporter do: `candidates` reads what the pipeline stored, `cut_and_run` cuts a branch
(`brancher`), runs the tests on a scratch worktree of it (an `Executor`) and stores both
(`ResultsStore`); `contest_posts` turns the stored runs into one `contest` check per patch
(`report.contest`), and `post_contest` delivers them through the same idempotent ledger as
the per-patch checks. `find_culprits` re-runs regressed tests on each series' tip of the
branch to say which series broke which test. `cut_due` is the schedule: the daemon (and
`patchci branch`) call it every cycle and it cuts, tests, reports and reaps each stream
whose branch is due.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from rich.table import Table
from rich.text import Text

from patchci.analysis.revisions import state_reason, superseded
from patchci.brancher import (
    Candidate,
    Manifest,
    StreamConfig,
    branches_to_reap,
    cut_branch,
    gate_reason,
    is_due,
    list_branches,
    plan_branch,
    reap,
    series_outcomes,
)
from patchci.config import PatchworkSource, Settings, StreamSettings
from patchci.db.culprits import CulpritStore, SearchRow
from patchci.db.jobs import JobStore
from patchci.db.results import BranchRow, ResultsStore
from patchci.db.store import NotFound, Store
from patchci.errors import ConfigError, FetchError, InfraError
from patchci.executor.base import RUN_ERROR, Executor, RunResult, TestResult, TestSpec, namify
from patchci.executor.job import FINISHED
from patchci.git import Git
from patchci.model import Series
from patchci.report.console import outcome_text, plain
from patchci.report.contest import (
    FAIL,
    ContestSummary,
    SeriesRef,
    attribute,
    render_contest,
    upgrades,
)
from patchci.report.deliver import DeliveryStats, deliver_posts
from patchci.report.patchwork import CheckPost
from patchci.service.culprits import attributions, evidence, open_searches, run_searches
from patchci.service.jobs import Queued, enqueue_branch, keep_going
from patchci.service.leases import holding, worker_dead, worker_id
from patchci.service.runs import contest_summary, run_tests, stream_executors
from patchci.sources.patchwork import PatchworkClient
from patchci.trees import TreeSync

log = logging.getLogger(__name__)

MBOX_FROM = b"From patchci Mon Sep 17 00:00:00 2001\n"
PULL_LEFT_OUT = "a pull request: test branches take patch mails, not pulls"


# -- reading the pipeline's results --------------------------------------------------------


def candidates(store: Store, tree: str, limit: int = 1000) -> list[Candidate]:
    """Stored series routed to *tree*, with the worst outcome of each of their checks."""
    out = []
    for row in store.list_series(limit=limit):
        if row.tree != tree:
            continue
        results = store.latest_results(row.id)
        outcomes = series_outcomes(results)
        pull = any(r.check == "apply" and any(k == "pull" for k, _ in r.details) for r in results)
        review = PULL_LEFT_OUT if pull else None
        out.append(Candidate(row.id, row.name, row.created_at, outcomes, row.state, review))
    return out


def reviewed(
    store: Store,
    cands: Sequence[Candidate],
    stream: StreamConfig,
    clients: Mapping[str, PatchworkClient],
) -> list[Candidate]:
    """*cands* with `review` set where review keeps them out: a newer revision in our
    database, or a Patchwork state (read now, for the series the gate would take)."""
    sup = superseded(store.revisions())
    out = []
    for c in cands:
        why = sup.get(c.series_id)
        if why is None and gate_reason(stream, c) is None:
            why = _patchwork_state(store, c.series_id, clients)
        out.append(replace(c, review=why) if why else c)
    return out


def _patchwork_state(
    store: Store, series_id: int, clients: Mapping[str, PatchworkClient]
) -> str | None:
    client = clients.get(store.series_row(series_id).source)
    if client is None:
        return None
    try:
        states = {pid: client.patch_state(pid) for pid in store.patch_pw_ids(series_id)}
    except FetchError as e:  # unknown is not a reason to leave a series out
        log.warning("series %s: cannot read its Patchwork state (%s); taken as is", series_id, e)
        return None
    return state_reason(states)


def series_mbox(series: Series) -> bytes:
    """The series' patches as one mbox for `git am`, rebuilt from the stored raw mails."""
    parts = []
    for p in series.patches:
        raw = p.raw if p.raw.endswith(b"\n") else p.raw + b"\n"
        parts.append(raw if raw.startswith(b"From ") else MBOX_FROM + raw)
    return b"".join(parts)


# -- branch + run --------------------------------------------------------------------------


@dataclass(frozen=True)
class ContestRun:
    manifest: Manifest
    runs: tuple[RunResult, ...]  # one per executor
    branch_id: int

    @property
    def run(self) -> RunResult:
        return self.runs[0]

    @property
    def errors(self) -> list[str]:
        """Runs that failed for our reasons (stored as error runs; checks say pending)."""
        return [f"{r.executor}: {r.error or 'the executor failed'}" for r in self.runs
                if r.status == RUN_ERROR]  # fmt: skip


def _last_branch_time(git: Git, prefix: str) -> datetime | None:
    existing = list_branches(git, prefix)
    return existing[-1][1] if existing else None


def cut_only(
    store: Store, results: ResultsStore, *, tree_path: Path, tree: str, stream: StreamConfig,
    now: datetime, work_dir: Path, include: Collection[int] | None = None,
    clients: Mapping[str, PatchworkClient] | None = None,
) -> tuple[Manifest, int]:  # fmt: skip
    """Cut and store the branch of *stream* for *now* (see cut_and_run); its manifest and
    branch id. Nothing runs yet."""
    git = Git(tree_path)
    cands = candidates(store, tree)
    if include is not None:
        cands = [c for c in cands if c.series_id in include]
    cands = reviewed(store, cands, stream, clients or {})
    plan = plan_branch(stream, now, cands, _last_branch_time(git, stream.prefix))
    log.info("branch %s: %d series planned (due: %s)", plan.name, len(plan.include), plan.due)
    mboxes = {c.series_id: series_mbox(store.load_series(c.series_id)) for c in plan.include}
    manifest = cut_branch(git, plan, stream, mboxes, work_dir / "branches")
    gated = tuple((c.series_id, why) for c, why in plan.excluded)
    manifest = replace(manifest, left_out=manifest.left_out + gated)
    return manifest, results.save_branch(manifest)


def cut_and_run(
    store: Store,
    results: ResultsStore,
    *,
    tree_path: Path,
    tree: str,
    stream: StreamConfig,
    executor: Executor,
    tests: Sequence[TestSpec],
    now: datetime,
    work_dir: Path,
    include: Collection[int] | None = None,
    clients: Mapping[str, PatchworkClient] | None = None,
    also: Sequence[tuple[Executor, Sequence[TestSpec]]] = (),
    pool: int = 1,
) -> ContestRun:
    """Cut the branch of *stream* for *now* on demand (whether or not it is due), run
    *tests* on it with *executor* (and each pair of *also*) and store it all. *include*, when given, limits the series considered
    (an empty one cuts a baseline branch of the base alone). Series kept out by the gate
    are recorded in the manifest's `left_out` with the gate's reason. *pool* executors run
    at once (threads: each run is a subprocess tree of its own, in its own worktree)."""
    git = Git(tree_path)
    manifest, branch_id = cut_only(store, results, tree_path=tree_path, tree=tree,
                                   stream=stream, now=now, work_dir=work_dir, include=include,
                                   clients=clients)  # fmt: skip
    owner = worker_id(store)
    started = [
        (ex, specs, results.start_run(branch_id, ex.name, datetime.now(UTC)))
        for ex, specs in [(executor, tests), *also]
    ]  # every run is recorded (running, leased) before the first starts: a kill resumes
    for _, _, rid in started:
        results.hold_run(rid, owner, RUN_LEASE)

    def one(ex: Executor, specs: Sequence[TestSpec], rid: int) -> RunResult:
        out = work_dir / "runs" / manifest.name / namify(ex.name)
        with holding(partial(results.hold_run, rid, owner, RUN_LEASE), f"run {rid}", RUN_LEASE):
            run = run_tests(git, manifest.name, manifest.head, ex, specs, out, manifest.base)
        results.finish_run(rid, run)
        return run

    with ThreadPoolExecutor(max(1, min(pool, len(started))), thread_name_prefix="run") as ex:
        runs = list(ex.map(lambda s: one(*s), started))
    return ContestRun(manifest, tuple(runs), branch_id)


# -- verdicts and checks -------------------------------------------------------------------


def series_verdict(
    results: ResultsStore, series_id: int, branch: str, cache: dict[str, ContestSummary],
    settings: Settings | None = None,
) -> ContestSummary:  # fmt: skip
    """The verdict a series' `contest` check shows once *branch* is in: NIPA's rule over the
    branches that included it, oldest first up to *branch*: a newer verdict replaces the
    kept one only when it upgrades it ("if we pass once, we pass"), so a later branch broken
    by another series does not take back a series' pass. Each branch's regressions are read
    as its culprit searches attribute them (report.contest.attribute). *cache* holds
    summaries by branch."""
    culprits = CulpritStore(results.engine)

    def summary(name: str) -> ContestSummary:
        if name not in cache:
            cache[name] = contest_summary(results, name, settings)
        return attribute(cache[name], series_id, attributions(culprits, name))

    kept: ContestSummary | None = None
    for name in results.branches_of_series(series_id):
        mine = summary(name)
        if upgrades(kept, mine):
            kept = mine
        if name == branch:
            break
    return kept if kept is not None else summary(branch)


def contest_posts(
    store: Store, results: ResultsStore, branch: str, target_url: str | None = None,
    settings: Settings | None = None,
) -> list[tuple[int, CheckPost]]:  # fmt: skip
    """One `contest` check per Patchwork patch of every series in *branch*, each with the
    series' kept verdict (`series_verdict`), which names the branch it comes from."""
    row = results.branch(branch)
    cache: dict[str, ContestSummary] = {}
    out: list[tuple[int, CheckPost]] = []
    for sid in row.series:
        verdict = series_verdict(results, sid, branch, cache, settings)
        url = target_url or _series_url(settings, sid)
        pids = tuple(p.pw_id for p in store.load_series(sid).patches if p.pw_id is not None)
        out += [(sid, post) for post in render_contest(verdict, [SeriesRef(sid, pids)], url)]
    return out


def _series_url(settings: Settings | None, series_id: int) -> str | None:
    """The series page (its contest findings, the culprit probes, the reproduce command of
    each failing test) as the check's link, when the web UI's public URL is configured."""
    web = settings.report.patchwork.web_url if settings is not None else None
    return f"{web.rstrip('/')}/series/{series_id}#contest-findings" if web else None


def post_contest(
    store: Store,
    results: ResultsStore,
    client: PatchworkClient,
    branch: str,
    target_url: str | None = None,
    *,
    series: Collection[int] | None = None,
    settings: Settings | None = None,
) -> DeliveryStats:
    """Deliver the branch's contest checks once per change (the deliveries ledger).
    *series*, when given, limits them to those series (the ones *client*'s server holds)."""
    by_series: dict[int, list[CheckPost]] = {}
    for sid, post in contest_posts(store, results, branch, target_url, settings):
        if series is None or sid in series:
            by_series.setdefault(sid, []).append(post)
    total = [0, 0, 0, 0]
    for sid, posts in by_series.items():
        stats = deliver_posts(store, client, f"patchwork:{client.url}", sid, posts)
        for i, n in enumerate((stats.posted, stats.unchanged, stats.reconciled, stats.failed)):
            total[i] += n
    return DeliveryStats(*total)


# -- the schedule --------------------------------------------------------------------------

# A branch run's lease (renewed every RUN_LEASE / 3 s while it runs). A run whose worker
# died is run again once by the next daemon cycle; a second death makes it ERROR (ours).
RUN_LEASE = 300.0
RUN_ATTEMPTS = 2


def resume_runs(
    store: Store, results: ResultsStore, settings: Settings,
    clients: Mapping[str, PatchworkClient],
) -> int:  # fmt: skip
    """Runs left `running` by a worker that is gone (kill -9, lost host): each is run again
    once, stored in its own row (so once), and the branch's checks posted when it was the
    last; one interrupted twice is recorded as an error run. Returns runs taken up."""
    me = worker_id(store)
    n = 0
    for orphan in results.orphaned_runs(worker_dead(me)):
        if not results.take_over_run(orphan.id, me, RUN_LEASE, orphan.worker):
            continue  # another worker took it first
        n += 1
        row = results.branch(orphan.branch)
        if orphan.attempts >= RUN_ATTEMPTS:
            why = (f"interrupted {orphan.attempts} times (its worker died: kill -9 or a "
                   f"lost host); not run again")  # fmt: skip
            log.error("branch %s: run %d of %s %s", row.name, orphan.id, orphan.executor, why)
            now = datetime.now(UTC)
            results.finish_run(orphan.id, RunResult(orphan.executor, row.name, now, now,
                                                    RUN_ERROR, why))  # fmt: skip
        else:
            log.warning("branch %s: run %d of %s was interrupted (worker %s gone): running "
                        "it again", row.name, orphan.id, orphan.executor, orphan.worker)  # fmt: skip
            _rerun(store, results, settings, row, orphan.id, orphan.executor, me)
        if not any(r.status == "running" for r in results.branch_runs(row.name)):
            open_searches(results, CulpritStore(results.engine), row.name, settings)  # next cycle
            try:
                _post_branch(store, results, settings, row.name, clients)
            except InfraError as e:
                log.error("branch %s: contest post failed: %s", row.name, e)
    return n


def _rerun(
    store: Store, results: ResultsStore, settings: Settings, row: BranchRow, run_id: int,
    executor: str, owner: str,
) -> None:  # fmt: skip
    ss = next((s for s in settings.streams if s.name == row.stream), None)
    started = datetime.now(UTC)
    if ss is None:
        results.finish_run(run_id, RunResult(executor, row.name, started, started, RUN_ERROR,
                                             f"stream {row.stream} is no longer configured"))  # fmt: skip
        return
    path = settings.tree_path(settings.tree(ss.tree))
    pairs = {ex.name: (ex, specs)
             for ex, specs in stream_executors(settings, ss, path, row.base, results)}  # fmt: skip
    if executor not in pairs:
        results.finish_run(run_id, RunResult(executor, row.name, started, started, RUN_ERROR,
                                             f"executor {executor} is no longer configured"))  # fmt: skip
        return
    ex, specs = pairs[executor]
    out = settings.data_path / "contest" / "runs" / row.name / namify(executor)
    with holding(lambda: results.hold_run(run_id, owner, RUN_LEASE), f"run {run_id}", RUN_LEASE):
        run = run_tests(Git(path), row.name, row.head, ex, specs, out, row.base)
    results.finish_run(run_id, run)


_T = TypeVar("_T")


def configured_streams(settings: Settings) -> tuple[StreamSettings, ...]:
    """`settings.streams` once config.Settings has the field; validated either way."""
    return settings.streams


def _cut_stream(
    settings: Settings, ss: StreamSettings, store: Store, results: ResultsStore, now: datetime,
    clients: Mapping[str, PatchworkClient] | None = None,
) -> ContestRun | Queued:  # fmt: skip
    """Cut and test the branch of *ss* for *now* with the stream's own executor and tests;
    with a `[broker]`, cut it and queue its jobs for the worker hosts (Queued)."""
    tree = settings.tree(ss.tree)
    stream = ss.stream_config(tree)
    path = settings.tree_path(tree)
    # a branch is cut from today's base: fetched now (a failure is ours: the cut is retried)
    TreeSync().base(next(t for t in settings.model_trees() if t.name == tree.name), force=True)
    work_dir = settings.data_path / "contest"
    if settings.broker is not None:
        manifest, branch_id = cut_only(store, results, tree_path=path, tree=tree.name,
                                       stream=stream, now=now, work_dir=work_dir,
                                       clients=clients)  # fmt: skip
        return enqueue_branch(settings, ss, JobStore(results.engine), manifest, branch_id)
    (first, tests), *also = stream_executors(settings, ss, path, stream.base_branch, results)
    return cut_and_run(
        store, results, tree_path=path, tree=tree.name, stream=stream,
        executor=first, tests=tests, now=now, work_dir=work_dir,
        clients=clients, also=also, pool=settings.executor_pool,
    )  # fmt: skip


def collect_jobs(
    store: Store, results: ResultsStore, settings: Settings,
    clients: Mapping[str, PatchworkClient],
) -> list[str]:  # fmt: skip
    """With a `[broker]`: keep the jobs going (keep_going) and report each branch whose
    jobs have all ended, as an in-process run is reported: culprit searches opened, checks
    posted. Returns the branches reported."""
    if settings.broker is None:
        return []
    jobs = JobStore(results.engine)
    keep_going(settings, jobs)
    done = []
    for branch in jobs.finished_branches():
        log.info("branch %s: every job has ended; reporting it", branch)
        open_searches(results, CulpritStore(results.engine), branch, settings)
        try:
            _post_branch(store, results, settings, branch, clients)
            search_culprits(store, results, settings, clients, [branch])
        except InfraError as e:
            log.error("branch %s: contest post failed: %s", branch, e)
        jobs.mark_collected(branch)
        done.append(branch)
    return done


@dataclass(frozen=True)
class StreamCut:
    """What one due stream did in a cycle. *errors* are ours (the stream could not be cut,
    its tests could not run, a post or a reap failed), never a series' fault."""

    stream: str
    branch: str | None = None
    run_status: str | None = None
    posted: int = 0
    reaped: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


def stream_due(settings: Settings, ss: StreamSettings, now: datetime) -> bool:
    """Whether *ss* has a branch due at *now* (brancher.is_due against its newest branch).
    Off the hour grid this costs nothing; on it, one `git for-each-ref`."""
    if not is_due(now, None, ss.every_hours):
        return False
    tree = settings.tree(ss.tree)
    last = _last_branch_time(Git(settings.tree_path(tree)), ss.stream_config(tree).prefix)
    return is_due(now, last, ss.every_hours)


def _attempt(stream: str, what: str, fn: Callable[[], _T], errors: list[str]) -> _T | None:
    """*fn*(), or None with the failure logged and added to *errors*."""
    try:
        return fn()
    except (InfraError, ConfigError, NotFound, OSError) as e:
        log.error("stream %s: %s failed: %s", stream, what, e)
        errors.append(f"{what}: {e}")
    except Exception as e:  # a bug in one stream must not stop the others or the daemon
        log.exception("stream %s: %s crashed", stream, what)
        errors.append(f"{what}: {type(e).__name__}: {e}")
    return None


def _post_branch(
    store: Store,
    results: ResultsStore,
    settings: Settings,
    branch: str,
    clients: Mapping[str, PatchworkClient],
) -> int:
    """Post the branch's contest checks, each series to the Patchwork source it came from
    (Patchwork ids belong to one server; trees name no source). Returns checks posted;
    raises InfraError naming undelivered checks so they are recorded."""
    if not settings.report.patchwork.enabled:
        log.info("branch %s: Patchwork reporting disabled, contest checks not posted", branch)
        return 0
    by_source: dict[str, list[int]] = {}
    for sid in results.branch(branch).series:
        by_source.setdefault(store.series_row(sid).source, []).append(sid)
    posted = failed = 0
    for source, sids in sorted(by_source.items()):
        client = clients.get(source)
        if client is None:
            log.info("branch %s: source %s is not Patchwork, contest checks of series %s "
                     "not posted", branch, source, sids)  # fmt: skip
            continue
        stats = post_contest(store, results, client, branch, series=sids, settings=settings)
        posted, failed = posted + stats.posted, failed + stats.failed
    log.info("branch %s: %d contest checks posted, %d failed", branch, posted, failed)
    if failed:
        raise InfraError(f"branch {branch}: {failed} contest checks not delivered (see log)")
    return posted


def search_culprits(
    store: Store, results: ResultsStore, settings: Settings,
    clients: Mapping[str, PatchworkClient], branches: Sequence[str] = (),
) -> int:  # fmt: skip
    """Open the culprit searches of *branches*, run every search nobody holds (a killed
    daemon's too) and post the checks of each branch searched; checks posted."""
    posted = 0
    for name in run_searches(store, results, CulpritStore(results.engine), settings, branches):
        posted += _post_branch(store, results, settings, name, clients)
    return posted


def resume_searches(
    store: Store, results: ResultsStore, settings: Settings,
    clients: Mapping[str, PatchworkClient],
) -> int:  # fmt: skip
    """Every culprit search nobody holds (opened by a resumed run, or a killed daemon's),
    run to its end; a failure is logged and the next cycle tries again."""
    try:
        return search_culprits(store, results, settings, clients)
    except (InfraError, ConfigError, NotFound) as e:
        log.error("culprit search: %s (next cycle tries again)", e)
        return 0


def _reap_old(settings: Settings, ss: StreamSettings, now: datetime) -> tuple[str, ...]:
    """Delete the stream's branches older than keep_days (and on push_remote)."""
    tree = settings.tree(ss.tree)
    stream = ss.stream_config(tree)
    git = Git(settings.tree_path(tree))
    old = branches_to_reap(list_branches(git, stream.prefix), stream.prefix, now, ss.keep_days)
    return tuple(reap(git, old, stream.push_remote))


def _cut_one(
    store: Store,
    results: ResultsStore,
    settings: Settings,
    ss: StreamSettings,
    now: datetime,
    clients: Mapping[str, PatchworkClient],
) -> StreamCut | None:
    """Cut, test, post and reap one stream if it is due; None when it is not."""
    errors: list[str] = []
    due = _attempt(ss.name, "due check", partial(stream_due, settings, ss, now), errors)
    if not due:
        return StreamCut(ss.name, errors=tuple(errors)) if errors else None
    cut = partial(_cut_stream, settings, ss, store, results, now, clients)
    done = _attempt(ss.name, "cut", cut, errors)
    if done is None:
        return StreamCut(ss.name, errors=tuple(errors))
    name = done.manifest.name
    if isinstance(done, Queued):  # reported by collect_jobs once its jobs have ended
        if done.unsent:
            errors.append(f"broker: {done.unsent} of {len(done.jobs)} jobs not sent yet "
                          "(the broker is down?): sent again next cycle")  # fmt: skip
        reaped = _attempt(ss.name, "reap", partial(_reap_old, settings, ss, now), errors) or ()
        return StreamCut(ss.name, name, "queued", 0, reaped, tuple(errors))
    errors += [f"run: {e}" for e in done.errors]  # stored as error runs; checks say pending
    post = partial(_post_branch, store, results, settings, name, clients)
    posted = _attempt(ss.name, "contest post", post, errors) or 0
    # the checks went out pending where a regression needs its culprit; now find it
    search = partial(search_culprits, store, results, settings, clients, [name])
    posted += _attempt(ss.name, "culprit search", search, errors) or 0
    reaped = _attempt(ss.name, "reap", partial(_reap_old, settings, ss, now), errors) or ()
    status = RUN_ERROR if done.errors else done.run.status
    return StreamCut(ss.name, name, status, posted, reaped, tuple(errors))


def cut_due(
    store: Store,
    results: ResultsStore,
    settings: Settings,
    now: datetime,
    clients: Mapping[str, PatchworkClient],
    *,
    streams: Sequence[StreamSettings] | None = None,
) -> list[StreamCut]:
    """For each stream (default: every configured one) whose branch is due at *now*: cut
    and test it, post its contest checks and reap branches older than keep_days.

    A stream that is not due does nothing. One stream's failure is logged and returned in
    its StreamCut and the other streams go on; no series state changes.
    """
    out = []
    for ss in configured_streams(settings) if streams is None else streams:
        cut = _cut_one(store, results, settings, ss, now, clients)
        if cut is not None:
            out.append(cut)
    return out


# -- console rendering ---------------------------------------------------------------------


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def branch_table(row: BranchRow, names: Mapping[int, str]) -> Table:
    t = Table(title=Text(f"branch {row.name} (base {row.base[:12]})"), title_justify="left")
    t.add_column("series", no_wrap=True)
    t.add_column("name", overflow="fold")
    t.add_column("in branch", no_wrap=True)
    t.add_column("reason", overflow="fold")
    for sid in row.series:
        t.add_row(str(sid), plain(names.get(sid, "?")), Text("yes", style="green"), "")
    for sid, why in row.left_out:
        t.add_row(str(sid), plain(names.get(sid, "?")), Text("no", style="yellow"), plain(why))
    return t


def _test_rows(r: TestResult) -> Iterable[tuple[Text, ...]]:
    crash = ", ".join(f"{c.kind}: {c.title}" for c in r.real_crashes)
    retry = outcome_text(r.retry_outcome) if r.retry_outcome else Text("-", style="dim")
    yield (plain(r.group), plain(r.name), outcome_text(r.outcome), retry,
           Text(_secs(r.duration)), plain(crash))  # fmt: skip
    for s in r.subtests:
        sretry = outcome_text(s.retry_outcome) if s.retry_outcome else Text("")
        yield (Text(""), plain("  " * s.depth + s.name), outcome_text(s.outcome), sretry,
               Text(_secs(s.duration) if s.duration is not None else ""), Text(""))  # fmt: skip


def results_table(run: RunResult) -> Table:
    title = f"run of {run.executor} on {run.branch}: {run.status}"
    if run.error:
        title += f" ({run.error})"
    t = Table(title=Text(title), title_justify="left")
    for col in ("group", "test", "outcome", "retry", "time", "crash"):
        t.add_column(col, overflow="fold", no_wrap=col in ("outcome", "retry", "time"))
    for r in run.tests:
        for cells in _test_rows(r):
            t.add_row(*cells)
    return t


# -- CLI handlers --------------------------------------------------------------------------


def _pick(settings: Settings, name: str | None) -> list[StreamSettings]:
    streams = configured_streams(settings)
    if name is not None:
        streams = tuple(s for s in streams if s.name == name)
        if not streams:
            raise ConfigError(f"streams: no stream named {name!r}")
    if not streams:
        raise ConfigError("no [[streams]] configured: add one to the config file")
    return list(streams)


def _branch_now(
    settings: Settings, ss: StreamSettings, store: Store, results: ResultsStore, console: Console
) -> int:
    done = _cut_stream(settings, ss, store, results, datetime.now(UTC))
    if isinstance(done, Queued):
        errors = wait_for_jobs(store, results, settings, done, console)
    else:
        search_culprits(store, results, settings, {}, [done.manifest.name])
        errors = bool(done.errors)
    summary = _show(store, results, done.manifest.name, console, settings)
    if errors:
        return 2
    return 1 if summary.state == FAIL else 0


JOB_POLL = 2.0


def wait_for_jobs(
    store: Store, results: ResultsStore, settings: Settings, queued: Queued, console: Console
) -> bool:
    """`branch --now` with a broker: wait until the worker hosts have run every job (the
    daemon's collect_jobs meanwhile); True when one ended in an error (ours)."""
    branch = queued.manifest.name
    console.print(Text(f"branch {branch}: {len(queued.jobs)} jobs queued; waiting for workers "
                       "(Ctrl-C stops waiting, the jobs go on)"))  # fmt: skip
    jobs = JobStore(results.engine)
    while branch not in collect_jobs(store, results, settings, {}):
        if all(j.state in FINISHED for j in jobs.branch_jobs(branch)):
            break  # collected by a daemon meanwhile
        time.sleep(JOB_POLL)
    rows = jobs.branch_jobs(branch)
    for j in rows:
        tries = ", ".join(f"{a['worker']} ({a.get('how', 'running')})" for a in j.attempts)
        console.print(Text(f"job {j.id[:12]} {j.executor}: {j.state}; starts: {tries or '-'}"))
    return any(r.status == RUN_ERROR for r in results.branch_results(branch))


def _names(store: Store, ids: Iterable[int]) -> dict[int, str]:
    out = {}
    for sid in ids:
        try:
            out[sid] = store.series_row(sid).name
        except NotFound:
            out[sid] = "(not in the database)"
    return out


def _show(
    store: Store, results: ResultsStore, branch: str, console: Console,
    settings: Settings | None = None,
) -> ContestSummary:  # fmt: skip
    row = results.branch(branch)
    console.print(branch_table(row, _names(store, [*row.series, *(s for s, _ in row.left_out)])))
    for run in results.branch_results(branch):
        console.print(results_table(run))
    summary = contest_summary(results, branch, settings)
    console.print(Text(f"contest: {summary.state}: {summary.description}"))
    searches = CulpritStore(results.engine).searches(branch)
    if searches:
        console.print(culprit_table(searches))
        cache: dict[str, ContestSummary] = {}
        for sid in row.series:
            v = series_verdict(results, sid, branch, cache, settings)
            console.print(Text(f"series {sid}: {v.state}: {v.description}"))
    return summary


def culprit_table(searches: Sequence[SearchRow]) -> Table:
    t = Table(title="culprit searches", title_justify="left")
    for col in ("executor", "test", "result", "probes"):
        t.add_column(col, overflow="fold")
    for s in searches:
        result = (f"series {s.culprit_series_id}" if s.status == "culprit"
                  else f"{s.status}: {s.reason}" if s.reason else s.status)  # fmt: skip
        t.add_row(plain(s.executor), plain(f"{s.group}/{s.name}"), plain(result),
                  plain(evidence(s) if s.steps else "-"))  # fmt: skip
    return t


def _open(settings: Settings) -> tuple[Store, ResultsStore]:
    store = Store.open(settings.db_url)
    return store, ResultsStore(store.engine)


def cmd_branch_now(settings: Settings, stream_name: str | None = None) -> int:
    """`patchci branch --now [STREAM]`: cut, test and store a branch of each stream now."""
    console = Console()
    store, results = _open(settings)
    try:
        codes = [
            _branch_now(settings, ss, store, results, console)
            for ss in _pick(settings, stream_name)
        ]
    except (ConfigError, InfraError) as e:
        console.print(Text(f"error: {e}", style="bold red"))
        return 2
    finally:
        store.close()
    return max(codes, default=0)


def _report_cut(
    store: Store, results: ResultsStore, cut: StreamCut, console: Console, settings: Settings
) -> int:
    """Print one stream's cut; the exit code it calls for (2 ours, 1 regressions, 0)."""
    state = None
    if cut.branch is not None:
        state = _show(store, results, cut.branch, console, settings).state
        reaped = ", ".join(cut.reaped) or "none"
        done = f"stream {cut.stream}: {cut.posted} contest checks posted; reaped: {reaped}"
        console.print(Text(done))
    for err in cut.errors:
        console.print(Text(f"stream {cut.stream}: error: {err}", style="bold red"))
    if cut.errors:
        return 2
    return 1 if state == FAIL else 0


def cmd_branch_due(settings: Settings, stream_name: str | None = None) -> int:
    """`patchci branch [STREAM]`: cut, test, post and reap each stream due now (for cron)."""
    from patchci.daemon import make_client  # not at the top: the daemon imports this module

    console = Console()
    try:
        streams = _pick(settings, stream_name)
    except ConfigError as e:
        console.print(Text(f"error: {e}", style="bold red"))
        return 2
    store, results = _open(settings)
    sources = [s for s in settings.sources if isinstance(s, PatchworkSource)]
    clients = {s.name: make_client(s) for s in sources}
    try:
        now = datetime.now(UTC)
        cuts = cut_due(store, results, settings, now, clients, streams=streams)
        if not cuts:
            console.print(Text(f"no stream due at {now:%Y-%m-%d %H:%M} UTC"))
            return 0
        return max(_report_cut(store, results, cut, console, settings) for cut in cuts)
    finally:
        for client in clients.values():
            client.close()
        store.close()


def _latest_branch(settings: Settings, results: ResultsStore) -> str | None:
    found: list[tuple[datetime, str]] = []
    for ss in configured_streams(settings):
        tree = settings.tree(ss.tree)
        prefix = ss.stream_config(tree).prefix
        for name, when in list_branches(Git(settings.tree_path(tree)), prefix):
            try:
                results.branch(name)
            except NotFound:
                continue
            found.append((when, name))
    return max(found)[1] if found else None


def cmd_contest_show(settings: Settings, branch: str | None = None) -> int:
    """`patchci contest [BRANCH]`: a branch's series, test results and contest verdict."""
    console = Console()
    store, results = _open(settings)
    try:
        name = branch or _latest_branch(settings, results)
        if name is None:
            console.print("no branch with results yet (run `patchci branch --now`)")
            return 2
        summary = _show(store, results, name, console, settings)
    except NotFound as e:
        console.print(Text(f"not found: {e}", style="bold red"))
        return 2
    except ConfigError as e:
        console.print(Text(f"error: {e}", style="bold red"))
        return 2
    finally:
        store.close()
    return 1 if summary.state == FAIL else 0


__all__ = [
    "ContestRun",
    "StreamCut",
    "StreamSettings",
    "candidates",
    "cmd_branch_due",
    "cmd_branch_now",
    "cmd_contest_show",
    "contest_posts",
    "contest_summary",
    "cut_and_run",
    "cut_due",
    "post_contest",
    "series_mbox",
    "stream_due",
]
