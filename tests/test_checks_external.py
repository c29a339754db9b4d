"""External checks: exit-code conventions, environment, secrets, descriptions, hangs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patchci.checks.base import CheckContext, run_check
from patchci.checks.code import SourceInline
from patchci.checks.external import External, map_exit_code, secret_names
from patchci.errors import ConfigError
from patchci.git import Git
from patchci.model import Outcome, Scope, Tree
from patchci.pipeline import _run_checks
from patchci.routing import Route
from tests.gitrepo import commit_file, format_patches, make_repo, series_from_mails

ENV_DUMP = """#!/usr/bin/env python3
import json, os, sys
keep = {k: v for k, v in os.environ.items()}
json.dump(keep, open(os.path.join(os.environ["PATCHCI_RESULT_DIR"], "env.json"), "w"))
print("checked", os.getcwd())
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Git, str, tuple[str, ...]]:
    git = make_repo(tmp_path / "repo", {"a.c": "int a;\n", "doc.txt": "hi\n"})
    base = git.rev_parse("HEAD")
    assert base
    c1 = commit_file(git, "a.c", "int a;\nint b;\n", "first")
    c2 = commit_file(git, "doc.txt", "hello\n", "second")
    return git, base, (c1, c2)


def _script(tmp: Path, text: str) -> str:
    p = tmp / "check.py"
    p.write_text(text)
    p.chmod(0o755)
    return str(p)


def _ctx(git: Git, base: str, commits: tuple[str, ...], idx: int | None,
         tmp: Path) -> CheckContext:  # fmt: skip
    series = series_from_mails(format_patches(git, f"{base}..{commits[-1]}"))
    return CheckContext(series, Tree("t", str(git.repo)), git.repo, base, commits, idx, {},
                        tmp / "logs")  # fmt: skip


@pytest.mark.parametrize(
    ("code", "patchci", "nipa"),
    [(0, Outcome.PASS, Outcome.PASS), (1, Outcome.FAIL, Outcome.FAIL),
     (2, Outcome.ERROR, Outcome.FAIL), (3, Outcome.WARN, Outcome.FAIL),
     (4, Outcome.SKIP, Outcome.FAIL), (250, Outcome.ERROR, Outcome.WARN),
     (111, Outcome.ERROR, Outcome.PENDING), (127, Outcome.ERROR, Outcome.FAIL)],
)  # fmt: skip
def test_exit_code_conventions(code: int, patchci: Outcome, nipa: Outcome) -> None:
    assert map_exit_code(code, "patchci") is patchci
    assert map_exit_code(code, "nipa") is nipa


@pytest.mark.parametrize(("code", "conv", "outcome"),
                         [(3, "patchci", Outcome.WARN), (250, "nipa", Outcome.WARN),
                          (1, "nipa", Outcome.FAIL)])  # fmt: skip
