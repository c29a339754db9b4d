"""Patch code never has a secret in reach (issue: hardening, part 5).

A hostile patch's Makefile printed the Patchwork token into its build log, served to anyone
at /logs/…/1-build.log; test-branch selftests likewise. The daemon runs here as users run
it, `patchci ingest --once` in its own process with the token in its environment, against
the Patchwork emulator; the patch's Makefile tries every way to the secrets and prints what
it finds into the build log.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from patchci import proc
from patchci.demo.tree import build_tree
from patchci.devtools.pwemu import FakePatchwork
from patchci.sandbox import Sandbox, find_bwrap
from tests.gitrepo import format_patches
from tests.prereq import unavailable

REPO = Path(__file__).resolve().parents[1]
SECRET_IN_CONFIG = "secret-in-config-3f9a1c"


def _bwrap() -> str:
    path = find_bwrap()
    if path is None:
        unavailable("bwrap missing: apt-get install bubblewrap")
    return path


def _hostile_makefile(config: Path, data_dir: Path) -> str:
    """Every finding is printed as a compiler warning: new warnings go into the build log
    and into the check's description on Patchwork."""
    db = data_dir / "patchci.db"
    warn = "sed 's/^/leak.c:1:1: warning: /' >&2"
    return f"""\
.PHONY: demo
demo:
\t@echo "leak.c:1:1: warning: hostile makefile ran" >&2
\t@env | {warn}
\t@for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $$f 2>/dev/null; done | {warn} || true
\t@cat {config} 2>&1 | {warn} || true
\t@head -c 200 {db} 2>&1 | tr -c '[:print:]\\n' '.' | {warn} || true
\t@ls -a {data_dir} 2>&1 | {warn} || true
"""


