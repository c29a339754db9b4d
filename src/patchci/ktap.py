"""Pure, streaming KTAP / TAP parser (KTAP v1, TAP 13/14, kselftest runner output).

Feed lines one at a time (``KtapParser.feed``) or hand over a whole log; ``finish()`` returns a
``Parsed`` tree. Never raises on bad input: malformed or missing lines become errors
recorded on the node they concern (kunit_parser's ``add_error``) and CRASH outcomes.

Streaming: ``KtapParser(on_test)`` hands each test to *on_test(level, node)* as it completes
(a block after its subtests, level 1 at the top) and keeps nothing of it: memory is bounded
by the nesting depth, not by the length of the output (the log itself is the caller's file).

Structure comes from three cues, combined:

* indentation (spaces/tabs, as KTAP v1 and kunit's TAP 14 print it);
* kselftest's ``# `` prefixing: ``# TAP version 13`` one ``# `` deeper than the open block opens
  a nested block, and ``# `` prefixes are then peeled off level by level;
* grammar, where the indentation does not tell (unindented nesting is closed by a fulfilled
  plan or a result line naming the ``# Subtest:`` header, as kunit_tool does).

Semantics (chosen, kept in one place):

* the directive decides, not ok/not ok: SKIP→SKIP, XFAIL→XFAIL, TODO→XFAIL (a known,
  tolerated failure), TIMEOUT→TIMEOUT, ERROR→ERROR; XPASS and unknown words fall back to
  ok→PASS / not ok→FAIL, as ktap.rst says;
* a parent is the worst of its children and of its own result (a parent's plain ``ok`` does not
  hide all-skipped children: they make it SKIP); CRASH dominates (``model.worst``);
* a planned subtest that never reported, or a block whose result line never came, is CRASH
  (TIMEOUT when the block's own result says TIMEOUT); after ``Bail out!`` missing tests are not
  synthesised and the block counts as FAIL;
* ``1..0`` is SKIP; a version line and nothing after it (a program that died after its
  header) is CRASH; no KTAP at all is ERROR (``exit_code`` 2).

Diagnostics and other text go to the log of the test they precede (kunit's rule); text after a
block's last result stays with the block. Log lines are kept relative to their block's level
(console timestamps, the block's indentation and its kselftest ``# `` prefixes removed).
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from patchci.model import Outcome, worst

log = logging.getLogger(__name__)

# Deeper nesting is treated as text: keeps to_dict()/json and dataclass equality (recursive)
# far from Python's recursion limit on hostile input.
MAX_DEPTH = 100
# Cap on synthesised "missing" nodes per block, against absurd plans like 1..999999999.
MAX_MISSING = 1000
# ... and per parse: a 12 KB file of blocks each planning 10^18 tests cost 1.3 s and 180 MB.
MAX_MISSING_TOTAL = 10000
# Parse errors kept per block: a million misnumbered results must not mean a million strings.
MAX_ERRORS = 100

_TIMESTAMP = re.compile(r"\[\s*\d+\.\d+\](?:\[\s*[A-Za-z]*\d+\])* ?")
_VERSION_ANY = re.compile(r"\b(K?TAP) version (\d{1,9})$")
_VERSION = re.compile(r"(K?TAP) version (\d{1,9})")
_PLAN = re.compile(r"1\.\.(\d{1,18})(?:\s*#\s*(.*))?")
# A second number after the first (`ok 1 2 selftests: net: x`, as a kselftest runner
# prints it; NIPA's parser allows it too) is not part of the name.
_RESULT = re.compile(r"(not ok|ok)(?:\s+(\d{1,18}))?(?:\s+\d{1,18}(?=\s+\S))?(?:\s+(.*))?")
_COMMENT = re.compile(r"\s#(?:\s|$)")
_SUBTEST = re.compile(r"#\s*Subtest:\s*(.*)")
_BAIL = re.compile(r"Bail out!\s*(.*)")
_TOTALS = re.compile(r"#\s*Totals:\s*(.*)")
# From word starts only, and short: `(\w+):` rescanned a long word from every position
# (a 48 KB Totals line: 9.8 s).
_TOTALS_ITEM = re.compile(r"\b(\w{1,64}):(\d{1,18})")
_RUNNER_NAME = re.compile(r"#\s*(selftests:\s*\S+:\s*\S.*)")
_TIME = re.compile(r"\btime=(\d{1,18}(?:\.\d{1,9})?)\s*(ms|us|s)?\b")
# kunit_tool stops reading here: what follows is the kernel going down, not test output.
_END = re.compile(
    r"\s*(?:List of all partitions:|Kernel panic - not syncing: VFS:|reboot: System halted)"
)
_END_FIRST = frozenset("LKr")
# First characters of the lines that are more than text: results, headers, plans,
# versions, `Bail out!`, the end markers.
_MATTERS = frozenset("on#1KTB") | _END_FIRST
# The first word of the diagnostics that matter (after "#"): `selftests: dir: prog`, `Totals:`.
_SPECIAL = frozenset(("selfte", "Totals"))

_SUPPORTED = {("KTAP", 1), ("TAP", 13), ("TAP", 14)}
_DIRECTIVES: dict[str, Outcome | None] = {
    "SKIP": Outcome.SKIP,
    "TODO": Outcome.XFAIL,
    "XFAIL": Outcome.XFAIL,
    "TIMEOUT": Outcome.TIMEOUT,
    "ERROR": Outcome.ERROR,
    "XPASS": None,  # kselftest's "unexpected pass": unknown to KTAP, falls back to ok/not ok
}
_CASELESS = {"SKIP", "TODO"}  # TAP makes these two case-insensitive
_OK_OUTCOMES = (Outcome.PASS, Outcome.SKIP, Outcome.XFAIL)

Ind = tuple[int, int]  # (kselftest "# " level, whitespace width): compared lexicographically
_FLUSH: Ind = (0, 0)


@dataclass(slots=True)
class TestNode:
    """One test (leaf) or one block of subtests, as reported, with inferred outcome. Read
    only (not frozen: a frozen dataclass costs 4x to build, a third of the parse)."""

    __test__ = False  # not a pytest class

    name: str
    number: int | None
    outcome: Outcome
    directive: str | None = None
    reason: str = ""
    duration: float | None = None
    children: tuple[TestNode, ...] = ()
    log: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()

    def walk(self) -> Iterator[tuple[tuple[str, ...], TestNode]]:
        """Descendants in pre-order, each with its path of names (self excluded)."""
        stack: list[tuple[tuple[str, ...], TestNode]]
        stack = [((c.name,), c) for c in reversed(self.children)]
        while stack:
            path, node = stack.pop()
            yield path, node
            stack.extend(((*path, c.name), c) for c in reversed(node.children))


@dataclass(frozen=True)
class Parsed:
    """A whole parse: synthetic root holding the top-level tests, plus run-level facts.
    A streaming parse's root has no children: *top_level* counts them."""

    root: TestNode
    version: str | None
    errors: tuple[str, ...]
    totals: dict[str, int] | None
    outcome: Outcome
    top_level: int = 0


