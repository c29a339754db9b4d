"""Build log parser: real gcc output (golden log + fresh compiles in tmp_path) and snippets."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest

from patchci import proc
from patchci.buildlog import (
    Diagnostic,
    WarningDelta,
    describe,
    diff_warnings,
    format_diagnostic,
    key,
    normalize_message,
    normalize_path,
    parse_diagnostics,
)
from tests.prereq import unavailable

DATA = Path(__file__).parent / "data" / "checks"
GOLDEN_ROOT = "/tmp/patchci-golden/linux"  # where tests/data/checks/gcc-12-build.log was built
REGEN = os.environ.get("PATCHCI_REGEN") == "1"


@pytest.fixture
def gcc() -> None:
    if shutil.which("gcc") is None:
        unavailable("gcc not installed (make test installs it)")


needs_gcc = pytest.mark.usefixtures("gcc")


def _as_json(ds: list[Diagnostic]) -> list[dict[str, object]]:
    return [dataclasses.asdict(d) | {"context": list(d.context)} for d in ds]


def _compile(tmp_path: Path, name: str, code: str, *flags: str) -> list[Diagnostic]:
    src = tmp_path / name
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text(code)
    res = proc.run(
        ["gcc", "-Wall", "-Wextra", *flags, "-c", str(src), "-o", os.devnull], cwd=tmp_path
    )
    return parse_diagnostics(res.stderr.splitlines(), src_root=str(tmp_path))


# ---------------------------------------------------------------- golden log


def test_golden_gcc_log_matches_expected() -> None:
    """A real `make -k` log (gcc 12, stdout and stderr merged as proc.stream gives them).
    Set PATCHCI_REGEN=1 to rewrite the expected file after checking the diff by eye."""
    lines = (DATA / "gcc-12-build.log").read_text().splitlines()
    got = _as_json(parse_diagnostics(lines, src_root=GOLDEN_ROOT))
    expected_path = DATA / "gcc-12-build.expected.json"
    if REGEN:
        expected_path.write_text(json.dumps(got, indent=1) + "\n")
    assert got == json.loads(expected_path.read_text())


def test_golden_gcc_log_details() -> None:
    ds = parse_diagnostics((DATA / "gcc-12-build.log").read_text().splitlines(), GOLDEN_ROOT)
    warnings = [d for d in ds if d.severity == "warning"]
    assert [d.flag for d in warnings] == [
        "-Wunused-variable",
        "-Wformat=",
        "-Wtype-limits",
        "-Wimplicit-fallthrough=",
        "-Wunused-function",
        "-Wmaybe-uninitialized",
    ]
    assert [d.severity for d in ds].count("note") == 2
    unused = warnings[0]
    assert (unused.file, unused.line, unused.column) == ("net/demo/core.c", 10, 13)
    assert unused.function == "demo_classify"
    assert unused.message == "unused variable 'unused_counter'"
    assert any("^~~~" in c for c in unused.context)
    fmt = warnings[1]
    assert fmt.function == "demo_report"
    assert any("%ld" in c for c in fmt.context)  # fix-it line kept
    header = warnings[4]
    assert header.file == "include/demo/util.h"
    assert header.function is None
    assert header.context[0] == "In file included from net/demo/core.c:2:"
    ld = [d for d in ds if d.tool == "ld"]
    assert ld[0].message == "undefined reference to `demo_missing'"
    assert ld[0].severity == "error"
    assert ld[0].context == ("/usr/bin/ld: net/demo/main.o: in function `main':",)
    assert ld[1].message == "collect2: ld returned 1 exit status"
    mk = [d for d in ds if d.tool == "make"]
    assert len(mk) == 1
    assert (mk[0].file, mk[0].line, mk[0].message) == ("Makefile", 8, "*** [demo] Error 1")
    # kbuild-style quiet lines are not glued to a diagnostic as context
    assert not any(c.startswith("  CC") for d in ds for c in d.context)


def test_golden_log_against_itself_has_no_delta() -> None:
    ds = parse_diagnostics((DATA / "gcc-12-build.log").read_text().splitlines(), GOLDEN_ROOT)
    delta = diff_warnings(ds, ds)
    assert delta.new == [] and delta.fixed == []
    assert delta.unchanged_count == 9  # 6 warnings + 3 errors; notes do not count
    assert describe(delta) == "no new warnings"


# ---------------------------------------------------------------- real gcc runs

BEFORE = """\
#include <stdio.h>

