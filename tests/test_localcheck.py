"""`patchci check`: local patches against a local tree, exit codes, tree untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchci import proc
from patchci.cli import main
from patchci.demo.series import build_samples
from patchci.demo.tree import build_tree


def _state(repo: Path) -> tuple[str, str, str]:
    def git(*a: str) -> str:
        return proc.run(["git", *a], cwd=repo, check=True).stdout

    return git("rev-parse", "HEAD"), git("status", "--porcelain"), git("worktree", "list")


@pytest.fixture
def demo(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    git = build_tree(tmp_path / "tree")
    return tmp_path / "tree", {s.label: s.mbox for s in build_samples(git)}


def test_clean_series_passes_and_tree_is_untouched(
    demo: tuple[Path, dict[str, bytes]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree, mboxes = demo
    mbox = tmp_path / "clean.mbox"
    mbox.write_bytes(mboxes["clean series for net-next"])
    before = _state(tree)
    rc = main(["check", str(mbox), "--tree", str(tree), "--name", "net-next"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "Clearly marked for net-next" in out and "Applied 3 patches" in out
    assert _state(tree) == before


@pytest.mark.parametrize(
    ("label", "check", "text"),
    [
        ("missing Signed-off-by", "signed_off_by", "Missing Signed-off-by from author"),
        ("does not apply", "apply", "does not apply"),
    ],
)
def test_failing_series_exit_1(
    demo: tuple[Path, dict[str, bytes]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    label: str,
    check: str,
    text: str,
) -> None:
    tree, mboxes = demo
    mbox = tmp_path / "s.mbox"
    mbox.write_bytes(mboxes[label])
    before = _state(tree)
    assert main(["check", str(mbox), "--tree", str(tree), "--name", "net-next"]) == 1
    out = capsys.readouterr().out
    assert check in out and text in out
    assert _state(tree) == before


def test_bad_arguments_exit_2(
    tmp_path: Path, demo: tuple[Path, dict[str, bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    tree, _ = demo
    empty = tmp_path / "empty.mbox"
    empty.write_bytes(b"")
    assert main(["check", str(empty), "--tree", str(tree)]) == 2
    assert main(["check", str(empty), "--tree", str(tmp_path / "nope")]) == 2
    assert "is not a git tree" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "missing.mbox"), "--tree", str(tree)]) == 2


def test_checks_option_and_unknown_check(
    demo: tuple[Path, dict[str, bytes]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree, mboxes = demo
    mbox = tmp_path / "s.mbox"
    mbox.write_bytes(mboxes["missing Signed-off-by"])
    assert main(["check", str(mbox), "--tree", str(tree), "--checks", "fixes_tag"]) == 0
    assert "signed_off_by" not in capsys.readouterr().out
    assert main(["check", str(mbox), "--tree", str(tree), "--checks", "bogus"]) == 2
    assert "unknown check 'bogus'" in capsys.readouterr().err


def test_without_checks_every_check_that_applies_runs_and_a_new_warning_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, `patchci check` on a tree with a Makefile ran only the basic set (no build)
    and exited 0 for a patch adding a compiler warning."""
    import shutil

    from tests.gitrepo import commit_file, format_patches, make_repo
    from tests.prereq import unavailable
    from tests.test_checks_build import DEV, FOO, MAKEFILE

    if shutil.which("gcc") is None or shutil.which("make") is None:
        unavailable("needs gcc and make (make test installs them)")
    git = make_repo(tmp_path / "tree", {"Makefile": MAKEFILE, "foo.c": FOO, "dev.c": DEV})
    commit_file(git, "foo.c", FOO.replace("return a + 1;", "int unused_two;\n\treturn a + 1;"),
                "foo: add a variable\n\nSigned-off-by: Test Author <author@example.com>")  # fmt: skip
    (mail,) = format_patches(git, "HEAD~1..HEAD")
    mbox = tmp_path / "p.mbox"
    mbox.write_bytes(mail)
    rc = main(["check", str(mbox), "--tree", str(git.repo), "--base", "HEAD~1"])
    out = capsys.readouterr().out
    assert rc == 1, out
    flat = " ".join(out.split())  # the console wraps long lines
    checks_line = flat[flat.index("checks: "):flat.index("left out")]
    assert "build" in checks_line and "signed_off_by" in checks_line
    assert "left out: checkpatch: the tree has no scripts/checkpatch.pl" in flat
    assert "left out: cc_maintainers: the tree has no MAINTAINERS" in flat
    assert "new warnings: 1: foo.c: unused variable" in flat
    # under the table: the new warnings themselves
    assert "New warnings and errors (1):" in out
    assert "foo.c:3:" in out and "-Wunused-variable" in out
