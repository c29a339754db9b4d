"""The kernel executor end to end: a stream and a vm executor defined in a TOML file, driven
by the CLI (`ingest --once`, `branch --now`) on a real Linux 6.12 tree. The branch's own
kernel is built (patchci's minimal config + the MPTCP fragment, ccache), booted with
virtme-ng (TCG here: this machine's KVM does not work) and a real MPTCP selftest of the
same source runs in it; results land in the database and on the web page.

Before, branch tests ran every executable of tests_dir on the host, against the host's
kernel: a patch to net/mptcp/ was not exercised by the contest at all.

The session tests then reuse the kernel built here: several tests in one boot; a test that
crashes the guest is CRASH and the next runs on a fresh VM; a hang is TIMEOUT.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from patchci.brancher import branch_name
from patchci.cli import main
from patchci.config import load_settings
from patchci.daemon import open_store
from patchci.db.results import ResultsStore
from patchci.executor.base import RunResult
from patchci.executor.envleak import leftovers
from patchci.executor.vm import VmConfig, missing_prerequisites
from patchci.executor.vmsession import GuestTest, run_session
from patchci.model import Outcome
from tests.kernel_vm import ccache_dir, clone_tree
from tests.prereq import unavailable

# A cold kernel build is ~10 min on 2 cores, the selftest ~2 min under TCG.
pytestmark = pytest.mark.timeout(2700)

SOB = "Signed-off-by: Test Author <author@example.com>"  # the isolate fixture's author
TEST = "net/mptcp:pm_netlink.sh"


@dataclass(frozen=True)
class Contest:
    cfg: Path
    branch: str
    run: RunResult
    seconds: float


def _git(
    repo: Path, *args: str, env: dict[str, str] | None = None, input: str | None = None
) -> str:
    import os

    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, input=input, env={**os.environ, **(env or {})}).stdout  # fmt: skip


def _mail_patch(tree: Path, tmp: Path, mbox: Path) -> None:
    """A one-patch series to net/mptcp (a comment at the end of a C file of the tree's
    main: protocol.c, or the first one there if a stable release renamed it), made with
    plumbing (no 78 000-file checkout)."""
    files = _git(tree, "ls-tree", "--name-only", "main", "net/mptcp/").split()
    path = "net/mptcp/protocol.c" if "net/mptcp/protocol.c" in files else sorted(
        f for f in files if f.endswith(".c"))[0]  # fmt: skip
    text = _git(tree, "show", f"main:{path}") + "\n/* patchci: exercised by the contest */\n"
    blob = _git(tree, "hash-object", "-w", "--stdin", input=text).strip()
    index = {"GIT_INDEX_FILE": str(tmp / "author.index")}
    _git(tree, "read-tree", "main", env=index)
    _git(tree, "update-index", "--cacheinfo", f"100644,{blob},{path}", env=index)
    new_tree = _git(tree, "write-tree", env=index).strip()
    msg = f"mptcp: note the CI in {path.rsplit('/', 1)[1]}\n\n{SOB}\n"
    commit = _git(tree, "commit-tree", new_tree, "-p", "main", input=msg,
                  env={"GIT_AUTHOR_NAME": "Test Author", "GIT_AUTHOR_EMAIL": "author@example.com",
                       "GIT_COMMITTER_NAME": "Test Author",
                       "GIT_COMMITTER_EMAIL": "author@example.com"}).strip()  # fmt: skip
    raw = _git(tree, "format-patch", "--stdout", "-1", commit, "--subject-prefix=PATCH mptcp-next")
    first, rest = raw.split("\n", 1)
    mbox.write_text(f"{first}\nMessage-Id: <kernel-exec-1@test>\n{rest}\n")


def _config(tmp: Path, tree: Path) -> Path:
    cfg = tmp / "patchci.toml"
    cfg.write_text(f"""
data_dir = "{tmp / "data"}"
ccache_dir = "{ccache_dir()}"

[[sources]]
name = "m"
type = "mbox"
path = "{tmp / "in.mbox"}"

[[trees]]
name = "mptcp"
path = "{tree}"
branch = "main"
tags = ["mptcp-next"]
paths = ["net/mptcp/"]
checks = ["signed_off_by"]

