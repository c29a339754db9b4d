"""VM pool executor: the scheduling and judging logic with a stand-in for `run_in_vm`, then
real virtme-ng VMs (marked `vm`) running a kselftest and a test that hangs its VM."""

from __future__ import annotations

import shlex
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from patchci import proc
from patchci.executor import local, vmpool
from patchci.executor.base import RUN_DONE, RUN_ERROR, RunResult, TestResult, TestSpec
from patchci.executor.vm import VmConfig, VmRun
from patchci.executor.vmpool import VmPoolExecutor
from patchci.model import Outcome

REPO = Path(__file__).resolve().parent.parent
CONSOLE = REPO / "tests" / "data" / "console"
KERNEL = Path("/boot/vmlinuz-fake")
BOOT_LOG = "[    0.000000] Linux version 6.1.0-fake\n"
KTAP_OK = "TAP version 13\n1..2\nok 1 first\nok 2 second\n"
KTAP_FAIL = "TAP version 13\n1..2\nok 1 first\nnot ok 2 second\n"


# ---- stand-in for run_in_vm -----------------------------------------------------------------


@dataclass
class Call:
    command: str
    log_dir: Path
    cfg: VmConfig
    thread: str
    start: float
    end: float = 0.0


@dataclass
class FakeVms:
    """Plays the guest: what it does depends on a keyword in the test's command."""

    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    seen: dict[str, int] = field(default_factory=dict)
    delay: float = 0.0

    def __call__(self, cfg: VmConfig, command: str, workdir: Path, log_dir: Path) -> VmRun:
        call = Call(command, log_dir, cfg, threading.current_thread().name, time.monotonic())
        with self.lock:
            self.calls.append(call)
            key = command.splitlines()[0]
            self.seen[key] = n = self.seen.get(key, 0) + 1
        time.sleep(self.delay)
        output, console = log_dir / "output.log", log_dir / "console.log"
        console.write_text(BOOT_LOG)
        booted, timed_out = True, False
        exit_code: int | None = 0
        error: str | None = None
        if "NOBOOT" in command:
            booted, exit_code, error = False, None, "VM did not boot within 1s; see console.log"
            console.write_text("qemu: no kernel\n")
        elif "HANG" in command:
            timed_out, exit_code, error = True, None, "command timed out after 1s; VM killed"
            output.write_text("TAP version 13\n1..1\n")
        elif "PANIC" in command:
            exit_code, error = None, "guest stopped without reporting an exit status (crash?)"
            console.write_text(BOOT_LOG + (CONSOLE / "vm-panic-console.log").read_text())
        elif "SILENT" in command:
            exit_code, error = None, "guest stopped without reporting an exit status (crash?)"
        elif "FLAKY" in command:
            output.write_text(KTAP_FAIL if n == 1 else KTAP_OK)
        elif "FAILS" in command:
            output.write_text(KTAP_FAIL)
        else:
            output.write_text(KTAP_OK)
        if "LEAK" in command and vmpool.KMEMLEAK in command:
            (log_dir / vmpool.KMEMLEAK_LOG).write_text((CONSOLE / "kmemleak.log").read_text())
        if not output.exists():
            output.touch()
        call.end = time.monotonic()
        return VmRun(
            exit_code, output, console, call.end - call.start + 1.0, 1.0 if booted else None,
            timed_out, booted, error,
        )  # fmt: skip


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeVms:
    vms = FakeVms()
    monkeypatch.setattr(vmpool, "run_in_vm", vms)
    monkeypatch.setattr(vmpool, "missing_prerequisites", lambda cfg: [])
    return vms


def cfg() -> VmConfig:
    return VmConfig(kernel=KERNEL, use_kvm=False, vng="/opt/vng")


def spec(name: str, command: str = "true", timeout: float = 30.0) -> TestSpec:
    return TestSpec("g", name, command, timeout)


def run(tmp_path: Path, tests: list[TestSpec], **kw: object) -> RunResult:
    ex = VmPoolExecutor("vmpool", cfg(), **kw)  # type: ignore[arg-type]
    return ex.run("br", tmp_path, tests, tmp_path / "out")


def by_name(r: RunResult) -> dict[str, TestResult]:
    return {t.name: t for t in r.tests}


# ---- pure ---------------------------------------------------------------------------------


def test_guest_command_quotes_and_bounds_the_test() -> None:
    assert (
        vmpool.guest_command(spec("a", "echo 'x y'", 12))
        == "timeout 12 sh -c 'echo '\"'\"'x y'\"'\"''"
    )
    argv = TestSpec("g", "b", ("./run_kselftest.sh", "-t", "net/af_unix:diag_uid"), 45.5)
    assert vmpool.guest_command(argv) == (
        "timeout 45.5 sh -c './run_kselftest.sh -t net/af_unix:diag_uid'"
    )


