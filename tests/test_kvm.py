from __future__ import annotations

from pathlib import Path

import pytest

from patchci.executor.kvm import KvmFacts, decide_kvm, parse_cpu_flags, read_kvm_facts


def facts(
    exists: bool = True,
    accessible: bool = True,
    modules: tuple[str, ...] = ("kvm", "kvm_intel"),
    flags: tuple[str, ...] = ("fpu", "vmx", "sse2"),
) -> KvmFacts:
    return KvmFacts(exists, accessible, frozenset(modules), frozenset(flags))


@pytest.mark.parametrize(
    ("f", "usable", "needle"),
    [
        (facts(), True, "vmx via kvm_intel"),
        (facts(modules=("kvm", "kvm_amd"), flags=("svm",)), True, "svm via kvm_amd"),
        (facts(exists=False, accessible=False), False, "/dev/kvm does not exist"),
        (facts(accessible=False), False, "not readable/writable"),
        # The sandbox this project was built on: /dev/kvm backed by kvm_pvm, no vmx/svm.
        (facts(modules=("kvm", "kvm_pvm"), flags=("fpu", "sse2")), False, "kvm_pvm detected"),
        # kvm_pvm wins even if a flag leaks through.
        (facts(modules=("kvm_pvm",), flags=("vmx",)), False, "kvm_pvm"),
        (facts(modules=("kvm",), flags=("fpu",)), False, "no vmx/svm flag"),
    ],
)
def test_decide_kvm(f: KvmFacts, usable: bool, needle: str) -> None:
    status = decide_kvm(f)
    assert status.usable is usable
    assert needle in status.reason
    if not usable:
        assert "TCG" in status.reason


def test_parse_cpu_flags() -> None:
    text = (
        "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme vmx sse2\n\n"
        "processor\t: 1\nflags\t\t: fpu\n"
    )
    assert parse_cpu_flags(text) == frozenset({"fpu", "vme", "vmx", "sse2"})
    assert parse_cpu_flags("") == frozenset()
    assert parse_cpu_flags("garbage\n:::\nflags") == frozenset()


def test_read_kvm_facts_from_fake_tree(tmp_path: Path) -> None:
    dev = tmp_path / "kvm"
    dev.write_text("")
    mods = tmp_path / "module"
    for m in ("kvm", "kvm_pvm", "ext4"):
        (mods / m).mkdir(parents=True)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t: fpu sse2\n")
    f = read_kvm_facts(dev, mods, cpuinfo)
    assert f == KvmFacts(True, True, frozenset({"kvm", "kvm_pvm"}), frozenset({"fpu", "sse2"}))
    assert "kvm_pvm" in decide_kvm(f).reason


def test_read_kvm_facts_missing_everything(tmp_path: Path) -> None:
    f = read_kvm_facts(tmp_path / "nope", tmp_path / "nomod", tmp_path / "nocpu")
    assert f == KvmFacts(False, False, frozenset(), frozenset())
    assert decide_kvm(f).usable is False
