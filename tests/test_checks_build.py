"""The build check on a small C repository built with the real gcc."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from patchci.checks.base import CheckContext, run_check
from patchci.checks.build import Build, BuildOptions, resolve_spec
from patchci.errors import ConfigError
from patchci.git import Git
from patchci.model import Outcome, Tree
from tests.gitrepo import commit_file, make_repo, make_series
from tests.prereq import prerequisites_required, unavailable


@pytest.fixture(autouse=True)
def _gcc_and_make() -> None:
    if shutil.which("gcc") is None or shutil.which("make") is None:
        unavailable("needs gcc and make (make test installs them)")


MAKEFILE = """\
CC ?= gcc
CFLAGS ?= -O2 -Wall -Wextra
OBJS = foo.o dev.o

demo: $(OBJS)
\t$(CC) $(CFLAGS) -o $@ $(OBJS)

%.o: %.c
\t$(CC) $(CFLAGS) -c -o $@ $<
"""
FOO = "int foo(int a)\n{\n\treturn a + 1;\n}\n"
# One warning in the base: an unused parameter.
DEV = "int dev(int a, int b)\n{\n\treturn a;\n}\nint main(void)\n{\n\treturn dev(1, 2);\n}\n"
MAKE_WRAPPER = '#!/bin/sh\necho "$PWD $*" >> "$(dirname "$0")/calls"\nexec make "$@"\n'


@pytest.fixture
def repo(tmp_path: Path) -> Git:
    return make_repo(tmp_path / "repo", {"Makefile": MAKEFILE, "foo.c": FOO, "dev.c": DEV})


def _wrapper(tmp_path: Path) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    w = bindir / "make"
    w.write_text(MAKE_WRAPPER)
    w.chmod(0o755)
    return w


def _ctx(git: Git, base: str, commits: tuple[str, ...], idx: int, tmp: Path) -> CheckContext:
    series = make_series([f"[PATCH {i + 1}/{len(commits)}] p{i}" for i in range(len(commits))])
    tree = Tree("demo", str(git.repo))
    return CheckContext(series, tree, git.repo, base, commits, idx, {}, tmp / "logs")


def _check(tmp: Path, **opts: object) -> Build:
    return Build({"build_dir": str(tmp / "cache"), "command": [str(_wrapper(tmp))], **opts})


def test_series_new_swapped_fixed_broken(repo: Git, tmp_path: Path) -> None:
    base = repo.rev_parse("HEAD")
    assert base
    c1 = commit_file(repo, "foo.c", FOO.replace("{\n", "{\n\tint unused;\n", 1), "new warning")
    c2 = commit_file(
        repo,
        "dev.c",
        DEV.replace("int a, int b", "int a")
        .replace("dev(1, 2)", "dev(1)")
        .replace("return a;", "int spare;\n\treturn a;"),
        "swap",
    )
    c3 = commit_file(repo, "foo.c", FOO, "fix only")
    c4 = commit_file(repo, "foo.c", FOO.replace("a + 1;", "a + ;"), "break")
    commits = (c1, c2, c3, c4)
    chk = _check(tmp_path)
    results = [run_check(chk, _ctx(repo, base, commits, i, tmp_path)) for i in range(4)]
    r1, r2, r3, r4 = results
    assert r1.outcome is Outcome.FAIL, r1.description
    assert r1.description == "new warnings: 1: foo.c: unused variable 'unused'"
    log1 = Path(r1.log_path or "").read_text()
    assert "foo.c:3:13: warning: unused variable 'unused' [-Wunused-variable]" in log1
    assert "int unused;" in log1  # the source line is shown
    assert r2.outcome is Outcome.FAIL
    assert r2.description == "new warnings: 1 (fixed: 1): dev.c: unused variable 'spare'"
    log2 = Path(r2.log_path or "").read_text()
    assert "unused variable 'spare'" in log2.split("Fixed")[0]
    assert "unused parameter 'b'" in log2.split("Fixed")[1]
    assert "baseline build skipped" in log2
    assert r3.outcome is Outcome.PASS
    assert r3.description == "no new warnings (fixed: 1)"
    assert r4.outcome is Outcome.FAIL
    assert r4.description.startswith("build failed: foo.c:3:")
    assert "expected expression" in r4.description
    # One full baseline build for the whole series, then two small builds per patch.
    calls = (tmp_path / "bin" / "calls").read_text().splitlines()
    assert len(calls) == 1 + 2 * 4
    assert all(str(tmp_path / "cache") in c for c in calls)


def test_base_that_does_not_build_is_an_error(tmp_path: Path) -> None:
    git = make_repo(
        tmp_path / "repo", {"Makefile": MAKEFILE, "foo.c": "int foo(void) {", "dev.c": DEV}
    )
    base = git.rev_parse("HEAD")
    assert base
    c1 = commit_file(git, "dev.c", DEV + "/* comment */\n", "harmless")
    res = run_check(_check(tmp_path), _ctx(git, base, (c1,), 0, tmp_path))
    assert res.outcome is Outcome.ERROR
    assert res.description.startswith("base does not build: foo.c:1:")


def test_second_series_builds_incrementally(repo: Git, tmp_path: Path) -> None:
    """A later series on the same tree reuses the objects of the first one."""
    base = repo.rev_parse("HEAD")
    assert base
    c1 = commit_file(repo, "foo.c", FOO + "/* one */\n", "one")
    repo.run("checkout", "-q", "-b", "other", base)
    c2 = commit_file(repo, "foo.c", FOO + "/* two */\n", "two")
    chk = _check(tmp_path)
    assert run_check(chk, _ctx(repo, base, (c1,), 0, tmp_path)).outcome is Outcome.PASS
    calls = tmp_path / "bin" / "calls"
    calls.unlink()
    dev_o = tmp_path / "cache" / "build" / "src" / "dev.o"
    stamp = dev_o.stat().st_mtime_ns
    res = run_check(chk, _ctx(repo, base, (c2,), 0, tmp_path / "s2"))
    assert res.outcome is Outcome.PASS, res.description
    assert len(calls.read_text().splitlines()) == 3
    assert dev_o.stat().st_mtime_ns == stamp  # dev.c was never recompiled


def test_missing_command_is_skipped(repo: Git, tmp_path: Path) -> None:
    base = repo.rev_parse("HEAD")
    assert base
    c1 = commit_file(repo, "foo.c", FOO + "\n", "x")
    chk = Build({"build_dir": str(tmp_path / "c"), "command": ["no-such-make-tool"]})
    res = run_check(chk, _ctx(repo, base, (c1,), 0, tmp_path))
    assert res.outcome is Outcome.SKIP
    assert "no-such-make-tool" in res.description


def test_spec_defaults() -> None:
    k = resolve_spec(BuildOptions(), kernel=True)
    assert k.make_args == ("W=1",) and k.config == "defconfig" and k.out_of_tree
    assert "WERROR" in k.disable
    opts = BuildOptions.model_validate({"make_args": ["LLVM=1"], "config": "none", "jobs": 3})
    p = resolve_spec(opts, kernel=False)
    assert p.config == "" and not p.out_of_tree and p.jobs == 3 and p.disable == ()
    with pytest.raises(ConfigError):
        Build({"make_args": ["W=1", 3]})


def test_demo_check_samples_end_as_expected(tmp_path: Path) -> None:
    """The demo's build/cc_maintainers/kdoc samples through the whole pipeline, on the demo
    tree as `patchci demo` builds it (a warning in the base; Linux's kernel-doc when a
    Debian kernel source tarball is installed, as make test installs it)."""
    from patchci.checks.kdoc import KernelDoc
    from patchci.checks.maintainers import CcMaintainers
    from patchci.demo.check_samples import build_check_samples
    from patchci.demo.tree import build_tree
    from patchci.model import worst
    from patchci.pipeline import check_series
    from patchci.sources.mbox import load_series

    git = build_tree(tmp_path / "demo")
    has_kdoc = (git.repo / "scripts" / "kernel-doc").exists()
    if prerequisites_required():
        assert has_kdoc, "make test installs linux-source-6.1; the demo tree must get kernel-doc"
    samples = build_check_samples(git)
    assert [s.label for s in samples] == [
        "new compiler warning",
        "swapped compiler warning",
        "maintainer missing from Cc",
        "kernel-doc regression",
    ]
    tree = Tree("net-next", str(git.repo), "main", ("net-next",))
    checks = [Build({"build_dir": str(tmp_path / "cache")}), CcMaintainers(), KernelDoc()]
    for i, sample in enumerate(samples):
        mbox = tmp_path / f"s{i}.mbox"
        mbox.write_bytes(sample.mbox)
        (series,) = load_series(mbox).series
        verdict = check_series(series, [tree], lambda _t: checks, tmp_path / f"logs{i}")
        got: dict[str, list[Outcome]] = {}
        for r in verdict.results:
            got.setdefault(r.check, []).append(r.outcome)
        assert got["apply"] == [Outcome.PASS], sample.label
        for check, want in sample.expect.items():
            assert worst(got[check]).value == want, (sample.label, check, verdict.results)
        if sample.label == "swapped compiler warning":
            last = [r for r in verdict.results if r.check == "build"][-1]
            assert last.description.startswith("new warnings: 1 (fixed: 1): "), last.description
            assert "unused variable 'spare'" in last.description
            log = Path(last.log_path or "").read_text()
            assert "unused variable 'spare'" in log.split("Fixed")[0]
            assert len(got["build"]) == 1  # the base's warning is swapped in one patch
        if sample.label == "kernel-doc regression" and has_kdoc:
            kd = [r for r in verdict.results if r.check == "kdoc"][-1]
            assert kd.description == "Warnings before: 0 after: 1 (add: 1 del: 0)"


@pytest.mark.usefixtures("_gcc_and_make")
def test_a_missing_build_tool_is_named(tmp_path: Path) -> None:
    """Without flex the build check said "make defconfig failed: Target 'defconfig' not
    remade because of errors" and logged a Python traceback. The tree's defconfig target
    runs a program that is not installed here, as Kconfig runs flex."""
    makefile = MAKEFILE + "\ndefconfig:\n\tflex-for-patchci-tests scripts/kconfig/lexer.l\n"
    git = make_repo(tmp_path / "repo", {"Makefile": makefile, "foo.c": FOO, "dev.c": DEV})
    base = git.rev_parse("HEAD")
    assert base
    c1 = commit_file(git, "dev.c", DEV + "/* comment */\n", "harmless")
    chk = Build({"config": "defconfig", "build_dir": str(tmp_path / "cache"), "jobs": 1})
    res = run_check(chk, _ctx(git, base, (c1,), 0, tmp_path))
    assert res.outcome is Outcome.ERROR  # ours: the base must configure
    assert "make defconfig failed: " in res.description
    assert "flex-for-patchci-tests: No such file or directory" in res.description
    log = Path(res.log_path or "").read_text()
    assert "Traceback" not in log


@pytest.mark.parametrize(
    ("output", "cause"),
    [
        # real make 4.3 / dash output when the tool is not installed
        ("flex scripts/kconfig/lexer.l\nmake: flex: No such file or directory\n"
         "make: *** [Makefile:2: defconfig] Error 127\n",
         "flex is not installed (apt-get install flex)"),
        ("/bin/sh: 1: bison: not found\nmake[2]: *** [scripts/Makefile.host:9] Error 127\n",
         "bison is not installed (apt-get install bison)"),
        ("scripts/sign-file.c:25:10: fatal error: openssl/opensslv.h: No such file or directory",
         "openssl/opensslv.h is missing (apt-get install libssl-dev)"),
        ("tools/objtool/elf.c:10:10: fatal error: gelf.h: No such file or directory",
         "gelf.h is missing (apt-get install libelf-dev)"),
    ],
)  # fmt: skip
def test_setup_failure_names_the_debian_package(output: str, cause: str) -> None:
    from patchci.checks.build import setup_failure

    assert setup_failure(output) == cause