def test_a_hostile_patch_reads_no_secret(tmp_path: Path) -> None:
    _bwrap()
    data = tmp_path / "data"
    config = tmp_path / "patchci.toml"
    git = build_tree(tmp_path / "tree")
    base = git.rev_parse("HEAD")
    assert base
    (git.repo / "Makefile").write_text(_hostile_makefile(config, data))
    git.add_all()
    git.commit("build: a helpful change\n\nSigned-off-by: Eve <eve@example.org>")
    (mail,) = format_patches(git, f"{base}..HEAD", prefix="PATCH net-next")
    git.run("reset", "--quiet", "--hard", base)

    with FakePatchwork(project="demo", project_name="Demo") as emu:
        pw_series = emu.add_series_from_mbox([mail])
        config.write_text(
            f"""# {SECRET_IN_CONFIG}
data_dir = "{data}"

[[sources]]
name = "pw"
type = "patchwork"
url = "{emu.url}"
project = "demo"
token_env = "PATCHCI_TEST_PW_TOKEN"
retries = 1

[[trees]]
name = "net-next"
path = "{git.repo}"
branch = "main"
tags = ["net-next"]
checks = ["build"]

[checks.build]
options = {{ build_dir = "{tmp_path / "build-cache"}" }}
"""
        )
        exe = REPO / ".venv" / "bin" / "patchci"
        argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "patchci"]
        env = {**os.environ, "PATCHCI_TEST_PW_TOKEN": emu.token}
        res = subprocess.run([*argv, "-c", str(config), "ingest", "--once"], env=env,
                             capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        (pid,) = [p for p, _ in emu.series_patches(pw_series)]
        assert {c.context for c in emu.checks_for(pid)} >= {"build"}

    logs = "".join(p.read_text(errors="replace") for p in (data / "logs").rglob("*") if p.is_file())
    assert "hostile makefile ran" in logs  # the patch's code did run
    assert emu.token not in logs
    assert "PATCHCI_TEST_PW_TOKEN" not in logs
    assert SECRET_IN_CONFIG not in logs
    assert "SQLite format 3" not in logs
    assert "datadir: patchci.db" not in logs


def test_sandbox_hides_paths_and_processes_but_binds_back_the_worktree(tmp_path: Path) -> None:
    bwrap = _bwrap()
    data = tmp_path / "data"
    work = data / "logs" / "work"
    work.mkdir(parents=True)
    (data / "patchci.db").write_text("secret rows")
    sb = Sandbox(hide=(data,), bwrap=bwrap)
    script = "cat ../../patchci.db; ls /proc | grep -c '^[0-9]'; echo ok > out; echo $HOME"
    res = proc.run(["sh", "-c", script], cwd=work, sandbox=sb, timeout=60)
    assert "secret rows" not in res.output
    # Only the sandbox's own processes are in its /proc: sh and its children.
    assert int(res.stdout.split()[0]) < 10
    assert (work / "out").read_text() == "ok\n"


def test_the_environment_is_an_allow_list(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATCHWORK_TOKEN", "tok-123")
    monkeypatch.setenv("PATCHCI_DATABASE_URL", "postgresql://u:pw@h/db")
    monkeypatch.setenv("ALLOWED_ONE", "yes")
    sb = Sandbox(pass_env=("ALLOWED_ONE",))  # no bwrap: the environment layer alone
    res = proc.run(["env"], cwd=tmp_path, sandbox=sb, env={"CC": "gcc"}, timeout=30)
    seen = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
    assert "tok-123" not in res.stdout and "pw@h" not in res.stdout
    assert seen["ALLOWED_ONE"] == "yes" and seen["CC"] == "gcc" and seen["LC_ALL"] == "C"
    assert set(seen) <= {"PATH", "HOME", "TMPDIR", "TERM", "LC_ALL", "LANG", "USER", "LOGNAME",
                         "ALLOWED_ONE", "CC", "PWD", "SHLVL", "_"}  # fmt: skip


def test_a_missing_program_in_the_sandbox_is_tool_missing(tmp_path: Path) -> None:
    from patchci.errors import ToolMissing

    with pytest.raises(ToolMissing):
        proc.run(["no-such-tool-xyz"], cwd=tmp_path, sandbox=Sandbox(bwrap=shutil.which("bwrap")))


def _kept_context(tmp_path: Path, sandbox: Sandbox | None, wt: Path) -> object:
    from patchci.checks.base import CheckContext
    from patchci.model import Tree
    from tests.gitrepo import make_series

    return CheckContext(make_series(["[PATCH] x"]), Tree("t", str(tmp_path / "repo")), wt,
                        "main", (), None, {}, tmp_path / "logs", sandbox=sandbox)  # fmt: skip


@pytest.mark.parametrize("isolated", [True, False])
def test_a_check_cannot_change_the_worktree_the_next_check_reads(
    tmp_path: Path, isolated: bool
) -> None:
    """A patched script (checkpatch.pl, kernel-doc) ran with the kept worktree writable: it
    could rewrite what the next check reads, and its files stayed for the next series. In
    bwrap the worktree is now read-only to it; without bwrap what it writes is cleaned at
    the next reset (the reset skips `git clean` only when nothing but git wrote there)."""
    from patchci.checks.base import CheckContext
    from tests.gitrepo import make_repo

    git = make_repo(tmp_path / "repo", {"a.c": "int a;\n"})
    base = git.rev_parse("main")
    assert base is not None
    (tmp_path / "logs").mkdir()
    sandbox = Sandbox(bwrap=_bwrap()) if isolated else Sandbox()
    root = tmp_path / "wts"
    with git.reused_worktree(base, root, git_writes_only=True) as wt:
        ctx = _kept_context(tmp_path, sandbox, wt.repo)
        assert isinstance(ctx, CheckContext)
        res = ctx.run(["sh", "-c", "echo evil > a.c; echo x > dropped.o; cat a.c"])
        if isolated:
            assert "Read-only file system" in res.stderr and res.stdout == "int a;\n"
            assert not (wt.repo / "dropped.o").exists()
        else:
            assert (wt.repo / "dropped.o").exists()
        assert (ctx.log_dir).is_dir()
    with git.reused_worktree(base, root, git_writes_only=True) as wt:
        assert (wt.repo / "a.c").read_text() == "int a;\n"
        assert not (wt.repo / "dropped.o").exists()
