"""virtme-ng command building and host prerequisites (pure). Real VMs boot in
test_kernel_executor, on the kernel built from the branch."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchci.executor import vm
from patchci.executor.vm import VmConfig, find_kernel, vng_command

KERNEL = Path("/boot/vmlinuz-6.1.0-1-amd64")


# ---- pure ----------------------------------------------------------------------------------


def test_vng_command_tcg() -> None:
    cfg = VmConfig(kernel=KERNEL, use_kvm=False, vng="/v/bin/vng", extra_vng_args=("--debug",))
    argv = vng_command(
        cfg,
        "/bin/sh /l/guest.sh",
        cwd=Path("/w"),
        rw_dirs=[Path("/w"), Path("/l")],
        qemu_opts=["-pidfile", "/l/qemu.pid"],
    )
    assert argv[:3] == ["/v/bin/vng", "--run", str(KERNEL)]
    assert "--disable-kvm" in argv
    assert argv[argv.index("--memory") + 1] == "1G"
    assert argv[argv.index("--cpus") + 1] == "1"
    assert argv[argv.index("--user") + 1] == "root"
    assert argv[argv.index("--cwd") + 1] == "/w"
    assert [a for a in argv if a.startswith("--rwdir")] == ["--rwdir=/w", "--rwdir=/l"]
    assert "--debug" in argv and "--verbose" in argv
    assert argv[argv.index("--exec") + 1] == "/bin/sh /l/guest.sh"
    # vng's --qemu-opts is greedy: it must come last.
    assert argv[-1] == "--qemu-opts=-pidfile /l/qemu.pid"


@pytest.mark.parametrize(("use_kvm", "tcg"), [(True, False), (False, True), (None, True)])
def test_vng_command_kvm_only_when_resolved_true(use_kvm: bool | None, tcg: bool) -> None:
    argv = vng_command(VmConfig(kernel=KERNEL, use_kvm=use_kvm), "true", cwd=Path("/"))
    assert ("--disable-kvm" in argv) is tcg
    assert argv[0] == "vng"
    assert not any(a.startswith("--qemu-opts") for a in argv)


def test_find_kernel_needs_modules(tmp_path: Path) -> None:
    boot, mods = tmp_path / "boot", tmp_path / "modules"
    boot.mkdir()
    for v in ("6.1.0-9-amd64", "6.1.0-56-amd64", "6.12.0-1-amd64"):
        (boot / f"vmlinuz-{v}").write_text("")
    (mods / "6.1.0-9-amd64").mkdir(parents=True)
    (mods / "6.1.0-56-amd64").mkdir()
    # 6.12 has no modules dir: vng could not load its modules, so it is not chosen.
    assert find_kernel(boot, mods) == boot / "vmlinuz-6.1.0-56-amd64"
    assert find_kernel(tmp_path / "none", mods) is None


def test_missing_prerequisites_names_the_kernel(tmp_path: Path) -> None:
    cfg = VmConfig(kernel=tmp_path / "vmlinuz-nope", vng=str(tmp_path / "vng"))
    problems = vm.missing_prerequisites(cfg)
    assert any("vmlinuz-nope" in p and "linux-image-amd64" in p for p in problems)


def test_paths_vng_cannot_quote_are_refused(tmp_path: Path) -> None:
    from patchci.errors import ConfigError
    from patchci.executor.vmsession import GuestTest, run_session

    bad = tmp_path / "with space"
    bad.mkdir()
    with pytest.raises(ConfigError, match="with space"):
        run_session(VmConfig(kernel=KERNEL, use_kvm=False), [GuestTest(0, "t", "true", bad, 5)],
                    tmp_path / "chan", rw_dirs=[bad])  # fmt: skip
    with pytest.raises(ConfigError, match="with space"):
        run_session(VmConfig(kernel=KERNEL, use_kvm=False), [], bad / "chan")
