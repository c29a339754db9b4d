"""The kernel executor's scheduling and judging with a stand-in for `run_session` (the real
VMs are in test_kernel_executor): several tests per boot, a fresh VM after a crash, a hang
or a taint, retries in their own directories, workers in parallel, our errors never FAIL."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from patchci.executor import kernel
from patchci.executor.base import TestResult, TestSpec
from patchci.executor.kernel import KernelVmExecutor, KernelVmOptions
from patchci.executor.vm import VmConfig
from patchci.executor.vmsession import GuestTest, Session, TestRun, run_dir
from patchci.git import Git
from patchci.model import Outcome

CONSOLE = Path(__file__).resolve().parent / "data" / "console"
GUEST = Path(__file__).resolve().parent / "data" / "guest"
KTAP_OK = "TAP version 13\n1..1\nok 1 sub\n"
KTAP_FAIL = "TAP version 13\n1..1\nnot ok 1 sub\n"


@dataclass
class FakeSessions:
    """Plays the guest of each session: what a test does depends on its command."""

    sessions: list[list[str]] = field(default_factory=list)  # commands per boot
    threads: set[str] = field(default_factory=set)
    seen: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, cfg: VmConfig, tests: list[GuestTest], chan: Path, **_kw: object) -> Session:
        chan.mkdir(parents=True, exist_ok=True)
        with self.lock:
            self.sessions.append([t.command for t in tests])
            self.threads.add(threading.current_thread().name)
        time.sleep(0.2)  # a boot takes a while: the other worker starts meanwhile
        console = chan / "console.log"
        console.write_text("")
        if any("NOBOOT" in t.command for t in tests):
            runs = tuple(self._run(chan, t, started=False) for t in tests)
            return Session(False, None, "VM did not boot within 1s", runs, console, (), False)
        runs: list[TestRun] = []
        ended = False
        for t in tests:
            if ended:
                runs.append(self._run(chan, t, started=False))
                continue
            with self.lock:
                self.seen[t.command] = n = self.seen.get(t.command, 0) + 1
            r = self._run(chan, t, started=True, n=n)
            runs.append(r)
            ended = r.exit_code is None or r.tainted
        return Session(True, 1.0, None, tuple(runs), console, (), False)

    def _run(self, chan: Path, t: GuestTest, *, started: bool, n: int = 1) -> TestRun:
        d = run_dir(chan, t)
        d.mkdir(parents=True, exist_ok=True)
        out = d / "output.log"
        out.write_text("")
        if not started:
            return TestRun(t, False, None, out, 0.0, False, False, (), None)
        cmd, exit_code, timed_out, tainted = t.command, 0, False, False
        console: tuple[str, ...] = ()
        leak = None
        if cmd == kernel.KUNIT_COMMAND:  # a kernel log with no KUnit KTAP in it
            out.write_text("")
        elif "PANIC" in cmd:
            exit_code = None  # type: ignore[assignment]
            console = tuple((CONSOLE / "vm-panic-console.log").read_text().splitlines())
        elif "HANG" in cmd:
            exit_code, timed_out = None, True  # type: ignore[assignment]
            out.write_text("TAP version 13\n1..1\n")
        elif "TAINT" in cmd:
            tainted = True  # a WARN: the test itself passed
            console = tuple((CONSOLE / "vm-panic-console.log").read_text().splitlines())
            out.write_text(KTAP_OK)
        elif "FLAKY" in cmd:
            out.write_text(KTAP_FAIL if n == 1 else KTAP_OK)
        elif "NOPING" in cmd:  # a real mptcp_connect.sh on a host without ping
            out.write_text((GUEST / "mptcp_connect-without-ping.log").read_text())
        elif "FAILS" in cmd:
            out.write_text(KTAP_FAIL)
        else:
            out.write_text(KTAP_OK)
        if "LEAK" in cmd:
            leak = d / "kmemleak.txt"
            leak.write_text((CONSOLE / "kmemleak.log").read_text())
        return TestRun(t, True, exit_code, out, 0.5, timed_out, tainted, console, leak)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeSessions:
    sessions = FakeSessions()
    monkeypatch.setattr(kernel, "run_session", sessions)
    return sessions


def run_all(tmp_path: Path, commands: list[str], **opts: object) -> dict[str, TestResult]:
    o = KernelVmOptions(name="vmksft", targets=("net",), **opts)  # type: ignore[arg-type]
    ex = KernelVmExecutor(o, worktree_root=tmp_path / "wt")
    specs = [TestSpec("selftests-net", c.lower(), c, 30.0, tmp_path) for c in commands]
    vm = VmConfig(kernel=tmp_path / "bzImage", use_kvm=False, vng="/opt/vng")
    results = ex._run_all(vm, specs, tmp_path / "out")
    return {r.name: r for r in results}


def test_several_tests_run_in_one_boot(tmp_path: Path, fake: FakeSessions) -> None:
    r = run_all(tmp_path, ["A", "B", "C"], retries=0)
    assert {n: t.outcome for n, t in r.items()} == dict.fromkeys("abc", Outcome.PASS)
    assert fake.sessions == [["A", "B", "C"]]


def test_a_crash_is_crash_and_the_next_test_gets_a_fresh_vm(
    tmp_path: Path, fake: FakeSessions
) -> None:
    r = run_all(tmp_path, ["A", "PANIC", "C"], retries=0)
    assert r["panic"].outcome is Outcome.CRASH and r["panic"].crashes
    assert r["a"].outcome is r["c"].outcome is Outcome.PASS
    assert fake.sessions == [["A", "PANIC", "C"], ["C"]]


def test_a_hang_is_timeout_and_the_rest_runs_on_a_fresh_vm(
    tmp_path: Path, fake: FakeSessions
) -> None:
    r = run_all(tmp_path, ["HANG", "B"], retries=0)
    assert r["hang"].outcome is Outcome.TIMEOUT
    assert r["b"].outcome is Outcome.PASS
    assert fake.sessions == [["HANG", "B"], ["B"]]


def test_a_test_that_taints_ends_the_boot(tmp_path: Path, fake: FakeSessions) -> None:
    r = run_all(tmp_path, ["TAINT", "B"], retries=0)
    assert r["taint"].outcome is Outcome.CRASH  # passed, but left a splat and a taint
    assert fake.sessions == [["TAINT", "B"], ["B"]]


def test_failures_are_retried_in_a_later_boot_with_their_own_logs(
    tmp_path: Path, fake: FakeSessions
) -> None:
    r = run_all(tmp_path, ["FLAKY", "FAILS", "OK"], retries=1)
    assert (r["flaky"].outcome, r["flaky"].retry_outcome) == (Outcome.FAIL, Outcome.PASS)
    assert (r["fails"].outcome, r["fails"].retry_outcome) == (Outcome.FAIL, Outcome.FAIL)
    assert r["ok"].retry_outcome is None
    assert fake.sessions == [["FLAKY", "FAILS", "OK"], ["FLAKY", "FAILS"]]
    assert r["flaky"].log_path != r["flaky"].retry_log_path


def test_a_vm_that_never_boots_is_error_never_fail_and_not_retried(
    tmp_path: Path, fake: FakeSessions
) -> None:
    r = run_all(tmp_path, ["NOBOOT", "B"], retries=1)
    assert {t.outcome for t in r.values()} == {Outcome.ERROR}
    assert all(t.retry_outcome is None for t in r.values())
    assert len(fake.sessions) == 1


def test_a_test_failing_for_a_tool_the_executor_lacks_is_error_not_fail(
    tmp_path: Path, fake: FakeSessions, caplog: pytest.LogCaptureFixture
) -> None:
    """The first MPTCP run of examples/mptcp.toml here: mptcp_connect.sh failed in every
    namespace with `exec of "ping" failed` (the guest runs on the host's root file system,
    which had no ping) and was reported as the branch's failure."""
    caplog.set_level("INFO", logger="patchci")
    r = run_all(tmp_path, ["NOPING", "FAILS"], retries=0)
    assert r["noping"].outcome is Outcome.ERROR
    assert "noping: error (missing on the executor: ping (apt-get install iputils-ping))" in (
        caplog.text
    )
    assert r["fails"].outcome is Outcome.FAIL  # a real failure stays one


