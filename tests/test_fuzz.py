"""Every pure parser against mutations of the real logs and mails in tests/data.

Mutations: byte flips, truncation, NUL, invalid UTF-8, huge lines, deep indentation, huge
numbers, duplicated slices. Any exception other than the parser's documented error is a bug
(the parsers run inside the daemon on text that patch authors and patched trees control).
Bounded for `make test`; PATCHCI_FUZZ_EXAMPLES=100000 runs a real campaign.

Then cost: each parser's CPU time on 2 MB and 8 MB of its real input repeated, and on one
long line of each shape that ever made a parser quadratic, must grow at most linearly, with
slack for noise (ratio ≤ LINEAR_SLACK × 4). bench/ prints time per MB at 1 to 8 MB.
"""

from __future__ import annotations

import lzma
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchci import buildlog, checkpatch_output, crash, kdoc_output, ktap, maintainers, subject
from patchci.sources import mail, mbox

DATA = Path(__file__).parent / "data"
EXAMPLES = int(os.environ.get("PATCHCI_FUZZ_EXAMPLES", "30"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # hangs are caught by the per-example CPU budget below
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# CPU seconds one mutated input (at most a few hundred KB) may cost a parser.
EXAMPLE_BUDGET = 5.0
LINEAR_SLACK = 2.0


def _seeds(*patterns: str, limit: int = 200_000) -> list[bytes]:
    out: list[bytes] = []
    for pattern in patterns:
        for p in sorted(DATA.glob(pattern)):
            raw = lzma.decompress(p.read_bytes()) if p.suffix == ".xz" else p.read_bytes()
            out.append(raw[:limit])
    assert out, f"no seed files for {patterns}"
    return out


_INVALID_UTF8 = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"]
# Hostile snippets inserted whole (a fuzzer's dictionary): what a mutation of single bytes
# would take millions of cases to build.
_NESTED_MIME = b"".join(
    b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i) for i in range(1200)
)
_DICTIONARY = [
    b"=?idna?q?ab=FF?=",
    b"=?punycode?q?=FF?=",
    b"=?undefined?b?YQ==?=",
    b"=?ut\0f8?q?a?=",
    b"=?utf-8?q?J\xe9r\xf4me?=",
    b"=?x-unknown?b?\xff\xfe?=",
    b"[PATCH v" + b"9" * 5000 + b" 1/" + b"9" * 5000 + b"]",
    b"[PATCH 1/999999999]",
    b"\nX-Patchwork-Id: " + b"9" * 5000 + b"\n",
    b"\nFrom: " + b":" * 1000 + b"\n",
    b"\nCc: " + b"<" * 2000 + b"\n",
    b"\n" + _NESTED_MIME,
    b"\nF:\t" + b"*" * 12 + b"x\n",
    b"\nN:\t" + b"(" * 1000 + b"\n",
    b"\nK:\t" + b"[" * 500 + b"\n",
    b"\n1..999999999999999999\n",
    b"\n# Totals: " + b"a" * 20000 + b"\n",
    b"\na.c:" + b"9" * 5000 + b":1: warning: x\n",
    b"\n#" + b"9" * 5000 + b": FILE: a.c:1:\n",
    b"\ntotal: " + b"9" * 5000 + b" errors, 0 warnings, 1 lines checked\n",
    b"\n------------[ cut here ]------------\n",
    b"\nCall Trace:\n <IRQ>\n",
]
_HUGE = [b"x", b"9", b"(", b"*", b"[a]", b" ", b"#", b":", b"=?", b"-", b"\t"]


@st.composite
def mutations(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "nul", "utf8", "huge", "indent",
                                   "number", "dup", "token", "token"]))  # fmt: skip
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            data[min(pos, len(data) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "nul":
            data[pos:pos] = b"\0"
        elif op == "utf8":
            data[pos:pos] = draw(st.sampled_from(_INVALID_UTF8))
        elif op == "huge":
            data[pos:pos] = draw(st.sampled_from(_HUGE)) * draw(st.integers(1_000, 40_000))
        elif op == "indent":
            unit = draw(st.sampled_from([b"# ", b"    ", b"\t", b" # "]))
            data[pos:pos] = b"\n" + unit * draw(st.integers(50, 3_000))
        elif op == "number":
            data[pos:pos] = b"9" * draw(st.integers(4_300, 6_000))
        elif op == "token":
            data[pos:pos] = draw(st.sampled_from(_DICTIONARY))
        elif op == "dup":
            end = draw(st.integers(pos, min(len(data), pos + 5_000)))
            data[pos:pos] = data[pos:end] * draw(st.integers(2, 20))
    return bytes(data)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _lines(raw: bytes) -> list[str]:
    return _text(raw).split("\n")


def _run_mbox(raw: bytes) -> object:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "in.mbox"
        path.write_bytes(raw)
        return mbox.load_series(path)


def _run_mail(raw: bytes) -> object:
    try:
        return mail.parse_mail(raw)
    except mail.MalformedMail:  # its documented error
        return None


def _run_maintainers(raw: bytes) -> object:
    entries = maintainers.parse_maintainers(_text(raw))
    files = ["net/mptcp/protocol.c", "drivers/net/ethernet/intel/e1000/e1000_main.c",
             "tools/testing/selftests/net/mptcp/mptcp_join.sh", "a" * 300]  # fmt: skip
    return maintainers.entries_for(files, entries, patch_text="+ ptp_clock\n")


# name -> (the parser on raw bytes, seed files)
PARSERS: dict[str, tuple[Callable[[bytes], object], tuple[str, ...]]] = {
    "ktap": (lambda raw: ktap.parse_text(_text(raw)), ("ktap/*.tap", "ktap/kunit-test-data/*.log")),
    "crash": (lambda raw: crash.detect(_lines(raw)), ("console/*.log",)),
    "mail": (_run_mail, ("mail/*.eml", "mail/garbage.bin", "patchwork/net-foo-v1.mbox")),
    "mbox": (_run_mbox, ("mail-corpus/*.mbox", "patchwork/*.mbox")),
    "subject": (
        lambda raw: [subject.parse_subject(s) for s in _text(raw).split("\n")[:50]],
        ("mail-corpus/base-different-versions.mbox",),
    ),
    "buildlog": (lambda raw: buildlog.parse_diagnostics(_lines(raw)), ("checks/gcc-12-build.log",)),
    "checkpatch": (
        lambda raw: checkpatch_output.verdict(checkpatch_output.parse_checkpatch(_lines(raw))),
        ("checks/checkpatch-*.txt",),
    ),
    "kdoc": (lambda raw: kdoc_output.parse_kdoc(_lines(raw)), ("checks/kernel-doc-warnings.txt",)),
    "maintainers": (_run_maintainers, ("checks/MAINTAINERS-6.1.xz",)),
    "get_maintainer": (
        lambda raw: maintainers.get_maintainer_output(_lines(raw)),
        ("checks/get_maintainer-*.txt",),
    ),  # fmt: skip
}


def _budgeted(fn: Callable[[bytes], object], raw: bytes) -> float:
    t0 = time.process_time()
    fn(raw)
    return time.process_time() - t0


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_parser_survives_mutated_real_input(name: str) -> None:
    fn, patterns = PARSERS[name]
    # MAINTAINERS is large: mutate its first 200 KB, the parse is per line anyway.
    seeds = _seeds(*patterns)

    @FUZZ
    @given(mutations(seeds))
    def run(raw: bytes) -> None:
        spent = _budgeted(fn, raw)
        assert spent < EXAMPLE_BUDGET, f"{name}: {spent:.1f}s CPU on {len(raw)} bytes"

    run()


def test_ktap_streaming_agrees_with_the_tree_on_mutated_input() -> None:
    """The executors parse by streaming, the CLI and the goldens by tree: two paths of one
    parser, which must not tell different stories about the same (hostile) output."""
    seeds = _seeds("ktap/*.tap", "ktap/kunit-test-data/*.log")

    def post_order(node: ktap.TestNode, level: int = 1) -> list[tuple[object, ...]]:
        out: list[tuple[object, ...]] = []
        for c in node.children:
            out += post_order(c, level + 1)
            out.append((level, c.name, c.number, c.outcome, c.reason, c.duration))
        return out

    @FUZZ
    @given(mutations(seeds))
    def run(raw: bytes) -> None:
        lines = _text(raw).replace("\r\n", "\n").replace("\r", "\n").split("\n")
        tree = ktap.parse_lines(lines)
        seen: list[tuple[object, ...]] = []
        streamed = ktap.parse_lines(
            lines,
            lambda lv, n: seen.append((lv, n.name, n.number, n.outcome, n.reason, n.duration)),
        )
        assert seen == post_order(tree.root)
        assert (streamed.outcome, streamed.version, streamed.totals, streamed.top_level) == (
            tree.outcome,
            tree.version,
            tree.totals,
            len(tree.root.children),
        )

    run()


# Long lines of the shapes that made a parser quadratic (one regex backtracking over the
# line from every position): a long word, digits before a file name, a Totals line, a
# "From " line with times, blanks inside a message, nested groups, a header of colons.
SHAPES: dict[str, Callable[[int], bytes]] = {
    "word": lambda n: b"a" * n,
    "digits-file": lambda n: b"x" + b"1" * n + b".c:",
    "totals": lambda n: b"# Totals: " + b"a" * n,
    "from-times": lambda n: b"From " + b"12:00 " * (n // 6),
    "blanks": lambda n: b"WARNING: x" + b" " * n + b"y",
    "parens": lambda n: b"x(" * (n // 2),
    "groups": lambda n: b"Subject: " + b"[a]" * (n // 3),
    "colons": lambda n: b"From: " + b":" * n,
    "stars": lambda n: b"F:\t" + b"*a" * (n // 2),
    "warning": lambda n: b"a.c:1:2: warning: #warning " + b"A" * n + b" [-Wcpp]",
    "context": lambda n: b"WARNING: x\n#1: FILE: a.c:1:\n" + b"+ x\n" * (n // 4),
    # a header folded over many continuation lines
    "folded": lambda n: b"Subject: [PATCH] x\n" + b" a\n" * (n // 3),
    "maintainer": lambda n: b"A Person <a@b.c> (maintainer:" + b"X " * (n // 2) + b")",
}


def _cost(name: str, data: bytes, floor: float = 0.02) -> float:
    """The least CPU time of 3 runs (a garbage collection or a loaded machine adds to
    one run, never removes), at least *floor* (below 20 ms the clock's grain dominates)."""
    return max(min(_budgeted(PARSERS[name][0], data) for _ in range(3)), floor)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PARSERS))
def test_parser_cost_is_linear_in_real_input(name: str) -> None:
    """CPU time on 2 MB and 8 MB of the parser's real inputs, repeated."""
    blob = b"\n".join(_seeds(*PARSERS[name][1]))
    small, big = ((blob * ((n << 20) // len(blob) + 1))[: n << 20] for n in (2, 8))
    t_small, t_big = _cost(name, small), _cost(name, big, floor=0.0)
    assert t_big <= LINEAR_SLACK * 4 * t_small, (
        f"{name}: {t_small:.2f}s CPU for 2 MB but {t_big:.2f}s for 8 MB: not linear"
    )


@pytest.mark.slow
@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("name", sorted(PARSERS))
def test_parser_cost_is_linear_in_a_long_line(name: str, shape: str) -> None:
    """One long line of each shape, 64 KB then 256 KB, after the head of a real input."""
    head = _seeds(*PARSERS[name][1])[0][:2000] + b"\n"
    small, big = (head + SHAPES[shape](n << 10) + b"\n" for n in (64, 256))
    t_small, t_big = _cost(name, small), _cost(name, big, floor=0.0)
    assert t_big <= LINEAR_SLACK * 4 * t_small, (
        f"{name}/{shape}: {t_small:.2f}s CPU for 64 KB but {t_big:.2f}s for 256 KB: not linear"
    )


# The first campaign's finds (issue: hardening, part 7), each a case that raised before.
_DIGITS = "9" * 5000


def _mail_of(headers: str) -> bytes:
    return (headers + "Message-Id: <1@x>\n\nbody\n").encode()


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        # int() refuses more than 4 300 digits: ValueError in four parsers
        ("subject", f"[PATCH v{_DIGITS} 1/{_DIGITS}] x".encode()),
        ("checkpatch", f"a.c:{_DIGITS}: WARNING: x\n#{_DIGITS}: FILE: a.c:{_DIGITS}:\n".encode()),
        ("kdoc", f"a.c:{_DIGITS}: warning: x\n".encode()),
        ("buildlog", f"a.c:{_DIGITS}:{_DIGITS}: warning: x\n".encode()),
        ("mail", _mail_of(f"Subject: x\nX-Patchwork-Id: {_DIGITS}\n")),
        # charsets of encoded words that no errors="replace" saves
        ("mail", _mail_of("Subject: =?undefined?q?abc?=\n")),
        ("mail", _mail_of("Subject: =?idna?q?ab=FFc?=\n")),
        ("mail", _mail_of("Subject: =?punycode?q?ab=FFc?=\n")),
        ("mail", _mail_of("Subject: =?ut\0f8?q?abc?=\n")),
        ("mail", _mail_of("Content-Type: text/plain; charset=\0US-ASCII\nSubject: x\n")),
        # recursion in the stdlib: 1 000 colons in From:, 1 200 nested multiparts
        ("mail", _mail_of("From: " + ":" * 1000 + "\nSubject: x\n")),
        ("mail", _mail_of("Subject: x\nMIME-Version: 1.0\n") + _NESTED_MIME),
        ("mbox", b"From a@b Thu Jan  1 00:00:00 1970\n" + _mail_of("Subject: =?idna?q?=FF?=\n")),
        # MAINTAINERS from the patched tree: N: of 1 000 "(", F: of many stars
        ("maintainers", b"X\nN:\t" + b"(" * 1000 + b"\nF:\tnet/" + b"*" * 40 + b"x\n"),
    ],
)
def test_known_reproducers_no_longer_raise(name: str, raw: bytes) -> None:
    fn, _ = PARSERS[name]
    assert _budgeted(fn, raw) < EXAMPLE_BUDGET


def test_maintainers_stars_do_not_backtrack() -> None:
    """F: globs backtracked exponentially (9 stars: 6 s, 10 stars: 33 s)."""
    entry = maintainers.parse_maintainers("X\nF:\t" + "*a" * 10 + "b\n")
    t0 = time.process_time()
    assert not maintainers.file_matches(entry[0].files[0], "a" * 40 + "c")
    assert time.process_time() - t0 < 1.0
    assert maintainers.file_matches("net/*/[a-c]*.c", "net/mptcp/ctrl.c")
    assert not maintainers.file_matches("net/*/[^a-c]*.c", "net/mptcp/ctrl.c")
    assert maintainers.file_matches("net/[!m]ptcp/", "net/mptcp/ctrl.c")  # Perl: "!" literal
