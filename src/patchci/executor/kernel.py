"""The kernel executor (`kind = "vm"`): build the branch's kernel and selftests, boot the
kernel with virtme-ng and run the tests, several per boot, in `workers` VMs.

Per run:
1. `reproduce.sh` first: the commands that rebuild this kernel config and run each test.
2. Build (kbuild.py) in the persistent build directory next to the executor's worktree.
   A kernel that does not build: the base is built too; if the base builds, the run holds
   one FAIL result `build/kernel` with the compiler's words (the branch broke it);
   otherwise the run is ERROR (ours: the base does not build).
3. The selftests of `targets`, from the branch's own tree, each with its directory's
   `settings` timeout (or the executor's `test_timeout`), minus `ignore`.
4. Sessions (vmsession.py): each worker boots a VM and runs its share of the tests in it;
   after a crash, a hang or a taint the next test gets a fresh VM. Retries run likewise.
"""

from __future__ import annotations

import logging
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from patchci import ktap
from patchci.crash import DEFAULT_CONFIG, Crash, CrashConfig, detect
from patchci.errors import InfraError
from patchci.executor import envleak
from patchci.executor.base import (
    RETRY_ON,
    RUN_DONE,
    RUN_ERROR,
    CrashRef,
    RunResult,
    SubtestCollector,
    TestResult,
    TestSpec,
    namify,
)
from patchci.executor.decode import Decoder
from patchci.executor.guesttools import absent_tools, install_hint, missing_commands
from patchci.executor.kbuild import (
    IMAGE,
    BuildOptions,
    KernelBuilder,
    KernelBuildFailed,
    kunit_symbols,
)
from patchci.executor.local import REPRODUCE, Attempt, attempts_result, now, verdict
from patchci.executor.vm import VmConfig, VmRun, missing_prerequisites, resolve_config
from patchci.executor.vmsession import KMEMLEAK_WAIT, GuestTest, Session, TestRun, run_session
from patchci.git import Git
from patchci.model import Outcome
from patchci.sandbox import Sandbox

log = logging.getLogger(__name__)

KSFT_DEFAULT_TIMEOUT = 45.0  # kselftest's own, when a directory has no settings file
# The built-in KUnit suites' results: the boot's kernel log, printed from the guest. Only
# the part from the first KTAP header on: what came before is the boot.
KUNIT_GROUP, KUNIT_NAME = "kunit", "built-in"
KUNIT_COMMAND = "dmesg | sed -n '/KTAP version/,$p'"
HOST_MARGIN = 30.0  # the host's watchdog waits this much past the runner's own timeout


@dataclass(frozen=True)
class KernelVmOptions:
    name: str
    kernel: str = "build"  # "build": the branch's; else a kernel image to boot as is
    fragments: tuple[str, ...] = ()
    debug: bool = False
    targets: tuple[str, ...] = ()
    tests: tuple[str, ...] = ()  # collection:program to run (empty: every one of targets)
    ignore: tuple[str, ...] = ()
    workers: int = 1
    cpus: int = 2
    memory: str = "2G"
    test_timeout: float | None = None
    boot_timeout: float = 300.0
    retries: int = 1
    kvm: bool | None = None
    deadline: float = 4 * 3600.0
    kmemleak: bool = True
    kmemleak_wait: float = KMEMLEAK_WAIT  # between the two scans after each test
    env_check: bool = True  # what a test left behind (netns, links, routes, sysctls): warn
    jobs: int = 0
    tests_per_boot: int = 0  # 0: as many as the VM survives; 1: a fresh VM per test
    kunit: tuple[str, ...] = ()  # KUnit tests built in: Kconfig symbols or .kunitconfig files
    idle_timeout: float | None = None  # a test silent this long is killed (TIMEOUT)


@dataclass
class _Pending:
    spec: TestSpec
    guest: GuestTest
    attempts: list[Attempt]


