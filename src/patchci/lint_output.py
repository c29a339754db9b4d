"""Linter outputs (shellcheck, pylint, ruff, yamllint) as findings, and what a patch added.

Pure parsers of each tool's machine format. A finding's key leaves out the line number
(code and message only), so a finding that moved with the code around it is not new;
what counts is the multiset of keys before and after the patch, as for build warnings.
Severities follow NIPA's reading of each tool: an error fails, a warning warns.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

ERROR, WARNING, INFO = "error", "warning", "info"


class LintParseError(ValueError):
    """The tool printed something that is not its machine format (ours: a broken tool)."""


@dataclass(frozen=True)
class Finding:
    file: str
    line: int | None
    code: str
    severity: str  # ERROR | WARNING | INFO
    message: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.file, self.code, self.message)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.severity}: {self.code} {self.message}"


def _json(text: str, tool: str) -> Any:
    try:
        return json.loads(text or "null")
    except ValueError as e:
        raise LintParseError(f"{tool}: not JSON: {e}") from e


def _int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def parse_shellcheck(text: str) -> list[Finding]:
    """`shellcheck -f json1`: levels error, warning, info, style (info and style: INFO)."""
    data = _json(text, "shellcheck")
    comments = data.get("comments") if isinstance(data, dict) else None
    if not isinstance(comments, list):
        raise LintParseError("shellcheck: no comments list in its json1 output")
    level = {"error": ERROR, "warning": WARNING}
    return [Finding(str(c.get("file", "")), _int(c.get("line")), f"SC{c.get('code')}",
                    level.get(str(c.get("level")), INFO), str(c.get("message", "")))
            for c in comments if isinstance(c, dict)]  # fmt: skip


def parse_pylint(text: str) -> list[Finding]:
    """`pylint --output-format=json`: fatal/error fail; warning/convention warn (NIPA's
    E#### more: fail, [WC]#### more: warn); refactor/info are INFO."""
    data = _json(text, "pylint")
    if data is None:
        return []
    if not isinstance(data, list):
        raise LintParseError("pylint: its json output is not a list")
    sev = {"fatal": ERROR, "error": ERROR, "warning": WARNING, "convention": WARNING}
    return [Finding(str(m.get("path", "")), _int(m.get("line")), str(m.get("message-id", "")),
                    sev.get(str(m.get("type")), INFO), str(m.get("message", "")))
            for m in data if isinstance(m, dict)]  # fmt: skip


def parse_ruff(text: str, root: str = "") -> list[Finding]:
    """`ruff check --output-format json`: every finding fails (NIPA: more lines, fail).
    Absolute file names are made relative to *root*."""
    data = _json(text, "ruff")
    if data is None:
        return []
    if not isinstance(data, list):
        raise LintParseError("ruff: its json output is not a list")
    prefix = root.rstrip("/") + "/" if root else ""
    out = []
    for m in data:
        if not isinstance(m, dict):
            continue
        name = str(m.get("filename", ""))
        loc = m.get("location")
        row = _int(loc.get("row")) if isinstance(loc, dict) else None
        out.append(Finding(name.removeprefix(prefix), row, str(m.get("code") or "syntax"),
                           ERROR, str(m.get("message", ""))))  # fmt: skip
    return out


_YAMLLINT = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): \[(?P<sev>error|warning)\] "
                       r"(?P<msg>.*?)(?: \((?P<rule>[\w-]+)\))?$")  # fmt: skip


def parse_yamllint(text: str) -> list[Finding]:
    """`yamllint -f parsable`: `file:line:col: [error|warning] message (rule)`."""
    out = []
    for line in text.splitlines():
        m = _YAMLLINT.match(line.strip())
        if m:
            out.append(Finding(m["file"], int(m["line"]), m["rule"] or "syntax", m["sev"],
                               m["msg"]))  # fmt: skip
    return out


def new_findings(before: Iterable[Finding], after: Sequence[Finding]) -> list[Finding]:
    """The findings of *after* beyond those of *before* (by key, counted)."""
    left = Counter(f.key for f in before)
    out = []
    for f in after:
        if left[f.key]:
            left[f.key] -= 1
        else:
            out.append(f)
    return out
