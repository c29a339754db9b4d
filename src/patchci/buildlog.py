"""Pure parser for build logs: gcc/clang/sparse diagnostics, linker, make and modpost errors.

Build checks compare the warning *sets* before and after a patch (a multiset per key, the key
holding no line numbers), so a patch that fixes one warning and adds another shows
1 new + 1 fixed, where NIPA's count comparison sees nothing.

Never raises on bad input: lines it does not understand are skipped.
"""

from __future__ import annotations

import posixpath
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

SEVERITIES = ("warning", "error", "note", "fatal error")
# Severities that count in a warning delta; notes only explain another diagnostic.
COUNTED = frozenset({"warning", "error", "fatal error"})
MAX_CONTEXT = 30

# file:line[:col]: severity: message   (gcc, clang, sparse, kernel-doc, objtool with a line)
_DIAG = re.compile(
    r"^(?P<file>[^\s:][^:]*?):(?P<line>\d{1,9}):(?:(?P<col>\d{1,9}):)?\s*"
    r"(?P<sev>fatal error|error|warning|note|remark)\s*:\s*(?P<msg>(?:.*\S)?)\s*$"
)
# sparse continuation: "file:line:col:    expected int" (no severity word)
_SPARSE_CONT = re.compile(
    r"^(?P<file>[^\s:][^:]*?):(?P<line>\d{1,9}):(?:\d+:)?\s{2,}(?P<text>\S.*)$"
)
# "tool: error: text" / "vmlinux.o: warning: objtool: ..." (no line number)
_TOOL = re.compile(
    r"^(?P<who>[^\s:]+):\s+(?P<sev>fatal error|error|warning):\s*(?P<msg>(?:.*\S)?)\s*$"
)
_FUNC = re.compile(
    r"^(?P<file>[^\s:][^:]*?): In (?:static |member |)(?:function|constructor|destructor)"
    r" [‘'`](?P<fn>[^’']+)[’']:\s*$"
)
_TOPLEVEL = re.compile(r"^(?P<file>[^\s:][^:]*?): At (?:top level|global scope):\s*$")
_INCLUDED = re.compile(r"^(?:In file included from|\s+from)\s+\S+?:\d+(?::\d+)?[:,]\s*$")
# GNU ld: "foo.c:(.text+0x5): undefined reference to `bar'"
_LD_REF = re.compile(
    r"^(?:\S*ld(?:\.\w+)?:\s+)?(?P<file>[^\s:][^:]*?):\((?P<sect>[^)]*)\):\s*(?P<msg>(?:.*\S)?)\s*$"
)
_LD_INFUNC = re.compile(r"^\S*ld(?:\.\w+)?:\s+\S+: in function [`'].*[`']:\s*$")
# ld.lld: "ld.lld: error: undefined symbol: foo"
_LLD = re.compile(
    r"^(?P<tool>\S*ld\.lld|\S*ld):\s+(?P<sev>error|warning):\s*(?P<msg>(?:.*\S)?)\s*$"
)
_LLD_REF = re.compile(r"^>>> ")
_MAKE = re.compile(r"^(?P<tool>g?make(?:\[\d+\])?): \*\*\* (?P<msg>(?:.*\S)?)\s*$")
_MAKE_TARGET = re.compile(
    r"^\[(?P<mk>[^:\]]+):(?P<line>\d{1,9}): (?P<target>[^\]]+)\] (?P<rest>.*)$"
)
_MAKE_DIR = re.compile(
    r"^g?make(?:\[\d+\])?: (?P<what>Entering|Leaving) directory [`'‘](?P<dir>[^'’]+)['’]"
)
_MODPOST = re.compile(r"^(?P<sev>WARNING|ERROR|FATAL): modpost: (?P<msg>(?:.*\S)?)\s*$")
_KBUILD_WARN = re.compile(r"^(?P<sev>WARNING|ERROR): (?P<msg>(?!modpost:)(?:.*\S)?)\s*$")
# kbuild quiet lines ("  CC [M]  net/mptcp/protocol.o") and clang's summary line are not context.
_QUIET = re.compile(r"^  [A-Z0-9_]+(?: \[M\])?\s+\S")
_SOURCE = re.compile(r"^\s*\d+\s*\|")  # "120 |  y" (rustc does not indent wide numbers)
_CONTEXT_STARTS = ("|", ">>>", "compilation terminated")
_GENERATED = re.compile(r"^\d+ (?:warning|error)s? generated\.$")
# rustc: "error[E0425]: cannot find value `x`" then "  --> rust/kernel/x.rs:12:5"
_RUST = re.compile(r"^(?P<sev>error|warning)(?:\[(?P<code>E\d+)\])?: (?P<msg>(?:.*\S)?)\s*$")
_RUST_AT = re.compile(r"^\s*--> (?P<file>[^:]+):(?P<line>\d{1,9}):(?P<col>\d{1,9})\s*$")
_RUST_SUMMARY = re.compile(r"^(?:aborting due to|\d+ warnings? emitted|could not compile)")
_FLAG = re.compile(r"\s*\[(?P<flags>-W[^\]\s]*|-f[^\]\s]*)\]$")
_NUM_FLAG = re.compile(r"\s*\[(?P<flags>-W[^\]]*(?:,-W[^\]]*)+)\]$")