class KernelVmExecutor:
    """Runs a branch's selftests on the branch's kernel in VMs. *worktree_root* is where
    the contest keeps this executor's persistent worktree (the build directory sits next
    to the worktree it builds); *ccache_dir* survives between runs."""

    def __init__(
        self,
        opts: KernelVmOptions,
        *,
        worktree_root: Path,
        ccache_dir: Path | None = None,
        sandbox: Sandbox | None = None,
        crash_config: CrashConfig = DEFAULT_CONFIG,
        clock: Callable[[], datetime] = now,
    ) -> None:
        self.name = opts.name
        self.opts = opts
        self.worktree_root = worktree_root
        self.ccache_dir = ccache_dir
        self.sandbox = sandbox
        self.crash_config = crash_config
        self.clock = clock
        self.previous_durations: dict[tuple[str, str], float] = {}
        self.decoder: Decoder | None = None  # this run's: the branch's script and vmlinux

    # -- the run ------------------------------------------------------------------------

    def run(
        self,
        branch_name: str,
        worktree: Path,
        tests: Sequence[TestSpec],
        out_dir: Path,
        *,
        base: str | None = None,
    ) -> RunResult:
        """The tests are the branch's own selftests of `targets`; *tests*, when given (a
        culprit search's probe), select some of them by (group, name)."""
        out_dir = out_dir.resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        started = self.clock()
        vm, kvm_reason = resolve_config(self._vm_config(worktree))
        (out_dir / REPRODUCE).write_text(self.reproduce_script(branch_name, vm), encoding="utf-8")
        run = RunResult(self.name, branch_name, started, None, RUN_DONE, log_dir=str(out_dir),
                        reproduce=(out_dir / REPRODUCE).read_text())  # fmt: skip

        def error(msg: str) -> RunResult:
            log.error("executor %s: branch %s: %s", self.name, branch_name, msg)
            return replace(run, finished=self.clock(), status=RUN_ERROR, error=msg)

        problems = missing_prerequisites(vm)
        if self.opts.kernel == "build":  # the image is made below
            problems = [p for p in problems if "no kernel image" not in p]
            problems += build_problems()
        if problems:
            return error("cannot start VMs: " + "; ".join(problems))
        log.info("executor %s: branch %s: %s", self.name, branch_name, kvm_reason)
        absent = absent_tools()
        if absent:
            log.warning("executor %s: not on this host, so not in its VMs: %s; a test that "
                        "needs one is ERROR, not FAIL", self.name, install_hint(absent))  # fmt: skip
        builder = self._builder(worktree)
        try:
            if self.opts.kernel == "build":
                built = builder.build(worktree, out_dir)
                self.decoder = Decoder.find(worktree, self._build_dir(worktree), self.sandbox)
                vm = replace(vm, kernel=built.image)
                run = replace(run, kernel=str(built.image), config=str(built.config))
            specs = self._specs(builder, worktree, out_dir)
            if tests:
                keys = {t.key for t in tests}
                specs = [s for s in specs if s.key in keys]
        except KernelBuildFailed as e:
            return self._build_failed(run, e, worktree, base, out_dir)
        except (InfraError, OSError) as e:
            return error(str(e))
        if not specs:
            return error(f"no selftests to run for targets {list(self.opts.targets)}")
        results = self._run_all(vm, specs, out_dir)
        done = replace(run, finished=self.clock(), tests=tuple(results))
        if not any((out_dir / "vm").glob("*/booted")):
            return replace(error("no VM booted; see the sessions' console.log"), tests=done.tests)
        log.info("executor %s: branch %s: %s", self.name, branch_name, done.outcome.value)
        return done

    def _vm_config(self, worktree: Path) -> VmConfig:
        built = self._build_dir(worktree) / IMAGE
        kernel = built if self.opts.kernel == "build" else Path(self.opts.kernel)
        return VmConfig(kernel=kernel, cpus=self.opts.cpus, memory=self.opts.memory,
                        use_kvm=self.opts.kvm, boot_timeout=self.opts.boot_timeout)  # fmt: skip

    def _build_dir(self, worktree: Path) -> Path:
        return worktree.with_name(worktree.name + ".build")

    def _builder(self, worktree: Path) -> KernelBuilder:
        opts = BuildOptions(self.opts.fragments, self.opts.debug, self.opts.jobs, self.ccache_dir,
                            kunit=self.opts.kunit)  # fmt: skip
        return KernelBuilder(self._build_dir(worktree), opts, self.sandbox)

    def _build_failed(
        self, run: RunResult, e: KernelBuildFailed, worktree: Path, base: str | None,
        out_dir: Path,
    ) -> RunResult:  # fmt: skip
        """The branch does not build: blame it only when its base does."""
        if base is not None:
            wt = Git(worktree)
            try:
                wt.run("checkout", "--quiet", "--force", "--detach", base)
                self._builder(worktree).build(worktree, out_dir / "base")
            except KernelBuildFailed as base_e:
                return replace(run, finished=self.clock(), status=RUN_ERROR,
                               error=f"the base {base[:12]} does not build either: {base_e}")  # fmt: skip
            except (InfraError, OSError) as infra:
                return replace(run, finished=self.clock(), status=RUN_ERROR, error=str(infra))
        log.warning("executor %s: branch %s does not build: %s", self.name, run.branch, e)
        result = TestResult("build", "kernel" if "selftests" not in e.what else "selftests",
                            Outcome.FAIL, log_path=str(e.log_path),
                            reproduce="\n".join(e.errors))  # fmt: skip
        return replace(run, finished=self.clock(), tests=(result,))

    # -- tests --------------------------------------------------------------------------

    def _specs(self, builder: KernelBuilder, worktree: Path, out_dir: Path) -> list[TestSpec]:
        install = out_dir / "kselftest"
        listing = builder.install_selftests(worktree, self.opts.targets, install, out_dir)
        wanted = set(self.opts.tests)
        specs = []
        for line in listing.read_text(encoding="utf-8", errors="replace").splitlines():
            coll, sep, prog = line.strip().partition(":")
            if not sep or f"{coll}:{prog}" in self.opts.ignore:
                continue
            if wanted and f"{coll}:{prog}" not in wanted:
                continue
            timeout = self.opts.test_timeout or _settings_timeout(install / coll)
            cmd = f"./run_kselftest.sh -o {int(timeout)} -t {shlex.quote(f'{coll}:{prog}')}"
            specs.append(TestSpec(f"selftests-{namify(coll)}", namify(prog), cmd, timeout,
                                  install))  # fmt: skip
        if self.opts.kunit:  # built-in suites ran at boot: their KTAP is in the kernel log
            specs.append(TestSpec(KUNIT_GROUP, KUNIT_NAME, KUNIT_COMMAND, 60.0, install))
        return specs

    def _run_all(self, vm: VmConfig, specs: Sequence[TestSpec], out_dir: Path) -> list[TestResult]:
        """Longest first (the duration in the executor's last run; a test never timed by
        its timeout, so it goes early), dealt to the workers by that expected time; each
        runs its share in sessions."""
        ends_at = time.monotonic() + self.opts.deadline
        pending = [
            _Pending(
                s,
                GuestTest(
                    i,
                    f"{s.group}/{s.name}",
                    str(s.command),
                    s.cwd or out_dir,
                    s.timeout + HOST_MARGIN,
                ),
                [],
            )  # fmt: skip
            for i, s in enumerate(specs)
        ]
        shares: list[list[_Pending]] = [[] for _ in range(max(self.opts.workers, 1))]

        def expected(p: _Pending) -> float:
            return self.previous_durations.get((p.spec.group, p.spec.name), p.spec.timeout)

        for p in sorted(pending, key=lambda p: -expected(p)):
            min(shares, key=lambda sh: sum(expected(x) for x in sh)).append(p)
        counter = _Counter()
        with ThreadPoolExecutor(len(shares), thread_name_prefix=self.name) as pool:
            for f in [pool.submit(self._worker, vm, sh, out_dir, ends_at, counter)
                      for sh in shares if sh]:  # fmt: skip
                f.result()
        return [attempts_result(self.name, p.spec, p.attempts, self._reproduce_line(vm, p))
                for p in pending]  # fmt: skip

    def _worker(
        self, vm: VmConfig, share: list[_Pending], out_dir: Path, ends_at: float,
        counter: _Counter,
    ) -> None:  # fmt: skip
        for attempt in range(self.opts.retries + 1):
            todo = [p for p in share if len(p.attempts) == attempt and (
                attempt == 0 or p.attempts[-1].outcome in RETRY_ON)]  # fmt: skip
            while todo:
                if time.monotonic() > ends_at:
                    for p in todo:
                        p.attempts.append(_not_run(out_dir, "the run's total deadline passed"))
                    break
                n = counter.next()
                chan = out_dir / "vm" / f"session-{n:03d}"
                batch = todo[: self.opts.tests_per_boot] if self.opts.tests_per_boot else todo
                # a retry gets its own directory: the first attempt's logs stay
                guests = [replace(p.guest, idx=p.guest.idx + 1000 * attempt) for p in batch]
                session = run_session(vm, guests, chan, rw_dirs=[g.workdir for g in guests],
                                      kmemleak=self.opts.kmemleak, sandbox=self.sandbox,
                                      idle_timeout=self.opts.idle_timeout,
                                      kmemleak_wait=self.opts.kmemleak_wait,
                                      env_check=self.opts.env_check)  # fmt: skip
                todo = self._take(session, batch) + todo[len(batch) :]

    def _take(self, session: Session, todo: list[_Pending]) -> list[_Pending]:
        """Record what *session* ran; return the tests it did not reach."""
        if not session.booted:  # ours: each test of the session is ERROR, not retried
            for p in todo:
                p.attempts.append(Attempt(Outcome.ERROR, 0.0, (), (), session.console_path,
                                          session.error or "VM did not boot"))  # fmt: skip
            return []
        if not any(tr.started for tr in session.runs):  # the runner itself did not start
            why = session.error or "the guest runner started no test; see console.log"
            for p in todo:
                p.attempts.append(Attempt(Outcome.ERROR, 0.0, (), (), session.console_path, why))
            return []
        left = []
        for p, tr in zip(todo, session.runs, strict=True):
            if tr.started:
                p.attempts.append(self._judge(session, tr))
            else:
                left.append(p)
        return left

    def _judge(self, session: Session, tr: TestRun) -> Attempt:
        found = detect(list(tr.console), self.crash_config)
        if tr.kmemleak is not None:
            found += detect(tr.kmemleak.read_text(errors="replace").splitlines(),
                            self.crash_config)  # fmt: skip
        crashes = tuple(self._crash_ref(c) for c in found)
        collector = SubtestCollector()
        parsed = _parse_file(tr.output, collector)
        died = not tr.timed_out and tr.exit_code is None
        vmrun = VmRun(
            exit_code=tr.exit_code, output_path=tr.output, console_path=session.console_path,
            duration=tr.duration, boot_seconds=session.boot_seconds, timed_out=tr.timed_out,
            booted=True, kvm=session.kvm,
            error=("guest stopped during the test (crash?); see console.log" if died
                   else f"killed: no output for {tr.idle:g}s (hung?)" if tr.idle is not None
                   else f"timed out after {tr.test.timeout:g}s" if tr.timed_out else None),
        )  # fmt: skip
        outcome, note = judge(vmrun, parsed, crashes, cut_by_deadline=False)
        if tr.test.command == KUNIT_COMMAND and parsed.version is None and outcome is Outcome.PASS:
            outcome, note = Outcome.ERROR, "no KUnit results in the kernel log (CONFIG_KUNIT?)"
        absent = missing_commands(_read(tr.output)) if outcome is Outcome.FAIL else []
        if absent:  # the host (so the guest) lacks a tool: ours, not the patch's
            outcome, note = Outcome.ERROR, f"missing on the executor: {install_hint(absent)}"
        left = _left_behind(tr)
        if left:
            note = "; ".join(x for x in (note, envleak.summary(left)) if x)
            if outcome is Outcome.PASS:  # the next test starts from a changed machine
                outcome = Outcome.WARN
        return Attempt(outcome, tr.duration, collector.subtests(), crashes, tr.output, note)

    def _crash_ref(self, c: Crash) -> CrashRef:
        """The splat as stored; decoded (file:line per frame) when the branch can."""
        ref = CrashRef.from_crash(c)
        if self.decoder is None or c.ignored:
            return ref
        return _decoded(ref, self.decoder.decode(c.lines))

    # -- reproduce ----------------------------------------------------------------------

    def _reproduce_line(self, vm: VmConfig, p: _Pending) -> str:
        return f"cd {shlex.quote(str(p.guest.workdir))} && {p.guest.command}"

    def reproduce_script(self, branch: str, vm: VmConfig) -> str:
        """Rebuild this kernel config and run the same tests in vng, by hand."""
        o = self.opts
        frags = " ".join(shlex.quote(f) for f in o.fragments)
        kunit_lines, kunit_frags = [], ""
        if o.kunit:  # the built-in KUnit suites (their results: dmesg after the boot)
            syms = "".join(f"{s}=y\\n" for s in kunit_symbols(o.kunit))
            kunit_lines = [f"printf '{syms}' > build/kunit.config"]
            files = [e if e.endswith("kunitconfig") else f"{e.rstrip('/')}/.kunitconfig"
                     for e in o.kunit if "/" in e]  # fmt: skip
            kunit_frags = "".join(f" {shlex.quote(f)}" for f in files) + " build/kunit.config"
        lines = [
            "#!/bin/sh",
            f"# patchci executor {self.name}: reproduce the run of branch {branch}",
            "# in a checkout of the branch:",
            "set -e",
            f"git checkout {shlex.quote(branch)}",
            "make O=build allnoconfig",
            "virtme-configkernel --dry-run > build/virtme.config",
            "# vm.config is patchci's fragment (src/patchci/executor/data/vm.config)",
            *kunit_lines,
            f"scripts/kconfig/merge_config.sh -m -O build build/.config build/virtme.config "
            f"vm.config {frags}"
            + (" kernel/configs/debug.config debug.config" if o.debug else "")
            + kunit_frags,
            "make O=build olddefconfig",
            "make O=build -j$(nproc) CC='ccache gcc' bzImage headers",
            f"make -C tools/testing/selftests O=$PWD/build TARGETS={shlex.quote(' '.join(o.targets))}"
            " INSTALL_PATH=$PWD/kselftest install",
            "cd kselftest",
        ]
        kvm = "" if vm.use_kvm else " --disable-kvm"
        for t in o.tests or ("",):
            sel = f" -t {shlex.quote(t)}" if t else ""
            lines.append(f"vng --run ../build/{IMAGE}{kvm} --cpus {o.cpus} --memory {o.memory} "
                         f"--user root --rwdir=$PWD -- ./run_kselftest.sh{sel}")  # fmt: skip
        return "\n".join(lines) + "\n"


