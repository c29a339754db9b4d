"""VM pool executor: tests run inside virtme-ng VMs, `workers` of them in parallel.

Design: ONE FRESH VM PER ATTEMPT. Each worker thread takes the next test (longest first),
boots a VM for it with `run_in_vm`, and lets the VM go when the test ends. A crash or a
timeout can therefore never leak into the next test: "a fresh VM after a crash or timeout"
holds by construction, as does a clean kmemleak baseline. The price is one boot per test
(~30 s under TCG, ~2 s with KVM), which a pool of VMs reused across tests would save; that
reuse needs a command channel into a running guest that vm.py does not have yet.

How one attempt is judged (the same rules as the local executor, `local.verdict`):

- the guest's output (`output.log`, the side channel) goes through the KTAP parser;
- the VM's console (`console.log`) goes through the crash detector, and so does the
  kmemleak report the guest writes after the test when the kernel has kmemleak;
- a VM that never boots, or stops without reporting an exit status and without a splat,
  is ERROR (our fault), never FAIL; a VM killed at the test's timeout is TIMEOUT.

A hard total deadline caps the run: tests not started by then are ERROR ("not run"), and a
test whose timeout had to be shortened to fit is ERROR rather than TIMEOUT when cut.
`reproduce.sh` (the vng command of every test, with its timeout) is written first.
"""

from __future__ import annotations

import logging
import shlex
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from patchci import ktap
from patchci.crash import DEFAULT_CONFIG, CrashConfig, detect
from patchci.errors import ConfigError, ToolMissing
from patchci.executor.base import (
    RETRY_ON,
    RUN_DONE,
    RUN_ERROR,
    CrashRef,
    RunResult,
    TestResult,
    TestSpec,
    namify,
    subtests_of,
    test_root,
)
from patchci.executor.local import (
    REPRODUCE,
    Attempt,
    attempts_result,
    now,
    order_tests,
    verdict,
)
from patchci.executor.vm import (
    VmConfig,
    VmRun,
    missing_prerequisites,
    resolve_config,
    run_in_vm,
    vng_command,
)
from patchci.model import Outcome

log = logging.getLogger(__name__)

KMEMLEAK = "/sys/kernel/debug/kmemleak"
KMEMLEAK_LOG = "kmemleak.txt"
DEFAULT_DEADLINE = 4 * 3600.0


@dataclass(frozen=True)
class _Job:
    """One test as a worker runs it: its index, VM working dir and guest command."""

    idx: int
    spec: TestSpec
    workdir: Path
    command: str  # with the in-guest `timeout`, as the reproduce line shows it


@dataclass
class _RunState:
    """Shared by the workers of one run: when it must end, and whether any VM booted."""

    ends_at: float
    booted: threading.Event = field(default_factory=threading.Event)


def guest_command(spec: TestSpec) -> str:
    """The shell command the guest runs for *spec*, bounded by `timeout` so it also stops
    when replayed by hand (the host watchdog is the real limit)."""
    inner = spec.command if isinstance(spec.command, str) else shlex.join(spec.command)
    return f"timeout {spec.timeout:g} sh -c {shlex.quote(inner)}"


def with_kmemleak(command: str, log_dir: Path) -> str:
    """*command*, then a kmemleak scan whose report lands in *log_dir*; keeps its status."""
    q = shlex.quote
    report = q(str(log_dir / KMEMLEAK_LOG))
    return f"""{command}
rc=$?
if [ ! -e {KMEMLEAK} ] && [ -d /sys/kernel/debug ]; then
  mount -t debugfs none /sys/kernel/debug 2>/dev/null
fi
if [ -e {KMEMLEAK} ]; then
  echo scan > {KMEMLEAK} 2>/dev/null
  cat {KMEMLEAK} > {report} 2>/dev/null
fi
exit $rc
"""


