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
    good = tmp_path / "good.toml"
    good.write_text('[[trees]]\nname = "net"\npath = "/x"\n')
    assert main(["config", "check", str(good)]) == 0
    assert "1 tree(s)" in capsys.readouterr().out


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