def _parse_file(path: Path, on_test: ktap.OnTest) -> ktap.Parsed:
    """A guest's output, parsed as it is read (streaming: a test may print millions of
    lines); a file that is not there reads as empty. newline="": lines end at \n, \r\n
    and \r, as parse_text splits them."""
    try:
        with path.open(encoding="utf-8", errors="replace", newline="") as f:
            return ktap.parse_lines(f, on_test)
    except FileNotFoundError:
        return ktap.parse_lines((), on_test)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


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


class _Counter:
    def __init__(self) -> None:
        self._n = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._n += 1
            return self._n


# What building a kernel and installing its selftests needs (Debian package in brackets).
BUILD_TOOLS = (("make", "make"), ("gcc", "gcc"), ("flex", "flex"), ("bison", "bison"),
               ("bc", "bc"), ("rsync", "rsync"), ("perl", "perl"))  # fmt: skip


def build_problems() -> list[str]:
    """Tools a kernel build needs that are missing here, one line each (ours, not the
    patch's: a build without flex once failed as "Target 'defconfig' not remade")."""
    from patchci import proc

    out = [f"{tool} not found (apt-get install {pkg})" for tool, pkg in BUILD_TOOLS
           if proc.which(tool) is None]  # fmt: skip
    for header, pkg in (("/usr/include/libelf.h", "libelf-dev"),
                        ("/usr/include/openssl/ssl.h", "libssl-dev")):  # fmt: skip
        if not Path(header).exists():
            out.append(f"{header} not found (apt-get install {pkg})")
    return out