# on_test(level, node): level 1 for a top-level test, its subtests at 2, ...
OnTest = Callable[[int, TestNode], None]


@dataclass(slots=True)
class _Frame:
    """An open block of subtests while parsing. Its children's outcomes and durations are
    summed up as they come; the children themselves are kept only when building a tree."""

    hdr: Ind
    kid: Ind | None = None  # indentation of its children's result lines, once seen
    name: str = ""
    version: str | None = None
    plan: int | None = None
    plan_reason: str = ""
    children: list[TestNode] = field(default_factory=list)
    n: int = 0  # children so far
    outcomes: set[Outcome] = field(default_factory=set)
    last: Outcome | None = None  # the last outcome added to *outcomes*
    duration: float | None = None  # sum of the children's
    log: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # diagnostics awaiting their result
    errors: list[str] = field(default_factory=list)
    next_num: int = 1
    seg_start: int = 0  # root only: first child of the current concatenated TAP stream
    bailed: str | None = None
    runner_name: str = ""  # last "# selftests: dir: prog" seen: names a child that crashes
    inherited: str = ""  # the parent's runner_name when this block opened: its own name

    eff: Ind = field(init=False)  # the children's indentation once seen, else the header's

    def __post_init__(self) -> None:
        self.eff = self.hdr

    @property
    def count(self) -> int:
        return self.n - self.seg_start

    def error(self, text: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(text)
        elif len(self.errors) == MAX_ERRORS:
            self.errors.append(f"more than {MAX_ERRORS} errors: the rest are not listed")


def _parse_duration(text: str) -> float | None:
    m = _TIME.search(text)
    if m is None:
        return None
    scale = {"ms": 1e-3, "us": 1e-6}.get(m.group(2) or "s", 1.0)
    return float(m.group(1)) * scale


def _parse_result(body: str) -> TestNode | None:
    """A result line as a leaf; its number is as written (None when absent) until the
    parser numbers it."""
    m = _RESULT.fullmatch(body)
    if m is None:
        return None
    verb, num, tail = m.groups()
    outcome = Outcome.PASS if verb == "ok" else Outcome.FAIL
    number = int(num) if num else None
    if not tail:
        return TestNode("", number, outcome)
    if "#" not in tail:  # the common case: no directive (tail has no outer whitespace)
        if tail[:1] == "-" and (len(tail) == 1 or tail[1] == " "):
            tail = tail[1:].strip()
        return TestNode(tail, number, outcome)
    rest = " " + tail
    cm = _COMMENT.search(rest)
    name, comment = (rest[: cm.start()], rest[cm.end() :]) if cm else (rest, "")
    name = name.strip()
    if name == "-" or name.startswith("- "):
        name = name[1:].strip()
    directive = None
    reason = ""
    duration = None
    if comment:
        comment = comment.strip()
        word, _, rest = comment.partition(" ")
        key = _directive_key(word)
        directive = key if key in _DIRECTIVES else None
        reason = rest if directive else comment
        duration = _parse_duration(reason) if "time=" in reason else None
        if duration is not None:
            reason = _TIME.sub("", reason)
        reason = " ".join(reason.split())
        outcome = (directive and _DIRECTIVES.get(directive)) or outcome
    return TestNode(name, number, outcome, directive, reason, duration)


def _directive_key(word: str) -> str:
    """The directive a comment's first word names: `SKIP:` and `SKIPPED` (both seen in
    real kselftest output) are SKIP; SKIP and TODO in any case, as TAP says."""
    bare = word.rstrip(":")
    upper = bare.upper()
    if upper == "SKIPPED":
        return "SKIP"
    return upper if upper in _CASELESS else bare


def _prefix_shape(residual: str) -> re.Pattern[str]:
    """A pattern for a console prefix learnt from the version line's: digit runs may
    change (timestamps, PIDs), and so may the padding before them (`[   12.0]` becomes
    `[  123.0]`); the rest, and the whitespace that ends the prefix, stay literal. kunit
    strips by length, which fails as soon as a number grows a digit."""
    parts: list[str] = []
    for m in re.finditer(r"(?P<num>\d+)|(?P<pad> +(?=\d))|.", residual, re.S):
        if m.group("num"):
            parts.append(r"\d+")
        elif m.group("pad"):
            parts.append(" *")
        else:
            parts.append(re.escape(m.group()))
    return re.compile("".join(parts))


def _strip_columns(text: str, cols: int) -> str:
    """*text* without the leading whitespace that fills its first *cols* columns."""
    col = i = 0
    while i < len(text) and text[i] in " \t":
        nxt = (col // 8 + 1) * 8 if text[i] == "\t" else col + 1
        if nxt > cols:
            break
        col, i = nxt, i + 1
    return text[i:]


def _combine(own: Outcome | None, frame: _Frame) -> Outcome:
    """A block's outcome: worst of its children and its own result (kunit's bubbling-up)."""
    parts = frame.outcomes.copy()
    if own is None:
        parts.add(Outcome.CRASH)  # its result line never came
    elif own is not Outcome.PASS or not frame.n:
        parts.add(own)  # a plain "ok" parent takes its children's verdict
    if frame.bailed is not None:
        parts.add(Outcome.FAIL)
    if len(parts) == 1:
        return next(iter(parts))
    return worst(parts, default=Outcome.SKIP)


class KtapParser:
    """Parser: ``feed(line)`` repeatedly, then ``finish()``. With *on_test*, each completed
    test goes there and no tree is built (unless *keep*): a streaming parse."""

    def __init__(self, on_test: OnTest | None = None, *, keep: bool | None = None) -> None:
        self._on_test = on_test
        self._keep = on_test is None if keep is None else keep
        self._stack: list[_Frame] = [_Frame(hdr=(0, 0))]
        self._started = False
        self._done = False  # the end marker was seen, or finish() was called
        self._widths: dict[str, Ind] = {}
        self._prefix: re.Pattern[str] | None = None
        self._version: str | None = None
        self._totals: dict[int, dict[str, int]] = {}
        self._lineno = 0
        self._result: Parsed | None = None
        self._at_end = False
        self._missing = 0  # synthesised "missing" nodes so far
        self._errors: list[str] = []  # streaming: the errors of tests no tree keeps

    # -- input ------------------------------------------------------------------------------

    def feed(self, line: str) -> None:
        """Consume one line (with or without its newline)."""
        # The hot path (one call per line of output, a million lines a run): kept inline.
        self._lineno += 1
        if self._done:
            return
        try:
            text = line.rstrip()
            if text[:1] == "[" and (m := _TIMESTAMP.match(text)) is not None:
                text = text[m.end() :]
            if self._prefix is not None and (pm := self._prefix.match(text)):
                text = text[pm.end() :]
            if not self._started:
                started = self._before_start(text)
                if started is None:
                    return
                text = started
            if text[:1] == "#":
                ind, body, rest = self._measure(text)
                first = body[:1]
            else:
                body = text.lstrip()
                first = body[:1]
                if first not in _MATTERS and not self._keep:
                    return  # plain text: only a tree keeps it
                if first in _END_FIRST and _END.match(text):
                    self._done = True
                    return
                rest = text
                if body is text:  # lstrip() returns the same string when nothing was stripped
                    ind = _FLUSH
                else:
                    ws = text[: len(text) - len(body)]
                    ind = self._widths.get(ws) or self._width(ws)
            # Each line kind starts with its own character: try only what can match.
            if first == "o" or first == "n":
                if r := _parse_result(body):
                    self._on_result(ind, r)
                    return
            elif first == "#":
                word = body[1:].lstrip()[:8]
                if word == "Subtest:" and (m := _SUBTEST.fullmatch(body)):
                    self._on_header(ind, "subtest", m.group(1).strip())
                    return
                if word[:6] not in _SPECIAL and not self._keep:
                    return  # a diagnostic: only a tree keeps it
            elif first == "1":
                if m := _PLAN.fullmatch(body):
                    self._on_plan(ind, int(m.group(1)), (m.group(2) or "").strip())
                    return
            elif (first == "K" or first == "T") and (m := _VERSION.fullmatch(body)):
                self._on_version(ind, m.group(1), int(m.group(2)))
                return
            if self._keep or first == "B" or first == "#":
                self._on_diag(ind, body, rest)
        except Exception as e:  # a parser bug must not lose a test run's verdict
            log.exception("ktap: internal error on line %d", self._lineno)
            self._stack[-1].error(f"line {self._lineno}: internal parser error: {e!r}")

    def _before_start(self, text: str) -> str | None:
        """Look for the start of the output; the line to parse as such, if it is one."""
        m = _VERSION_ANY.search(text)
        if m is None:
            if _PLAN.fullmatch(text):  # TAP 12: no version line, a plan starts it
                self._started = True
                return text
            if self._keep:
                self._stack[0].log.append(text)
            return None
        self._started = True
        residual = text[: m.start()]
        if residual.strip(" \t#"):
            # A console prefix (syslog tag, "<6>", a logger's timestamp…): strip its shape
            # from later lines.
            self._prefix = _prefix_shape(residual)
            text = text[len(residual) :]
        elif "#" in residual:
            return text  # "# TAP version": a kselftest block without the runner's header
        root = self._stack[0]
        root.hdr = root.eff = (0, len(residual))
        root.version = self._version = f"{m.group(1)} version {m.group(2)}"
        self._check_version(m.group(1), int(m.group(2)), root)
        return None

    def _width(self, ws: str) -> Ind:
        # A tab is 8 columns: a tab here and 8 spaces there are one level.
        ind = (0, len(ws.expandtabs(8)))
        if len(self._widths) < 64:  # a few indentations repeat over a whole log
            self._widths[ws] = ind
        return ind

    def _measure(self, text: str) -> tuple[Ind, str, str]:
        """Split a line that starts with "#" into its indentation, its body and its text at
        that level (kselftest's "# " prefixes, one per level, peeled off)."""
        depth = self._stack[-1].hdr[0]
        k = pos = 0
        while k < depth and (text.startswith("# ", pos) or text[pos:] == "#"):
            pos += 2
            k += 1
        rest = text[pos:]
        if rest.startswith("# ") and _VERSION.fullmatch(rest[2:]):
            return (k + 1, 0), rest[2:], rest[2:]  # kselftest nesting: one level deeper
        body = rest.lstrip()
        width = len(rest[: len(rest) - len(body)].expandtabs(8))
        return (k, width), body, rest

    # -- headers ----------------------------------------------------------------------------

    def _check_version(self, kind: str, num: int, frame: _Frame) -> None:
        if (kind, num) not in _SUPPORTED:
            frame.error(f"line {self._lineno}: unsupported version {kind} version {num}")

    def _on_version(self, ind: Ind, kind: str, num: int) -> None:
        version = f"{kind} version {num}"
        if self._version is None:
            self._version = version
        frame = self._on_header(ind, "version", version)
        if frame is not None:
            self._check_version(kind, num, frame)

    def _on_plan(self, ind: Ind, n: int, comment: str) -> None:
        frame = self._on_header(ind, "plan", str(n))
        if frame is not None and n == 0:
            frame.plan_reason = (
                comment.partition(" ")[2] if comment.upper().startswith("SKIP") else comment
            )

    def _on_header(self, ind: Ind, kind: str, value: str) -> _Frame | None:
        """Attach a version/subtest/plan line to the open block, or open a new block."""
        self._close_above(ind)
        top = self._stack[-1]
        is_root = len(self._stack) == 1
        if ind > top.eff:
            frame = self._open(ind)
        elif self._attachable(top, kind, is_root):
            frame = top
            frame.log.extend(frame.pending)
            frame.pending.clear()
        elif is_root and kind != "subtest" and (top.plan is None or top.count >= top.plan):
            frame = self._new_segment(top)  # another TAP stream appended (one per make target)
        elif kind == "plan":
            top.error(f"line {self._lineno}: unexpected plan line 1..{value}")
            return None
        else:
            frame = self._open(ind)  # unindented nesting
        if frame is None:
            return None
        if kind == "version":
            frame.version = value
        elif kind == "subtest":
            frame.name = value
        else:
            frame.plan = int(value)
        return frame

    @staticmethod
    def _attachable(top: _Frame, kind: str, is_root: bool) -> bool:
        if kind == "plan":
            return top.plan is None
        if top.n:
            return False
        if kind == "version":
            return top.version is None and top.plan is None
        return not is_root and not top.name

    def _new_segment(self, root: _Frame) -> _Frame:
        self._fill_missing(root, 0, Outcome.CRASH)
        root.plan = None
        root.seg_start = root.n
        root.next_num = 1
        return root

    def _open(self, ind: Ind) -> _Frame | None:
        parent = self._stack[-1]
        if len(self._stack) >= MAX_DEPTH:
            parent.error(f"line {self._lineno}: nesting deeper than {MAX_DEPTH}")
            return None
        frame = _Frame(hdr=ind, log=parent.pending, inherited=parent.runner_name)
        parent.pending = []
        parent.runner_name = ""
        self._stack.append(frame)
        return frame

    # -- results ----------------------------------------------------------------------------

    def _add(self, frame: _Frame, level: int, node: TestNode) -> None:
        """A completed test, child of *frame*, which sits at *level* - 1."""
        frame.n += 1
        if node.outcome is not frame.last:  # Enum's hash is slow; siblings mostly agree
            frame.outcomes.add(node.outcome)
            frame.last = node.outcome
        if node.duration is not None:
            frame.duration = node.duration + (frame.duration or 0.0)
        if self._keep:
            frame.children.append(node)
        elif node.errors and len(self._errors) < MAX_ERRORS:
            label = node.name or f"#{node.number}"
            self._errors.extend(f"{label}: {e}" for e in node.errors)
        if self._on_test is not None:
            self._on_test(level, node)

    def _on_result(self, ind: Ind, r: TestNode) -> None:
        stack = self._stack
        top = stack[-1]
        # (ind is top.kid: the usual case, a sibling's indentation, is one shared object)
        if ind is not top.kid and len(stack) > 1 and ind < top.eff:
            # Shallower than the open block's children: the result of that block (or of an
            # ancestor, the blocks in between having lost their result lines).
            while len(stack) > 2 and ind < stack[-2].eff:
                self._close(None)
            self._close(r, ind)
            return
        if (
            len(stack) > 1
            and ind == stack[-2].eff
            and (
                (top.name and r.name == top.name)
                or (top.plan is not None and top.count >= top.plan)
            )
        ):
            self._close(r, ind)  # unindented nesting: this result ends the block
            return
        if ind is not top.kid:
            if top.kid is None and ind >= top.hdr:
                top.kid = top.eff = ind
            elif ind > top.eff:
                frame = self._open(ind)  # an indentation-only subtest (TAP 14 allows it)
                if frame is not None:
                    frame.kid = frame.eff = ind
                    top = frame
        # The leaf itself.
        number = r.number
        if number is None or number == top.next_num:
            r.number = top.next_num
            top.next_num += 1
        else:
            r.number = self._take_number(top, number)
        if not r.name:
            r.name = top.runner_name
        top.runner_name = ""
        if top.pending:
            r.log = tuple(top.pending)
            top.pending = []
        self._add(top, len(stack), r)

    def _take_number(self, frame: _Frame, number: int | None) -> int:
        if number is None:
            number = frame.next_num
        elif number != frame.next_num:
            frame.error(
                f"line {self._lineno}: expected test number {frame.next_num} but found {number}"
            )
        frame.next_num = number + 1
        return number

    def _close_above(self, ind: Ind) -> None:
        """A header shallower than open blocks: those blocks lost their result lines."""
        while len(self._stack) > 1 and ind < self._stack[-1].hdr:
            self._close(None)

    def _close(self, r: TestNode | None, ind: Ind | None = None) -> None:
        frame = self._stack.pop()
        level = len(self._stack)  # the closed block's own level
        parent = self._stack[-1]
        if ind is not None and parent.kid is None:
            parent.kid = parent.eff = ind
        if r is None and self._at_end:
            frame.error("missing result line: output ended (crash or cut off?)")
        elif r is None:
            frame.error(f"line {self._lineno}: missing result line")
        missing = (
            Outcome.TIMEOUT if r is not None and r.outcome is Outcome.TIMEOUT else Outcome.CRASH
        )
        self._fill_missing(frame, level, missing)
        if not frame.n and frame.plan != 0:
            frame.error("subtest header but no subtest results")
        name = (r.name if r else "") or frame.name or frame.inherited
        node = TestNode(
            name=name,
            number=self._take_number(parent, r.number if r else None),
            outcome=_combine(r.outcome if r else None, frame),
            directive=r.directive if r else None,
            reason=(r.reason if r else "") or frame.plan_reason,
            duration=r.duration if r and r.duration is not None else frame.duration,
            children=tuple(frame.children),
            log=tuple(frame.log + frame.pending),
            errors=tuple(frame.errors),
        )
        parent.runner_name = ""
        self._add(parent, level, node)

    def _fill_missing(self, frame: _Frame, level: int, outcome: Outcome) -> None:
        """Planned tests that never reported: kunit's "missing expected subtest!" (CRASH).
        *level* is the frame's own (0 for the root)."""
        if frame.plan is None:
            return
        have = frame.count
        if have > frame.plan:
            frame.error(f"plan 1..{frame.plan} but {have} results")
        if have >= frame.plan or frame.bailed is not None:
            return
        frame.error(f"plan 1..{frame.plan} but only {have} results: missing subtests")
        room = max(0, MAX_MISSING_TOTAL - self._missing)
        listed = min(frame.plan - have, MAX_MISSING, room)
        self._missing += listed
        for i in range(have + 1, have + listed + 1):
            name = frame.runner_name if i == have + 1 else ""
            frame.runner_name = ""
            errors = ("missing expected subtest",)
            self._add(frame, level + 1, TestNode(name, i, outcome, errors=errors))
        if frame.plan - have > listed:
            frame.error(f"only the first {listed} missing subtests are listed")

    # -- diagnostics ------------------------------------------------------------------------

    def _on_diag(self, ind: Ind, body: str, rest: str) -> None:
        top = self._stack[-1]
        if self._keep:
            base = top.eff[1] if ind[0] == top.eff[0] else 0
            top.pending.append(_strip_columns(rest, min(ind[1], base)))
        first = body[:1]
        if first == "B" and (m := _BAIL.fullmatch(body)):
            top.bailed = m.group(1)
            top.error(f"line {self._lineno}: Bail out! {m.group(1)}".rstrip())
        elif first != "#":
            return
        elif m := _RUNNER_NAME.fullmatch(body):
            top.runner_name = m.group(1)
        elif m := _TOTALS.fullmatch(body):
            into = self._totals.setdefault(len(self._stack), {})
            for key, val in _TOTALS_ITEM.findall(m.group(1)):
                into[key] = into.get(key, 0) + int(val)

    # -- output -----------------------------------------------------------------------------

    def finish(self) -> Parsed:
        """End of input: close what is open (as crashed) and return the tree."""
        if self._result is None:
            self._result = self._finish()
            self._done = True
        return self._result

    def _finish(self) -> Parsed:
        self._at_end = True
        while len(self._stack) > 1:
            self._close(None)
        root = self._stack[0]
        if not self._started:
            root.error("could not find any KTAP output")
            outcome = Outcome.ERROR
        else:
            self._fill_missing(root, 0, Outcome.CRASH)
            if root.n or root.plan is not None:
                own = Outcome.SKIP if not root.n else Outcome.PASS
            else:
                # Only a version line: the program died after its header, it did not skip.
                own = Outcome.CRASH
            if not root.n:
                root.error("no tests run")
            outcome = _combine(own, root)
        node = TestNode(
            name="",
            number=None,
            outcome=outcome,
            reason=root.plan_reason,
            duration=root.duration,
            children=tuple(root.children),
            log=tuple(root.log + root.pending),
            errors=tuple(root.errors),
        )
        errors = [f"(run): {e}" for e in node.errors]
        errors += [f"{label}: {e}" for label, n in _labelled(node) for e in n.errors]
        errors += self._errors
        totals = self._totals[min(self._totals)] if self._totals else None
        return Parsed(node, self._version, tuple(errors), totals, outcome, root.n)


def _labelled(root: TestNode) -> Iterator[tuple[str, TestNode]]:
    """Descendants with a "/"-joined path for messages (unnamed tests shown as #N)."""
    stack = [(f"{c.name or f'#{c.number}'}", c) for c in reversed(root.children)]
    while stack:
        label, node = stack.pop()
        yield label, node
        stack.extend((f"{label}/{c.name or f'#{c.number}'}", c) for c in reversed(node.children))


def parse_lines(lines: Iterable[str], on_test: OnTest | None = None) -> Parsed:
    """Parse *lines*; with *on_test*, streaming (see ``KtapParser``)."""
    parser = KtapParser(on_test)
    feed = parser.feed
    for line in lines:
        feed(line)
    return parser.finish()


def parse_text(text: str) -> Parsed:
    # \r\n, \r and \n end lines (as universal newlines do: CR-only logs exist), but not
    # splitlines()'s form feeds and \x1c-\x1e, which occur inside test output.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return parse_lines(lines)


def counts(p: Parsed) -> dict[str, int]:
    """Leaf outcomes (tests that have no subtests), by Outcome value."""
    out: dict[str, int] = {}
    for _, node in p.root.walk():
        if not node.children:
            out[node.outcome.value] = out.get(node.outcome.value, 0) + 1
    return dict(sorted(out.items()))


def _node_dict(n: TestNode) -> dict[str, Any]:
    return {
        "name": n.name,
        "number": n.number,
        "outcome": n.outcome.value,
        "directive": n.directive,
        "reason": n.reason,
        "duration": None if n.duration is None else round(n.duration, 6),
        "errors": list(n.errors),
        "log": list(n.log),
        "children": [_node_dict(c) for c in n.children],
    }


def to_dict(p: Parsed) -> dict[str, Any]:
    """A JSON-able, stable form (used for golden files and ``--json``)."""
    return {
        "version": p.version,
        "outcome": p.outcome.value,
        "counts": counts(p),
        "totals": p.totals,
        "errors": list(p.errors),
        "root": _node_dict(p.root),
    }


_LABELS = {Outcome.PASS: "ok", Outcome.FAIL: "FAIL", Outcome.SKIP: "skip", Outcome.XFAIL: "xfail"}


def _fmt_duration(d: float) -> str:
    return f"{d * 1000:.0f}ms" if d < 1 else f"{d:.1f}s"


def render_tree(p: Parsed) -> str:
    """A human tree: one line per test, indented by depth, with outcome and duration."""
    lines = [f"{p.version or 'no KTAP version line'}: {p.outcome.value.upper()}"]
    for path, node in p.root.walk():
        label = _LABELS.get(node.outcome, node.outcome.name)
        text = f"{'  ' * (len(path) - 1)}{label:<4} {node.name or '<unnamed>'}"
        note = " ".join(x for x in (node.directive or "", node.reason) if x)
        if note:
            text += f"  # {note}"
        if node.duration is not None:
            text += f"  ({_fmt_duration(node.duration)})"
        lines.append(text)
    summary = ", ".join(f"{k}: {v}" for k, v in counts(p).items()) or "no tests"
    lines.append(f"tests: {summary}")
    if p.totals is not None:
        lines.append("kselftest totals: " + " ".join(f"{k}:{v}" for k, v in p.totals.items()))
    lines.extend(f"error: {e}" for e in p.errors)
    return "\n".join(lines) + "\n"


def exit_code(p: Parsed) -> int:
    """0: everything passed/skipped/xfailed; 1: failures or crashes; 2: no KTAP at all."""
    if p.version is None and not p.root.children:
        return 2
    return 0 if p.outcome in _OK_OUTCOMES else 1


_USAGE = "usage: patchci ktap parse [--json] FILE|-\n"


def cli(argv: list[str], stdout: TextIO, stdin: TextIO | None = None) -> int:
    """Body of ``patchci ktap parse FILE|-``: print the tree (or JSON), return the exit code."""
    as_json = "--json" in argv
    args = [a for a in argv if a != "--json"]
    if any(a in ("-h", "--help") for a in args):
        stdout.write(_USAGE)
        return 0
    if len(args) != 1 or (args[0].startswith("-") and args[0] != "-"):
        stdout.write(_USAGE)
        return 2
    if args[0] == "-":
        if stdin is None:  # bytes, whatever the locale: invalid UTF-8 must not stop us
            stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace")
        parsed = parse_lines(stdin)
    else:
        try:
            with open(args[0], encoding="utf-8", errors="replace") as f:
                parsed = parse_lines(f)
        except OSError as e:
            stdout.write(f"patchci ktap: cannot read {args[0]}: {e.strerror or e}\n")
            return 2
    if as_json:
        stdout.write(json.dumps(to_dict(parsed), indent=1, ensure_ascii=False) + "\n")
    else:
        stdout.write(render_tree(parsed))
    return exit_code(parsed)
