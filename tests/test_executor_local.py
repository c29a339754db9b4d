"""Local executor on small shell scripts that print KTAP: pass, fail, flaky, hang, splat."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from patchci import ktap
from patchci.executor.base import RUN_DONE, RUN_ERROR, TestSpec, namify
from patchci.executor.local import (
    REPRODUCE,
    LocalExecutor,
    order_tests,
    verdict,
)
from patchci.executor.local import tests_from_dir as specs_from_dir
from patchci.executor.local import tests_from_kselftest_list as specs_from_list
from patchci.model import Outcome

PASSING = """#!/bin/sh
echo "TAP version 13"
echo "1..2"
echo "ok 1 first # time=12ms"
echo "ok 2 second"
"""

FAILING = """#!/bin/sh
echo "TAP version 13"
echo "1..2"
echo "ok 1 works"
echo "not ok 2 broken"
exit 0
"""

# Fails on its first run, passes afterwards: the counter file lives next to the script.
FLAKY = """#!/bin/sh
n=$(cat "$0.count" 2>/dev/null || echo 0)
echo $((n + 1)) > "$0.count"
echo "TAP version 13"
echo "1..1"
if [ "$n" -eq 0 ]; then echo "not ok 1 race"; else echo "ok 1 race"; fi
"""

HANGING = """#!/bin/sh
echo "TAP version 13"
echo "1..1"
sleep 60
echo "ok 1 never"
"""

# A WARNING splat (format of kernel/panic.c __warn) in the middle of passing KTAP.
SPLAT = """#!/bin/sh
echo "TAP version 13"
echo "1..1"
cat <<'EOF'
[   12.000001] ------------[ cut here ]------------
[   12.000002] WARNING: CPU: 0 PID: 611 at net/core/dev.c:123 netdev_thing+0x1a/0x40
[   12.000003] Modules linked in:
[   12.000004] CPU: 0 PID: 611 Comm: ip Not tainted 6.6.0 #1
[   12.000005] RIP: 0010:netdev_thing+0x1a/0x40
[   12.000006] Call Trace:
[   12.000007]  <TASK>
[   12.000008]  dev_do_thing+0x2c/0x80
[   12.000009]  do_syscall_64+0x3c/0x90
[   12.000010]  entry_SYSCALL_64_after_hwframe+0x6e/0xd8
[   12.000011]  </TASK>
[   12.000012] ---[ end trace 0000000000000000 ]---
EOF
echo "ok 1 survived"
"""

NO_KTAP_SKIP = """#!/bin/sh
echo "nothing to see"
exit 4
"""

NESTED = """#!/bin/sh
echo "TAP version 13"
echo "1..1"
echo "# selftests: net: nested.sh"
echo "# TAP version 13"
echo "# 1..2"
echo "# ok 1 inner-a # time=5ms"
echo "# ok 2 inner-b # SKIP no device"
echo "ok 1 selftests: net: nested.sh"
"""


def write_script(d: Path, name: str, body: str) -> Path:
    p = d / name
    p.write_text(body)
    p.chmod(0o755)
    return p


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    d = tmp_path / "suite"
    d.mkdir()
    write_script(d, "pass.sh", PASSING)
    write_script(d, "fail.sh", FAILING)
    write_script(d, "flaky.sh", FLAKY)
    write_script(d, "hang.sh", HANGING)
    write_script(d, "splat.sh", SPLAT)
    (d / "README").write_text("not a test\n")
    return d


def test_suite_end_to_end(suite: Path, tmp_path: Path) -> None:
    specs = [TestSpec(s.group, s.name, s.command, 2.0, s.cwd) for s in specs_from_dir(suite)]
    assert [s.name for s in specs] == ["fail-sh", "flaky-sh", "hang-sh", "pass-sh", "splat-sh"]
    out = tmp_path / "out"
    ex = LocalExecutor("local-test", retries=1, jobs=2)
    t0 = time.monotonic()
    run = ex.run("net-next-2026-01-01--00-00", tmp_path, specs, out)
    elapsed = time.monotonic() - t0
    assert elapsed < 20, "the hung test must be killed at its timeout (twice: try + retry)"
    assert run.status == RUN_DONE and run.error == ""
    assert run.executor == "local-test" and run.branch == "net-next-2026-01-01--00-00"
    assert run.finished is not None and run.finished >= run.started
    res = {t.name: t for t in run.tests}
    assert [t.name for t in run.tests] == [s.name for s in specs]  # caller's order kept

    ok = res["pass-sh"]
    assert (ok.outcome, ok.retry_outcome, ok.retry_log_path) == (Outcome.PASS, None, None)
    assert [(s.path, s.outcome) for s in ok.subtests] == [
        ("first", Outcome.PASS),
        ("second", Outcome.PASS),
    ]
    assert ok.subtests[0].duration == pytest.approx(0.012)

    bad = res["fail-sh"]
    assert (bad.outcome, bad.retry_outcome) == (Outcome.FAIL, Outcome.FAIL)
    assert bad.subtests[1].retry_outcome is Outcome.FAIL
    assert bad.retry_log_path is not None and bad.retry_log_path != bad.log_path
    assert "not ok 2 broken" in Path(bad.retry_log_path).read_text()
    assert bad.retry_duration is not None

    flaky = res["flaky-sh"]
    assert (flaky.outcome, flaky.retry_outcome) == (Outcome.FAIL, Outcome.PASS)
    assert flaky.is_flake and flaky.final is Outcome.PASS
    assert "not ok 1 race" in Path(str(flaky.log_path)).read_text()
    assert "ok 1 race" in Path(str(flaky.retry_log_path)).read_text()

    hung = res["hang-sh"]
    assert hung.outcome is Outcome.TIMEOUT and hung.retry_outcome is Outcome.TIMEOUT
    assert hung.duration is not None and 1.5 < hung.duration < 5

    splat = res["splat-sh"]
    assert splat.outcome is Outcome.CRASH
    assert len(splat.crashes) == 1
    crash = splat.crashes[0]
    assert crash.kind == "warning" and "netdev_thing" in crash.fingerprint
    assert "WARNING: CPU: 0 PID: 611" in crash.excerpt
    assert not splat.is_flake  # a crash is never a flake, even when the retry passes

    # The reproduce file was written, names every test with its timeout.
    repro = (out / REPRODUCE).read_text()
    assert repro == run.reproduce
    assert "net-next-2026-01-01--00-00" in repro
    assert f"timeout 2 {suite.resolve() / 'hang.sh'}" in repro
    assert "timeout 2" in hung.reproduce and "hang.sh" in hung.reproduce


def test_reproduce_file_written_before_tests_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    probe = write_script(
        tmp_path, "probe.sh", f'#!/bin/sh\ntest -f "{out / REPRODUCE}" && exit 0\nexit 1\n'
    )
    run = LocalExecutor("x", retries=0).run(
        "b", tmp_path, [TestSpec("g", "probe", (str(probe),), 5)], out
    )
    assert run.tests[0].outcome is Outcome.PASS


def test_no_ktap_uses_exit_code(tmp_path: Path) -> None:
    skip = write_script(tmp_path, "skip.sh", NO_KTAP_SKIP)
    specs = [
        TestSpec("g", "skip", (str(skip),), 5),
        TestSpec("g", "true", "exit 0", 5),
        TestSpec("g", "false", "echo oops; exit 3", 5),
    ]
    run = LocalExecutor("x", retries=0).run("b", tmp_path, specs, tmp_path / "out")
    assert [t.outcome for t in run.tests] == [Outcome.SKIP, Outcome.PASS, Outcome.FAIL]


def test_ktap_wins_over_exit_code(tmp_path: Path) -> None:
    """The kselftest runner exits 0 even when tests fail, and a test may exit non-zero
    after reporting ok: the KTAP decides."""
    spec = TestSpec("g", "t", "echo 'TAP version 13'; echo 1..1; echo 'ok 1 a'; exit 1", 5)
    run = LocalExecutor("x", retries=0).run("b", tmp_path, [spec], tmp_path / "out")
    assert run.tests[0].outcome is Outcome.PASS


def test_a_program_killed_after_its_header_fails_not_skips(tmp_path: Path) -> None:
    """Output that was only a version line (a kselftest program that crashed after its
    header) read SKIP, and the executor ignored the exit status 139."""
    spec = TestSpec("g", "segv", "echo 'TAP version 13'; kill -SEGV $$", 5)
    run = LocalExecutor("x", retries=0).run("b", tmp_path, [spec], tmp_path / "out")
    assert run.tests[0].outcome is Outcome.FAIL


def test_kselftest_runner_node_is_unwrapped(tmp_path: Path) -> None:
    nested = write_script(tmp_path, "nested.sh", NESTED)
    run = LocalExecutor("x").run(
        "b", tmp_path, [TestSpec("selftests-net", "nested-sh", (str(nested),), 5)], tmp_path / "o"
    )
    t = run.tests[0]
    assert t.outcome is Outcome.PASS
    assert [(s.path, s.depth, s.outcome) for s in t.subtests] == [
        ("inner-a", 1, Outcome.PASS),
        ("inner-b", 1, Outcome.SKIP),
    ]


def test_missing_program_is_an_error_not_a_failure(tmp_path: Path) -> None:
    spec = TestSpec("g", "gone", (str(tmp_path / "does-not-exist"),), 5)
    run = LocalExecutor("x").run("b", tmp_path, [spec], tmp_path / "out")
    assert run.status == RUN_DONE
    assert run.tests[0].outcome is Outcome.ERROR and run.tests[0].retry_outcome is None


def test_build_failure_is_an_infrastructure_error(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    spec = TestSpec("g", "t", f"touch {ran}", 5)
    ex = LocalExecutor("x", build_command=("sh", "-c", "echo 'error: it broke' >&2; exit 2"))
    run = ex.run("net-next-b1", tmp_path, [spec], tmp_path / "out")
    assert run.status == RUN_ERROR
    assert run.error.startswith("build of net-next-b1 failed (exit 2)")
    assert "it broke" in run.error
    assert not ran.exists()
    assert [(t.group, t.outcome) for t in run.tests] == [("build", Outcome.FAIL)]
    assert "it broke" in (tmp_path / "out" / "build.log").read_text()
    assert run.outcome is Outcome.ERROR


def test_build_success_then_tests(tmp_path: Path) -> None:
    ex = LocalExecutor("x", build_command=("sh", "-c", "echo built > built.txt"))
    spec = TestSpec("g", "t", "test -f built.txt", 5)
    run = ex.run("b", tmp_path, [spec], tmp_path / "out")
    assert run.status == RUN_DONE and run.tests[0].outcome is Outcome.PASS
    assert "sh -c 'echo built > built.txt'" in run.reproduce


def test_parallel_jobs_overlap(tmp_path: Path) -> None:
    specs = [TestSpec("g", f"t{i}", "sleep 1", 5) for i in range(4)]
    t0 = time.monotonic()
    run = LocalExecutor("x", jobs=4).run("b", tmp_path, specs, tmp_path / "out")
    assert time.monotonic() - t0 < 3.5
    assert all(t.outcome is Outcome.PASS for t in run.tests)
    logs = {t.log_path for t in run.tests}
    assert len(logs) == 4


@pytest.mark.parametrize(
    ("durations", "expected"),
    [
        (None, ["a", "b", "c"]),
        ({("g", "a"): 1.0, ("g", "b"): 30.0, ("g", "c"): 5.0}, ["b", "c", "a"]),
        ({("g", "a"): 1.0, ("g", "c"): 5.0}, ["b", "c", "a"]),  # never timed: first
    ],
)
def test_order_longest_first(
    durations: dict[tuple[str, str], float] | None, expected: list[str]
) -> None:
    specs = [TestSpec("g", n, "true") for n in ("a", "b", "c")]
    assert [s.name for s in order_tests(specs, durations)] == expected


@pytest.mark.parametrize(
    ("text", "rc", "crashed", "expected"),
    [
        ("", 0, False, Outcome.PASS),
        ("", 4, False, Outcome.SKIP),
        ("", 1, False, Outcome.FAIL),
        ("", None, False, Outcome.TIMEOUT),
        ("TAP version 13\n1..1\nok 1 a\n", None, False, Outcome.TIMEOUT),
        ("TAP version 13\n1..1\nnot ok 1 a\n", 0, False, Outcome.FAIL),
        ("TAP version 13\n1..1\nok 1 a # SKIP nope\n", 1, False, Outcome.SKIP),
        ("TAP version 13\n1..1\nok 1 a\n", 0, True, Outcome.CRASH),
        ("", None, True, Outcome.CRASH),
        ("TAP version 13\n", 139, False, Outcome.FAIL),
        ("TAP version 13\n", 0, False, Outcome.CRASH),
        ("TAP version 13\n", 4, False, Outcome.SKIP),
        ("TAP version 13\n1..0 # SKIP no hw\n", 0, False, Outcome.SKIP),
        ("TAP version 13\n1..1\nok 1 a\n", 139, False, Outcome.FAIL),
    ],
)
def test_verdict(text: str, rc: int | None, crashed: bool, expected: Outcome) -> None:
    assert verdict(ktap.parse_text(text), rc, crashed) is expected


def test_specs_from_kselftest_list(tmp_path: Path) -> None:
    lst = tmp_path / "kselftest-list.txt"
    lst.write_text("net:tcp_ao.sh\n\n# comment\ndrivers/net/hw:pp_alloc_fail.py\nbogus\n")
    specs = specs_from_list(lst, timeout=45)
    assert [(s.group, s.name) for s in specs] == [
        ("selftests-net", "tcp-ao-sh"),
        ("selftests-drivers-net-hw", "pp-alloc-fail-py"),
    ]
    assert specs[0].command == (str(tmp_path / "run_kselftest.sh"), "-t", "net:tcp_ao.sh")
    assert specs[0].timeout == 45 and specs[0].cwd == tmp_path
    assert specs_from_list(tmp_path / "missing.txt") == []


def test_kselftest_list_runs_through_runner(tmp_path: Path) -> None:
    runner = write_script(
        tmp_path,
        "run_kselftest.sh",
        '#!/bin/sh\necho "TAP version 13"\necho 1..1\necho "ok 1 selftests: $2"\n',
    )
    assert os.access(runner, os.X_OK)
    (tmp_path / "kselftest-list.txt").write_text("net:a.sh\n")
    specs = specs_from_list(tmp_path / "kselftest-list.txt")
    run = LocalExecutor("x").run("b", tmp_path, specs, tmp_path / "out")
    assert run.tests[0].outcome is Outcome.PASS
    assert "selftests: net:a.sh" in Path(str(run.tests[0].log_path)).read_text()


@pytest.mark.parametrize(
    ("raw", "name"),
    [("tcp_ao.sh", "tcp-ao-sh"), ("drivers/net/hw", "drivers-net-hw"), ("--", "unnamed")],
)
def test_namify(raw: str, name: str) -> None:
    assert namify(raw) == name


KTAP_FIXTURES = sorted((Path(__file__).parent / "data" / "ktap").glob("*.tap"))


@pytest.mark.parametrize("fixture", KTAP_FIXTURES, ids=lambda p: p.stem)
def test_subtests_of_real_output_match_its_tree(tmp_path: Path, fixture: Path) -> None:
    """The executor now parses as the output streams, keeping only subtest rows: they must
    be the tree's, in pre-order, the kselftest runner's wrapper node left out."""
    run = LocalExecutor("x", retries=0).run(
        "b", tmp_path, [TestSpec("g", "t", ("cat", str(fixture)), 5)], tmp_path / "out"
    )
    tree = ktap.parse_text(fixture.read_text(encoding="utf-8", errors="replace"))
    top = tree.root
    if len(top.children) == 1 and top.children[0].name.startswith("selftests:"):
        top = top.children[0]
    expected = [
        ("/".join(n.name or f"#{n.number}" for n in chain), len(chain), chain[-1].outcome)
        for chain in _chains(top)
    ]
    got = [(s.path, s.depth, s.outcome) for s in run.tests[0].subtests]
    assert got == expected and got


def _chains(node: ktap.TestNode) -> list[list[ktap.TestNode]]:
    out: list[list[ktap.TestNode]] = []
    for child in node.children:
        out.append([child])
        out += [[child, *rest] for rest in _chains(child)]
    return out


def test_a_runner_line_with_two_numbers_is_still_unwrapped(tmp_path: Path) -> None:
    """With `ok 1 2 selftests: dir: prog` the wrapper node was not recognised: the test's
    subtests were reported one level too deep, under "2 selftests: ..."."""
    script = write_script(
        tmp_path,
        "two.sh",
        """#!/bin/sh