def test_kmemleak_wrapper_keeps_the_test_exit_status(tmp_path: Path) -> None:
    """On a host without kmemleak the wrapper is a no-op that keeps the test's status."""
    script = vmpool.with_kmemleak("echo out; (exit 3)", tmp_path)
    res = proc.run(["sh", "-c", script], timeout=30)
    assert (res.returncode, res.stdout) == (3, "out\n")
    assert "echo scan > /sys/kernel/debug/kmemleak" in script
    assert f"cat /sys/kernel/debug/kmemleak > {tmp_path}/kmemleak.txt" in script


# ---- the pool with a stand-in VM ------------------------------------------------------------


def test_all_pass_with_subtests_and_reproduce_written_first(tmp_path: Path, fake: FakeVms) -> None:
    r = run(tmp_path, [spec("a", "echo A"), spec("b", "echo B", 7)])
    assert (r.status, r.outcome) == (RUN_DONE, Outcome.PASS)
    a, b = r.tests
    assert (a.name, b.name) == ("a", "b")  # given order, whatever the run order
    assert [s.path for s in a.subtests] == ["first", "second"]
    assert a.retry_outcome is None and a.duration is not None
    assert shlex.split(b.reproduce)[-2:] == ["--exec", "timeout 7 sh -c 'echo B'"]
    assert b.reproduce.startswith("/opt/vng --run /boot/vmlinuz-fake")
    script = (tmp_path / "out" / "reproduce.sh").read_text()
    assert b.reproduce in script and a.reproduce in script
    assert r.reproduce == script
    # every VM gets the test's own timeout
    assert sorted(c.cfg.test_timeout for c in fake.calls) == [7, 30]


def test_longest_first_and_two_vms_in_parallel(tmp_path: Path, fake: FakeVms) -> None:
    fake.delay = 0.3
    tests = [spec(n, f"echo {n}") for n in ("short", "long", "mid", "new")]
    durations = {("g", "short"): 1.0, ("g", "long"): 50.0, ("g", "mid"): 9.0}
    r = run(tmp_path, tests, workers=2, previous_durations=durations)
    assert [t.name for t in r.tests] == ["short", "long", "mid", "new"]
    started = [
        c.command.splitlines()[0].split()[-1].strip("'")
        for c in sorted(fake.calls, key=lambda c: c.start)
    ]
    # never timed first, then longest; two at a time, so the pairs may swap
    assert set(started[:2]) == {"new", "long"} and set(started[2:]) == {"mid", "short"}
    dirs = sorted(c.log_dir.name for c in fake.calls)
    assert dirs == ["000-g-new", "001-g-long", "002-g-mid", "003-g-short"]
    first, second = sorted(fake.calls, key=lambda c: c.start)[:2]
    assert first.thread != second.thread and second.start < first.end  # overlapping VMs


def test_failure_is_retried_in_its_own_vm_with_its_own_logs(tmp_path: Path, fake: FakeVms) -> None:
    r = run(tmp_path, [spec("flaky", "FLAKY"), spec("bad", "FAILS")])
    flaky, bad = r.tests
    assert (flaky.outcome, flaky.retry_outcome, flaky.is_flake) == (
        Outcome.FAIL, Outcome.PASS, True,
    )  # fmt: skip
    assert flaky.log_path != flaky.retry_log_path and flaky.retry_duration is not None
    assert flaky.retry_log_path is not None and "-retry" in flaky.retry_log_path
    assert [(s.name, s.outcome, s.retry_outcome) for s in flaky.subtests][1] == (
        "second", Outcome.FAIL, Outcome.PASS,
    )  # fmt: skip
    assert (bad.outcome, bad.final) == (Outcome.FAIL, Outcome.FAIL)
    assert len(fake.calls) == 4 and len({c.log_dir for c in fake.calls}) == 4
    assert r.outcome is Outcome.FAIL


def test_crash_gets_crash_outcome_and_next_test_a_fresh_vm(tmp_path: Path, fake: FakeVms) -> None:
    r = run(tmp_path, [spec("boom", "PANIC"), spec("after", "echo ok")], workers=1, retries=0)
    boom, after = by_name(r)["boom"], by_name(r)["after"]
    assert boom.outcome is Outcome.CRASH and boom.crashed
    assert {"oops", "panic"} <= {c.kind for c in boom.crashes}
    assert after.outcome is Outcome.PASS and not after.crashes
    # one VM per attempt: the test after the crash ran in a VM of its own
    assert [c.command.splitlines()[0] for c in fake.calls] == [
        "timeout 30 sh -c PANIC", "timeout 30 sh -c 'echo ok'",
    ]  # fmt: skip


def test_timeout_then_fresh_vm_for_the_retry(tmp_path: Path, fake: FakeVms) -> None:
    r = run(tmp_path, [spec("hung", "HANG", 1)])
    hung = r.tests[0]
    assert (hung.outcome, hung.retry_outcome) == (Outcome.TIMEOUT, Outcome.TIMEOUT)
    assert len(fake.calls) == 2 and r.status == RUN_DONE