def test_workers_run_their_shares_in_parallel(tmp_path: Path, fake: FakeSessions) -> None:
    r = run_all(tmp_path, ["A", "B", "C", "D"], retries=0, workers=2)
    assert len(r) == 4 and len(fake.sessions) == 2 and len(fake.threads) == 2
    assert sorted(c for s in fake.sessions for c in s) == ["A", "B", "C", "D"]


def test_kmemleak_after_a_test_is_recorded_as_its_crash(tmp_path: Path, fake: FakeSessions) -> None:
    r = run_all(tmp_path, ["LEAK"], retries=0)
    assert [c.kind for c in r["leak"].crashes] == ["kmemleak"]
    assert r["leak"].outcome is Outcome.CRASH


def test_the_total_deadline_leaves_the_rest_not_run_as_error(
    tmp_path: Path, fake: FakeSessions
) -> None:
    r = run_all(tmp_path, ["A", "B"], retries=0, deadline=-1.0)
    assert {t.outcome for t in r.values()} == {Outcome.ERROR}
    assert fake.sessions == []


@pytest.mark.parametrize("base_builds", [True, False])
def test_a_branch_that_does_not_build_fails_only_when_its_base_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, base_builds: bool
) -> None:
    """A patch can break the build (its fault); a base that does not build is ours."""
    from patchci.executor import kbuild
    from patchci.executor.base import RUN_DONE, RUN_ERROR
    from tests.gitrepo import commit_file, make_repo

    git = make_repo(tmp_path / "tree", {"Makefile": "all:\n"})
    base = git.rev_parse("HEAD")
    assert base is not None
    commit_file(git, "net/broken.c", "int x = ;\n", "net: break the build")
    built: list[str] = []

    def build(self: kbuild.KernelBuilder, worktree: Path, out_dir: Path) -> kbuild.KernelBuild:
        head = Git(worktree).rev_parse("HEAD")
        built.append("base" if head == base else "branch")
        if head != base or not base_builds:
            raise kbuild.KernelBuildFailed(
                "kernel build",
                ["net/broken.c:1:9: error: expected expression"],
                out_dir / "kernel-build.log",
            )
        return kbuild.KernelBuild(
            out_dir / "bzImage", out_dir / "kernel.config", out_dir, 1.0, True
        )

    monkeypatch.setattr(kbuild.KernelBuilder, "build", build)
    monkeypatch.setattr(kernel, "missing_prerequisites", lambda cfg: [])
    monkeypatch.setattr(kernel, "build_problems", lambda: [])
    ex = KernelVmExecutor(KernelVmOptions(name="vmksft", targets=("net",)),
                          worktree_root=tmp_path / "wt")  # fmt: skip
    run = ex.run("br", git.repo, (), tmp_path / "out", base=base)
    assert built == ["branch", "base"]
    if base_builds:
        assert run.status == RUN_DONE
        ((t,),) = [run.tests]
        assert (t.group, t.name, t.outcome) == ("build", "kernel", Outcome.FAIL)
        assert "expected expression" in t.reproduce
    else:
        assert run.status == RUN_ERROR and "the base" in run.error and "does not build" in run.error
        assert run.tests == ()


