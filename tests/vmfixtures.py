"""Fixtures shared by the real-VM tests: a VM config and the kselftest install."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from patchci import proc
from patchci.executor import vm
from patchci.executor.vm import VmConfig
from tests.prereq import unavailable

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def vm_cfg() -> VmConfig:
    kernel = vm.find_kernel()
    cfg = VmConfig(kernel=kernel or Path("/boot/vmlinuz-missing"), boot_timeout=240)
    problems = vm.missing_prerequisites(cfg)
    if problems:
        unavailable("; ".join(problems) + " (scripts/vm-deps.sh installs them)")
    return cfg


@pytest.fixture(scope="module")
def kselftest_dir() -> Path:
    cache = Path(os.environ.get("PATCHCI_VM_CACHE") or Path(tempfile.gettempdir()) / "patchci-vm")
    res = proc.run(
        ["bash", str(REPO / "scripts" / "vm-deps.sh"), "--no-install", str(cache)], timeout=600
    )
    tree = cache / "kselftest"
    if not res.ok or not (tree / "run_kselftest.sh").exists():
        unavailable(f"kselftest tree not built: {res.output.strip()[-300:]}")
    return tree