@dataclass(frozen=True)
class Diagnostic:
    """One diagnostic. `file` is "" when the tool gave none (make, collect2, kconfig)."""

    file: str
    line: int | None
    column: int | None
    severity: str
    message: str
    flag: str | None = None
    raw: str = ""
    context: tuple[str, ...] = ()
    function: str | None = None
    tool: str = "cc"  # cc | ld | make | modpost | kbuild | rustc | kernel-doc


@dataclass(frozen=True)
class WarningDelta:
    new: list[Diagnostic] = field(default_factory=list)
    fixed: list[Diagnostic] = field(default_factory=list)
    unchanged_count: int = 0


def normalize_path(path: str, src_root: str | None = None, cwd: str | None = None) -> str:
    """Make *path* relative to *src_root* when it lies below it, and resolve `./` and `..`.

    A relative *path* printed while make was in *cwd* is resolved against it first, so the
    `../net/foo.c` of an `O=` build and the absolute path of another become the same key.
    """
    p = path.strip()
    if not p:
        return p
    if src_root:
        root = posixpath.normpath(src_root)
        if not posixpath.isabs(p) and cwd:
            p = posixpath.join(cwd, p)
        p = posixpath.normpath(p)
        if p == root:
            return "."
        if p.startswith(root.rstrip("/") + "/"):
            return p[len(root.rstrip("/")) + 1 :]
        return p
    return posixpath.normpath(p)


def _split_flag(msg: str) -> tuple[str, str | None]:
    """Split "text [-Wfoo]" into text and "-Wfoo"; -Werror=foo and clang's
    "[-Werror,-Wfoo]" both name the warning -Wfoo."""
    m = _NUM_FLAG.search(msg) or _FLAG.search(msg)
    if not m:
        return msg, None
    flags = [f for f in m.group("flags").split(",") if f and f != "-Werror"]
    if not flags:
        return msg[: m.start()], None
    flag = flags[-1]
    if flag.startswith("-Werror="):
        flag = "-W" + flag[len("-Werror=") :]
    return msg[: m.start()], flag


@dataclass
class _State:
    """Mutable parser state; only lives inside parse_diagnostics."""

    src_root: str | None
    out: list[Diagnostic] = field(default_factory=list)
    ctx: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # lines before the next diagnostic
    function: dict[str, str | None] = field(default_factory=dict)
    dirs: list[str] = field(default_factory=list)
    open: bool = False  # may the last diagnostic take context lines?

    def path(self, p: str) -> str:
        return normalize_path(p, self.src_root, self.dirs[-1] if self.dirs else None)

    def flush(self) -> None:
        if self.out and self.ctx:
            last = self.out[-1]
            self.out[-1] = replace(last, context=last.context + tuple(self.ctx))
        self.ctx = []

    def add(self, d: Diagnostic) -> None:
        self.flush()
        if self.pending:
            d = replace(d, context=tuple(self.pending))
            self.pending = []
        self.out.append(d)
        self.open = True


def _compiler(st: _State, line: str) -> bool:
    m = _DIAG.match(line)
    if m:
        sev = "warning" if m.group("sev") == "remark" else m.group("sev")
        msg, flag = _split_flag(m.group("msg"))
        path = st.path(m.group("file"))
        col = m.group("col")
        st.add(
            Diagnostic(
                file=path,
                line=int(m.group("line")),
                column=int(col) if col else None,
                severity=sev,
                message=msg,
                flag=flag,
                raw=line,
                function=st.function.get(path),
            )
        )
        return True
    m = _FUNC.match(line)
    if m:
        st.flush()
        st.open = False
        st.function[st.path(m.group("file"))] = m.group("fn")
        st.pending.append(line)
        return True
    m = _TOPLEVEL.match(line)
    if m:
        st.flush()
        st.open = False
        st.function[st.path(m.group("file"))] = None
        return True
    if _INCLUDED.match(line):
        st.flush()
        st.open = False
        st.pending.append(line)
        return True
    m = _SPARSE_CONT.match(line)
    if m and st.out and st.open:
        st.ctx.append(line)
        return True
    return False


