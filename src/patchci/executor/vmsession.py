"""Several tests in one boot: a guest-side runner and a host watchdog per test.

The guest runs a script written by the host that runs the session's tests one after the
other. For each test it reports over files in the side-channel directory (a host
directory the guest writes through 9p): `t-<n>/started`, the test's output, then
`t-<n>/exit-status`. It also writes "patchci: test <n> start" into the kernel log, so the
console (a single log for the whole boot) is cut per test for crash detection, and scans
kmemleak after each test when the kernel has it. A test that taints the kernel ends the
session (the next tests get a fresh VM).

The host watches each test's start: a test that outlives its timeout gets the VM killed
(TIMEOUT); a VM that dies during a test leaves it without an exit status (a crash, or our
error when the console shows no splat). Tests the session did not reach come back
unstarted, to be run on a fresh VM by the caller.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from patchci import proc
from patchci.errors import CommandTimeout
from patchci.executor.envleak import SNAPSHOT_SH
from patchci.executor.vm import (
    BOOTED,
    CONSOLE,
    PIDFILE,
    VmConfig,
    _check_path,
    resolve_config,
    vng_command,
)
from patchci.sandbox import Sandbox

log = logging.getLogger(__name__)

RUNNER = "session.sh"
DONE = "done"
KMEMLEAK = "/sys/kernel/debug/kmemleak"
KMEMLEAK_WAIT = 5.0  # kmemleak reports objects older than 5 s (MSECS_MIN_AGE)
_POLL = 0.2
EXIT_GRACE = 30.0  # after the runner is done, the VM has this long to power off
_MARK = re.compile(r"patchci: test (\d+) start")


@dataclass(frozen=True)
class GuestTest:
    """One test as the guest runs it: *command* is shell, run in *workdir*."""

    idx: int
    label: str
    command: str
    workdir: Path
    timeout: float


@dataclass(frozen=True)
class TestRun:
    """What one test of a session did. Without *started* it was not reached."""

    __test__ = False

    test: GuestTest
    started: bool
    exit_code: int | None
    output: Path
    duration: float
    timed_out: bool
    tainted: bool
    console: tuple[str, ...]  # the kernel console while it ran
    kmemleak: Path | None
    idle: float | None = None  # killed after this long without output (timed_out too)
    env: tuple[Path, Path] | None = None  # the network snapshots before and after it


@dataclass(frozen=True)
class Session:
    booted: bool
    boot_seconds: float | None
    error: str | None  # ours: did not boot, backstop hit
    runs: tuple[TestRun, ...]  # one per test given, in order
    console_path: Path
    argv: tuple[str, ...]
    kvm: bool


def run_dir(chan: Path, t: GuestTest) -> Path:
    return chan / f"t-{t.idx:03d}"


def runner_script(
    chan: Path, tests: Sequence[GuestTest], kmemleak: bool, kmemleak_wait: float = KMEMLEAK_WAIT,
    env_check: bool = True,
) -> str:  # fmt: skip
    """The guest's runner: each test in turn, reporting over files in *chan*. After each
    test kmemleak scans, waits *kmemleak_wait* s and scans again (as NIPA does: an object
    is reported only once it is older than kmemleak's minimum age, so the first scan
    misses what the test leaked last), then its report is kept and cleared. With
    *env_check* the network state is snapshot before and after each test (envleak)."""
    q = shlex.quote
    lines = [
        "#!/bin/sh",
        "# Written by patchci: runs this session's tests, reporting over files here.",
        f"cat /proc/uptime > {q(str(chan / BOOTED))}",
        "if [ -e /dev/virtio-ports/virtme.dev_stdout ]; then",
        "  ln -sf /proc/self/fd/1 /dev/stdout; ln -sf /proc/self/fd/2 /dev/stderr",
        "fi",
        "[ -d /sys/kernel/debug/tracing ] || mount -t debugfs none /sys/kernel/debug 2>/dev/null",
        "taint0=$(cat /proc/sys/kernel/tainted)",
        *(SNAPSHOT_SH.splitlines() if env_check else []),
        "run_one() {",
        "  d=$1; n=$2; wd=$3",
        *(['  snap "$d/env-before"'] if env_check else []),
        '  echo "patchci: test $n start" > /dev/kmsg',
        '  cat /proc/uptime > "$d/started"',
        '  { cd "$wd" && /bin/sh "$d/command.sh" </dev/null; echo $? > "$d/exit-status.tmp"; }'
        ' 2>&1 | cat > "$d/output.log"',
        '  mv "$d/exit-status.tmp" "$d/exit-status"',
        '  echo "patchci: test $n end" > /dev/kmsg',
        *(['  snap "$d/env-after"'] if env_check else []),
    ]
    if kmemleak:
        lines += [
            f"  if [ -e {KMEMLEAK} ]; then",
            f"    echo scan > {KMEMLEAK} 2>/dev/null; sleep {kmemleak_wait:g}",
            f'    echo scan > {KMEMLEAK} 2>/dev/null; cat {KMEMLEAK} > "$d/kmemleak.txt"',
            f"    echo clear > {KMEMLEAK} 2>/dev/null",
            "  fi",
        ]
    lines += [
        "  t=$(cat /proc/sys/kernel/tainted)",
        '  if [ "$t" != "$taint0" ]; then echo "$t" > "$d/tainted"; exit 0; fi',
        "}",
    ]
    for t in tests:
        lines.append(f"run_one {q(str(run_dir(chan, t)))} {t.idx} {q(str(t.workdir))}")
    lines.append(f"touch {q(str(chan / DONE))}")
    return "\n".join(lines) + "\n"


class _Watchdog(threading.Thread):
    """Kills the VM at the boot deadline, or when the running test outlives its timeout or
    (*idle_timeout*) prints nothing for that long: its output file stops growing."""

    def __init__(
        self, chan: Path, boot_timeout: float, tests: Sequence[GuestTest],
        idle_timeout: float | None = None,
    ) -> None:  # fmt: skip
        super().__init__(name="vm-session-watchdog", daemon=True)
        self.chan = chan
        self.boot_timeout = boot_timeout
        self.idle_timeout = idle_timeout
        self.heard: dict[int, tuple[int, float]] = {}  # test idx -> (output size, when)
        self.tests = list(tests)
        self.start_time = time.monotonic()
        self.booted_at: float | None = None
        self.started: dict[int, float] = {}  # test idx -> host time its start was seen
        self.ended: dict[int, float] = {}
        self.killed_for: tuple[str, int | None] | None = None
        self.done = threading.Event()
        self.finished_at: float | None = None  # when the runner said it was done
        self.pgid: int | None = None  # the vng (or bwrap) process group, set when started

    def run(self) -> None:
        while not self.done.wait(_POLL):
            self.look()
            if self.killed_for is not None:
                continue
            now = time.monotonic()
            if self.booted_at is None:
                if now - self.start_time > self.boot_timeout:
                    self._kill("boot", None)
                continue
            if self.finished_at is not None and now - self.finished_at > EXIT_GRACE:
                self._kill("power-off", None)  # a guest that halts instead of powering off
                continue
            for t in self.tests:
                began = self.started.get(t.idx)
                if began is None or t.idx in self.ended:
                    continue
                if now - began > t.timeout:
                    self._kill("test", t.idx)
                    break
                heard = self.heard.get(t.idx, (0, began))[1]
                if self.idle_timeout is not None and now - heard > self.idle_timeout:
                    self._kill("idle", t.idx)
                    break

    def look(self) -> None:
        now = time.monotonic()
        if self.booted_at is None and (self.chan / BOOTED).exists():
            self.booted_at = now
            log.info("vm: guest up after %.1fs", now - self.start_time)
        if self.finished_at is None and (self.chan / DONE).exists():
            self.finished_at = now
        for t in self.tests:
            d = run_dir(self.chan, t)
            if t.idx not in self.started and (d / "started").exists():
                self.started[t.idx] = now
            if t.idx in self.started and t.idx not in self.ended and (d / "exit-status").exists():
                self.ended[t.idx] = now
            if self.idle_timeout is not None and t.idx in self.started and t.idx not in self.ended:
                try:
                    size = (d / "output.log").stat().st_size
                except OSError:
                    size = 0
                last = self.heard.get(t.idx)
                if last is None or size != last[0]:
                    self.heard[t.idx] = (size, now)

    def _kill(self, why: str, idx: int | None) -> None:
        # The group proc.stream started (vng and QEMU, or the bwrap around them: killing
        # it ends its PID namespace), never a pid read back from the guest's side.
        pgid = self.pgid
        if pgid is None or pgid == os.getpgrp():
            return
        log.warning("vm: %s deadline passed%s, killing process group %d", why,
                    f" (test {idx})" if idx is not None else "", pgid)  # fmt: skip
        self.killed_for = (why, idx)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return
            time.sleep(2)


def _prepare(
    chan: Path, tests: Sequence[GuestTest], kmemleak: bool, kmemleak_wait: float = KMEMLEAK_WAIT,
    env_check: bool = True,
) -> Path:  # fmt: skip
    for name in (BOOTED, DONE, CONSOLE, PIDFILE):
        (chan / name).unlink(missing_ok=True)
    for t in tests:
        d = run_dir(chan, t)
        d.mkdir(parents=True, exist_ok=True)
        for name in ("started", "exit-status", "exit-status.tmp", "output.log", "tainted",
                     "kmemleak.txt", "env-before", "env-after"):  # fmt: skip
            (d / name).unlink(missing_ok=True)
        (d / "command.sh").write_text(t.command.rstrip("\n") + "\n", encoding="utf-8")
    script = chan / RUNNER
    script.write_text(runner_script(chan, tests, kmemleak, kmemleak_wait, env_check),
                      encoding="utf-8")  # fmt: skip
    script.chmod(0o755)
    return script


def session_argv(cfg: VmConfig, chan: Path, cwd: Path, rw: Sequence[Path]) -> list[str]:
    """The vng command of a session (also the reproduce command, without the pidfile)."""
    return vng_command(cfg, f"/bin/sh {chan / RUNNER}", cwd=cwd, rw_dirs=rw)


def run_session(
    cfg: VmConfig,
    tests: Sequence[GuestTest],
    chan: Path,
    *,
    rw_dirs: Sequence[Path] = (),
    kmemleak: bool = True,
    sandbox: Sandbox | None = None,
    idle_timeout: float | None = None,
    kmemleak_wait: float = KMEMLEAK_WAIT,
    env_check: bool = True,
) -> Session:
    """Boot *cfg.kernel* once and run *tests* in it, in order, until one crashes, hangs,
    taints the kernel or all are done. Never raises for the guest's troubles.

    The guest's root is the host's (read-only): with *sandbox*, vng runs in it, so the
    guest sees the sandbox's view (no database, configuration or data directory beyond
    *chan*, *rw_dirs* and the kernel) and QEMU gets no token in its environment."""
    chan = _check_path(chan)
    chan.mkdir(parents=True, exist_ok=True)
    cfg, kvm_reason = resolve_config(cfg)
    _prepare(chan, tests, kmemleak, kmemleak_wait, env_check)
    rw = list(dict.fromkeys([chan, *(_check_path(d) for d in rw_dirs)]))
    argv = session_argv(cfg, chan, tests[0].workdir if tests else chan, rw)
    run_argv = [*argv, "--qemu-opts=-pidfile " + str(chan / PIDFILE)]
    meta: dict[str, Any] = {"config": asdict(cfg), "kvm": kvm_reason,
                            "tests": [asdict(t) for t in tests], "reproduce": shlex.join(argv)}  # fmt: skip
    (chan / "session.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    log.info("vm: booting %s (%s) for %d tests", cfg.kernel, kvm_reason, len(tests))
    dog = _Watchdog(chan, cfg.boot_timeout, tests, idle_timeout)
    path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    env = {"PATH": f"{Path(cfg.vng).parent}{os.pathsep}{path}" if os.sep in cfg.vng else path}
    backstop = cfg.boot_timeout + sum(t.timeout + 30 for t in tests) + 60
    error: str | None = None

    def started(pid: int) -> None:
        dog.pgid = pid

    dog.start()
    try:
        proc.stream(run_argv, lambda _l: None, cwd=chan, timeout=backstop, env=env,
                    log_path=chan / CONSOLE, sandbox=sandbox, writable=rw,
                    readable=[cfg.kernel.parent], on_start=started)  # fmt: skip
    except CommandTimeout:
        error = f"session outlived its backstop of {backstop:.0f}s; VM killed"
    finally:
        dog.done.set()
        dog.join()
        dog.look()
    booted = dog.booted_at is not None or (chan / BOOTED).exists()
    if not booted and error is None:
        error = (f"VM did not boot within {cfg.boot_timeout:g}s; see {CONSOLE}"
                 if dog.killed_for else f"VM stopped before the guest booted; see {CONSOLE}")  # fmt: skip
    boot_s = None if dog.booted_at is None else dog.booted_at - dog.start_time
    console = _split_console(chan / CONSOLE)
    runs = tuple(_test_run(chan, t, dog, console) for t in tests)
    return Session(booted, boot_s, error, runs, chan / CONSOLE, tuple(argv), bool(cfg.use_kvm))


def _test_run(
    chan: Path, t: GuestTest, dog: _Watchdog, console: dict[int, tuple[str, ...]]
) -> TestRun:
    d = run_dir(chan, t)
    output = d / "output.log"
    started = (d / "started").exists()
    if started and not output.exists():
        output.touch()
    exit_code: int | None = None
    try:
        exit_code = int((d / "exit-status").read_text().strip())
    except (OSError, ValueError):
        pass
    began, ended = dog.started.get(t.idx), dog.ended.get(t.idx)
    end = ended if ended is not None else time.monotonic()
    duration = (end - began) if began is not None else 0.0
    idle = dog.idle_timeout if dog.killed_for == ("idle", t.idx) else None
    timed_out = dog.killed_for == ("test", t.idx) or idle is not None
    leak = d / "kmemleak.txt"
    env = (d / "env-before", d / "env-after")
    return TestRun(
        test=t, started=started, exit_code=None if timed_out else exit_code, output=output,
        duration=duration, timed_out=timed_out, tainted=(d / "tainted").exists(),
        console=console.get(t.idx, ()), kmemleak=leak if leak.exists() else None, idle=idle,
        env=env if all(p.exists() for p in env) else None,
    )  # fmt: skip


def _split_console(path: Path) -> dict[int, tuple[str, ...]]:
    """Console lines per test: from its start marker to the next test's."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return {}
    out: dict[int, list[str]] = {}
    current: int | None = None
    for line in lines:
        m = _MARK.search(line)
        if m:
            current = int(m.group(1))
            out.setdefault(current, [])
            continue
        if current is not None:
            out[current].append(line)
    return {k: tuple(v) for k, v in out.items()}


def unstarted(session: Session) -> list[GuestTest]:
    return [r.test for r in session.runs if not r.started]


def with_timeout(t: GuestTest, timeout: float) -> GuestTest:
    return replace(t, timeout=timeout)
