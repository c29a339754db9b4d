"""The small diff-based code checks, each path, on real git commits."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchci.checks.base import Check, CheckContext, run_check
from patchci.checks.code import (
    CheckSelftest,
    DeprecatedApi,
    HeaderInline,
    SourceInline,
    added_makefile_problems,
    makefile_format,
    parse_diff,
)
from patchci.git import Git
from patchci.model import CheckResult, Outcome, Tree
from tests.gitrepo import make_repo, make_series, write

ST = "tools/testing/selftests/net/"
BASE = {
    "net/a.c": "static inline int a(void) { return 0; }\nint b;\n",
    "include/x.h": "int x(void);\n",
    "drivers/net/d.c": "void d(void)\n{\n\tdev_hold(dev);\n}\n",
    ST + "Makefile": "TEST_PROGS := old.sh\nTEST_GEN_FILES := prog\n",
    ST + ".gitignore": "prog\n",
    ST + "old.sh": "#!/bin/sh\n",
}


def mk(**lists: list[str]) -> str:
    """A selftest Makefile in the format NIPA's validate_makefile_format wants."""
    return "".join(f"{var} := \\\n" + "".join(f"\t{i} \\\n" for i in items) + f"# end of {var}\n\n"
                   for var, items in lists.items())  # fmt: skip


@pytest.fixture
def repo(tmp_path: Path) -> Git:
    return make_repo(tmp_path / "repo", BASE)


def _run(git: Git, chk: Check, files: dict[str, str | None], tmp: Path) -> CheckResult:
    base = git.rev_parse("HEAD")
    for name, text in files.items():
        if text is None:
            (git.repo / name).unlink()
        else:
            write(git.repo, name, text)
    git.add_all()
    head = git.commit("change")
    assert base
    ctx = CheckContext(make_series(["[PATCH] x"]), Tree("t", str(git.repo)), git.repo, base,
                       (head,), 0, {}, tmp / "logs")  # fmt: skip
    return run_check(chk, ctx)


@pytest.mark.parametrize(
    ("files", "outcome"),
    [
        ({"net/a.c": BASE["net/a.c"] + "int c;\n"}, Outcome.PASS),
        # moved: one inline removed, one added
        ({"net/a.c": "int b;\nstatic inline int a(void) { return 1; }\n"}, Outcome.WARN),
        ({"net/a.c": BASE["net/a.c"] + "static inline void e(void) {}\n"}, Outcome.FAIL),
        ({"include/x.h": "static inline int y(void) { return 0; }\n"}, Outcome.PASS),
    ],
)
def test_source_inline(repo: Git, tmp_path: Path, files: dict[str, str | None],
                       outcome: Outcome) -> None:  # fmt: skip
    assert _run(repo, SourceInline(), files, tmp_path).outcome is outcome


@pytest.mark.parametrize(
    ("text", "outcome"),
    [
        ("static inline int y(void) { return 0; }\n", Outcome.PASS),
        ("static __always_inline int y(void) { return 0; }\n", Outcome.PASS),
        ("static int y(void);\nstatic const int z = 3;\n", Outcome.PASS),
        ("static int y(void)\n{\n\treturn 0;\n}\n", Outcome.FAIL),
    ],
)
def test_header_inline(repo: Git, tmp_path: Path, text: str, outcome: Outcome) -> None:
    res = _run(repo, HeaderInline(), {"include/x.h": BASE["include/x.h"] + text}, tmp_path)
    assert res.outcome is outcome
    if outcome is Outcome.FAIL:
        assert "include/x.h: static int y(void)" in Path(res.log_path or "").read_text()


@pytest.mark.parametrize(
    ("files", "options", "outcome", "desc"),
    [
        (
            {"net/a.c": "module_param(x, int, 0);\n"},
            {},
            Outcome.FAIL,
            "more uses of: module_param (+1)",
        ),
        (
            {"drivers/net/d.c": "void d(void)\n{\n\tdev_hold(dev);\n\tdev_put(dev);\n}\n"},
            {},
            Outcome.WARN,
            "more uses of: dev_put( (+1)",
        ),
        # replacing a call keeps the count
        (
            {"drivers/net/d.c": "void d(void)\n{\n\tdev_hold(dev); /* x */\n}\n"},
            {},
            Outcome.PASS,
            "no new use of deprecated APIs",
        ),
        # __free( only counts under drivers/net/
        (
            {"net/a.c": "void *p __free(kfree);\n"},
            {},
            Outcome.PASS,
            "no new use of deprecated APIs",
        ),
        (
            {"drivers/net/e.c": "void *p __free(kfree);\n"},
            {},
            Outcome.WARN,
            "more uses of: __free( (+1)",
        ),
        (
            {"net/a.c": "old_api();\n"},
            {"fail": [], "warn": ["old_api("]},
            Outcome.WARN,
            "more uses of: old_api( (+1)",
        ),
    ],
)
def test_deprecated_api(repo: Git, tmp_path: Path, files: dict[str, str | None],
                        options: dict[str, object], outcome: Outcome, desc: str) -> None:  # fmt: skip
    res = _run(repo, DeprecatedApi(options), files, tmp_path)
    assert (res.outcome, res.description) == (outcome, desc)


