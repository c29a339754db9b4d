"""Run one shell command inside a throw-away VM: virtme-ng (`vng`) over QEMU.

The guest sees the host's root filesystem read-only (virtme-ng's copy-on-write snapshot),
plus two read/write host directories: the work dir (tests, build output) and the log dir,
which is also the side channel. A wrapper script written there by the host

- touches `booted` as soon as userspace runs (boot time, boot-timeout detection),
- runs the command with its output piped into `output.log`,
- writes the command's exit status into `exit-status`.

So the guest's verdict never depends on scraping the console, and `console.log` (everything
vng/QEMU printed, the kernel console included thanks to `--verbose`) stays a pure artifact
for crash detection. A watchdog thread kills the VM's whole process group when the guest
does not boot within `boot_timeout` or the command outlives `test_timeout`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from patchci import proc
from patchci.errors import CommandTimeout, ConfigError
from patchci.executor.kvm import kvm_status

log = logging.getLogger(__name__)

# Side-channel files, all inside the run's log dir.
BOOTED = "booted"
EXIT_STATUS = "exit-status"
OUTPUT = "output.log"
CONSOLE = "console.log"
GUEST_SCRIPT = "guest.sh"
COMMAND_SCRIPT = "command.sh"
PIDFILE = "qemu.pid"
METADATA = "vm.json"

_POLL = 0.2
# vng pastes --rwdir values into a shell command line unquoted.
_UNSAFE_PATH = re.compile(r"[^A-Za-z0-9_./+@%-]")


@dataclass(frozen=True)
class VmConfig:
    kernel: Path
    cpus: int = 1
    memory: str = "1G"
    use_kvm: bool | None = None  # None: decide with kvm_status()
    boot_timeout: float = 180.0
    test_timeout: float = 600.0
    user: str | None = "root"
    extra_vng_args: tuple[str, ...] = ()
    vng: str = ""  # path of the vng executable; "" finds it (PATH, then next to python)


@dataclass(frozen=True)
class VmRun:
    exit_code: int | None
    output_path: Path
    console_path: Path
    duration: float
    boot_seconds: float | None
    timed_out: bool
    booted: bool
    error: str | None
    kvm: bool = False
    argv: tuple[str, ...] = field(default=())

    @property
    def infra_failed(self) -> bool:
        """True when we, not the command, are to blame (no boot, no exit status)."""
        return self.error is not None and not self.timed_out


def find_vng() -> str | None:
    found = proc.which("vng")
    if found:
        return found
    sibling = Path(sys.executable).parent / "vng"
    return str(sibling) if sibling.exists() else None


def find_kernel(boot: Path = Path("/boot"), modules: Path = Path("/lib/modules")) -> Path | None:
    """The newest /boot/vmlinuz-VERSION whose /lib/modules/VERSION exists (vng needs both)."""
    found = [
        k for k in boot.glob("vmlinuz-*") if (modules / k.name.removeprefix("vmlinuz-")).is_dir()
    ]
    return max(found, key=lambda k: _version_key(k.name), default=None)


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", name))


def missing_prerequisites(cfg: VmConfig | None = None) -> list[str]:
    """What stops a VM from starting here, one readable line each ([] when all is there)."""
    missing = []
    if not proc.which("qemu-system-x86_64"):
        missing.append("qemu-system-x86_64 not found (apt-get install qemu-system-x86)")
    if not (cfg.vng if cfg and cfg.vng else find_vng()):
        missing.append("vng not found (pip install virtme-ng)")
    kernel = cfg.kernel if cfg else find_kernel()
    if kernel is None or not kernel.is_file():
        missing.append(
            f"no kernel image {kernel or '/boot/vmlinuz-*'} with modules "
            "(apt-get install linux-image-amd64)"
        )
    return missing


def vng_command(
    cfg: VmConfig,
    command: str,
    *,
    cwd: Path,
    rw_dirs: Sequence[Path] = (),
    qemu_opts: Sequence[str] = (),
) -> list[str]:
    """The vng argv that boots *cfg.kernel* and runs *command* (pure; the reproduce command).

    KVM only when `cfg.use_kvm is True`: resolve None with kvm_status() first.
    """
    argv = [cfg.vng or "vng", "--run", str(cfg.kernel)]
    argv += ["--memory", cfg.memory, "--cpus", str(cfg.cpus)]
    if cfg.user:
        argv += ["--user", cfg.user]
    if cfg.use_kvm is not True:
        argv.append("--disable-kvm")
    # The kernel console goes to vng's stderr: our console.log.
    argv += ["--verbose", "--cwd", str(cwd)]
    argv += [f"--rwdir={d}" for d in rw_dirs]
    argv += list(cfg.extra_vng_args)
    argv += ["--exec", command]
    if qemu_opts:
        # vng's --qemu-opts swallows the rest of its command line: keep it last.
        argv.append("--qemu-opts=" + " ".join(qemu_opts))
    return argv


def guest_script(command_path: Path, workdir: Path, log_dir: Path) -> str:
    """The wrapper the guest runs; reports through files in *log_dir*."""
    q = shlex.quote
    chan = log_dir
    return f"""#!/bin/sh