def test_tests_per_boot_bounds_each_session(tmp_path: Path, fake: FakeSessions) -> None:
    r = run_all(tmp_path, ["A", "B", "C"], retries=0, tests_per_boot=1)
    assert {t.outcome for t in r.values()} == {Outcome.PASS}
    assert fake.sessions == [["A"], ["B"], ["C"]]


def test_kunit_entries_are_symbols_or_kunitconfig_files(tmp_path: Path) -> None:
    from patchci.errors import InfraError
    from patchci.executor.kbuild import kunit_files, kunit_symbols

    assert kunit_symbols([]) == []  # no KUnit: CONFIG_KUNIT is not forced on
    assert kunit_symbols(["MPTCP_KUNIT_TEST", "CONFIG_LIST_KUNIT_TEST", "net/mptcp"]) == [
        "CONFIG_KUNIT", "CONFIG_MPTCP_KUNIT_TEST", "CONFIG_LIST_KUNIT_TEST"]  # fmt: skip
    (tmp_path / "lib/kunit").mkdir(parents=True)
    (tmp_path / "lib/kunit/.kunitconfig").write_text("CONFIG_KUNIT=y\n")
    assert kunit_files(tmp_path, ["X", "lib/kunit"]) == [tmp_path / "lib/kunit/.kunitconfig"]
    with pytest.raises(InfraError, match="net/nope is not a .kunitconfig"):
        kunit_files(tmp_path, ["net/nope"])


