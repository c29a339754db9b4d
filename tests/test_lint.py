"""Linters on the files a patch touches (NIPA's shellcheck, pylint, ruff, yamllint tests):
golden parses of the real tools' outputs, and the checks on real patches with the real
tools `make test` installs, reporting only what the patch adds."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from patchci.checks.base import CheckContext, run_check
from patchci.checks.lint import Pylint, Ruff, Shellcheck, Yamllint
from patchci.lint_output import (
    ERROR,
    INFO,
    WARNING,
    new_findings,
    parse_pylint,
    parse_ruff,
    parse_shellcheck,
    parse_yamllint,
)
from patchci.model import Outcome, Tree
from tests.gitrepo import make_repo, write
from tests.prereq import unavailable
from tests.test_checks_code import make_series

DATA = Path(__file__).parent / "data" / "lint"


def test_shellcheck_json1_golden() -> None:
    found = parse_shellcheck((DATA / "shellcheck-0.9.0.json").read_text())
    assert found[0].code == "SC2045" and found[0].severity == ERROR and found[0].line == 4
    assert {f.severity for f in found} <= {ERROR, WARNING, INFO}
    assert any(f.code == "SC2086" and f.severity == INFO for f in found)


def test_pylint_json_golden() -> None:
    found = parse_pylint((DATA / "pylint-2.16.2.json").read_text())
    undefined = next(f for f in found if f.code == "E0602")
    assert undefined.severity == ERROR and "undefined_name" in undefined.message
    assert next(f for f in found if f.code == "C0114").severity == WARNING


def test_ruff_json_golden() -> None:
    found = parse_ruff((DATA / "ruff-0.17.6.json").read_text(), "/tmp/lintcap")
    assert {f.file for f in found} == {"t.py"}
    assert "F821" in {f.code for f in found}
    assert all(f.severity == ERROR for f in found)


def test_yamllint_parsable_golden() -> None:
    found = parse_yamllint((DATA / "yamllint-1.29.0.txt").read_text())
    assert [(f.line, f.code, f.severity) for f in found] == [
        (1, "document-start", WARNING), (4, "hyphens", ERROR), (5, "key-duplicates", ERROR),
        (6, "line-length", ERROR)]  # fmt: skip


def test_a_moved_finding_is_not_new() -> None:
    (a,) = parse_yamllint("x.yaml:3:1: [error] trailing spaces (trailing-spaces)\n")
    (b,) = parse_yamllint("x.yaml:9:1: [error] trailing spaces (trailing-spaces)\n")
    assert new_findings([a], [b]) == []
    assert new_findings([a], [b, b]) == [b]


ST = "tools/testing/selftests/net/"
OLD_SH = '#!/bin/bash\nfor f in "$@"; do\n\techo "$f"\ndone\n'


def _check(tmp_path: Path, chk: object, base: dict[str, str], change: dict[str, str]) -> object:
    git = make_repo(tmp_path / "repo", base)
    first = git.rev_parse("HEAD")
    for name, text in change.items():
        write(git.repo, name, text)
    git.add_all()
    head = git.commit("change")
    assert first
    ctx = CheckContext(make_series(["[PATCH] x"]), Tree("t", str(git.repo)), git.repo, first,
                       (head,), 0, {}, tmp_path / "logs")  # fmt: skip
    return run_check(chk, ctx)  # type: ignore[arg-type]


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        unavailable(f"{tool} is not installed (make test installs it)")


def test_shellcheck_reports_only_what_the_patch_adds(tmp_path: Path) -> None:
    _need("shellcheck")
    # the file had a problem (unquoted $x, info); the patch keeps it and adds ls-iteration
    base = {ST + "a.sh": "#!/bin/bash\nx=1\necho $x\n"}
    bad = {ST + "a.sh": "#!/bin/bash\nx=1\necho $x\nfor f in $(ls *.txt); do echo \"$f\"; done\n"}
    r = _check(tmp_path / "1", Shellcheck(), base, bad)
    assert r.outcome is Outcome.FAIL, r.description  # type: ignore[attr-defined]
    assert "SC2045" in r.description  # type: ignore[attr-defined]
    ok = {ST + "a.sh": "#!/bin/bash\nx=1\necho $x\necho finished\n"}
    r = _check(tmp_path / "2", Shellcheck(), base, ok)
    assert r.outcome is Outcome.PASS, r.description  # type: ignore[attr-defined]
    # a new file must be fully clean: an info-level finding warns
    r = _check(tmp_path / "3", Shellcheck(), {ST + "old.sh": OLD_SH},
               {ST + "new.sh": "#!/bin/bash\necho $1\n"})  # fmt: skip
    assert r.outcome is Outcome.WARN, r.description  # type: ignore[attr-defined]


def test_pylint_ruff_and_yamllint_on_real_patches(tmp_path: Path) -> None:
    _need("pylint")
    _need("yamllint")
    base = {ST + "t.py": '"""A test."""\n\nimport os\n\nprint(os.sep)\n'}
    change = {ST + "t.py": '"""A test."""\n\nimport os\n\nprint(os.sep, missing)\n'}
    r = _check(tmp_path / "p", Pylint(), base, change)
    assert r.outcome is Outcome.FAIL and "E0602" in r.description  # type: ignore[attr-defined]
    ruff = str(Path(sys.executable).parent / "ruff")
    r = _check(tmp_path / "r", Ruff({"tool": ruff}), base, change)
    assert r.outcome is Outcome.FAIL and "F821" in r.description  # type: ignore[attr-defined]
    r = _check(tmp_path / "y", Yamllint(), {"ci.yaml": "---\na: 1\n"}, {"ci.yaml": "---\na: 1\na: 2\n"})
    assert r.outcome is Outcome.FAIL and "key-duplicates" in r.description  # type: ignore[attr-defined]
    r = _check(tmp_path / "n", Yamllint(), {"ci.yaml": "---\na: 1\n"}, {"x.c": "int x;\n"})
    assert r.outcome is Outcome.SKIP  # type: ignore[attr-defined]


def test_a_missing_linter_is_a_skip_that_says_so(tmp_path: Path) -> None:
    r = _check(tmp_path, Shellcheck({"tool": "no-such-shellcheck"}), {ST + "a.sh": OLD_SH},
               {ST + "a.sh": OLD_SH + "echo x\n"})  # fmt: skip
    assert r.outcome is Outcome.SKIP  # type: ignore[attr-defined]
    assert "no-such-shellcheck" in r.description  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["shellcheck", "pylint", "ruff", "yamllint"])
def test_the_linters_are_checks_a_config_can_name(name: str) -> None:
    from patchci.checks.registry import make_check

    chk = make_check(name, name=name, options={"args": ["-x"]} if name == "shellcheck" else {})
    assert chk.name == name