# Written by patchci. Runs {command_path.name} and reports over files in this directory.
cat /proc/uptime > {q(str(chan / BOOTED))}
# virtme points /dev/stdout at its own serial port; kselftest's runner writes there, so
# point it back at the caller's stdout (only in a virtme guest: never touch a host's /dev).
if [ -e /dev/virtio-ports/virtme.dev_stdout ]; then
  ln -sf /proc/self/fd/1 /dev/stdout
  ln -sf /proc/self/fd/2 /dev/stderr
fi
cd {q(str(workdir))} || {{ echo 125 > {q(str(chan / EXIT_STATUS))}; exit 0; }}
{{
  /bin/sh {q(str(command_path))} </dev/null
  echo $? > {q(str(chan / (EXIT_STATUS + ".tmp")))}
}} 2>&1 | cat > {q(str(chan / OUTPUT))}
mv {q(str(chan / (EXIT_STATUS + ".tmp")))} {q(str(chan / EXIT_STATUS))}
"""


def _check_path(p: Path) -> Path:
    p = p.resolve()
    if _UNSAFE_PATH.search(str(p)):
        raise ConfigError(f"VM directory path {p} has characters vng cannot pass; use a plain path")
    return p


class _Watchdog(threading.Thread):
    """Kills the VM's process group at the boot or test deadline."""

    def __init__(self, log_dir: Path, boot_timeout: float, test_timeout: float) -> None:
        super().__init__(name="vm-watchdog", daemon=True)
        self.log_dir = log_dir
        self.boot_timeout = boot_timeout
        self.test_timeout = test_timeout
        self.start_time = time.monotonic()
        self.booted_at: float | None = None
        self.killed_for: str | None = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(_POLL):
            now = time.monotonic()
            if self.booted_at is None and (self.log_dir / BOOTED).exists():
                self.booted_at = now
                log.info("vm: guest up after %.1fs", now - self.start_time)
            if self.killed_for is None:
                if self.booted_at is None and now - self.start_time > self.boot_timeout:
                    self._kill("boot")
                elif self.booted_at is not None and now - self.booted_at > self.test_timeout:
                    self._kill("test")

    def _kill(self, why: str) -> None:
        try:
            pid = int((self.log_dir / PIDFILE).read_text().strip())
            pgid = os.getpgid(pid)
        except (OSError, ValueError):
            return  # QEMU not started (or already gone): try again next tick
        if pgid == os.getpgrp():
            return  # never our own group
        log.warning("vm: %s deadline passed, killing process group %d", why, pgid)
        self.killed_for = why
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return
            time.sleep(2)


def _prepare(cfg: VmConfig, command: str, workdir: Path, log_dir: Path) -> list[str]:
    for name in (BOOTED, EXIT_STATUS, EXIT_STATUS + ".tmp", OUTPUT, CONSOLE, PIDFILE):
        (log_dir / name).unlink(missing_ok=True)
    cmd_path = log_dir / COMMAND_SCRIPT
    cmd_path.write_text(command.rstrip("\n") + "\n", encoding="utf-8")
    script = log_dir / GUEST_SCRIPT
    script.write_text(guest_script(cmd_path, workdir, log_dir), encoding="utf-8")
    script.chmod(0o755)
    rw = [workdir] if workdir == log_dir else [workdir, log_dir]
    return vng_command(cfg, f"/bin/sh {script}", cwd=workdir, rw_dirs=rw)


