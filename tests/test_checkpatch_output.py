"""checkpatch.pl output parser, on real outputs of Linux 6.1's checkpatch."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from patchci.checkpatch_output import CheckpatchResult, parse_checkpatch, verdict
from patchci.model import Outcome

DATA = Path(__file__).parent / "data" / "checks"


def _load(name: str) -> CheckpatchResult:
    return parse_checkpatch((DATA / name).read_text().splitlines())


def test_default_mode_counts_and_locations() -> None:
    r = _load("checkpatch-default.txt")
    assert (r.errors, r.warnings, r.checks, r.lines_checked) == (11, 2, 0, 15)
    assert r.has_total and not r.clean
    assert len(r.messages) == 13
    assert Counter(m.level for m in r.messages) == {"ERROR": 11, "WARNING": 2}
    first = r.messages[0]
    assert first.level == "ERROR"
    assert first.text == "open brace '{' following function definitions go on the next line"
    assert (first.file, first.line, first.patch_line) == ("net/mptcp/pm_netlink.c", 1274, 16)
    assert first.type is None
    assert first.context == ("+static int mptcp_pm_debug_count(struct mptcp_sock *msk){",)
    comma = r.messages[3]
    assert comma.text == "space required after that ',' (ctx:VxV)"
    assert comma.context == ("+    int i,cnt=0;", "          ^")
    last = r.messages[-1]
    assert (last.level, last.line, last.patch_line) == ("WARNING", 1279, 21)
    assert last.text == "printk() should include KERN_<LEVEL> facility level"
    # NOTE: paragraphs after the total are not messages nor context
    assert not any("NOTE" in c for m in r.messages for c in m.context)


def test_default_mode_verdict() -> None:
    outcome, desc = verdict(_load("checkpatch-default.txt"))
    assert outcome is Outcome.FAIL
    assert desc.startswith("total: 11 errors, 2 warnings, 0 checks; ERROR: ")
    assert len(desc) <= 250


def test_clean() -> None:
    r = _load("checkpatch-clean.txt")
    assert (r.errors, r.warnings, r.checks, r.lines_checked) == (0, 0, 0, 17)
    assert r.clean and r.messages == ()
    assert verdict(r) == (Outcome.PASS, "total: 0 errors, 0 warnings, 0 checks")


def test_terse_show_types() -> None:
    r = _load("checkpatch-terse-types.txt")
    assert not r.has_total  # terse mode prints no total: counted from the messages
    assert (r.errors, r.warnings, r.checks) == (11, 2, 0)
    assert Counter(m.type for m in r.messages) == {
        "SPACING": 8,
        "OPEN_BRACE": 1,
        "LEADING_SPACE": 1,
        "TRAILING_WHITESPACE": 1,
        "TRAILING_STATEMENTS": 1,
        "PRINTK_WITHOUT_KERN_LEVEL": 1,
    }
    m = r.messages[0]
    assert (m.file, m.line, m.patch_line) == ("/build/p/0001-mptcp-debug.patch", 16, 16)
    assert verdict(r) == (
        Outcome.FAIL,
        "total: 11 errors, 2 warnings, 0 checks; LEADING_SPACE, OPEN_BRACE, "
        "PRINTK_WITHOUT_KERN_LEVEL, SPACING, TRAILING_STATEMENTS, TRAILING_WHITESPACE",
    )


def test_terse_and_default_agree() -> None:
    """Same patch, two modes: the same messages at the same patch lines."""
    d, t = _load("checkpatch-default.txt"), _load("checkpatch-terse-types.txt")
    assert [(m.level, m.text, m.patch_line) for m in d.messages] == [
        (m.level, m.text, m.patch_line) for m in t.messages
    ]


STRICT_TYPES = """\
WARNING:LONG_LINE: line length of 101 exceeds 80 columns
#20: FILE: net/mptcp/pm.c:30:
+	pr_debug("a very long line ...");

CHECK:PARENTHESIS_ALIGNMENT: Alignment should match open parenthesis
#25: FILE: net/mptcp/pm.c:35:
+	foo(a,
+	    b);

WARNING:COMMIT_LOG_LONG_LINE: Prefer a maximum 75 chars per line (possible unwrapped commit description?)
#7:\x20
This commit message line is way too long to be accepted by the checkpatch script ok

total: 0 errors, 2 warnings, 1 checks, 40 lines checked
"""


def test_show_types_normal_mode_and_checks() -> None:
    r = parse_checkpatch(STRICT_TYPES.splitlines())
    assert [m.type for m in r.messages] == [
        "LONG_LINE",
        "PARENTHESIS_ALIGNMENT",
        "COMMIT_LOG_LONG_LINE",
    ]
    assert r.messages[1].level == "CHECK"
    assert r.messages[1].context == ("+\tfoo(a,", "+\t    b);")
    log_msg = r.messages[2]
    assert (log_msg.file, log_msg.line, log_msg.patch_line) == (None, None, 7)
    assert verdict(r) == (
        Outcome.WARN,
        "total: 0 errors, 2 warnings, 1 checks; COMMIT_LOG_LONG_LINE, LONG_LINE, "
        "PARENTHESIS_ALIGNMENT",
    )


@pytest.mark.parametrize(
    ("total", "outcome"),
    [
        ("total: 0 errors, 0 warnings, 0 checks, 5 lines checked", Outcome.PASS),
        ("total: 0 errors, 1 warnings, 0 checks, 5 lines checked", Outcome.WARN),
        ("total: 0 errors, 0 warnings, 3 checks, 5 lines checked", Outcome.WARN),
        ("total: 1 errors, 0 warnings, 0 checks, 5 lines checked", Outcome.FAIL),
        ("total: 2 errors, 4 warnings, 5 checks, 5 lines checked", Outcome.FAIL),
        # without --strict older checkpatch leaves the checks out
        ("total: 0 errors, 1 warnings, 5 lines checked", Outcome.WARN),
    ],
)
def test_verdict_table(total: str, outcome: Outcome) -> None:
    assert verdict(parse_checkpatch([total]))[0] is outcome


def test_totals_of_several_patches_add_up() -> None:
    r = parse_checkpatch(
        [
            "total: 1 errors, 0 warnings, 0 checks, 5 lines checked",
            "total: 0 errors, 2 warnings, 1 checks, 7 lines checked",
        ]
    )
    assert (r.errors, r.warnings, r.checks, r.lines_checked) == (1, 2, 1, 12)


def test_long_description_is_cut() -> None:
    lines = [f"WARNING:TYPE_NUMBER_{i:03d}_WITH_A_LONG_NAME: x" for i in range(40)]
    outcome, desc = verdict(parse_checkpatch(lines))
    assert outcome is Outcome.WARN
    assert len(desc) <= 250 and desc.endswith("more)")


@pytest.mark.parametrize("junk", [[], [""], ["#12: FILE: x.c:3:", "+x", "ERROR:", "total: x"]])
def test_never_raises(junk: list[str]) -> None:
    r = parse_checkpatch(junk)
    assert isinstance(verdict(r)[0], Outcome)