def _settings_timeout(directory: Path) -> float:
    """A selftest directory's `settings` timeout (kselftest's default 45 s without)."""
    try:
        for line in (directory / "settings").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "timeout" and value.strip().isdigit():
                return float(value.strip())
    except OSError:
        pass
    return KSFT_DEFAULT_TIMEOUT


def _not_run(out_dir: Path, why: str) -> Attempt:
    out_dir.mkdir(parents=True, exist_ok=True)
    p = out_dir / "not-run.log"
    p.write_text(f"patchci: not run: {why}\n", encoding="utf-8")
    return Attempt(Outcome.ERROR, 0.0, (), (), p, why)


def _decoded(ref: CrashRef, lines: list[str] | None) -> CrashRef:
    if not lines:
        return ref
    return replace(ref, excerpt="\n".join(lines[:60]))


def _left_behind(tr: TestRun) -> list[str]:
    """The network state *tr* left (envleak), also appended to its output log."""
    if tr.env is None:
        return []
    before, after = (p.read_text(encoding="utf-8", errors="replace") for p in tr.env)
    left = envleak.leftovers(before, after)
    if left:
        with tr.output.open("a", encoding="utf-8") as fh:
            fh.write("\n# patchci: this test left behind (network state before vs after it):\n")
            fh.writelines(f"#   {x}\n" for x in left)
    return left
