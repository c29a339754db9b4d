"""Can QEMU use KVM on this host, or must it fall back to TCG (software emulation)?

`/dev/kvm` existing is not enough: some cloud sandboxes expose a *software* hypervisor
(`kvm_pvm`, "pagetable-based virtual machine") behind `/dev/kvm`, on which QEMU aborts with
"KVM internal error ... emulation failure". The decision is a pure function over the host
facts so each case is unit-tested; `read_kvm_facts()` is the thin reader.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

TCG_HINT = "using TCG, expect ~30 s boots and tests 2-30x slower"


@dataclass(frozen=True)
class KvmFacts:
    """What the host tells about hardware virtualisation."""

    dev_exists: bool
    dev_accessible: bool
    modules: frozenset[str]
    cpu_flags: frozenset[str]


@dataclass(frozen=True)
class KvmStatus:
    usable: bool
    reason: str


def decide_kvm(facts: KvmFacts) -> KvmStatus:
    """Decide from *facts* whether QEMU can use KVM; the reason is one readable line."""
    if not facts.dev_exists:
        return KvmStatus(False, f"/dev/kvm does not exist; {TCG_HINT}")
    if not facts.dev_accessible:
        return KvmStatus(
            False,
            f"/dev/kvm is not readable/writable by this user (add it to group kvm); {TCG_HINT}",
        )
    if "kvm_pvm" in facts.modules:
        return KvmStatus(
            False, f"nested software hypervisor kvm_pvm detected; QEMU aborts on it — {TCG_HINT}"
        )
    hw = facts.cpu_flags & {"vmx", "svm"}
    if not hw:
        return KvmStatus(
            False, f"/dev/kvm exists but the CPU shows no vmx/svm flag (not real KVM); {TCG_HINT}"
        )
    mods = sorted(m for m in facts.modules if m in {"kvm_intel", "kvm_amd"})
    via = f" via {mods[0]}" if mods else ""
    return KvmStatus(True, f"KVM usable ({sorted(hw)[0]}{via})")


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The `flags` of the first CPU in /proc/cpuinfo text (empty when absent)."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def read_kvm_facts(
    dev: Path = Path("/dev/kvm"),
    sys_module: Path = Path("/sys/module"),
    cpuinfo: Path = Path("/proc/cpuinfo"),
) -> KvmFacts:
    exists = dev.exists()
    accessible = exists and os.access(dev, os.R_OK | os.W_OK)
    try:
        modules = frozenset(p.name for p in sys_module.iterdir() if p.name.startswith("kvm"))
    except OSError:
        modules = frozenset()
    try:
        flags = parse_cpu_flags(cpuinfo.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        flags = frozenset()
    return KvmFacts(exists, accessible, modules, flags)


def kvm_status() -> KvmStatus:
    status = decide_kvm(read_kvm_facts())
    log.debug("kvm: usable=%s (%s)", status.usable, status.reason)
    return status
