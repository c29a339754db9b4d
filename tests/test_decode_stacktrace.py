"""Splats decoded with the branch's scripts/decode_stacktrace.sh and its vmlinux (issue
14, as NIPA's vmksft does): the real script of Linux 6.12, real binutils, on an ELF built
here with debug info whose functions the splat names; through the vm executor's judging."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from patchci.executor import kernel
from patchci.executor.decode import SCRIPT, Decoder
from patchci.model import Outcome
from tests.prereq import unavailable
from tests.test_kernel_sessions import FakeSessions, fake, run_all

__all__ = ["fake"]

DRV = """int counter;

int foo_xmit(int len)
{
\tcounter += len;
\tif (len > 100)
\t\tcounter *= 2;
\treturn counter;
}

int main(void)
{
\treturn foo_xmit(3);
}
"""
SPLAT = """------------[ cut here ]------------
WARNING: CPU: 0 PID: 42 at drv.c:5 foo_xmit+0x15/0x40
Modules linked in:
CPU: 0 PID: 42 Comm: sh Not tainted 6.12.0 #1
RIP: 0010:foo_xmit+0x15/0x40
Call Trace:
 <TASK>
 foo_xmit+0x15/0x40
 main+0x5/0x20
 </TASK>
---[ end trace 0000000000000000 ]---"""


@pytest.fixture
def branch(tmp_path: Path) -> tuple[Path, Path]:
    """A worktree with Linux 6.12's decode_stacktrace.sh and a build dir with a vmlinux."""
    from tests.kernel_vm import linux_repo

    if shutil.which("gcc") is None or shutil.which("addr2line") is None:
        unavailable("needs gcc and binutils (make test installs them)")
    wt, build = tmp_path / "wt", tmp_path / "wt.build"
    (wt / "scripts").mkdir(parents=True)
    build.mkdir()
    script = subprocess.run(["git", f"--git-dir={linux_repo()}", "show", f"main:{SCRIPT}"],
                            capture_output=True, check=True, timeout=60).stdout  # fmt: skip
    (wt / SCRIPT).write_bytes(script)
    (wt / "drv.c").write_text(DRV)
    subprocess.run(["gcc", "-g", "-O0", "-o", str(build / "vmlinux"), "drv.c"], cwd=wt,
                   check=True, timeout=60)  # fmt: skip
    return wt, build


def test_the_branch_script_decodes_a_splat(branch: tuple[Path, Path]) -> None:
    wt, build = branch
    dec = Decoder.find(wt, build, None)
    assert dec is not None
    out = dec.decode(SPLAT.splitlines())
    assert out is not None
    text = "\n".join(out)
    assert "foo_xmit (drv.c:5)" in text and "main (drv.c:13)" in text
    # no vmlinux, or no script: nothing to decode with
    assert Decoder.find(wt, wt, None) is None
    assert Decoder.find(build, build, None) is None
    # a script that fails keeps the raw splat
    bad = Decoder(build / "vmlinux", build / "vmlinux", wt)
    assert bad.decode(SPLAT.splitlines()) is None


def test_the_vm_executor_stores_the_decoded_splat(
    branch: tuple[Path, Path], tmp_path: Path, fake: FakeSessions,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    wt, build = branch
    real_run = FakeSessions._run

    def splat(self: FakeSessions, chan: Path, t: Any, **kw: Any) -> Any:
        from dataclasses import replace

        r = real_run(self, chan, t, **kw)
        return replace(r, console=tuple(SPLAT.splitlines())) if "SPLAT" in t.command else r

    orig = kernel.KernelVmExecutor.__init__

    def init(self: kernel.KernelVmExecutor, *a: Any, **kw: Any) -> None:
        orig(self, *a, **kw)
        self.decoder = Decoder.find(wt, build, None)

    monkeypatch.setattr(FakeSessions, "_run", splat)
    monkeypatch.setattr(kernel.KernelVmExecutor, "__init__", init)
    r = run_all(tmp_path, ["SPLAT"], retries=0)["splat"]
    assert r.outcome is Outcome.CRASH
    (crash,) = r.crashes
    assert "foo_xmit" in crash.fingerprint
    assert "foo_xmit (drv.c:5)" in crash.excerpt
