"""build_tools (NIPA's build_tools.sh): the selftests a series touches build before and
after it with real make and gcc, no warning is new (compared as sets, NIPA compares
counts), and the build leaves no new untracked file (NIPA's `git status` dirt count: a
binary missing from `.gitignore`). Through `patchci check`, the path users take."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from patchci.checks.build_tools import BuildToolsOptions, selftest_targets
from patchci.cli import main
from patchci.git import Git
from tests.gitrepo import commit_file, format_patches, make_repo, write
from tests.prereq import unavailable

ST = "tools/testing/selftests/"
TOP = "TARGETS ?= net\nall:\n\t@for t in $(TARGETS); do $(MAKE) -C $$t || exit 1; done\n"
NET = ("CFLAGS += -Wall\nTEST_GEN_PROGS := a\nall: $(TEST_GEN_PROGS)\n"
       "%: %.c\n\t$(CC) $(CFLAGS) -o $@ $<\n")  # fmt: skip
A_C = "int main(void)\n{\n\treturn 0;\n}\n"
SOB = "\n\nSigned-off-by: Test Author <author@example.com>"


def test_targets_are_the_deepest_touched_selftest_directories() -> None:
    known = {"net", "net/mptcp", "drivers/net"}
    opts = BuildToolsOptions.model_validate({})
    files = [ST + "net/mptcp/x.sh", ST + "net/lib/y.sh", ST + "net/forwarding/z.sh",
             ST + "drivers/net/a/b.py", ST + "bpf/prog.c", "net/core/dev.c"]  # fmt: skip
    got, skipped = selftest_targets(files, known.__contains__, opts)
    assert got == ["net/mptcp", "net", "drivers/net"] and skipped == []
    assert selftest_targets([ST + "bpf/p.c"], {"bpf"}.__contains__, opts) == ([], ["bpf"])
    # headers and no selftest: include_targets; nothing of either: nothing to build
    assert selftest_targets(["include/uapi/linux/mptcp.h"], known.__contains__, opts)[0] == ["net"]
    assert selftest_targets(["net/core/dev.c"], known.__contains__, opts) == ([], [])


def _tree(tmp_path: Path) -> Git:
    if shutil.which("gcc") is None or shutil.which("make") is None:
        unavailable("needs gcc and make (make test installs them)")
    return make_repo(tmp_path / "tree", {
        f"{ST}Makefile": TOP, f"{ST}net/Makefile": NET, f"{ST}net/a.c": A_C,
        f"{ST}net/.gitignore": "a\n", "net/core/dev.c": "int dev;\n"})  # fmt: skip


def _check(tmp_path: Path, git: Git, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    (mail,) = format_patches(git, "HEAD~1..HEAD")
    mbox = tmp_path / f"{git.rev_parse('HEAD')}.mbox"
    mbox.write_bytes(mail)
    rc = main(["check", str(mbox), "--tree", str(git.repo), "--base", "HEAD~1",
               "--checks", "build_tools", "--logs", str(tmp_path / "logs")])  # fmt: skip
    return rc, " ".join(capsys.readouterr().out.split())


def test_a_new_binary_without_gitignore_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATCHCI_BUILD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "400")  # one table row per line
    git = _tree(tmp_path)
    write(git.repo, f"{ST}net/b.c", A_C)
    commit_file(
        git, f"{ST}net/Makefile", NET.replace(":= a", ":= a b"), "selftests: net: add b" + SOB
    )
    rc, out = _check(tmp_path, git, capsys)
    assert rc == 1, out
    assert (
        "build_tools │ fail │ net: 1 new untracked file (missing .gitignore?): "
        "tools/testing/selftests/net/b"
    ) in out.replace("┃", "│")
    # with its .gitignore entry the same change passes, on the build directory kept
    commit_file(git, f"{ST}net/.gitignore", "a\nb\n", "selftests: net: ignore b" + SOB)
    git.run("reset", "--quiet", "--soft", "HEAD~2")
    git.commit("selftests: net: add b, ignored" + SOB)
    rc, out = _check(tmp_path, git, capsys)
    assert rc == 0, out
    assert "net: builds, no new warnings, no new untracked file" in out


def test_a_new_warning_fails_and_an_unrelated_series_is_not_built(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATCHCI_BUILD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "400")  # one table row per line
    git = _tree(tmp_path)
    commit_file(git, f"{ST}net/a.c", A_C.replace("{\n", "{\n\tint unused_b;\n", 1),
                "selftests: net: a variable" + SOB)  # fmt: skip
    rc, out = _check(tmp_path, git, capsys)
    assert rc == 1, out
    assert "net: new warnings: 1: a.c: unused variable 'unused_b'" in out
    commit_file(git, "net/core/dev.c", "int dev, dev2;\n", "net: core: another" + SOB)
    rc, out = _check(tmp_path, git, capsys)
    assert rc == 0, out
    assert "build_tools │ skip │ not run: no selftest or tools header touched" in out.replace(
        "┃", "│"
    )


def test_build_tools_is_in_the_default_set_of_a_tree_with_selftests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATCHCI_BUILD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "400")  # one table row per line
    git = _tree(tmp_path)
    commit_file(git, f"{ST}net/a.c", A_C.replace("0;", "1;"), "selftests: net: fail" + SOB)
    (mail,) = format_patches(git, "HEAD~1..HEAD")
    (tmp_path / "p.mbox").write_bytes(mail)
    main(["check", str(tmp_path / "p.mbox"), "--tree", str(git.repo), "--base", "HEAD~1"])
    out = " ".join(capsys.readouterr().out.split())
    checks_line = out[out.index("checks: ") : out.index("left out")]
    assert "build_tools" in checks_line
    assert "net: builds, no new warnings, no new untracked file" in out


def _commit_blobs(tree: Path, files: dict[str, str], msg: str) -> None:
    """Commit *files* on top of HEAD without a checkout (a kernel checkout costs ~15 s)."""
    import os
    import subprocess

    env = {**os.environ, "GIT_INDEX_FILE": str(tree / ".git" / "tmp-index")}

    def git(*args: str, data: str | None = None) -> str:
        return subprocess.run(["git", "-C", str(tree), *args], input=data, env=env, text=True,
                              check=True, capture_output=True, timeout=300).stdout.strip()  # fmt: skip

    git("read-tree", "HEAD")
    for path, text in files.items():
        blob = git("hash-object", "-w", "--stdin", data=text)
        git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}")
    new = git("commit-tree", git("write-tree"), "-p", "HEAD", "-m", msg)
    git("update-ref", "HEAD", new)


def test_on_linux_612_a_new_mptcp_program_without_gitignore_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel path: `make headers` in the mirror, then the mptcp selftests built with
    the exported headers, on Linux 6.12 (the tarball `make test` installs)."""
    import subprocess

    from tests.kernel_vm import linux_repo

    monkeypatch.setenv("PATCHCI_BUILD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "400")
    tree = tmp_path / "linux"
    subprocess.run(["git", "clone", "-q", "--shared", "--no-checkout", str(linux_repo()),
                    str(tree)], check=True, timeout=900)  # fmt: skip
    git = Git(tree)
    mk = f"{ST}net/mptcp/Makefile"
    text = git.run("show", f"HEAD:{mk}").stdout
    assert "TEST_GEN_FILES = mptcp_connect" in text
    # Debian's source ignores everything at the top level ("/*"); a kernel git tree does not
    ignore = git.run("show", "HEAD:.gitignore").stdout
    assert "\n/*\n" in ignore
    _commit_blobs(tree, {".gitignore": ignore.replace("\n/*\n", "\n")}, "no Debian ignore")
    _commit_blobs(tree, {f"{ST}net/mptcp/mptcp_hello.c": "#include <linux/mptcp.h>\n" + A_C,
                         mk: text.replace("TEST_GEN_FILES = ", "TEST_GEN_FILES = mptcp_hello ")},
                  "selftests: mptcp: add mptcp_hello" + SOB)  # fmt: skip
    rc, out = _check(tmp_path, git, capsys)
    assert rc == 1, out
    assert (
        "net/mptcp: 1 new untracked file (missing .gitignore?): "
        "tools/testing/selftests/net/mptcp/mptcp_hello"
    ) in out
    log = next((tmp_path / "logs").rglob("build_tools.log")).read_text()
    assert "before: make headers: exit 0" in log and "after: make headers: exit 0" in log
