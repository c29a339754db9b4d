"""VM executor: pure command building, the guest wrapper and watchdog on the host with a
stand-in for vng, and real boots of Debian's kernel under QEMU (marked `vm`)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from patchci.executor import vm
from patchci.executor.vm import VmConfig, find_kernel, run_in_vm, vng_command

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

    bad = tmp_path / "with space"
    bad.mkdir()
    with pytest.raises(ConfigError, match="with space"):
        run_in_vm(VmConfig(kernel=KERNEL, use_kvm=False), "true", bad, tmp_path / "log")


@pytest.mark.parametrize(
    ("files", "killed", "rc", "want"),
    [
        ({"booted": "1.0", "exit-status": "3\n"}, None, 0, (3, True, False, None)),
        ({"booted": "1.0", "exit-status": "0"}, None, 0, (0, True, False, None)),
        ({"booted": "1.0", "exit-status": "7"}, "test", -9, (None, True, True, "timed out")),
        ({"booted": "1.0"}, None, None, (None, True, True, "timed out")),
        ({}, "boot", -9, (None, False, False, "did not boot")),
        ({}, None, None, (None, False, False, "did not boot")),
        ({}, None, 1, (None, False, False, "vng exited (1)")),
        ({"booted": "1.0"}, None, 0, (None, True, False, "without reporting")),
        ({"booted": "1.0", "exit-status": "garbage"}, None, 0, (None, True, False, "without")),
    ],
)
def test_verdict(
    tmp_path: Path,
    files: dict[str, str],
    killed: str | None,
    rc: int | None,
    want: tuple[int | None, bool, bool, str | None],
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "console.log").write_text("qemu: could not load kernel\n")
    r = vm._verdict(VmConfig(kernel=KERNEL), tmp_path, killed, 1.0, rc, ["vng"], 2.0)
    exit_code, booted, timed_out, err = want
    assert (r.exit_code, r.booted, r.timed_out) == (exit_code, booted, timed_out)
    if err is None:
        assert r.error is None
    else:
        assert r.error is not None and err in r.error
    assert r.output_path.exists()
    assert r.infra_failed is (err is not None and not timed_out)


# ---- host stand-in for vng: the wrapper script and the watchdog, no QEMU -------------------

FAKE_VNG = """#!/bin/sh
# Stand-in for vng: runs the --exec command on the host, like a guest that booted at once.
pidfile=""; cmd=""; next=""
for a in "$@"; do
  if [ "$next" = exec ]; then cmd=$a; next=""; continue; fi
  case $a in
    --exec) next=exec ;;
    --qemu-opts=-pidfile*) pidfile=${a#--qemu-opts=-pidfile } ;;
  esac
done
echo $$ > "$pidfile"
echo "[    0.000000] Linux version fake"
MODE
"""


def fake_vng(tmp_path: Path, mode: str) -> str:
    path = tmp_path / "bin" / f"vng-{mode.split()[0]}"
    path.parent.mkdir(exist_ok=True)
    path.write_text(FAKE_VNG.replace("MODE", mode))
    path.chmod(0o755)
    return str(path)


def test_wrapper_reports_exit_status_and_output(tmp_path: Path) -> None:
    cfg = VmConfig(kernel=KERNEL, use_kvm=False, vng=fake_vng(tmp_path, "exec $cmd"))
    wd = tmp_path / "wd"
    wd.mkdir()
    r = run_in_vm(cfg, "echo hi; echo err >&2; pwd; touch made; exit 3", wd, tmp_path / "log")
    assert (r.exit_code, r.booted, r.timed_out, r.error) == (3, True, False, None)
    assert r.output_path.read_text() == f"hi\nerr\n{wd}\n"
    assert (wd / "made").exists()
    assert "Linux version fake" in r.console_path.read_text()
    assert r.boot_seconds is not None and r.boot_seconds <= r.duration
    meta = (tmp_path / "log" / "vm.json").read_text()
    assert '"reproduce":' in meta and '"exit_code": 3' in meta


def test_watchdog_kills_hung_command(tmp_path: Path) -> None:
    cfg = VmConfig(
        kernel=KERNEL, use_kvm=False, vng=fake_vng(tmp_path, "exec $cmd"), test_timeout=1
    )
    start = time.monotonic()
    r = run_in_vm(cfg, "echo started; sleep 1000", tmp_path, tmp_path / "log")
    assert time.monotonic() - start < 30
    assert (r.exit_code, r.booted, r.timed_out) == (None, True, True)
    assert r.error is not None and "timed out after 1s" in r.error
    assert r.output_path.read_text() == "started\n"


def test_watchdog_kills_vm_that_never_boots(tmp_path: Path) -> None:
    cfg = VmConfig(
        kernel=KERNEL, use_kvm=False, vng=fake_vng(tmp_path, "exec sleep 1000"), boot_timeout=1
    )
    start = time.monotonic()
    r = run_in_vm(cfg, "true", tmp_path, tmp_path / "log")
    assert time.monotonic() - start < 30
    assert (r.exit_code, r.booted, r.timed_out) == (None, False, False)
    assert r.infra_failed and r.error is not None and "did not boot within 1s" in r.error


# ---- real VMs ------------------------------------------------------------------------------


@pytest.mark.vm
def test_vm_hung_command_is_killed_then_fresh_vm_reports_exit_status(
    vm_cfg: VmConfig, tmp_path: Path
) -> None:
    from dataclasses import replace

    hung = run_in_vm(
        replace(vm_cfg, test_timeout=5), "echo waiting; sleep 1000", tmp_path, tmp_path / "hung"
    )
    assert hung.booted, hung.error
    assert hung.timed_out and hung.exit_code is None
    assert hung.output_path.read_text() == "waiting\n"
    console = hung.console_path.read_text(errors="replace")
    assert "Linux version" in console

    again = run_in_vm(vm_cfg, "echo hi; exit 3", tmp_path, tmp_path / "again")
    assert again.error is None, again.error
    assert (again.exit_code, again.booted, again.timed_out) == (3, True, False)
    assert again.output_path.read_text() == "hi\n"
    assert again.boot_seconds is not None and again.boot_seconds < vm_cfg.boot_timeout


@pytest.mark.vm
def test_vm_boot_timeout_is_infrastructure(vm_cfg: VmConfig, tmp_path: Path) -> None:
    from dataclasses import replace

    r = run_in_vm(replace(vm_cfg, boot_timeout=2), "true", tmp_path, tmp_path / "log")
    assert not r.booted and r.exit_code is None and not r.timed_out
    assert r.infra_failed and r.error is not None and "did not boot" in r.error


@pytest.mark.vm
def test_vm_runs_real_kselftest(vm_cfg: VmConfig, kselftest_dir: Path, tmp_path: Path) -> None:
    from patchci import ktap
    from patchci.model import Outcome

    cmd = "./run_kselftest.sh -t net/af_unix:scm_rights -t net/af_unix:diag_uid"
    r = run_in_vm(vm_cfg, cmd, kselftest_dir, tmp_path / "log")
    assert r.error is None, r.error
    assert r.exit_code == 0  # the runner always exits 0: the KTAP tells
    text = r.output_path.read_text(errors="replace")
    assert re.search(r"^ok 1 selftests: net/af_unix: scm_rights$", text, re.M), text[-2000:]
    assert re.search(r"^ok 2 selftests: net/af_unix: diag_uid$", text, re.M), text[-2000:]
    parsed = ktap.parse_text(text)
    assert parsed.outcome is Outcome.PASS, parsed.errors
    leaves = ktap.counts(parsed)
    assert leaves.get("pass", 0) >= 22 and "fail" not in leaves, leaves