def test_the_kunit_pseudo_test_without_results_is_error(tmp_path: Path, fake: FakeSessions) -> None:
    """A kernel log without KUnit's KTAP (CONFIG_KUNIT lost, the suites not built in) is
    ours, not a pass (it exits 0 with no KTAP, which reads as PASS for a selftest)."""
    r = run_all(tmp_path, [kernel.KUNIT_COMMAND, "A"], retries=0)
    assert r[kernel.KUNIT_COMMAND.lower()].outcome is Outcome.ERROR
    assert r["a"].outcome is Outcome.PASS


@pytest.mark.parametrize("talks", [False, True])
def test_the_watchdog_kills_a_guest_whose_test_went_silent(tmp_path: Path, talks: bool) -> None:
    """A hung guest test was stopped only by its own (long) timeout. With idle_timeout the
    host watchdog kills the VM's process group once the running test's output file stops
    growing; a test that keeps printing is left alone. (A real process group stands in
    for vng: what is checked is the watchdog's reading of the channel and its kill.)"""
    import os
    import subprocess

    from patchci.executor.vm import BOOTED
    from patchci.executor.vmsession import _Watchdog

    chan = tmp_path / "chan"
    chan.mkdir()
    test = GuestTest(1, "t", "true", tmp_path, 60.0)
    d = run_dir(chan, test)
    d.mkdir(parents=True)
    vm = subprocess.Popen(["sleep", "30"], start_new_session=True)
    dog = _Watchdog(chan, 60.0, [test], idle_timeout=1.0)
    dog.pgid = vm.pid
    try:
        dog.start()
        (chan / BOOTED).write_text("1.0\n")
        (d / "started").touch()
        out = d / "output.log"
        for i in range(20):  # 4 s
            if talks:
                with out.open("a") as f:
                    f.write(f"# tick {i}\n")
            time.sleep(0.2)
            if vm.poll() is not None:
                break
        if talks:
            assert vm.poll() is None and dog.killed_for is None
        else:
            assert vm.wait(timeout=5) is not None and dog.killed_for == ("idle", 1)
    finally:
        dog.done.set()
        dog.join()
        if vm.poll() is None:
            os.killpg(vm.pid, 9)
            vm.wait()


def test_kmemleak_scans_twice_after_each_test_with_the_configured_wait(tmp_path: Path) -> None:
    """NIPA scans, waits and scans again: an object is reported only once it is older than
    kmemleak's minimum age, so a single scan right after a test misses its last leaks."""
    from patchci.config import build_settings
    from patchci.executor.vmsession import KMEMLEAK, runner_script
    from patchci.service.runs import make_executor

    settings = build_settings({
        "data_dir": str(tmp_path),
        "executors": [{"name": "vm", "targets": ["net"], "kmemleak_wait": 2}],
    }, env={})  # fmt: skip
    ex = make_executor(settings.executors[0], root=tmp_path, ccache=tmp_path, sandbox=None)
    assert isinstance(ex, KernelVmExecutor) and ex.opts.kmemleak_wait == 2
    script = runner_script(tmp_path, [GuestTest(0, "t", "true", tmp_path, 5)], True,
                           ex.opts.kmemleak_wait)  # fmt: skip
    block = script[script.index(f"if [ -e {KMEMLEAK} ]"):]
    order = [block.index(s) for s in (f"echo scan > {KMEMLEAK}", "sleep 2",
                                      f"echo scan > {KMEMLEAK} 2>/dev/null; cat",
                                      f"echo clear > {KMEMLEAK}")]  # fmt: skip
    assert order == sorted(order)
    assert KMEMLEAK not in runner_script(tmp_path, [], False)
