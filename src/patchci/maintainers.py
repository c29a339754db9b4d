"""Pure parser and matcher for the kernel's MAINTAINERS file, with the semantics of
`scripts/get_maintainer.pl` (Linux 6.1), and a parser for that script's output.

File patterns (F:, X:), as the file's header documents and get_maintainer implements:
a trailing slash matches all files in and below a directory; `*` and `?` are shell
wildcards (`*` may cross `/`, but then the match must have as many `/` as the pattern, so
`drivers/net/*` is only the files directly in drivers/net); `[ch]` is a character class;
a pattern naming a directory without the slash matches below it too (get_maintainer checks
the file system; we infer it: a path that has children is a directory). X: is tested first
and excludes the whole entry. N: is a regex searched in the file name, K: a regex on the
patch content. Entries are ordered most specific first by pattern depth, like get_maintainer.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from patchci.model import Person

log = logging.getLogger(__name__)

_FIELD = re.compile(r"^(?P<type>[A-Z]):\s*(?P<value>(?:.*\S)?)\s*$")
# get_maintainer drops Linus from its output unless --git-chief-penguins.
_WILDCARD = re.compile(r"[*?\[]")
CHIEF_PENGUINS = frozenset({"torvalds@linux-foundation.org"})
SECTION_MAXLEN = 50
_ROLES = {
    "supported": "supporter",
    "maintained": "maintainer",
    "odd fixes": "odd fixer",
    "orphan": "orphan minder",
    "obsolete": "obsolete minder",
    "buried alive in reporters": "chief penguin",
}


@dataclass(frozen=True)
class MailingList:
    address: str
    note: str = ""  # e.g. "moderated for non-subscribers"

    @property
    def moderated(self) -> bool:
        return "moderated" in self.note

    @property
    def subscribers_only(self) -> bool:
        return "subscribers-only" in self.note


@dataclass(frozen=True)
class Entry:
    """One MAINTAINERS section. `fields` keeps every (letter, value) in file order."""

    name: str
    fields: tuple[tuple[str, str], ...]
    line: int = 0

    def values(self, letter: str) -> tuple[str, ...]:
        return tuple(v for t, v in self.fields if t == letter)

    @property
    def maintainers(self) -> tuple[Person, ...]:
        return tuple(p for p in map(parse_person, self.values("M")) if p is not None)

    @property
    def reviewers(self) -> tuple[Person, ...]:
        return tuple(p for p in map(parse_person, self.values("R")) if p is not None)

    @property
    def lists(self) -> tuple[MailingList, ...]:
        return tuple(parse_list(v) for v in self.values("L") if v)

    @property
    def status(self) -> str | None:
        s = self.values("S")
        return s[-1] if s else None

    @property
    def files(self) -> tuple[str, ...]:
        return self.values("F")

    @property
    def excludes(self) -> tuple[str, ...]:
        return self.values("X")

    @property
    def regexes(self) -> tuple[str, ...]:
        return self.values("N")

    @property
    def keywords(self) -> tuple[str, ...]:
        return self.values("K")

    @property
    def trees(self) -> tuple[str, ...]:
        return self.values("T")

    @property
    def patchwork(self) -> tuple[str, ...]:
        return self.values("Q")


def parse_person(text: str) -> Person | None:
    """'Name <a@b>', '"D. Miller" <a@b>', '<a@b>' or 'a@b'; None without an address."""
    t = text.strip()
    m = re.match(r"^(?P<name>[^<]*)<(?P<addr>[^>]+@[^>]*)>", t)
    if m:
        name = m.group("name").strip()
        if len(name) >= 2 and name[0] == '"' and name[-1] == '"':
            name = name[1:-1].replace('\\"', '"')
        return Person(name, m.group("addr").strip())
    m = re.match(r"^(?P<addr>[^\s<>()]+@[^\s<>()]+)", t)
    return Person("", m.group("addr")) if m else None


def parse_list(text: str) -> MailingList:
    """'netdev@vger.kernel.org' or 'alsa-devel@... (moderated for non-subscribers)'."""
    addr, _, rest = text.strip().partition(" ")
    return MailingList(addr, rest.strip().strip("()").strip())


def parse_maintainers(text: str) -> list[Entry]:
    """Every section of a MAINTAINERS file: a name line followed by `X:` field lines.

    As in get_maintainer, blank and `#` lines are skipped; the header's indented
    examples are not fields.
    """
    entries: list[Entry] = []
    name, name_line = "", 0
    fields: list[tuple[str, str]] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _FIELD.match(line)
        if m:
            fields.append((m.group("type"), m.group("value")))
            continue
        if fields:
            entries.append(Entry(name, tuple(fields), name_line))
            fields = []
        name, name_line = line.strip(), n
    if fields:
        entries.append(Entry(name, tuple(fields), name_line))
    return entries


# One glob token: a literal character, "?" (any one character), "*" (any run, "/"
# included, as get_maintainer's `.*`) or a character class (negated, ranges).
_Tok = tuple[str, str | frozenset[str] | tuple[bool, tuple[tuple[str, str], ...]]]


@lru_cache(maxsize=65536)
def _glob_tokens(pattern: str) -> tuple[_Tok, ...]:
    """get_maintainer's translation of an F:/X: glob (`*` → `.*`, `?` → `.`, `[..]`
    kept), as tokens for a matcher that never backtracks: a regex of it backtracked
    exponentially (10 stars: 33 s), and the file comes from the patched tree."""
    out: list[_Tok] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if not out or out[-1][0] != "*":  # ** is *
                out.append(("*", ""))
        elif c == "?":
            out.append(("?", ""))
        elif c == "[" and "]" in pattern[i + 2 :]:
            j = pattern.index("]", i + 2)
            body = pattern[i + 1 : j]
            neg = body[:1] == "^"  # a Perl class, as get_maintainer keeps it: "!" is literal
            body = body[1:] if neg else body
            ranges: list[tuple[str, str]] = []
            k = 0
            while k < len(body):
                if k + 2 < len(body) and body[k + 1] == "-":
                    ranges.append((body[k], body[k + 2]))
                    k += 3
                else:
                    ranges.append((body[k], body[k]))
                    k += 1
            out.append(("[", (neg, tuple(ranges))))
            i = j
        else:
            out.append(("=", c))
        i += 1
    return tuple(out)


def _tok_matches(tok: _Tok, ch: str) -> bool:
    kind, arg = tok
    if kind == "?":
        return True
    if kind == "=":
        return ch == arg
    assert isinstance(arg, tuple)
    neg, ranges = arg
    return any(lo <= ch <= hi for lo, hi in ranges) != neg


def _glob_prefix_match(tokens: Sequence[_Tok], text: str) -> bool:
    """Does the glob match a prefix of *text* (a regex's `match`)? The classic wildcard
    walk that resumes after the last `*` only: O(len(tokens) * len(text)) at worst."""
    # A prefix match is a full match of the pattern followed by "*".
    toks = [*tokens, ("*", "")] if not tokens or tokens[-1][0] != "*" else list(tokens)
    t = s = 0
    star_t, star_s = -1, 0
    while s < len(text):
        if t < len(toks) and toks[t][0] == "*":
            star_t, star_s = t, s
            t += 1
        elif t < len(toks) and _tok_matches(toks[t], text[s]):
            t, s = t + 1, s + 1
        elif star_t >= 0:
            star_s += 1
            t, s = star_t + 1, star_s
        else:
            return False
    while t < len(toks) and toks[t][0] == "*":
        t += 1
    return t == len(toks)


def pattern_depth(pattern: str) -> int:
    """get_maintainer's specificity: the pattern's `/` count (+1 without trailing slash),
    -1 for patterns starting with `*` (THE REST)."""
    if pattern.startswith("*"):
        return -1
    return pattern.count("/") + (0 if pattern.endswith("/") else 1)


def file_matches(pattern: str, file: str) -> bool:
    """Does F:/X: *pattern* cover *file* (a path relative to the tree root)?"""
    if not pattern:
        return False
    # Cheap test first: the part before any wildcard must be a literal prefix.
    if not file.startswith(_WILDCARD.split(pattern, 1)[0]):
        return False
    if not _glob_prefix_match(_glob_tokens(pattern), file):
        return False
    if pattern.endswith("/"):
        return True
    if file.count("/") == pattern.count("/"):
        return True
    # A wildcard-free pattern naming a directory: the file lies below it.
    return not _WILDCARD.search(pattern) and file.startswith(pattern + "/")


# N: and K: regexes come from the patched tree: the kernel's longest is under 150
# characters, and an N: line of 1 000 "(" made re.compile raise RecursionError.
MAX_REGEX_LEN = 512


@lru_cache(maxsize=65536)
def _compile(rx: str) -> re.Pattern[str] | None:
    if len(rx) > MAX_REGEX_LEN:
        log.warning("MAINTAINERS regex of %d characters ignored", len(rx))
        return None
    try:
        with warnings.catch_warnings():  # "possible nested set" and such: not ours to show
            warnings.simplefilter("ignore")
            return re.compile(rx, re.VERBOSE)
    except (re.error, RecursionError, OverflowError, ValueError):
        log.debug("bad MAINTAINERS regex %r", rx[:200])
        return None


def _regex_search(rx: str, text: str) -> bool:
    pattern = _compile(rx)
    return pattern is not None and pattern.search(text) is not None


def file_depth(entry: Entry, file: str) -> int | None:
    """The depth of *entry*'s most specific match for *file*, or None (X: or no match)."""
    if any(file_matches(x, file) for x in entry.excludes):
        return None
    depths = [pattern_depth(p) for p in entry.files if file_matches(p, file)]
    if any(_regex_search(n, file) for n in entry.regexes):
        depths.append(0)
    return max(depths) if depths else None


def _keyword_lines(patch_text: str) -> list[str]:
    """The lines K: is tried on: the mail before the first file header, then only the
    added/removed lines (get_maintainer's `^[+-].*` prefix)."""
    out: list[str] = []
    in_diff = False
    for line in patch_text.splitlines():
        if re.match(r"^(?:\+\+\+|---)\s+\S", line) or line.startswith("diff --git "):
            in_diff = True
            continue
        if not in_diff or line[:1] in ("+", "-"):
            out.append(line)
    return out


def entries_for(
    files: Sequence[str], entries: Sequence[Entry], patch_text: str = ""
) -> list[Entry]:
    """The entries covering *files* (F:/N:, minus X:), most specific first per file, in
    file order; then those whose K: matches *patch_text*. No duplicates."""
    chosen: list[Entry] = []
    seen: set[int] = set()
    for file in files:
        f = file.removeprefix("./")
        hits = [(d, i) for i, e in enumerate(entries) if (d := file_depth(e, f)) is not None]
        for _, i in sorted(hits, key=lambda h: (-h[0], h[1])):
            if i not in seen:
                seen.add(i)
                chosen.append(entries[i])
    if patch_text:
        lines = _keyword_lines(patch_text)
        for i, e in enumerate(entries):
            if i not in seen and any(_regex_search(k, ln) for k in e.keywords for ln in lines):
                seen.add(i)
                chosen.append(e)
    return chosen


def _section(entry: Entry) -> str:
    name = entry.name
    if len(name) > SECTION_MAXLEN:
        name = name[: SECTION_MAXLEN - 3].rstrip() + "..."
    return name


def maintainer_role(entry: Entry) -> str:
    """get_maintainer's role for an M: of *entry*: "maintainer:NETWORKING [MPTCP]"."""
    status = (entry.status or "unknown").lower()
    return f"{_ROLES.get(status, status)}:{_section(entry)}"


def _list_role(entry: Entry, ml: MailingList) -> str:
    kind = "moderated list" if ml.moderated else "open list"
    section = _section(entry)
    return kind if section == "THE REST" else f"{kind}:{section}"


def recipients(entries: Iterable[Entry]) -> list[tuple[Person, str]]:
    """What `get_maintainer.pl --no-git` prints for *entries* (in entries_for order):
    maintainers and reviewers, then lists; duplicates by name or address dropped,
    subscribers-only lists and the chief penguin left out, as it does by default."""
    people: list[tuple[Person, str]] = []
    lists: list[tuple[Person, str]] = []
    names: set[str] = set()
    addrs: set[str] = set()
    list_addrs: set[str] = set()
    for e in entries:
        for letter, value in e.fields:
            if letter in ("M", "R"):
                p = parse_person(value)
                if p is None or p.email.lower() in addrs or (p.name and p.name.lower() in names):
                    continue
                addrs.add(p.email.lower())
                if p.name:
                    names.add(p.name.lower())
                role = maintainer_role(e) if letter == "M" else f"reviewer:{_section(e)}"
                people.append((p, role))
            elif letter == "L" and value:
                ml = parse_list(value)
                if ml.subscribers_only or ml.address.lower() in list_addrs:
                    continue
                list_addrs.add(ml.address.lower())
                lists.append((Person("", ml.address), _list_role(e, ml)))
    people = [(p, r) for p, r in people if p.email.lower() not in CHIEF_PENGUINS]
    return people + lists


_GM_LINE = re.compile(r"^(?P<who>.*?@.*?)(?:\s+\((?P<role>[^()]*(?:\([^()]*\)[^()]*)*)\))?\s*$")


def get_maintainer_output(lines: Iterable[str]) -> list[tuple[Person, str]]:
    """Parse `scripts/get_maintainer.pl` output: one `Name <addr> (role)` per line.

    The role is "" without --rolestats; lines without an address (the --scm, --web or
    --status blocks) are skipped.
    """
    out: list[tuple[Person, str]] = []
    for raw in lines:
        line = raw.strip()
        m = _GM_LINE.match(line)
        if not m:
            continue
        p = parse_person(m.group("who"))
        if p is not None:
            out.append((p, (m.group("role") or "").strip()))
    return out
