"""Test durations from the executor's previous run feed the longest-first order (issue
14): the daemon's executors get them from the results database, jobs carry them to worker
hosts, and the vm executor deals its tests by them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from patchci.brancher import Manifest
from patchci.config import build_settings
from patchci.db.jobs import JobStore
from patchci.db.results import ResultsStore
from patchci.executor import kernel
from patchci.executor.base import RunResult, TestResult
from patchci.executor.job import JobSpec
from patchci.git import Git
from patchci.model import Outcome
from patchci.service.jobs import enqueue_branch
from patchci.service.runs import run_tests, stream_executors
from tests.gitrepo import write
from tests.test_kernel_sessions import FakeSessions, fake, run_all

__all__ = ["fake"]

T0 = datetime(2026, 5, 1, tzinfo=UTC)
SCRIPT = (
    '#!/bin/sh\necho {name} >> "$ORDER_FILE"\necho "TAP version 13"\necho "1..1"\necho "ok 1 x"\n'
)


def _site(tmp_path: Path, broker: bool = False) -> tuple[object, Git]:
    tree = tmp_path / "tree"
    git = Git.init(tree)
    for name in ("a.sh", "b.sh", "c.sh"):
        write(tree, f"tests/{name}", SCRIPT.format(name=name))
        (tree / "tests" / name).chmod(0o755)
    git.add_all()
    git.commit("tests")
    raw = {"data_dir": str(tmp_path / "data"),
           "trees": [{"name": "t", "path": str(tree), "branch": "main"}],
           "executors": [{"name": "ex", "kind": "local", "workers": 1,
                          "env": {"ORDER_FILE": str(tmp_path / "order")}}],
           "streams": [{"name": "s", "tree": "t", "tests_dir": "tests", "executors": ["ex"]}]}  # fmt: skip
    if broker:
        raw["broker"] = {"url": "redis://127.0.0.1:1/0"}  # nobody there: the job stays unsent
    return build_settings(raw, env={}), git


def _previous_run(rs: ResultsStore, durations: dict[str, float]) -> None:
    bid = rs.save_branch(Manifest(name="s-1", stream="s", date=T0, base="a" * 40, merges={},
                                  series=(), left_out=(), head="b" * 40, new_changes=True))  # fmt: skip
    tests = tuple(TestResult("tests", n, Outcome.PASS, d) for n, d in durations.items())
    rs.save_run(bid, RunResult("ex", "s-1", T0, T0, "done", tests=tests))


def test_the_daemons_executor_runs_the_longest_first(tmp_path: Path) -> None:
    settings, git = _site(tmp_path)
    rs = ResultsStore.open(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        _previous_run(rs, {"a-sh": 1.0, "b-sh": 9.0})  # c.sh never ran: it may be slow
        head = git.rev_parse("HEAD")
        assert head
        ss = settings.streams[0]  # type: ignore[attr-defined]
        ((ex, specs),) = stream_executors(settings, ss, git.repo, head, rs)  # type: ignore[arg-type]
        assert ex.previous_durations == {("tests", "a-sh"): 1.0, ("tests", "b-sh"): 9.0}
        run = run_tests(git, "s-2", head, ex, specs, tmp_path / "out")
        assert run.status == "done", run.error
        assert (tmp_path / "order").read_text().split() == ["c.sh", "b.sh", "a.sh"]
    finally:
        rs.close()


def test_a_job_carries_the_durations_to_the_worker_host(tmp_path: Path) -> None:
    settings, git = _site(tmp_path, broker=True)
    jobs = JobStore.open(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        _previous_run(jobs, {"a-sh": 1.0, "b-sh": 9.0})
        m = Manifest(name="s-2", stream="s", date=T0, base="a" * 40, merges={}, series=(),
                     left_out=(), head="c" * 40, new_changes=True)  # fmt: skip
        bid = jobs.save_branch(m)
        q = enqueue_branch(settings, settings.streams[0], jobs, m, bid)  # type: ignore[arg-type,attr-defined]
        spec = jobs.spec(q.jobs[0])
        assert spec.duration_map() == {("tests", "a-sh"): 1.0, ("tests", "b-sh"): 9.0}
        again = JobSpec.from_json(spec.to_json())
        assert again.durations == [["tests", "a-sh", 1.0], ["tests", "b-sh", 9.0]]
        old = spec.to_dict()
        del old["durations"]  # a job from a server before durations were sent
        assert JobSpec.from_dict(old).durations == []
    finally:
        jobs.close()


def test_the_vm_executor_deals_tests_by_their_last_duration(
    tmp_path: Path, fake: FakeSessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test never timed first (it may be slow), then the longest last time."""
    orig = kernel.KernelVmExecutor.__init__

    def init(self: kernel.KernelVmExecutor, *a: Any, **kw: Any) -> None:
        orig(self, *a, **kw)
        self.previous_durations = {("selftests-net", "short"): 1.0, ("selftests-net", "long"): 20.0}

    monkeypatch.setattr(kernel.KernelVmExecutor, "__init__", init)
    run_all(tmp_path, ["SHORT", "LONG", "NEW"], tests_per_boot=1)
    assert [s[0] for s in fake.sessions] == ["NEW", "LONG", "SHORT"]