def _linker(st: _State, line: str) -> bool:
    if _LD_INFUNC.match(line):
        st.flush()
        st.open = False
        st.pending = [line]
        return True
    m = _LLD.match(line)
    if m:
        st.add(Diagnostic("", None, None, m.group("sev"), m.group("msg"), raw=line, tool="ld"))
        return True
    if _LLD_REF.match(line) and st.out and st.open:
        st.ctx.append(line)
        return True
    m = _LD_REF.match(line)
    if m and not m.group("file").startswith("make"):
        msg = m.group("msg")
        sev = "warning" if msg.startswith("warning:") else "error"
        msg = msg.removeprefix("warning:").strip()
        st.add(Diagnostic(st.path(m.group("file")), None, None, sev, msg, raw=line, tool="ld"))
        return True
    return False


def _make(st: _State, line: str) -> bool:
    m = _MAKE_DIR.match(line)
    if m:
        st.flush()
        st.open = False
        if m.group("what") == "Entering":
            st.dirs.append(m.group("dir"))
        elif st.dirs:
            st.dirs.pop()
        return True
    m = _MAKE.match(line)
    if not m:
        return False
    msg = m.group("msg")
    if msg.startswith("Waiting for unfinished jobs"):
        st.flush()
        st.open = False
        return True
    t = _MAKE_TARGET.match(msg)
    if t:
        d = Diagnostic(
            file=st.path(t.group("mk")),
            line=int(t.group("line")),
            column=None,
            severity="error",
            message=f"*** [{t.group('target')}] {t.group('rest')}",
            raw=line,
            tool="make",
        )
    else:
        d = Diagnostic("", None, None, "error", f"*** {msg}", raw=line, tool="make")
    st.add(d)
    st.open = False
    return True


_MODPOST_FILE = (
    re.compile(r"^(?P<f>\S+\.(?:o|ko))(?:\([^)]*\))?:"),
    re.compile(r"\[(?P<f>[^\]\s]+\.ko)\]"),
    re.compile(r"\bin (?P<f>\S+\.(?:o|ko))\b"),
)


def _kbuild(st: _State, line: str) -> bool:
    m = _MODPOST.match(line)
    if m:
        msg = m.group("msg")
        path = ""
        for rx in _MODPOST_FILE:
            fm = rx.search(msg)
            if fm:
                path = st.path(fm.group("f"))
                break
        sev = {"WARNING": "warning", "ERROR": "error"}.get(m.group("sev"), "fatal error")
        st.add(Diagnostic(path, None, None, sev, msg, raw=line, tool="modpost"))
        return True
    m = _KBUILD_WARN.match(line)
    if m:
        sev = "warning" if m.group("sev") == "WARNING" else "error"
        st.add(Diagnostic("", None, None, sev, m.group("msg"), raw=line, tool="kbuild"))
        return True
    m = _TOOL.match(line)
    if m:
        who, msg = m.group("who"), m.group("msg")
        if "/" in who or re.search(r"\.(?:o|ko|a|so|c|h|S)$", who):
            path = st.path(who)
        else:
            path, msg = "", f"{who}: {msg}"
        msg, flag = _split_flag(msg)
        st.add(Diagnostic(path, None, None, m.group("sev"), msg, flag, raw=line, tool="ld"))
        return True
    return False


def _rustc(st: _State, line: str) -> bool:
    m = _RUST.match(line)
    if m:
        if _RUST_SUMMARY.match(m.group("msg")):
            st.flush()
            st.open = False
            return True
        sev, msg = m.group("sev"), m.group("msg")
        st.add(Diagnostic("", None, None, sev, msg, m.group("code"), raw=line, tool="rustc"))
        return True
    m = _RUST_AT.match(line)
    last = st.out[-1] if st.out else None
    if m and last is not None and st.open and last.tool == "rustc" and not last.file:
        st.out[-1] = replace(
            last,
            file=st.path(m.group("file")),
            line=int(m.group("line")),
            column=int(m.group("col")),
        )
        return True
    return False


def _context(st: _State, line: str) -> None:
    """Source, caret and fix-it lines after a diagnostic belong to it."""
    if not st.out or not st.open or not line.strip():
        st.flush()
        st.open = False
        return
    if _QUIET.match(line) or _GENERATED.match(line.strip()):
        st.flush()
        st.open = False
        return
    # gcc/clang indent source and caret lines; an unindented line is the next command.
    if not (line[0].isspace() or _SOURCE.match(line) or line.startswith(_CONTEXT_STARTS)):
        st.flush()
        st.open = False
        return
    if len(st.out[-1].context) + len(st.ctx) < MAX_CONTEXT:
        st.ctx.append(line)


