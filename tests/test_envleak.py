"""What a test left behind (issue 14's environment check): the runner's snapshots before
and after each test, compared; a passing test that left state is a warning on that test,
named in its note and its log, through the executor's judging and the configuration."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from patchci.executor import kernel
from patchci.executor.envleak import leftovers, parse_snapshot, summary
from patchci.executor.vmsession import GuestTest, run_dir, runner_script
from patchci.model import Outcome
from tests.prereq import unavailable
from tests.test_kernel_sessions import FakeSessions, fake, run_all

__all__ = ["fake"]

DATA = Path(__file__).parent / "data" / "envleak"
EXPECTED = [
    "netns leaky",
    "interface br-leak",
    "route 192.0.2.0/24 dev br-leak proto kernel scope link src 192.0.2.1",
    "route fe80::/64 dev br-leak proto kernel metric 256 pref medium",
    "rule 32765: from 198.51.100.0/24 lookup 100",
    "sysctl net.ipv4.conf.all.accept_redirects: 1 -> 0",
    "sysctl net.ipv4.conf.all.forwarding: 0 -> 1",
    "sysctl net.ipv4.conf.default.forwarding: 0 -> 1",
    "sysctl net.ipv4.conf.lo.forwarding: 0 -> 1",
    "sysctl net.ipv4.ip_forward: 0 -> 1",
]


def test_golden_snapshots() -> None:
    before = (DATA / "leaky-before.txt").read_text()
    after = (DATA / "leaky-after.txt").read_text()
    assert len(parse_snapshot(before)["sysctl"]) > 500
    assert leftovers(before, after) == EXPECTED
    assert leftovers(before, before) == []
    # the new interface's own sysctls are not listed: the interface is
    assert not any("br-leak" in x for x in leftovers(before, after) if x.startswith("sysctl"))
    assert summary(EXPECTED).startswith("left behind 10: netns leaky; interface br-leak;")
    assert summary(EXPECTED).endswith("(+2 more)")


def test_the_runner_snapshots_real_state(tmp_path: Path) -> None:
    """The guest runner's own script, run on this host in a fresh network and mount
    namespace (root), with real `ip` and `sysctl`: one test leaks, one cleans up."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        unavailable("needs unshare and ip (iproute2)")
    chan = tmp_path / "chan"
    leaky = ("ip netns add leaky; ip link add br-leak type bridge; sysctl -qw "
             "net.ipv4.ip_forward=1; echo ok")  # fmt: skip
    clean = "ip link add br2 type bridge; ip link del br2; ip netns add t; ip netns del t"
    tests = [GuestTest(0, "leaky", leaky, tmp_path, 30), GuestTest(1, "clean", clean, tmp_path, 30)]
    for t in tests:
        d = run_dir(chan, t)
        d.mkdir(parents=True)
        (d / "command.sh").write_text(t.command + "\n")
    (chan / "runner.sh").write_text(runner_script(chan, tests, False, env_check=True))
    res = subprocess.run(["unshare", "--net", "--mount", "sh", "-c",
                          f"mount -t tmpfs none /run && sh {chan / 'runner.sh'}"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    if res.returncode != 0 and "Operation not permitted" in res.stderr:
        unavailable(f"cannot make namespaces here: {res.stderr.strip()}")
    one, two = (run_dir(chan, t) for t in tests)
    left = leftovers((one / "env-before").read_text(), (one / "env-after").read_text())
    assert left[:2] == ["netns leaky", "interface br-leak"]
    assert "sysctl net.ipv4.ip_forward: 0 -> 1" in left
    assert leftovers((two / "env-before").read_text(), (two / "env-after").read_text()) == []
    assert "env-before" not in runner_script(chan, tests, False, env_check=False)


def test_a_passing_test_that_leaves_state_is_a_warning(
    tmp_path: Path, fake: FakeSessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_run = FakeSessions._run

    def with_env(self: FakeSessions, chan: Path, t: GuestTest, **kw: object) -> object:
        r = real_run(self, chan, t, **kw)  # type: ignore[arg-type]
        if "ENV" in t.command and kw.get("started"):
            d = run_dir(chan, t)
            (d / "env-before").write_text((DATA / "leaky-before.txt").read_text())
            after = "leaky-after.txt" if "ENVDIRTY" in t.command else "leaky-before.txt"
            (d / "env-after").write_text((DATA / after).read_text())
            from dataclasses import replace

            return replace(r, env=(d / "env-before", d / "env-after"))
        return r

    monkeypatch.setattr(FakeSessions, "_run", with_env)
    r = run_all(tmp_path, ["ENVDIRTY", "ENVTIDY", "FAILS ENVDIRTY"], retries=0)
    assert r["envdirty"].outcome is Outcome.WARN
    assert r["envtidy"].outcome is Outcome.PASS
    assert r["fails envdirty"].outcome is Outcome.FAIL  # a failure stays a failure
    log = Path(r["envdirty"].log_path or "").read_text()
    assert "# patchci: this test left behind" in log and "#   netns leaky" in log


def test_env_check_is_an_executor_setting(tmp_path: Path) -> None:
    from patchci.config import build_settings
    from patchci.service.runs import make_executor

    settings = build_settings({"data_dir": str(tmp_path), "executors": [
        {"name": "vm", "targets": ["net"]}, {"name": "vm2", "targets": ["net"], "env_check": False},
    ]}, env={})  # fmt: skip
    on, off = (make_executor(e, root=tmp_path, ccache=tmp_path, sandbox=None)
               for e in settings.executors)  # fmt: skip
    assert isinstance(on, kernel.KernelVmExecutor) and isinstance(off, kernel.KernelVmExecutor)
    assert on.opts.env_check and not off.opts.env_check
