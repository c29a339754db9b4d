"""The kernel executor's VM scheduling on real VMs: several tests per boot against a fresh VM
per test, and 1 against 2 VMs in parallel, on the same kernel and tests in one run.

    python -m bench vms --kernel BZIMAGE --kselftest DIR [--tests coll:prog,...] [--cpus N]

BZIMAGE is a kernel built for virtme-ng (e.g. the one `patchci branch --now` built under
data_dir/executors/<executor>/<tree>/slot-0.build/arch/x86/boot/bzImage) and DIR an
installed kselftest tree (its run's `kselftest` directory). Without --tests, the first
four tests of its kselftest-list.txt.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from itertools import dropwhile
from pathlib import Path

from patchci.executor.base import TestSpec, namify
from patchci.executor.kernel import KernelVmExecutor, KernelVmOptions
from patchci.executor.vm import VmConfig, resolve_config


def _specs(ksft: Path, wanted: list[str]) -> list[TestSpec]:
    listed = (ksft / "kselftest-list.txt").read_text().split()
    names = wanted or listed[:4]
    return [TestSpec(f"selftests-{namify(t.split(':')[0])}", namify(t.split(":")[1]),
                     f"./run_kselftest.sh -o 300 -t {t}", 300.0, ksft) for t in names]  # fmt: skip


def _time(vm: VmConfig, specs: list[TestSpec], workers: int, per_boot: int) -> tuple[float, int]:
    opts = KernelVmOptions(name="bench", targets=("x",), workers=workers, retries=0,
                           tests_per_boot=per_boot, cpus=vm.cpus)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-vms-") as t:
        ex = KernelVmExecutor(opts, worktree_root=Path(t) / "wt")
        t0 = time.monotonic()
        results = ex._run_all(vm, specs, Path(t) / "out")
        took = time.monotonic() - t0
        boots = len(list((Path(t) / "out" / "vm").glob("session-*/booted")))
    bad = [r.name for r in results if r.outcome.value not in ("pass", "skip")]
    if bad:
        print(f"  (not passing: {', '.join(bad)})")
    return took, boots


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench vms")
    ap.add_argument("--kernel", type=Path, required=True)
    ap.add_argument("--kselftest", type=Path, required=True)
    ap.add_argument("--tests", default="")
    ap.add_argument("--cpus", type=int, default=1)
    if argv is None:
        argv = list(dropwhile(lambda x: not x.startswith("-"), sys.argv[1:]))
    a = ap.parse_args(argv)
    vm, why = resolve_config(VmConfig(kernel=a.kernel, cpus=a.cpus, memory="1G"))
    specs = _specs(a.kselftest, [t for t in a.tests.split(",") if t])
    print(f"{len(specs)} tests, {why}")
    base, boots = _time(vm, specs, 1, 1)
    rows = [("1 VM, a fresh VM per test", base, boots)]
    for label, workers, per_boot in (("1 VM, tests share a boot", 1, 0),
                                     ("2 VMs, tests share a boot", 2, 0)):  # fmt: skip
        took, boots = _time(vm, specs, workers, per_boot)
        rows.append((label, took, boots))
    for label, took, boots in rows:
        print(f"  {label:<28} {took:7.1f} s  {boots} boots  ({took / base:4.2f}x)")