def judge(
    run: VmRun, parsed: ktap.Parsed, crashes: Sequence[CrashRef], cut_by_deadline: bool
) -> tuple[Outcome, str]:
    """The outcome of one VM attempt (*parsed*: its guest output) and a short note."""
    crashed = any(not c.ignored for c in crashes)
    if not run.booted:
        return Outcome.ERROR, run.error or "VM did not boot"
    if run.timed_out:
        if cut_by_deadline and not crashed:
            return Outcome.ERROR, "cut short by the run's total deadline"
        return verdict(parsed, None, crashed), run.error or "timed out"
    if run.exit_code is None:
        # The guest died before reporting: a splat explains it, otherwise we do not know.
        if crashed:
            return Outcome.CRASH, run.error or "guest crashed"
        return Outcome.ERROR, run.error or "no exit status from the guest"
    return verdict(parsed, run.exit_code, crashed), ""


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


class VmPoolExecutor:
    """Runs tests in VMs (`vm` is the template config; each test's own timeout replaces
    `vm.test_timeout`). *deadline* is the hard limit of the whole run, in seconds."""

    def __init__(
        self,
        name: str,
        vm: VmConfig,
        workers: int = 2,
        retries: int = 1,
        kmemleak: bool = True,
        previous_durations: Mapping[tuple[str, str], float] | None = None,
        *,
        deadline: float = DEFAULT_DEADLINE,
        crash_config: CrashConfig = DEFAULT_CONFIG,
        clock: Callable[[], datetime] = now,
    ) -> None:
        self.name = name
        self.vm = vm
        self.workers = max(workers, 1)
        self.retries = max(retries, 0)
        self.kmemleak = kmemleak
        self.previous_durations = dict(previous_durations or {})
        self.deadline = deadline
        self.crash_config = crash_config
        self.clock = clock

    # -- the run ----------------------------------------------------------------------------

    def run(
        self, branch_name: str, worktree: Path, tests: Sequence[TestSpec], out_dir: Path
    ) -> RunResult:
        out_dir.mkdir(parents=True, exist_ok=True)
        state = _RunState(time.monotonic() + self.deadline)
        started = self.clock()
        cfg, kvm_reason = resolve_config(self.vm)
        ordered = order_tests(tests, self.previous_durations)
        jobs = [self._job(i, spec, worktree) for i, spec in enumerate(ordered)]
        reproduce = self.reproduce_script(branch_name, cfg, jobs)
        (out_dir / REPRODUCE).write_text(reproduce, encoding="utf-8")
        run = RunResult(
            self.name, branch_name, started, None, RUN_DONE, reproduce=reproduce,
            kernel=str(cfg.kernel), log_dir=str(out_dir),
        )  # fmt: skip
        problems = missing_prerequisites(cfg)
        if problems:
            error = "cannot start VMs: " + "; ".join(problems)
            log.error("executor %s: branch %s: %s", self.name, branch_name, error)
            return replace(run, finished=self.clock(), status=RUN_ERROR, error=error)
        log.info(
            "executor %s: branch %s: %d tests in %d VMs (%s), logs in %s",
            self.name, branch_name, len(jobs), self.workers, kvm_reason, out_dir,
        )  # fmt: skip
        with ThreadPoolExecutor(self.workers, thread_name_prefix=self.name) as pool:
            futures = [pool.submit(self._run_test, cfg, job, out_dir, state) for job in jobs]
            results = {id(job.spec): f.result() for job, f in zip(jobs, futures, strict=True)}
        done = tuple(results[id(spec)] for spec in tests)
        run = replace(run, finished=self.clock(), tests=done)
        if done and not state.booted.is_set():
            error = "no VM booted; see the console.log of each test"
            log.error("executor %s: branch %s: %s", self.name, branch_name, error)
            return replace(run, status=RUN_ERROR, error=error)
        log.info("executor %s: branch %s: done, %s", self.name, branch_name, run.outcome.value)
        return run

    def _job(self, idx: int, spec: TestSpec, worktree: Path) -> _Job:
        workdir = worktree if spec.cwd is None else worktree / spec.cwd
        return _Job(idx, spec, workdir, guest_command(spec))

    def _run_test(self, cfg: VmConfig, job: _Job, out_dir: Path, state: _RunState) -> TestResult:
        spec = job.spec
        base = f"{job.idx:03d}-{namify(spec.group)}-{namify(spec.name)}"
        reproduce = shlex.join(vng_command(cfg, job.command, cwd=job.workdir))
        try:
            attempts = [self._attempt(cfg, job, out_dir / base, state)]
            for n in range(1, self.retries + 1):
                if attempts[-1].outcome not in RETRY_ON:
                    break
                retry_dir = out_dir / f"{base}-retry{n if n > 1 else ''}"
                attempts.append(self._attempt(cfg, job, retry_dir, state))
        except Exception:  # one broken test must not lose the whole run
            log.exception("executor %s: test %s/%s broke the runner", self.name, *spec.key)
            return TestResult(spec.group, spec.name, Outcome.ERROR, reproduce=reproduce)
        return attempts_result(self.name, spec, attempts, reproduce)

    def _attempt(self, cfg: VmConfig, job: _Job, log_dir: Path, state: _RunState) -> Attempt:
        """Boot a fresh VM, run the test in it, judge what came back."""
        log_dir = log_dir.resolve()
        log_dir.mkdir(parents=True, exist_ok=True)
        output = log_dir / "output.log"
        left = state.ends_at - time.monotonic()
        if left < 1:
            output.write_text("patchci: not run, the run's total deadline passed\n")
            return Attempt(Outcome.ERROR, 0.0, (), (), output, "total deadline passed")
        boot = min(cfg.boot_timeout, left)
        timeout = min(job.spec.timeout, max(left - boot, 1.0))
        vm_cfg = replace(cfg, boot_timeout=boot, test_timeout=timeout)
        command = with_kmemleak(job.command, log_dir) if self.kmemleak else job.command
        (log_dir / KMEMLEAK_LOG).unlink(missing_ok=True)
        try:
            run = run_in_vm(vm_cfg, command, job.workdir, log_dir)
        except (ToolMissing, ConfigError, OSError) as e:
            output.write_text(f"patchci: cannot start the VM: {e}\n")
            return Attempt(Outcome.ERROR, 0.0, (), (), output, str(e))
        if run.booted:
            state.booted.set()
        crashes = self._crashes(run, log_dir)
        parsed = ktap.parse_text(_read(run.output_path))
        outcome, note = judge(run, parsed, crashes, cut_by_deadline=timeout < job.spec.timeout)
        took = run.duration - (run.boot_seconds or 0.0) if run.booted else run.duration
        return Attempt(
            outcome, took, subtests_of(test_root(parsed)), crashes, run.output_path, note
        )

    def _crashes(self, run: VmRun, log_dir: Path) -> tuple[CrashRef, ...]:
        found = detect(_read(run.console_path).splitlines(), self.crash_config)
        found += detect(_read(log_dir / KMEMLEAK_LOG).splitlines(), self.crash_config)
        return tuple(CrashRef.from_crash(c) for c in found)

    # -- reproduce --------------------------------------------------------------------------

    def reproduce_script(self, branch: str, cfg: VmConfig, jobs: Sequence[_Job]) -> str:
        """A shell script replaying the run by hand: one vng boot per test, as here."""
        lines = [
            "#!/bin/sh",
            f"# patchci executor {self.name}: reproduce the run of branch {branch}",
            f"# {len(jobs)} tests, one fresh VM each; retries: {self.retries}",
        ]
        for job in jobs:
            lines.append(f"# {job.spec.group}/{job.spec.name} (timeout {job.spec.timeout:g}s)")
            lines.append(shlex.join(vng_command(cfg, job.command, cwd=job.workdir)))
        return "\n".join(lines) + "\n"