int f(int x)
{
\tint unused = 0;
\tlong v = x;

\tprintf("%d\\n", v);
\treturn x;
}
"""

AFTER = """\
#include <stdio.h>

/* A comment that shifts every line down. */
/* And another one. */

int f(int x)
{
\tint unused = 0;
\tlong v = x;

\tprintf("%ld\\n", v);
\tswitch (x) {
\tcase 1:
\t\tx++;
\tcase 2:
\t\tx--;
\t\tbreak;
\t}
\treturn x;
}
"""


@needs_gcc
def test_real_gcc_fix_one_add_one_is_seen(tmp_path: Path) -> None:
    """NIPA compares counts: 2 warnings before, 2 after, "no change". We compare sets."""
    before = _compile(tmp_path / "a", "net/x/f.c", BEFORE)
    after = _compile(tmp_path / "b", "net/x/f.c", AFTER)
    assert sum(d.severity == "warning" for d in before) == 2
    assert sum(d.severity == "warning" for d in after) == 2
    delta = diff_warnings(before, after)
    assert [d.flag for d in delta.new] == ["-Wimplicit-fallthrough="]
    assert [d.flag for d in delta.fixed] == ["-Wformat="]
    assert delta.unchanged_count == 1  # the unused variable moved 3 lines: same key
    assert delta.new[0].file == "net/x/f.c"
    assert describe(delta) == ("new warnings: 1 (fixed: 1): net/x/f.c: this statement may "
                               "fall through")  # fmt: skip
    assert describe(diff_warnings(after, after)) == "no new warnings"
    assert describe(diff_warnings(before, before[:0])) == "no new warnings (fixed: 2)"


@needs_gcc
def test_real_gcc_paths_relative_to_src_root(tmp_path: Path) -> None:
    src = tmp_path / "drivers" / "net" / "d.c"
    src.parent.mkdir(parents=True)
    src.write_text("int g(void)\n{\n\tint i;\n\treturn 0;\n}\n")
    res = proc.run(["gcc", "-Wall", "-c", str(src), "-o", os.devnull], cwd=tmp_path)
    assert str(tmp_path) in res.stderr  # gcc printed the absolute path
    ds = parse_diagnostics(res.stderr.splitlines(), src_root=str(tmp_path))
    assert [(d.file, d.line, d.flag) for d in ds] == [("drivers/net/d.c", 3, "-Wunused-variable")]
    # ./ prefixes are resolved too
    res = proc.run(["gcc", "-Wall", "-c", "./drivers/net/d.c", "-o", os.devnull], cwd=tmp_path)
    ds2 = parse_diagnostics(res.stderr.splitlines(), src_root=str(tmp_path))
    assert [key(d) for d in ds2] == [key(d) for d in ds]


@needs_gcc
def test_real_gcc_werror_and_fatal(tmp_path: Path) -> None:
    ds = _compile(tmp_path, "e.c", "void h(void) { int z; }\n", "-Werror=unused-variable")
    assert [(d.severity, d.flag) for d in ds] == [("error", "-Wunused-variable")]
    ds = _compile(tmp_path, "m.c", '#include "nothere.h"\n')
    assert [(d.severity, d.message) for d in ds] == [
        ("fatal error", "nothere.h: No such file or directory")
    ]
    assert "compilation terminated." in ds[0].context


@needs_gcc
def test_real_gcc_same_warning_twice_is_counted_twice(tmp_path: Path) -> None:
    one = "void a(void)\n{\n\tint i;\n}\n"
    two = one + "void b(void)\n{\n\tint i;\n}\n"
    d1 = _compile(tmp_path / "1", "t.c", one)
    d2 = _compile(tmp_path / "2", "t.c", two)
    delta = diff_warnings(d1, d2)
    assert len(delta.new) == 1 and delta.new[0].function == "b"
    assert delta.unchanged_count == 1


@needs_gcc
def test_real_link_error(tmp_path: Path) -> None:
    (tmp_path / "l.c").write_text("int missing(void);\nint main(void) { return missing(); }\n")
    res = proc.run(["gcc", "l.c", "-o", "l.out"], cwd=tmp_path)
    ds = parse_diagnostics(res.stderr.splitlines(), src_root=str(tmp_path))
    msgs = [d.message for d in ds]
    assert "undefined reference to `missing'" in msgs
    assert "collect2: ld returned 1 exit status" in msgs
    assert all(d.severity == "error" for d in ds)


# ---------------------------------------------------------------- snippets

CLANG = """\
net/mptcp/pm.c:12:6: warning: unused variable 'x' [-Wunused-variable]
        int x;
            ^