def test_command_exit_code_and_env(
    setup: tuple[Git, str, tuple[str, ...]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    code: int, conv: str, outcome: Outcome,
) -> None:  # fmt: skip
    git, base, commits = setup
    monkeypatch.setenv("PATCHWORK_TOKEN", "s3cret")
    monkeypatch.setenv("MY_API_KEY", "k")
    monkeypatch.setenv("DB_PASSWORD", "p")
    monkeypatch.setenv("HARMLESS", "yes")
    chk = External({"command": [_script(tmp_path, ENV_DUMP), str(code)], "exit_codes": conv})
    res = run_check(chk, _ctx(git, base, commits, 1, tmp_path))
    assert res.outcome is outcome
    assert res.description == f"checked {git.repo}"  # last stdout line
    env = json.loads((tmp_path / "logs" / "2-external.d" / "env.json").read_text())
    assert env["PATCHCI_BASE"] == env["BRANCH_BASE"] == base
    assert env["PATCHCI_COMMIT"] == commits[1] and env["PATCHCI_PARENT"] == commits[0]
    assert env["PATCHCI_FIRST_IN_SERIES"] == env["FIRST_IN_SERIES"] == "0"
    assert env["RESULTS_DIR"] == env["PATCHCI_RESULT_DIR"]
    assert "Subject: [PATCH 2/2] second" in Path(env["PATCHCI_PATCH"]).read_text()
    mbox = Path(env["PATCHCI_SERIES_MBOX"]).read_text()
    assert "[PATCH 1/2] first" in mbox and "[PATCH 2/2] second" in mbox
    assert env["DESC_FD"].isdigit() and env["HARMLESS"] == "yes"
    for secret in ("PATCHWORK_TOKEN", "MY_API_KEY", "DB_PASSWORD"):
        assert secret not in env
    assert "GIT_CONFIG_KEY_0" in env  # git's own config list is not a secret


def test_description_from_desc_fd_and_file(setup: tuple[Git, str, tuple[str, ...]],
                                           tmp_path: Path) -> None:  # fmt: skip
    git, base, commits = setup
    fd = _script(tmp_path, '#!/bin/bash\necho noise\necho "3 problems found" >&"$DESC_FD"\n'
                 'exit 1\n')  # fmt: skip
    res = run_check(External({"command": [fd]}), _ctx(git, base, commits, 0, tmp_path))
    assert (res.outcome, res.description) == (Outcome.FAIL, "3 problems found")
    assert "noise" in Path(res.log_path or "").read_text()
    (tmp_path / "check.py").unlink()
    f = _script(tmp_path, '#!/bin/sh\necho "all good" > "$PATCHCI_RESULT_DIR/desc"\n')
    res = run_check(External({"command": [f]}), _ctx(git, base, commits, 0, tmp_path / "b"))
    assert (res.outcome, res.description) == (Outcome.PASS, "all good")


def test_files_filter_and_series_scope(setup: tuple[Git, str, tuple[str, ...]],
                                       tmp_path: Path) -> None:  # fmt: skip
    git, base, commits = setup
    chk = External({"command": ["true"], "files": ["*.c"]})
    assert run_check(chk, _ctx(git, base, commits, 0, tmp_path)).outcome is Outcome.PASS
    skipped = run_check(chk, _ctx(git, base, commits, 1, tmp_path))
    assert skipped.outcome is Outcome.SKIP
    assert skipped.description == "skipped: no touched file matches *.c"
    series = External({"command": ["true"], "files": ["*.c"], "scope": "series"})
    assert series.scope is Scope.SERIES
    assert run_check(series, _ctx(git, base, commits, None, tmp_path)).outcome is Outcome.PASS


def test_missing_command_and_bad_options(setup: tuple[Git, str, tuple[str, ...]],
                                         tmp_path: Path) -> None:  # fmt: skip
    git, base, commits = setup
    res = run_check(External({"command": ["no-such-checker"]}),
                    _ctx(git, base, commits, 0, tmp_path))  # fmt: skip
    assert res.outcome is Outcome.SKIP and "no-such-checker" in res.description
    for bad in ({}, {"command": "x", "exit_codes": "posix"}, {"command": ["x"], "scope": "y"}):
        with pytest.raises(ConfigError):
            External(bad)


def test_secret_names() -> None:
    env = {
        "GH_TOKEN": "1",
        "PATH": "/bin",
        "AWS_SECRET_ACCESS_KEY": "2",
        "ssh_key": "3",
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "user.name",
        "GIT_CONFIG_VALUE_0": "x",
    }
    assert secret_names(env) == ["AWS_SECRET_ACCESS_KEY", "GH_TOKEN", "ssh_key"]
    env["GIT_CONFIG_KEY_0"] = "http.extraHeader"
    assert "GIT_CONFIG_VALUE_0" in secret_names(env) and "GIT_CONFIG_COUNT" in secret_names(env)


def test_hang_is_cut_and_the_other_checks_still_report(
    setup: tuple[Git, str, tuple[str, ...]], tmp_path: Path
) -> None:
    git, base, commits = setup
    hang = External({"command": ["sleep", "60"]}, timeout=1.0)
    series = series_from_mails(format_patches(git, f"{base}..{commits[-1]}"))
    route = Route("t", "test", "tags", False)
    results = _run_checks(
        series,
        Tree("t", str(git.repo)),
        route,
        [hang, SourceInline()],
        git.repo,
        base,
        commits,
        tmp_path / "logs",
        lambda _m: None,
    )
    by = {(r.check, r.patch_index): r for r in results}
    assert len(results) == 4
    for idx in (0, 1):
        assert by[("external", idx)].outcome is Outcome.ERROR
        assert by[("external", idx)].description == "check timed out after 1s (infrastructure)"
        assert by[("external", idx)].duration < 10
        assert by[("source_inline", idx)].outcome is Outcome.PASS