echo "TAP version 13"
echo "1..1"
echo "# selftests: net: two.sh"
echo "# TAP version 13"
echo "# 1..1"
echo "# ok 1 inner"
echo "ok 1 3 selftests: net: two.sh"
""",
    )
    run = LocalExecutor("x").run(
        "b", tmp_path, [TestSpec("selftests-net", "two-sh", (str(script),), 5)], tmp_path / "o"
    )
    assert [(s.path, s.outcome) for s in run.tests[0].subtests] == [("inner", Outcome.PASS)]


def test_a_silent_test_is_killed_by_the_inactivity_timeout(tmp_path: Path) -> None:
    """Only the hard timeout stopped a hung test: a 300 s budget was spent waiting on a
    test that had printed nothing for minutes. A test quiet for idle_timeout is killed
    (TIMEOUT, said so); one that keeps talking runs on."""
    hung = TestSpec("g", "hung", "echo 'TAP version 13'; echo 1..1; sleep 30", 60)
    chatty = TestSpec("g", "chatty", "echo 'TAP version 13'; echo 1..1; for i in 1 2 3 4 5 6; "
                      "do echo \"# tick $i\"; sleep 0.4; done; echo 'ok 1 talks'", 60)  # fmt: skip
    ex = LocalExecutor("x", retries=0, idle_timeout=1.5)
    start = time.monotonic()
    run = ex.run("b", tmp_path, [hung, chatty], tmp_path / "out")
    assert time.monotonic() - start < 20
    got = {t.name: t for t in run.tests}
    assert got["hung"].outcome is Outcome.TIMEOUT
    assert got["chatty"].outcome is Outcome.PASS


def test_the_inactivity_timeout_comes_from_the_configuration(tmp_path: Path) -> None:
    from patchci.config import build_settings
    from patchci.service.runs import stream_executors
    from tests.gitrepo import make_repo

    repo = make_repo(tmp_path / "repo", {"tools/testing/selftests/net/a.sh": "#!/bin/sh\n"})
    settings = build_settings({
        "data_dir": str(tmp_path),
        "trees": [{"name": "net", "path": str(repo.repo)}],
        "executors": [{"name": "host", "kind": "local", "idle_timeout": 120}],
        "streams": [{"name": "s", "tree": "net", "executors": ["host"]},
                    {"name": "t", "tree": "net", "idle_timeout": 30}],
    }, env={})  # fmt: skip
    ((ex, _),) = stream_executors(settings, settings.streams[0], repo.repo, "main")
    assert isinstance(ex, LocalExecutor) and ex.idle_timeout == 120
    ((ex, _),) = stream_executors(settings, settings.streams[1], repo.repo, "main")
    assert isinstance(ex, LocalExecutor) and ex.idle_timeout == 30
