"""virtme-ng (`vng`) over QEMU: the VM configuration, the vng command line, what a VM
needs on this host. The sessions that run tests in VMs are in vmsession.py.

The guest sees the host's root filesystem read-only (virtme-ng's copy-on-write snapshot)
plus read/write host directories, one of which is the side channel the guest reports
through; `console.log` (everything vng/QEMU printed, the kernel console included thanks
to `--verbose`) stays a pure artifact for crash detection.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from patchci import proc
from patchci.errors import ConfigError
from patchci.executor.kvm import kvm_status

log = logging.getLogger(__name__)

# Side-channel files, inside a session's directory.
BOOTED = "booted"
CONSOLE = "console.log"
PIDFILE = "qemu.pid"

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


def _check_path(p: Path) -> Path:
    p = p.resolve()
    if _UNSAFE_PATH.search(str(p)):
        raise ConfigError(f"VM directory path {p} has characters vng cannot pass; use a plain path")
    return p


def resolve_config(cfg: VmConfig) -> tuple[VmConfig, str]:
    """Fill in auto fields (KVM, vng path); returns the config and the KVM reason."""
    reason = "KVM forced on" if cfg.use_kvm else "KVM disabled by configuration"
    if cfg.use_kvm is None:
        st = kvm_status()
        cfg, reason = replace(cfg, use_kvm=st.usable), st.reason
    if not cfg.vng:
        cfg = replace(cfg, vng=find_vng() or "vng")
    return cfg, reason
