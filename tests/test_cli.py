"""CLI: help everywhere without config or database; exit codes for config errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from patchci.cli import build_parser, main

SUBCOMMANDS = [
    [],
    ["demo"],
    ["ingest"],
    ["process"],
    ["check"],
    ["series"],
    ["db"],
    ["db", "upgrade"],
    ["config"],
    ["config", "check"],
    ["ktap"],
    ["ktap", "parse"],
    ["branch"],
    ["contest"],
    ["serve"],
]


@pytest.mark.parametrize("cmd", SUBCOMMANDS, ids=lambda c: " ".join(c) or "top")
def test_help_works_without_config(
    cmd: list[str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: patchci" in out
    assert not list(tmp_path.iterdir()), "--help must not create files"


def test_every_subparser_has_help_text() -> None:
    p = build_parser()
    sub = p._subparsers._group_actions[0]  # type: ignore[union-attr]
    for name, action in sub.choices.items():  # type: ignore[attr-defined]
        assert action.description or action.format_help(), name
    helps = {a.dest: a.help for a in sub._choices_actions}  # type: ignore[attr-defined]
    assert all(helps.values()), helps


def test_config_check_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[trees]]\nname = "net"\npath = "/x"\nbranhc = "main"\n')
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "trees.0.branhc: unknown key" in err
    assert err.count("\n") == 1
    repo = tmp_path / "net"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    good = tmp_path / "good.toml"
    good.write_text(f'[[trees]]\nname = "net"\npath = "{repo}"\n')
    assert main(["config", "check", str(good)]) == 0
    out = capsys.readouterr().out
    assert "1 tree(s)" in out and "sandbox:" in out


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ('[[trees]]\nname = "net"\npath = "{tmp}/nope"\n', "trees.net.path: {tmp}/nope does not exist"),
        ('[[trees]]\nname = "net"\npath = "{tmp}"\n', "trees.net.path: {tmp} is not a git tree"),
        ('[[sources]]\nname = "m"\ntype = "mbox"\npath = "{tmp}/in.mbox"\n',
         "sources.m.path: {tmp}/in.mbox does not exist"),
    ],
)  # fmt: skip
def test_config_check_looks_at_the_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, error: str
) -> None:
    """`config check` said ok to a missing tree path, a non-git directory and a missing
    mbox; ingest then stored every series as done with an error."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(body.format(tmp=tmp_path))
    assert main(["config", "check", str(cfg)]) == 2
    assert error.format(tmp=tmp_path) in capsys.readouterr().err
    if "trees" in body:
        assert main(["-c", str(cfg), "ingest", "--once"]) == 2
        assert error.format(tmp=tmp_path) in capsys.readouterr().err
        assert not (tmp_path / "patchci.db").exists()


def test_series_that_does_not_exist_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`patchci series 999` printed a traceback (exit 1)."""
    data = tmp_path / "data"
    assert main(["--data-dir", str(data), "db", "upgrade"]) == 0
    assert main(["--data-dir", str(data), "series", "999"]) == 2
    err = capsys.readouterr().err
    assert "series 999 is not in the database" in err and "Traceback" not in err


def test_serve_on_a_taken_port_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`serve` exited 3 (uvicorn's own code) when the port was taken."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc = main(["--data-dir", str(tmp_path), "serve", "--port", str(port)])
    assert rc == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_contest_without_branches_names_a_command_that_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`contest` suggested `patchci branch-now`, which does not exist."""
    main(["--data-dir", str(tmp_path), "contest"])
    out = capsys.readouterr().out
    assert "patchci branch --now" in out and "branch-now" not in out
    parser = build_parser()
    parser.parse_args(["branch", "--now"])  # the suggested command parses


@pytest.mark.parametrize("module", ["patchci.cli", "patchci"])
def test_console_script_entry_point(module: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", module, "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0 and r.stdout.startswith("patchci ")


@pytest.mark.parametrize(
    ("check", "options", "error"),
    [
        ("series_format", 'max_patches = "many"', "checks.series_format.options.max_patches:"),
        ("checkpatch", 'args = "--strict"', "checks.checkpatch.options.args:"),
        ("build", 'targest = ["net/mptcp/"]', "checks.build.options.targest: unknown key (typo?)"),
        ("cc_maintainers", 'source = "git"', "checks.cc_maintainers.options.source:"),
        ("external", "files = []", "checks.external.options.command: required key is missing"),
    ],
)  # fmt: skip
def test_config_check_validates_each_checks_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], check: str, options: str, error: str
) -> None:
    """Per-check options were dict[str, Any]: `config check` accepted max_patches =
    "many", checkpatch args = "--strict" and a misspelt build option (`targest`, silently
    ignored: the quick net/mptcp/ build became a full kernel build); the error showed up
    only when a series ran, or never."""
    repo = tmp_path / "net"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[[trees]]\nname = "net"\npath = "{repo}"\nchecks = ["{check}"]\n\n'
        f"[checks.{check}]\noptions = {{ {options} }}\n"
    )
    assert main(["config", "check", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert error in err, err
    assert err.count("\n") == 1


def test_config_check_names_executors_streams_and_what_vms_will_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "net"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[[trees]]\nname = "net"\npath = "{repo}"\nremote = "origin"\n\n'
        '[[executors]]\nname = "vmksft"\nkind = "vm"\ntargets = ["net/mptcp"]\n\n'
        '[[streams]]\nname = "s"\ntree = "net"\nexecutors = ["vmksft"]\n'
    )
    assert main(["config", "check", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "base refs/remotes/origin/main" in out
    assert "stream s: tree net, every 3 h; executors vmksft" in out
    assert "vm executors vmksft: " in out and ("KVM" in out or "TCG" in out)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ('[[executors]]\nname = "v"\nkind = "vm"\n', "executors.0: targets: a vm executor needs"),
        ('[[executors]]\nname = "v"\nkind = "local"\ntargets = ["x"]\n',
         "targets/config/kunit/kernel are for kind"),
        ('[[streams]]\nname = "s"\ntree = "net"\nexecutors = ["nope"]\n',
         "streams.s.executors: no [[executors]] entry named 'nope'"),
        ('[[trees]]\nname = "t"\nurl = "file:///x"\nremote = "origin"\n',
         "'remote' is for a 'path' tree"),
    ],
)  # fmt: skip
def test_config_check_rejects_bad_executors_and_trees(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, error: str
) -> None:
    repo = tmp_path / "net"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[[trees]]\nname = "net"\npath = "{repo}"\n\n' + body)
    assert main(["config", "check", str(cfg)]) == 2
    assert error in capsys.readouterr().err


def test_checks_list_names_every_check_its_options_and_tools(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from patchci.checks.registry import BUILTIN

    assert main(["checks", "list"]) == 0
    out = capsys.readouterr().out
    lines = {ln.split(":", 1)[0]: ln for ln in out.splitlines()}
    assert set(BUILTIN) | {"tree_selection", "apply"} == set(lines)
    assert "options: args, ignore, script" in lines["checkpatch"]
    assert "perl (found)" in lines["checkpatch"]
    monkeypatch.setenv("PATH", "/nonexistent")  # no tool on PATH now
    assert main(["checks", "list", "--strict"]) == 2
    assert "perl (MISSING)" in capsys.readouterr().out
