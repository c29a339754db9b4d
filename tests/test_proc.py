"""proc: the one way to start subprocesses."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from patchci import proc
from patchci.errors import CommandFailed, CommandTimeout, ToolMissing


def test_run_captures_output_and_uses_c_locale(tmp_path: Path) -> None:
    r = proc.run(["sh", "-c", "echo out; echo err >&2; echo $LC_ALL; pwd"], cwd=tmp_path)
    assert r.ok and r.returncode == 0
    assert r.stdout.splitlines() == ["out", "C", str(tmp_path)]
    assert r.stderr == "err\n"


def test_stdin_is_devnull_unless_input_given() -> None:
    assert proc.run(["cat"], timeout=5).stdout == ""
    assert proc.run(["cat"], input=b"abc", timeout=5).stdout == "abc"


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    start = time.monotonic()
    with pytest.raises(CommandTimeout) as e:
        proc.run(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; echo started; wait"], timeout=1)
    assert time.monotonic() - start < 15
    assert "started" in e.value.stdout
    child = int(pidfile.read_text())
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("grandchild survived the timeout")


def test_missing_tool_and_check() -> None:
    with pytest.raises(ToolMissing, match="no-such-tool-xyz"):
        proc.run(["no-such-tool-xyz"])
    with pytest.raises(CommandFailed) as e:
        proc.run(["sh", "-c", "echo boom >&2; exit 3"], check=True)
    assert e.value.returncode == 3 and "boom" in str(e.value)


def test_log_path_records_command_and_status(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "x.log"
    proc.run(["sh", "-c", "echo hello"], log_path=log)
    text = log.read_text()
    assert text.startswith("$ sh -c 'echo hello'\n") and "hello" in text and "# exit 0" in text


def test_stream_feeds_lines_and_tees(tmp_path: Path) -> None:
    seen: list[str] = []
    log = tmp_path / "s.log"
    rc = proc.stream(
        ["sh", "-c", "echo a; echo b >&2; printf c; exit 4"], seen.append, log_path=log, timeout=10
    )
    assert rc == 4
    assert seen == ["a", "b", "c"]
    assert log.read_text() == "a\nb\nc"
    with pytest.raises(CommandTimeout):
        proc.stream(["sleep", "30"], seen.append, timeout=0.5)


def test_no_other_module_starts_subprocesses() -> None:
    """STYLE: proc.py is the only module that starts subprocesses."""
    src = Path(__file__).resolve().parents[1] / "src" / "patchci"
    offenders = []
    for f in src.rglob("*.py"):
        if f.name == "proc.py":
            continue
        text = f.read_text()
        if "subprocess.Popen" in text or "subprocess.run(" in text or "os.system(" in text:
            offenders.append(str(f.relative_to(src)))
    assert offenders == []


def test_missing_cwd_is_not_a_missing_tool(tmp_path: Path) -> None:
    """A vanished worktree was reported as 'required tool not found: git'."""
    with pytest.raises(Exception, match="working directory does not exist") as e:
        proc.run(["true"], cwd=tmp_path / "gone")
    assert not isinstance(e.value, ToolMissing)
