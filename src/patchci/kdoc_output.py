"""Pure parser for `scripts/kernel-doc -none` warnings, and their before/after comparison.

Two formats exist: the Perl script's `file:line: warning: text` and the Python rewrite's
`Warning: file:line text`. Warnings become `buildlog.Diagnostic`s (tool "kernel-doc"), so
they are keyed without line numbers and compared as multisets exactly like build warnings.
Lines that are neither are kept as `unparsed`: when their number grows the tool itself
misbehaved on the patch (NIPA fails the check then too).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from patchci import buildlog
from patchci.buildlog import Diagnostic, WarningDelta
from patchci.model import Outcome

_PERL = re.compile(
    r"^(?P<file>[^\s:][^:]*?):(?P<line>\d{1,9}):\s*(?P<lvl>warning|error|info|Warning|Error):\s*"
    r"(?P<msg>(?:.*\S)?)\s*$"
)
_PY = re.compile(
    r"^(?P<lvl>Warning|Error|WARNING|ERROR|Info|INFO):\s+(?P<file>[^\s:][^:]*?):(?P<line>\d{1,9}):?"
    r"\s+(?:warning:\s*)?(?P<msg>(?:.*\S)?)\s*$"
)
# Summaries such as "3 warnings" or "2 warnings as Errors" say nothing new.
_SUMMARY = re.compile(r"^\d+ (?:warnings?|errors?)\b", re.IGNORECASE)


@dataclass(frozen=True)
class KdocOutput:
    warnings: tuple[Diagnostic, ...]
    unparsed: tuple[str, ...] = ()


@dataclass(frozen=True)
class KdocDelta:
    warnings: WarningDelta
    before: int
    after: int
    unparsed_before: int = 0
    unparsed_after: int = 0


def _diag(m: re.Match[str], line: str, src_root: str | None) -> Diagnostic:
    sev = m.group("lvl").lower()
    return Diagnostic(
        file=buildlog.normalize_path(m.group("file"), src_root),
        line=int(m.group("line")),
        column=None,
        severity="note" if sev == "info" else sev,
        message=m.group("msg"),
        raw=line,
        tool="kernel-doc",
    )


def parse_kdoc(lines: Iterable[str], src_root: str | None = None) -> KdocOutput:
    """Every warning in kernel-doc's output; file names relative to *src_root* if given."""
    warnings: list[Diagnostic] = []
    unparsed: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line.strip() or _SUMMARY.match(line.strip()):
            continue
        m = _PY.match(line) or _PERL.match(line)
        if m:
            warnings.append(_diag(m, line, src_root))
        else:
            unparsed.append(line)
    return KdocOutput(tuple(warnings), tuple(unparsed))


def key(w: Diagnostic) -> tuple[str, str]:
    """The file and the message without line numbers."""
    return buildlog.key(w)


def diff(before: KdocOutput, after: KdocOutput) -> KdocDelta:
    """Which warnings the patch added and removed (multiset of keys)."""
    return KdocDelta(
        warnings=buildlog.diff_warnings(before.warnings, after.warnings),
        before=len(before.warnings),
        after=len(after.warnings),
        unparsed_before=len(before.unparsed),
        unparsed_after=len(after.unparsed),
    )


def describe(delta: KdocDelta) -> str:
    """ "Warnings before: 3 after: 4 (add: 2 del: 1)", plus unparsed lines when they grew."""
    desc = (
        f"Warnings before: {delta.before} after: {delta.after}"
        f" (add: {len(delta.warnings.new)} del: {len(delta.warnings.fixed)})"
    )
    if delta.unparsed_after > delta.unparsed_before:
        desc += f"; unparsed lines before: {delta.unparsed_before} after: {delta.unparsed_after}"
    return desc


def verdict(delta: KdocDelta) -> tuple[Outcome, str]:
    """FAIL when a warning is new or kernel-doc printed more lines we cannot parse."""
    bad = bool(delta.warnings.new) or delta.unparsed_after > delta.unparsed_before
    return (Outcome.FAIL if bad else Outcome.PASS), describe(delta)