net/mptcp/pm.c:20:3: error: call to undeclared function 'foo'; ISO C99 and later do not support implicit function declarations [-Werror,-Wimplicit-function-declaration]
                foo();
                ^
1 warning and 1 error generated.
"""


def test_clang_format() -> None:
    ds = parse_diagnostics(CLANG.splitlines())
    assert [(d.severity, d.flag) for d in ds] == [
        ("warning", "-Wunused-variable"),
        ("error", "-Wimplicit-function-declaration"),
    ]
    assert ds[0].context == ("        int x;", "            ^")
    assert not any("generated" in c for d in ds for c in d.context)


SPARSE = """\
  CHECK   net/core/dev.c
net/core/dev.c:1234:17: warning: incorrect type in assignment (different base types)
net/core/dev.c:1234:17:    expected unsigned int [usertype] x
net/core/dev.c:1234:17:    got restricted __be32 [usertype]
net/core/dev.c:99:6: warning: symbol 'foo' was not declared. Should it be static?
"""


def test_sparse_with_continuations() -> None:
    ds = parse_diagnostics(SPARSE.splitlines())
    assert [d.message for d in ds] == [
        "incorrect type in assignment (different base types)",
        "symbol 'foo' was not declared. Should it be static?",
    ]
    assert len(ds[0].context) == 2 and "expected unsigned int" in ds[0].context[0]
    assert ds[1].flag is None


KBUILD = """\
WARNING: modpost: vmlinux.o: section mismatch in reference: foo (section: .text) -> bar (section: .init.text)
WARNING: modpost: missing MODULE_LICENSE() in drivers/net/dummy2.o
ERROR: modpost: "mptcp_foo" [net/mptcp/mptcp_diag.ko] undefined!
make[2]: *** [scripts/Makefile.modpost:126: Module.symvers] Error 1
make[1]: *** [Makefile:1944: modpost] Error 2
make[1]: *** Waiting for unfinished jobs....
make: *** No rule to make target 'drivers/net/nothere.o', needed by 'drivers/net/built-in.a'.  Stop.
vmlinux.o: warning: objtool: foo_bar+0x3c: unreachable instruction
ld.lld: error: undefined symbol: mptcp_missing
>>> referenced by protocol.c:123 (net/mptcp/protocol.c:123)
>>>               net/mptcp/protocol.o:(mptcp_sendmsg) in archive vmlinux.a
WARNING: unmet direct dependencies detected for MPTCP_IPV6
  Depends on [n]: NET [=y] && INET [=y] && MPTCP [=y] && IPV6 [=n]
  Selected by [y]:
