"""Pure parser for `scripts/checkpatch.pl` output, normal and `--terse`/`--emacs` modes.

Normal mode::

    ERROR:OPEN_BRACE: open brace '{' following function definitions go on the next line
    #16: FILE: net/mptcp/pm_netlink.c:1274:
    +static int mptcp_pm_debug_count(struct mptcp_sock *msk){

(the `TYPE:` part only with `--show-types`). Terse mode: `file:16: ERROR:OPEN_BRACE: text`.
Never raises; lines it does not know are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from patchci.model import Outcome

LEVELS = ("ERROR", "WARNING", "CHECK")
MAX_DESCRIPTION = 250  # Patchwork shows one short line

# The text is stripped in code: a lazy `.*?` before `\s*$` is quadratic on long blanks.
_HEADER = re.compile(r"^(?P<level>ERROR|WARNING|CHECK):(?:(?P<type>[A-Z][A-Z0-9_]*):)?(?P<text>.*)")
_TERSE = re.compile(
    r"^(?P<file>[^\s:][^:]*?):(?P<line>\d{1,9}):\s+(?P<level>ERROR|WARNING|CHECK):"
    r"(?:(?P<type>[A-Z][A-Z0-9_]*):)?(?P<text>.*)"
)
# Context lines kept per message: a tuple grown line by line is quadratic (1 MB of context:
# 29 s), and a maintainer reads the first few.
MAX_CONTEXT = 40
_WHERE = re.compile(r"^#(?P<pline>\d{1,9}):\s*(?:FILE:\s*(?P<file>.+?):(?P<line>\d{1,9}):)?\s*$")
_TOTAL = re.compile(
    r"(?:^|\s)total: (?P<e>\d{1,9}) errors?, (?P<w>\d{1,9}) warnings?, (?:(?P<c>\d{1,9}) checks?, )?"
    r"(?P<l>\d{1,9}) lines? checked"
)
_PATCH_SUFFIXES = (".patch", ".diff", ".mbox", ".eml")
_CLEAN = re.compile(r"has no obvious style problems")
_DIRTY = re.compile(r"has style problems, please review")


@dataclass(frozen=True)
class CheckpatchMessage:
    """One report. `line` is the line in `file` (the tree's file), `patch_line` the `#N` line
    of the patch; `type` is known only with --show-types."""

    level: str
    text: str
    type: str | None = None
    file: str | None = None
    line: int | None = None
    patch_line: int | None = None
    context: tuple[str, ...] = ()


@dataclass(frozen=True)
class CheckpatchResult:
    """Parsed output. Counts come from the `total:` lines when there are some, else from
    the messages (terse mode prints no total)."""

    messages: tuple[CheckpatchMessage, ...]
    errors: int
    warnings: int
    checks: int
    lines_checked: int | None = None
    has_total: bool = False
    clean: bool = False

    @property
    def types(self) -> tuple[str, ...]:
        """Distinct message types, sorted; the text stands in when types were not shown."""
        return tuple(sorted({m.type or f"{m.level}: {m.text}" for m in self.messages}))


@dataclass
class _Acc:
    messages: list[CheckpatchMessage]
    totals: list[tuple[int, int, int, int]]
    clean: bool = False
    dirty: bool = False


def _add_context(msgs: list[CheckpatchMessage], line: str) -> None:
    last = msgs[-1]
    w = _WHERE.match(line)
    if w and last.patch_line is None and not last.context:
        msgs[-1] = CheckpatchMessage(
            last.level,
            last.text,
            last.type,
            w.group("file") or last.file,
            int(w.group("line")) if w.group("line") else last.line,
            int(w.group("pline")),
        )
    elif len(last.context) < MAX_CONTEXT:
        msgs[-1] = CheckpatchMessage(
            last.level, last.text, last.type, last.file, last.line, last.patch_line,
            last.context + (line,),
        )  # fmt: skip


def _feed(acc: _Acc, line: str, in_block: bool) -> bool:
    """Take one line; return whether the next line still belongs to the current message."""
    t = _TOTAL.search(line)
    if t:
        acc.totals.append(
            (int(t.group("e")), int(t.group("w")), int(t.group("c") or 0), int(t.group("l")))
        )
        return False
    if _CLEAN.search(line):
        acc.clean = True
        return False
    if _DIRTY.search(line):
        acc.dirty = True
        return False
    m = _TERSE.match(line)
    if m:
        # The location is checkpatch's input: with a patch as input, that is a patch line.
        n, file = int(m.group("line")), m.group("file")
        pline = n if file.endswith(_PATCH_SUFFIXES) else None
        acc.messages.append(
            CheckpatchMessage(
                m.group("level"), m.group("text").strip(), m.group("type"), file, n, pline
            )
        )
        return True
    m = _HEADER.match(line)
    if m:
        acc.messages.append(
            CheckpatchMessage(m.group("level"), m.group("text").strip(), m.group("type"))
        )
        return True
    if not line.strip():
        return False
    if in_block and acc.messages:
        _add_context(acc.messages, line)
        return True
    return False


def parse_checkpatch(lines: Iterable[str]) -> CheckpatchResult:
    """Parse checkpatch output (one or several patches; totals are summed)."""
    acc = _Acc([], [])
    in_block = False
    for raw in lines:
        in_block = _feed(acc, raw.rstrip("\r\n"), in_block)
    msgs = tuple(acc.messages)
    if acc.totals:
        e, w, c = (sum(t[i] for t in acc.totals) for i in range(3))
        lines_checked: int | None = sum(t[3] for t in acc.totals)
    else:
        e, w, c = (sum(1 for m in msgs if m.level == lv) for lv in LEVELS)
        lines_checked = None
    return CheckpatchResult(
        messages=msgs,
        errors=e,
        warnings=w,
        checks=c,
        lines_checked=lines_checked,
        has_total=bool(acc.totals),
        clean=acc.clean and not acc.dirty and not msgs,
    )


def _summary(parsed: CheckpatchResult) -> str:
    return f"total: {parsed.errors} errors, {parsed.warnings} warnings, {parsed.checks} checks"


def verdict(parsed: CheckpatchResult) -> tuple[Outcome, str]:
    """PASS on 0/0/0, WARN on warnings or checks only, FAIL on any error.

    The description is the totals and the distinct message types, e.g.
    "total: 1 errors, 2 warnings, 0 checks; LONG_LINE, SPACING". Empty output counts as
    clean (terse mode prints nothing then); the caller judges checkpatch's exit status.
    """
    head = _summary(parsed)
    if parsed.errors:
        outcome = Outcome.FAIL
    elif parsed.warnings or parsed.checks:
        outcome = Outcome.WARN
    else:
        return Outcome.PASS, head
    types = list(parsed.types)
    desc = f"{head}; {', '.join(types)}"
    while len(desc) > MAX_DESCRIPTION and len(types) > 1:
        types.pop()
        hidden = len(parsed.types) - len(types)
        desc = f"{head}; {', '.join(types)} (+{hidden} more)"
    return outcome, desc[:MAX_DESCRIPTION]
