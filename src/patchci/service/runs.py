"""Running a branch's tests: which executors a stream has and what they run, and one run
of them on a worktree at a commit (a whole branch, or a culprit search's probe), and the
verdict of a branch's newest runs against its stream's previous branch."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from pathlib import Path

from patchci.config import CrashSettings, ExecutorSettings, Settings, StreamSettings
from patchci.db.results import ResultsStore
from patchci.errors import InfraError
from patchci.executor.base import RUN_DONE, RUN_ERROR, Executor, RunResult, TestSpec, namify
from patchci.executor.kernel import KernelVmExecutor, KernelVmOptions
from patchci.executor.local import LocalExecutor
from patchci.git import Git
from patchci.report.contest import ContestSummary, reconsider
from patchci.report.contest import summarise as summarise_runs
from patchci.sandbox import Sandbox

log = logging.getLogger(__name__)


def selftest_specs(repo: Path, rev: str, rel_dir: str, timeout: float = 300.0) -> list[TestSpec]:
    """One test per executable file of *rel_dir* at *rev* (read from git, so the user's
    checkout is not looked at), run from that directory of the branch worktree."""
    git = Git(repo)
    res = git.run("ls-tree", "-z", f"{rev}:{rel_dir}", check=False)
    if not res.ok:
        raise InfraError(f"no test directory {rel_dir} at {rev} in {repo}: {res.output.strip()}")
    group = namify(Path(rel_dir).name)
    specs = []
    for entry in sorted(e for e in res.stdout.split("\x00") if e):
        meta, _, name = entry.partition("\t")
        if meta.split()[0] == "100755":
            specs.append(TestSpec(group, namify(name), f"./{name}", timeout, Path(rel_dir)))
    return specs


def run_tests(
    git: Git, name: str, head: str, executor: Executor, tests: Sequence[TestSpec], out: Path,
    base: str | None = None,
) -> RunResult:  # fmt: skip
    """Run *tests* on a worktree at *head*; our failures become an "error" run. A kernel
    executor keeps its worktree (and the build directory next to it) from run to run."""
    started = datetime.now(UTC)
    try:
        if isinstance(executor, KernelVmExecutor):
            with git.reused_worktree(head, executor.worktree_root) as wt:
                return executor.run(name, wt.repo, tests, out, base=base)
        with git.scratch_worktree(head, out.parent / f"{out.name}-wt") as wt:
            return executor.run(name, wt.repo, tests, out)
    except (InfraError, OSError) as e:
        log.error("branch %s: executor %s failed: %s", name, executor.name, e)
        return RunResult(executor.name, name, started, datetime.now(UTC), RUN_ERROR, str(e))


def stream_executor_settings(settings: Settings, ss: StreamSettings) -> list[ExecutorSettings]:
    """The stream's executors with the stream's defaults filled in: its `[[executors]]`,
    or without any the local run of its tests_dir. What a job carries to a worker host."""
    if not ss.executors:
        implicit = ExecutorSettings(
            name=f"local-{ss.name}", kind="local", tests_dir=ss.tests_dir,
            test_timeout=ss.test_timeout, idle_timeout=ss.idle_timeout, retries=ss.retries,
            build_command=ss.build_command, env=ss.env,
        )  # fmt: skip
        return [implicit.model_copy(update={"workers": ss.jobs, "crash": settings.crash})]
    out = []
    for name in ss.executors:
        ex = settings.executor(name)
        if ex.crash is None:
            ex = ex.model_copy(update={"crash": settings.crash})
        if ex.kind == "local":
            ex = ex.model_copy(update={
                "test_timeout": ex.test_timeout or ss.test_timeout,
                "idle_timeout": ex.idle_timeout or ss.idle_timeout,
                "tests_dir": ex.tests_dir or ss.tests_dir,
            })  # fmt: skip
        out.append(ex)
    return out


def make_executor(
    ex: ExecutorSettings, *, root: Path, ccache: Path, sandbox: Sandbox | None
) -> Executor:
    """The executor *ex* describes; a vm executor keeps its worktree and builds in *root*."""
    crash = (ex.crash or CrashSettings()).to_config(ex.crash_ignore)
    if ex.kind == "local":
        return LocalExecutor(
            ex.name, ex.build_command or None, retries=ex.retries, jobs=ex.workers,
            timeout=ex.test_timeout or 300.0, env=ex.env, sandbox=sandbox,
            idle_timeout=ex.idle_timeout, crash_config=crash,
        )  # fmt: skip
    opts = KernelVmOptions(
        name=ex.name, kernel=ex.kernel, fragments=ex.config, debug=ex.debug,
        targets=ex.targets, tests=ex.tests, ignore=ex.ignore, workers=ex.workers,
        cpus=ex.cpus, memory=ex.memory, test_timeout=ex.test_timeout,
        boot_timeout=ex.boot_timeout, retries=ex.retries,
        kvm={"auto": None, "on": True, "off": False}[ex.kvm], deadline=ex.deadline,
        kmemleak=ex.kmemleak, kmemleak_wait=ex.kmemleak_wait, env_check=ex.env_check, jobs=ex.jobs,
        tests_per_boot=ex.tests_per_boot, kunit=ex.kunit,
        idle_timeout=ex.idle_timeout,
    )  # fmt: skip
    return KernelVmExecutor(opts, worktree_root=root, ccache_dir=ccache, sandbox=sandbox,
                            crash_config=crash)  # fmt: skip


def executor_tests(ex: ExecutorSettings, repo: Path, base: str) -> Sequence[TestSpec]:
    """What a local executor runs (the executables of its tests_dir at *base*); a vm
    executor finds its tests in the branch itself."""
    if ex.kind != "local":
        return ()
    return selftest_specs(repo, base, ex.tests_dir or "", ex.test_timeout or 300.0)


def stream_executors(
    settings: Settings, ss: StreamSettings, tree_path: Path, base: str,
    results: ResultsStore | None = None,
) -> list[tuple[Executor, Sequence[TestSpec]]]:  # fmt: skip
    """The stream's executors, built here, with their tests; with *results*, each knows
    its tests' durations in its last run, to start the longest first."""
    sandbox = settings.untrusted()
    out: list[tuple[Executor, Sequence[TestSpec]]] = []
    for ex in stream_executor_settings(settings, ss):
        root = settings.data_path / "executors" / namify(ex.name) / namify(ss.tree)
        built = make_executor(ex, root=root, ccache=settings.ccache_path, sandbox=sandbox)
        if results is not None:
            built.previous_durations = results.durations(ex.name)
        out.append((built, executor_tests(ex, tree_path, base)))
    return out