"""


def test_kbuild_modpost_make_lld_objtool() -> None:
    ds = parse_diagnostics(KBUILD.splitlines())
    got = [(d.tool, d.severity, d.file) for d in ds]
    assert got == [
        ("modpost", "warning", "vmlinux.o"),
        ("modpost", "warning", "drivers/net/dummy2.o"),
        ("modpost", "error", "net/mptcp/mptcp_diag.ko"),
        ("make", "error", "scripts/Makefile.modpost"),
        ("make", "error", "Makefile"),
        ("make", "error", ""),
        ("ld", "warning", "vmlinux.o"),
        ("ld", "error", ""),
        ("kbuild", "warning", ""),
    ]
    assert ds[3].message == "*** [Module.symvers] Error 1"
    assert ds[5].message.startswith("*** No rule to make target 'drivers/net/nothere.o'")
    assert len(ds[7].context) == 2  # the two ">>>" lines
    assert ds[8].context[0].startswith("  Depends on")
    # objtool offsets change with code layout: not part of the key
    moved = dataclasses.replace(ds[6], message="objtool: foo_bar+0x44: unreachable instruction")
    assert key(moved) == key(ds[6])


def test_out_of_tree_build_paths() -> None:
    """`make O=build` runs gcc in the build dir, which prints `../net/...` paths."""
    log = [
        "make[1]: Entering directory '/src/linux/build'",
        "../net/mptcp/protocol.c:5:1: warning: x [-Wfoo]",
        "make[1]: Leaving directory '/src/linux/build'",
        "/src/linux/net/mptcp/protocol.c:7:1: warning: x [-Wfoo]",
    ]
    ds = parse_diagnostics(log, src_root="/src/linux")
    assert [d.file for d in ds] == ["net/mptcp/protocol.c", "net/mptcp/protocol.c"]
    assert len(diff_warnings(ds[:1], ds[1:]).new) == 0


def test_normalize_path() -> None:
    assert normalize_path("./net/./core/../core/dev.c") == "net/core/dev.c"
    assert normalize_path("/b/linux/net/dev.c", "/b/linux/") == "net/dev.c"
    assert normalize_path("/elsewhere/x.c", "/b/linux") == "/elsewhere/x.c"
    assert normalize_path("dev.c", "/b/linux", cwd="/b/linux/net") == "net/dev.c"


def test_key_strips_positions_from_messages() -> None:
    a = Diagnostic("f.c", 3, 1, "warning", "‘x’ redeclared, previous at f.c:12:5 (line 12)")
    b = Diagnostic("f.c", 9, 2, "warning", "'x' redeclared, previous at f.c:40:1 (line 40)")
    assert key(a) == key(b)
    assert normalize_message("declared at line 7") == "declared at line N"
    assert key(dataclasses.replace(a, severity="error")) != key(a)
    assert key(dataclasses.replace(a, file="g.c")) != key(a)


def test_errors_are_named_in_describe() -> None:
    e = Diagnostic("f.c", 1, 1, "error", "boom")
    w = Diagnostic("f.c", 2, 1, "warning", "meh")
    assert describe(WarningDelta(new=[e, w])) == "new warnings: 2, 1 errors: f.c: boom"
    long = Diagnostic("f.c", 2, 1, "warning", "x" * 400)
    assert len(describe(WarningDelta(new=[long]))) == 250


@pytest.mark.parametrize(
    "junk",
    [
        [],
        [""],
        ["\x00\x01garbage", "::::", "a:b:c: warning:", "make: ***", ":1:2: error: x"],
        ["    7 | int x;", "      |     ^"],  # context with no diagnostic before it
        ["x" * 10000],
    ],
)
def test_never_raises(junk: list[str]) -> None:
    ds = parse_diagnostics(junk)
    assert all(isinstance(d, Diagnostic) for d in ds)
    assert all(format_diagnostic(d) for d in ds)
    diff_warnings(ds, [])


RUSTC = """\
  RUSTC L rust/kernel.o
error[E0425]: cannot find value `y` in this scope
  --> rust/kernel/sync/arc.rs:120:9
    |
120 |         y
    |         ^ help: a local variable with a similar name exists: `x`

warning: unused variable: `z`
 --> rust/kernel/lib.rs:30:9
   |
30 |     let z = 1;
   |         ^ help: if this is intentional, prefix it with an underscore: `_z`
   |
   = note: `#[warn(unused_variables)]` on by default

error: aborting due to 1 previous error; 1 warning emitted
"""


def test_rustc_diagnostics() -> None:
    ds = parse_diagnostics(RUSTC.splitlines(), src_root="/src")
    assert [(d.severity, d.file, d.line, d.column, d.flag) for d in ds] == [
        ("error", "rust/kernel/sync/arc.rs", 120, 9, "E0425"),
        ("warning", "rust/kernel/lib.rs", 30, 9, None),
    ]
    assert ds[0].message == "cannot find value `y` in this scope"
    assert any("#[warn(unused_variables)]" in c for c in ds[1].context)