def _metadata(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return {"virtme-ng": version("virtme-ng")}
    except PackageNotFoundError:
        return {}


def resolve_config(cfg: VmConfig) -> tuple[VmConfig, str]:
    """Fill in auto fields (KVM, vng path); returns the config and the KVM reason."""
    reason = "KVM forced on" if cfg.use_kvm else "KVM disabled by configuration"
    if cfg.use_kvm is None:
        st = kvm_status()
        cfg, reason = replace(cfg, use_kvm=st.usable), st.reason
    if not cfg.vng:
        cfg = replace(cfg, vng=find_vng() or "vng")
    return cfg, reason


def run_in_vm(cfg: VmConfig, command: str, workdir: Path, log_dir: Path) -> VmRun:
    """Boot *cfg.kernel*, run the shell *command* in *workdir*, and return what happened.

    Never raises for a VM that does not boot or a command that hangs: those come back as
    `booted=False` / `timed_out=True` with `error` set. Raises ToolMissing when vng is absent
    and ConfigError for unusable paths.
    """
    workdir, log_dir = _check_path(workdir), _check_path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    cfg, kvm_reason = resolve_config(cfg)
    argv = _prepare(cfg, command, workdir, log_dir)
    run_argv = [*argv, "--qemu-opts=-pidfile " + str(log_dir / PIDFILE)]
    meta: dict[str, Any] = {
        "config": asdict(cfg),
        "command": command,
        "workdir": workdir,
        "kvm": kvm_reason,
        "versions": _versions(),
        "reproduce": shlex.join(argv),
    }
    _metadata(log_dir / METADATA, meta)
    log.info("vm: booting %s (%s) for: %s", cfg.kernel.name, kvm_reason, command[:80])
    dog = _Watchdog(log_dir, cfg.boot_timeout, cfg.test_timeout)
    # vng starts `virtme-run` through a shell: its venv's bin must be on PATH.
    path = os.environ.get("PATH", "")
    env = {"PATH": f"{Path(cfg.vng).parent}{os.pathsep}{path}" if os.sep in cfg.vng else path}
    backstop = cfg.boot_timeout + cfg.test_timeout + 60
    rc: int | None = None
    dog.start()
    try:
        rc = proc.stream(
            run_argv,
            lambda _line: None,
            cwd=workdir,
            timeout=backstop,
            env=env,
            log_path=log_dir / CONSOLE,
        )
    except CommandTimeout:
        log.warning("vm: backstop timeout %.0fs hit", backstop)
    finally:
        dog.done.set()
        dog.join()
    boot_s = None if dog.booted_at is None else dog.booted_at - dog.start_time
    took = time.monotonic() - dog.start_time
    result = _verdict(cfg, log_dir, dog.killed_for, boot_s, rc, argv, took)
    meta["result"] = asdict(result)
    _metadata(log_dir / METADATA, meta)
    log.info(
        "vm: done exit=%s booted=%s timed_out=%s in %.1fs%s",
        result.exit_code,
        result.booted,
        result.timed_out,
        result.duration,
        f" ({result.error})" if result.error else "",
    )
    return result


def _verdict(
    cfg: VmConfig,
    log_dir: Path,
    killed_for: str | None,
    boot_s: float | None,
    rc: int | None,
    argv: Sequence[str],
    took: float,
) -> VmRun:
    """Turn what the side channel and the watchdog saw into a VmRun.

    *killed_for* is "boot"/"test" when the watchdog killed the VM, *rc* None when the
    backstop timeout did.
    """
    booted = (log_dir / BOOTED).exists()
    if booted and boot_s is None:
        boot_s = took  # came up between the watchdog's last look and the end
    exit_code = _read_exit_status(log_dir / EXIT_STATUS)
    timed_out = False
    error: str | None = None
    if killed_for == "boot" or (not booted and rc is None):
        error = f"VM did not boot within {cfg.boot_timeout:g}s; see {CONSOLE}"
    elif killed_for == "test" or rc is None:
        timed_out = True
        error = f"command timed out after {cfg.test_timeout:g}s; VM killed"
    elif not booted:
        error = f"vng exited ({rc}) before the guest booted: {_tail(log_dir / CONSOLE)}"
    elif exit_code is None:
        error = f"guest stopped without reporting an exit status (crash?); see {CONSOLE}"
    if timed_out or not booted:
        exit_code = None
    output = log_dir / OUTPUT
    if not output.exists():
        output.touch()
    return VmRun(
        exit_code=exit_code,
        output_path=output,
        console_path=log_dir / CONSOLE,
        duration=took,
        boot_seconds=boot_s,
        timed_out=timed_out,
        booted=booted,
        error=error,
        kvm=bool(cfg.use_kvm),
        argv=tuple(argv),
    )


def _read_exit_status(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "no output"
    return lines[-1][:200] if lines else "no output"