@pytest.mark.parametrize(
    ("files", "outcome", "missing"),
    [
        ({ST + "new.sh": "#!/bin/sh\n"}, Outcome.FAIL, ["new.sh: not listed in the Makefile"]),
        (
            {ST + "new.sh": "#!/bin/sh\n", ST + "Makefile": mk(TEST_PROGS=["new.sh", "old.sh"])},
            Outcome.PASS,
            [],
        ),
        (
            {ST + "tool.c": "int main(void) { return 0; }\n"},
            Outcome.FAIL,
            ["program tool not listed in the Makefile", "program tool not in"],
        ),
        (
            {
                ST + "tool.c": "int main(void) { return 0; }\n",
                ST + "Makefile": mk(TEST_PROGS=["old.sh"], TEST_GEN_FILES=["prog", "tool"]),
            },
            Outcome.FAIL,
            ["program tool not in tools/testing/selftests/net/.gitignore"],
        ),
        (
            {
                ST + "tool.c": "int main(void) { return 0; }\n",
                ST + ".gitignore": "prog\ntool\n",
                ST + "Makefile": mk(TEST_PROGS=["old.sh"], TEST_GEN_FILES=["prog", "tool"]),
            },
            Outcome.PASS,
            [],
        ),
        ({ST + "prog.bpf.c": "int x;\n"}, Outcome.PASS, []),
        # a config or .gitignore the patch touches stays sorted (underscores ignored)
        ({ST + "config": "CONFIG_A=y\nCONFIG_NET_A=m\nCONFIG_NETB=y\n"}, Outcome.PASS, []),
        (
            {ST + "config": "CONFIG_B=y\nCONFIG_A=y\n"},
            Outcome.FAIL,
            ["config: not sorted: 'CONFIG_A=y' should come before 'CONFIG_B=y'"],
        ),
        ({ST + ".gitignore": "# built\nzeta\nalpha\n"}, Outcome.FAIL, ["'alpha' should come"]),
        ({"net/new.sh": "#!/bin/sh\n"}, Outcome.PASS, []),
        # a Makefile the patch touches keeps NIPA's list format (validate_makefile_format)
        (
            {ST + "new.sh": "#!/bin/sh\n", ST + "Makefile": "TEST_PROGS := old.sh new.sh\n"},
            Outcome.FAIL,
            ["Makefile: Line 1: TEST_PROGS: one item per line, not 'old.sh new.sh'"],
        ),
        (
            {ST + "new.sh": "#!/bin/sh\n", ST + "Makefile": mk(TEST_PROGS=["old.sh", "new.sh"])},
            Outcome.FAIL,
            ["Lines 2-3: TEST_PROGS: 'new.sh' should come before 'old.sh'"],
        ),
        (
            {ST + "Makefile": mk(TEST_PROGS=["old.sh"]) + "TEST_PROGS += more.sh\n"},
            Outcome.FAIL,
            ["Line 5: TEST_PROGS: assigned in a second block (the first ends at line 3)"],
        ),
        (
            {ST + "Makefile": "TEST_PROGS := \\\n\ta.sh \\\n\tb.sh\n"},
            Outcome.FAIL,
            ["Line 3: TEST_PROGS: the list must end with a '#' comment line"],
        ),
        (
            {ST + "Makefile": mk(TEST_PROGS=["old.sh", "sub/x.sh"]) + "CFLAGS += -Wall -O2\n"},
            Outcome.PASS,
            [],
        ),
    ],
)
def test_check_selftest(repo: Git, tmp_path: Path, files: dict[str, str | None],
                        outcome: Outcome, missing: list[str]) -> None:  # fmt: skip
    res = _run(repo, CheckSelftest(), files, tmp_path)
    assert res.outcome is outcome, res.description
    log = Path(res.log_path or "").read_text()
    for m in missing:
        assert m in log


def test_parse_diff_new_and_deleted_files() -> None:
    text = (
        "diff --git a/x.c b/x.c\nnew file mode 100644\n--- /dev/null\n+++ b/x.c\n@@ -0,0 +1 @@\n"
        "+int x;\ndiff --git a/y.c b/y.c\ndeleted file mode 100644\n--- a/y.c\n+++ /dev/null\n"
        "@@ -1 +0,0 @@\n-int y;\n"
    )
    x, y = parse_diff(text)
    assert (x.path, x.new_file, x.added) == ("x.c", True, ["int x;"])
    assert (y.path, y.deleted, y.removed) == ("y.c", True, ["int y;"])
    assert parse_diff("garbage\n+++ nothing") == []


REAL = Path(__file__).parent / "data" / "checks"


def test_makefile_format_on_real_selftest_makefiles() -> None:
    """linux 6.12's mptcp and net selftest Makefiles predate NIPA's format rule: what it
    finds there (as validate_makefile_format does: multi-value lines, no closing comment)."""
    mptcp = (REAL / "selftests-mptcp-Makefile-6.12").read_text()
    found = makefile_format(mptcp)
    assert len(found) == 7
    assert "Line 9: TEST_PROGS: the list must end with a '#' comment line" in found
    assert not any("CFLAGS" in p for p in found)  # flags are not lists of tests
    net = (REAL / "selftests-net-Makefile-6.12").read_text()
    assert len(makefile_format(net)) == 73
    # a patch is judged by what it adds, not by what the file had
    assert added_makefile_problems(net, net) == []
    assert added_makefile_problems(mptcp, mptcp.replace("diag.sh", "diag.sh bogus.sh")) == [
        "Line 8: TEST_PROGS: one item per line, not 'mptcp_connect_checksum.sh pm_netlink.sh "
        "mptcp_join.sh diag.sh bogus.sh'"]  # fmt: skip