[[executors]]
name = "vmksft-mptcp"
kind = "vm"
config = ["tools/testing/selftests/net/mptcp/config"]
targets = ["net/mptcp"]
tests = ["{TEST}"]
kunit = ["MPTCP_KUNIT_TEST"]
workers = 1
cpus = 2
memory = "1G"
retries = 0

[[streams]]
name = "mptcp"
tree = "mptcp"
every_hours = 24
gate_checks = ["apply"]
executors = ["vmksft-mptcp"]

[report.patchwork]
enabled = false
""")
    return cfg


@pytest.fixture(scope="module")
def contest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Contest]:
    problems = missing_prerequisites(VmConfig(kernel=Path("/dev/null")))
    problems = [p for p in problems if "kernel image" not in p]
    if problems:
        unavailable("; ".join(problems))
    tmp = tmp_path_factory.mktemp("kernel-exec")
    tree = clone_tree(tmp / "linux.git")
    _mail_patch(tree, tmp, tmp / "in.mbox")
    cfg = _config(tmp, tree)
    # `ingest --once` cuts a due branch too: on hours divisible by 3 (the default
    # every_hours) it ran this fixture's tests twice and made two branches. A branch of
    # a minute ago and every_hours = 24 keep the cut to `branch --now` whatever the time.
    _git(tree, "branch", branch_name("mptcp-", datetime.now(UTC) - timedelta(minutes=1)), "main")
    assert main(["-c", str(cfg), "ingest", "--once"]) == 0
    t0 = time.monotonic()
    rc = main(["-c", str(cfg), "branch", "--now"])
    took = time.monotonic() - t0
    store = open_store(load_settings(cfg))
    (series,) = store.list_series()
    (branch,) = ResultsStore(store.engine).branches_of_series(series.id)
    (run,) = ResultsStore(store.engine).branch_results(branch)
    assert rc == 0, (run.status, run.error, [(t.name, t.outcome) for t in run.tests])
    yield Contest(cfg, branch, run, took)


def test_the_branch_kernel_is_built_booted_and_tested(contest: Contest) -> None:
    run = contest.run
    assert run.executor == "vmksft-mptcp" and run.status == "done"
    # the kernel booted is the one built from the branch, not the host's /boot one
    assert "/executors/vmksft-mptcp/mptcp/" in run.kernel and run.kernel.endswith("bzImage")
    config = Path(run.config).read_text()
    assert "CONFIG_MPTCP=y" in config and "CONFIG_64BIT=y" in config
    assert "CONFIG_MPTCP_KUNIT_TEST=y" in config and "CONFIG_KUNIT=y" in config
    by_group = {t.group: t for t in run.tests}
    assert len(by_group) == len(run.tests) == 2
    t, kunit = by_group["selftests-net-mptcp"], by_group["kunit"]
    assert (t.group, t.name, t.outcome) == ("selftests-net-mptcp", "pm-netlink-sh", Outcome.PASS)
    assert t.subtests, "pm_netlink.sh reports its subtests in KTAP"
    # the built-in KUnit suites ran at boot; their KTAP came from the guest's kernel log
    assert (kunit.group, kunit.name, kunit.outcome) == ("kunit", "built-in", Outcome.PASS)
    suites = {s.name: s.outcome for s in kunit.subtests if "/" not in s.path}
    assert suites == {"mptcp-crypto": Outcome.PASS, "mptcp-token": Outcome.PASS}, suites
    log_dir = Path(run.log_dir or "")
    reproduce = (log_dir / "reproduce.sh").read_text()
    assert (
        "merge_config.sh" in reproduce and "tools/testing/selftests/net/mptcp/config" in reproduce
    )
    assert "vng --run" in reproduce and TEST in reproduce
    assert "CONFIG_MPTCP_KUNIT_TEST=y" in reproduce and "build/kunit.config" in reproduce


def test_the_contest_page_shows_the_kernel_run(contest: Contest) -> None:
    from patchci.web.app import create_app
    from tests.web_server import client_for

    with client_for(create_app(load_settings(contest.cfg))) as http:
        page = http.get(f"/contest?branch={contest.branch}").text
    assert "vmksft-mptcp" in page and "pm-netlink-sh" in page


def _guest(idx: int, command: str, workdir: Path, timeout: float = 120) -> GuestTest:
    return GuestTest(idx, f"t{idx}", command, workdir, timeout)


def test_several_tests_per_boot_a_crash_gets_a_fresh_vm_and_a_hang_times_out(
    contest: Contest, tmp_path: Path
) -> None:
    vm = VmConfig(kernel=Path(contest.run.kernel), cpus=1, memory="512M", boot_timeout=300)
    ok = 'echo "TAP version 13"; echo "1..1"; echo "ok 1 fine"'
    tests = [
        _guest(0, ok, tmp_path),
        # leaves an interface and a sysctl behind: the runner's snapshots say so
        _guest(1, f"ip link add dummy-left type dummy; sysctl -qw net.ipv4.ip_forward=1; {ok}",
               tmp_path),
        _guest(2, "echo c > /proc/sysrq-trigger; sleep 30", tmp_path),
        _guest(3, ok, tmp_path),
    ]
    first = run_session(vm, tests, tmp_path / "s1", rw_dirs=[tmp_path])
    assert first.booted and first.error is None
    r = first.runs
    assert [x.started for x in r] == [True, True, True, False]  # one boot ran three
    assert (r[0].exit_code, r[1].exit_code) == (0, 0)
    env0, env1 = r[0].env, r[1].env
    assert env0 is not None and env1 is not None
    assert leftovers(*(p.read_text() for p in env0)) == []
    left = leftovers(*(p.read_text() for p in env1))
    assert "interface dummy-left" in left and "sysctl net.ipv4.ip_forward: 0 -> 1" in left
    assert r[2].exit_code is None and not r[2].timed_out  # the guest died during it
    assert any("sysrq triggered crash" in line for line in r[2].console)
    # the test after the crash runs on a fresh VM, then a hang is cut at its timeout
    second = run_session(vm, [tests[3], _guest(4, "sleep 600", tmp_path, 15), _guest(5, ok, tmp_path)],
                         tmp_path / "s2", rw_dirs=[tmp_path])  # fmt: skip
    a, hang, after = second.runs
    assert a.started and a.exit_code == 0
    assert hang.started and hang.timed_out and hang.exit_code is None
    assert not after.started  # the hung VM was killed: the caller gives it a fresh one


def test_a_vm_that_does_not_boot_in_time_is_our_error(contest: Contest, tmp_path: Path) -> None:
    vm = VmConfig(kernel=Path(contest.run.kernel), cpus=1, memory="512M", boot_timeout=2)
    ok = 'echo "TAP version 13"; echo "1..0"'
    s = run_session(vm, [_guest(0, ok, tmp_path)], tmp_path / "s", rw_dirs=[tmp_path])
    assert not s.booted and "did not boot within 2s" in (s.error or "")
    assert not s.runs[0].started


def test_the_guest_sees_no_database_configuration_or_token(
    contest: Contest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guest's root is the host's: without the sandbox around vng it could read the
    database (and QEMU ran with the daemon's environment, the Patchwork token included)."""
    settings = load_settings(contest.cfg)
    db = settings.data_path / "patchci.db"
    assert db.is_file()
    monkeypatch.setenv("PATCHCI_GUEST_SECRET", "s3cr3t-token")
    vm = VmConfig(kernel=Path(contest.run.kernel), cpus=1, memory="512M", boot_timeout=300)
    snoop = (f"head -c 16 {db}; echo; cat {contest.cfg}; env; "
             "cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; echo done")  # fmt: skip
    s = run_session(vm, [_guest(0, snoop, tmp_path)], tmp_path / "s", rw_dirs=[tmp_path],
                    sandbox=settings.untrusted())  # fmt: skip
    assert s.booted, s.error
    out = s.runs[0].output.read_text(errors="replace")
    assert "done" in out
    assert "SQLite format" not in out and "[[executors]]" not in out
    assert "s3cr3t-token" not in out