def test_vm_that_never_boots_is_error_never_fail(tmp_path: Path, fake: FakeVms) -> None:
    r = run(tmp_path, [spec("a", "NOBOOT"), spec("b", "NOBOOT")])
    assert [t.outcome for t in r.tests] == [Outcome.ERROR, Outcome.ERROR]
    assert all(t.retry_outcome is None for t in r.tests)  # our fault: no retry
    assert r.status == RUN_ERROR and "no VM booted" in r.error
    assert r.outcome is Outcome.ERROR


def test_one_vm_not_booting_leaves_the_run_done(tmp_path: Path, fake: FakeVms) -> None:
    r = run(tmp_path, [spec("a", "NOBOOT"), spec("b", "echo fine")])
    assert [t.outcome for t in r.tests] == [Outcome.ERROR, Outcome.PASS]
    assert r.status == RUN_DONE and r.outcome is Outcome.ERROR


def test_guest_gone_without_splat_is_error(tmp_path: Path, fake: FakeVms) -> None:
    r = run(tmp_path, [spec("a", "SILENT")])
    assert r.tests[0].outcome is Outcome.ERROR and not r.tests[0].crashes


def test_kmemleak_report_is_recorded(tmp_path: Path, fake: FakeVms) -> None:
    r = run(tmp_path, [spec("leaky", "echo LEAK")], retries=0)
    t = r.tests[0]
    assert [c.kind for c in t.crashes] == ["kmemleak"]
    assert "mptcp_pm_nl_append_new_local_addr" in t.crashes[0].excerpt
    assert t.outcome is Outcome.CRASH
    off = run(tmp_path / "off", [spec("leaky", "echo LEAK")], retries=0, kmemleak=False)
    assert off.tests[0].crashes == () and off.tests[0].outcome is Outcome.PASS


def test_total_deadline_stops_the_run(tmp_path: Path, fake: FakeVms) -> None:
    fake.delay = 1.2
    tests = [spec(n, f"echo {n}") for n in ("a", "b", "c")]
    r = run(tmp_path, tests, workers=1, deadline=2.0)
    outcomes = [t.outcome for t in r.tests]
    assert outcomes[0] is Outcome.PASS and Outcome.ERROR in outcomes[1:]
    assert len(fake.calls) < 3
    # the VMs that did start were given no more than what was left of the run
    assert all(c.cfg.boot_timeout + c.cfg.test_timeout <= 30 for c in fake.calls[1:])


def test_missing_prerequisites_is_a_run_error(
    tmp_path: Path, fake: FakeVms, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vmpool, "missing_prerequisites", lambda cfg: ["vng not found"])
    r = run(tmp_path, [spec("a")])
    assert (r.status, r.tests, fake.calls) == (RUN_ERROR, (), [])
    assert "vng not found" in r.error
    assert (tmp_path / "out" / "reproduce.sh").exists()


# ---- real VMs ------------------------------------------------------------------------------


def _kselftest(tree: Path, program: str, timeout: float = 120) -> TestSpec:
    specs = local.tests_from_kselftest_list(tree / "kselftest-list.txt", timeout)
    return next(s for s in specs if s.name == program)


@pytest.mark.vm
def test_vm_pool_runs_real_kselftest(vm_cfg: VmConfig, kselftest_dir: Path, tmp_path: Path) -> None:
    ex = VmPoolExecutor("vmpool", vm_cfg, workers=1, retries=0)
    r = ex.run("br", kselftest_dir, [_kselftest(kselftest_dir, "diag-uid")], tmp_path)
    t = r.tests[0]
    assert (r.status, t.outcome) == (RUN_DONE, Outcome.PASS), Path(t.log_path or "").read_text()
    assert len(t.subtests) >= 2 and all(s.outcome is Outcome.PASS for s in t.subtests)
    assert not t.crashes
    assert "--exec" in t.reproduce and "net/af_unix:diag_uid" in t.reproduce


@pytest.mark.vm
def test_vm_killed_mid_test_and_the_other_test_passes(
    vm_cfg: VmConfig, kselftest_dir: Path, tmp_path: Path
) -> None:
    hung = TestSpec("vm", "hang", "echo waiting; sleep 1000", 5)
    ok = _kselftest(kselftest_dir, "diag-uid")
    ex = VmPoolExecutor("vmpool", vm_cfg, workers=2, retries=0)
    r = ex.run("br", kselftest_dir, [hung, ok], tmp_path)
    h, t = r.tests
    assert h.outcome is Outcome.TIMEOUT, Path(h.log_path or "").read_text()
    assert Path(h.log_path or "").read_text() == "waiting\n"
    assert t.outcome is Outcome.PASS and t.subtests
    assert r.status == RUN_DONE and r.outcome is Outcome.TIMEOUT