def series_tips(git: Git, base: str, head: str, sizes: Sequence[int]) -> list[str]:
    """The commit after each series of a branch was applied, in order; *sizes* are the
    series' patch counts (the branch applies them one commit per patch, on *base*)."""
    res = git.run("rev-list", "--reverse", "--first-parent", f"{base}..{head}")
    commits = res.stdout.split()
    tips, n = [], 0
    for size in sizes:
        n += size
        if n > len(commits):
            raise InfraError(f"{head[:12]}: fewer commits on {base[:12]} than series patches")
        tips.append(commits[n - 1])
    return tips


def contest_summary(
    results: ResultsStore, branch: str, settings: Settings | None = None
) -> ContestSummary:
    """The branch's newest runs against the previous branch of its stream, each failure
    weighed against its history and the expectations file (service/verdicts.py)."""
    from patchci.service.verdicts import excuses

    runs = results.branch_results(branch)
    previous = baseline_runs(results, branch, {r.executor for r in runs})
    summary = summarise_runs(branch, runs, previous)
    return reconsider(summary, excuses(summary, results, settings))


def baseline_runs(
    results: ResultsStore, branch: str, executors: Collection[str], depth: int = 5
) -> list[RunResult] | None:
    """What *branch*'s runs are compared with: per executor, the newest finished run on
    the nearest earlier branch of the stream that has one (up to *depth* branches back),
    so one infrastructure error on the previous branch does not leave the next one without
    a baseline. None when the stream has no earlier branch."""
    prev = results.previous_branch(branch)
    if prev is None:
        return None
    found: dict[str, RunResult] = {}
    for _ in range(depth):
        here: dict[str, RunResult] = {}
        for r in sorted(results.branch_results(prev.name), key=lambda r: r.started):
            if r.status == RUN_DONE:
                here[r.executor] = r
        for ex, r in here.items():
            found.setdefault(ex, r)
        if set(executors) <= found.keys():
            break
        nxt = results.previous_branch(prev.name)
        if nxt is None:
            break
        prev = nxt
    return list(found.values())