def parse_diagnostics(lines: Iterable[str], src_root: str | None = None) -> list[Diagnostic]:
    """Every diagnostic in a build log, in order, with its context lines attached.

    File names are made relative to *src_root* (and resolved against make's
    "Entering directory") when given.
    """
    st = _State(src_root=src_root)
    for raw in lines:
        line = raw.rstrip("\r\n")
        if any(f(st, line) for f in (_compiler, _make, _linker, _kbuild, _rustc)):
            continue
        _context(st, line)
    st.flush()
    return st.out


_QUOTES = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"'})
_VOLATILE = (
    # "declared at line 12", "previous definition at foo.c:12:3", "(foo.c:12)"
    (re.compile(r"\b(line|lines) \d+(?:-\d+)?\b"), r"\1 N"),
    # (anchored on the extension: `\S+\.c:` backtracked quadratically on a long token,
    # 8.9 s for gcc's echo of a 40 KB #warning)
    (re.compile(r"(?<=\S)(\.(?:c|h|S|rs|lds)):\d{1,9}(?::\d{1,9})?"), r"\1"),
    # section offsets (".text+0x5a") move whenever code moves
    (re.compile(r"\+0x[0-9a-fA-F]+(?:/0x[0-9a-fA-F]+)?"), "+0x?"),
    (re.compile(r"\b0x[0-9a-fA-F]{6,}\b"), "0x?"),
)


def normalize_message(msg: str) -> str:
    """The message without anything that moves with line numbers or code layout."""
    m = msg.translate(_QUOTES)
    for rx, sub in _VOLATILE:
        m = rx.sub(sub, m)
    return " ".join(m.split())


def key(d: Diagnostic) -> tuple[str, str]:
    """Identity of a diagnostic across builds: its file and its line-free message
    (severity and flag included, so -Werror turning a warning into an error is a change)."""
    msg = f"{d.severity}: {normalize_message(d.message)}"
    if d.flag:
        msg += f" [{d.flag}]"
    return d.file, msg


def _surplus(ours: Sequence[Diagnostic], theirs: Counter[tuple[str, str]]) -> list[Diagnostic]:
    """Diagnostics of *ours* left once each key's count in *theirs* is used up."""
    by_key: dict[tuple[str, str], list[Diagnostic]] = defaultdict(list)
    for d in ours:
        by_key[key(d)].append(d)
    extra: list[Diagnostic] = []
    for k, ds in by_key.items():
        n = len(ds) - theirs.get(k, 0)
        if n > 0:
            extra.extend(ds[-n:])
    order = {id(d): i for i, d in enumerate(ours)}
    return sorted(extra, key=lambda d: order[id(d)])


def diff_warnings(before: Sequence[Diagnostic], after: Sequence[Diagnostic]) -> WarningDelta:
    """Compare two builds' diagnostics as multisets of `key()`; notes are ignored."""
    b = [d for d in before if d.severity in COUNTED]
    a = [d for d in after if d.severity in COUNTED]
    cb, ca = Counter(map(key, b)), Counter(map(key, a))
    unchanged = sum((cb & ca).values())
    return WarningDelta(new=_surplus(a, cb), fixed=_surplus(b, ca), unchanged_count=unchanged)


def describe(delta: WarningDelta, limit: int = 250) -> str:
    """One line for Patchwork: "new warnings: 2 (fixed: 1): a.c: unused variable 'x'" (the
    first new one named, the line number left out: it moves) or "no new warnings"."""
    errors = sum(1 for d in delta.new if d.severity != "warning")
    fixed = f" (fixed: {len(delta.fixed)})" if delta.fixed else ""
    if not delta.new:
        return f"no new warnings{fixed}"
    err = f", {errors} errors" if errors else ""
    first = delta.new[0]
    where = f"{first.file}: " if first.file else ""
    line = f"new warnings: {len(delta.new)}{err}{fixed}: {where}{first.message}"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def format_diagnostic(d: Diagnostic) -> str:
    """A diagnostic as one log line, with the normalised file name."""
    loc = d.file or d.tool
    if d.line is not None:
        loc += f":{d.line}"
        if d.column is not None:
            loc += f":{d.column}"
    flag = f" [{d.flag}]" if d.flag else ""
    return f"{loc}: {d.severity}: {d.message}{flag}"
