"""kernel-doc warnings: parse the real output, compare before/after without line numbers."""

from __future__ import annotations

from pathlib import Path

from patchci.kdoc_output import describe, diff, key, parse_kdoc, verdict
from patchci.model import Outcome

DATA = Path(__file__).parent / "data" / "checks"


def _real() -> list[str]:
    return (DATA / "kernel-doc-warnings.txt").read_text().splitlines()


def test_real_output() -> None:
    out = parse_kdoc(_real(), src_root="/build/p")
    assert out.unparsed == ()
    assert [(w.file, w.line, w.severity) for w in out.warnings] == [
        ("kdbad.c", 8, "warning"),
        ("kdbad.c", 19, "warning"),
        ("net/core/dev_ioctl.c", 462, "warning"),
    ]
    assert out.warnings[0].message == "Function parameter or member 'b' not described in 'foo_bar'"
    assert key(out.warnings[2]) == (
        "net/core/dev_ioctl.c",
        "warning: Function parameter or member 'data' not described in 'dev_ioctl'",
    )


def test_python_kernel_doc_format() -> None:
    """The Python rewrite (6.15+) logs `Warning: file:line text`."""
    out = parse_kdoc(
        [
            "Warning: net/core/dev_ioctl.c:470 function parameter 'data' not described in"
            " 'dev_ioctl'",
            "Warning: include/net/sock.h:12: No description found for return value of 'x'",
            "2 warnings",
        ]
    )
    assert out.unparsed == ()
    assert [(w.file, w.line) for w in out.warnings] == [
        ("net/core/dev_ioctl.c", 470),
        ("include/net/sock.h", 12),
    ]
    assert out.warnings[0].message == "function parameter 'data' not described in 'dev_ioctl'"


def test_diff_ignores_moved_lines_and_counts_sets() -> None:
    before = parse_kdoc(_real())
    # The patch adds 5 lines above everything, documents 'b' and breaks 'c'.
    after = parse_kdoc(
        [
            "/build/p/kdbad.c:25: warning: Function parameter or member 'y' not described in"
            " 'foo_s'",
            "net/core/dev_ioctl.c:467: warning: Function parameter or member 'data' not"
            " described in 'dev_ioctl'",
            "/build/p/kdbad.c:13: warning: Function parameter or member 'c' not described in"
            " 'foo_bar'",
        ]
    )
    delta = diff(before, after)
    assert [w.message for w in delta.warnings.new] == [
        "Function parameter or member 'c' not described in 'foo_bar'"
    ]
    assert [w.line for w in delta.warnings.fixed] == [8]
    assert delta.warnings.unchanged_count == 2
    assert describe(delta) == "Warnings before: 3 after: 3 (add: 1 del: 1)"
    assert verdict(delta)[0] is Outcome.FAIL


def test_only_fixes_pass() -> None:
    before = parse_kdoc(_real())
    after = parse_kdoc(_real()[1:])
    assert verdict(diff(before, after)) == (
        Outcome.PASS,
        "Warnings before: 3 after: 2 (add: 0 del: 1)",
    )


def test_more_unparsed_lines_fail() -> None:
    """kernel-doc choking on the patch shows as lines we cannot read."""
    before = parse_kdoc(_real())
    after = parse_kdoc([*_real(), "Use of uninitialized value $x in pattern match at line 2"])
    assert after.unparsed == ("Use of uninitialized value $x in pattern match at line 2",)
    outcome, desc = verdict(diff(before, after))
    assert outcome is Outcome.FAIL
    assert desc.endswith("unparsed lines before: 0 after: 1")


def test_never_raises() -> None:
    out = parse_kdoc(["", "\x00", ":1: warning: x", "Warning:", "a" * 5000])
    assert out.warnings == ()
    assert len(out.unparsed) == 4
