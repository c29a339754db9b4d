"""Local mail ingestion: mbox / maildir / format-patch files → Series.

Grouping follows Patchwork v3.2.1 (patchwork/parser.py) so that a series read from a local
mbox looks like the one a Patchwork server would show:

- a patch is looked up by its own Message-Id, then In-Reply-To, then References (closest
  ancestor first) in a map of message ids → series; a new series registers those ids;
- failing that, by series markers: same sender, version and total, sent within 20 minutes
  of the series' first mail;
- a series that already has patch number m makes a patch m start a new series;
- a cover letter (0/n, not a reply) only joins a series that already references its own
  Message-Id, so a v2 sent In-Reply-To the v1 cover becomes a new series;
- unnumbered patches are series of one; replies are comments, never patches.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from patchci.model import Patch, Person, Series
from patchci.sources.mail import MalformedMail, body_text, parse_mail
from patchci.subject import patchwork_name

log = logging.getLogger(__name__)

# Patchwork's SERIES_DELAY_INTERVAL: unthreaded mails further apart are different series.
SERIES_DELAY = timedelta(minutes=20)

# An mbox separator: "From <anything>" with a clock time and a year, like git mailsplit's
# is_from_line(), so that a body line starting with "From " does not split a mail.
# A separator is a "From " line with a time and a year. Candidates are found cheaply and
# only short ones are checked: the checking regex backtracks on a long line (64 KB: 6.9 s).
_FROM_CANDIDATE_RE = re.compile(rb"^From [^\n]*", re.M)
_FROM_LINE_RE = re.compile(rb"From [^\n]*?\d{1,2}:\d\d(?::\d\d)?[^\n]*?\b\d{4}\b[^\n]*")
MAX_FROM_LINE = 512
_MBOXRD_RE = re.compile(rb"^>(>*From )", re.M)
_REPLY_RE = re.compile(r"^\s*(re|aw|sv)\s*:", re.IGNORECASE)
_TRAILER_RE = re.compile(r"^\s*((?:Acked|Reviewed|Tested)-by):\s*(.+?)\s*$", re.M | re.I)
_MAIL_SUFFIXES = (".patch", ".diff", ".eml", ".mbox", ".mbx", ".mail", ".msg")


@dataclass(frozen=True)
class Rejected:
    location: str
    reason: str


@dataclass(frozen=True)
class Trailer:
    """An Acked-by/Reviewed-by/Tested-by given in a reply to a series' mail."""

    series_key: str
    target_msgid: str
    name: str
    value: str
    msgid: str


@dataclass(frozen=True)
class Ingested:
    series: tuple[Series, ...]
    rejected: tuple[Rejected, ...]
    trailers: tuple[Trailer, ...] = ()


# ---------------------------------------------------------------------------- reading


def _split_mbox(data: bytes, label: str) -> Iterator[tuple[str, bytes]]:
    starts = [
        m.start()
        for m in _FROM_CANDIDATE_RE.finditer(data)
        if len(m.group()) <= MAX_FROM_LINE and _FROM_LINE_RE.fullmatch(m.group())
    ]
    if not starts or data[: starts[0]].strip():
        # Not an mbox (or text before the first separator): one mail.
        yield label, data
        return
    starts.append(len(data))
    for i, (a, b) in enumerate(zip(starts, starts[1:], strict=False), start=1):
        nl = data.find(b"\n", a, b)
        body = data[nl + 1 : b] if nl >= 0 else b""
        if b">From " in body:
            body = _MBOXRD_RE.sub(rb"\1", body)
        yield f"{label}#{i}", body


def _read_file(path: Path, label: str) -> Iterator[tuple[str, bytes]]:
    data = path.read_bytes()
    yield from _split_mbox(data, label)


def _read_maildir(path: Path) -> Iterator[tuple[str, bytes]]:
    for sub in ("cur", "new"):
        d = path / sub
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):
            if f.is_file() and not f.name.startswith("."):
                yield f"{path.name}/{sub}/{f.name}", f.read_bytes()


def read_messages(path: Path) -> Iterator[tuple[str, bytes]]:
    """Yield (location, raw mail) from an mbox, a maildir, a dir of mail files, or a mail."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"mail source not found: {path} (give an mbox, maildir or dir)")
    if path.is_file():
        yield from _read_file(path, path.name)
        return
    if (path / "cur").is_dir() or (path / "new").is_dir():
        yield from _read_maildir(path)
        return
    files = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in _MAIL_SUFFIXES)
    if not files:
        log.warning("no mail files (%s) in %s", ", ".join(_MAIL_SUFFIXES), path)
    for f in files:
        yield from _read_file(f, f.name)


# ---------------------------------------------------------------------------- grouping


@dataclass
class _Builder:
    """A series while it is being assembled; `version`/`total` are the creator's."""

    version: int
    total: int
    first: Patch
    cover: Patch | None = None
    patches: list[Patch] = field(default_factory=list)

    @property
    def numbers(self) -> set[int]:
        return {p.number or 1 for p in self.patches}

    @property
    def key(self) -> str:
        if self.cover is not None:
            return self.cover.msgid
        one = [p for p in self.patches if (p.number or 1) == 1]
        return (one or [self.first])[0].msgid

    @property
    def mails(self) -> list[Patch]:
        return ([self.cover] if self.cover else []) + self.patches


def is_reply(subject: str) -> bool:
    return bool(_REPLY_RE.match(subject))


def _lookup_refs(p: Patch) -> list[str]:
    """Own id, In-Reply-To, then References closest ancestor first (Patchwork's order)."""
    refs = [p.msgid]
    if p.in_reply_to:
        refs.append(p.in_reply_to)
    refs.extend(reversed(p.references))
    return list(dict.fromkeys(refs))


def _close_in_time(a: datetime | None, b: datetime | None) -> bool:
    if a is None or b is None:
        return True
    return abs(a - b) <= SERIES_DELAY


def _same_sender(a: Person, b: Person) -> bool:
    return a.email.lower() == b.email.lower()


class _Grouper:
    def __init__(self) -> None:
        self.builders: list[_Builder] = []
        self.refmap: dict[str, _Builder] = {}

    def _new(self, p: Patch, total: int, register: list[str]) -> _Builder:
        b = _Builder(version=p.info.version, total=total, first=p)
        self.builders.append(b)
        for ref in register:
            self.refmap.setdefault(ref, b)  # an id of an older series stays with it
        return b

    def _by_markers(self, p: Patch) -> _Builder | None:
        for b in reversed(self.builders):
            if (
                b.total == p.info.total
                and b.version == p.info.version
                and _same_sender(b.first.author, p.author)
                and _close_in_time(b.first.date, p.date)
                and (p.number or 1) not in b.numbers
            ):
                return b
        return None

    def add_patch(self, p: Patch) -> None:
        if p.info.total is None or p.number is None:
            self._new(p, 1, [*_lookup_refs(p)[1:], p.msgid]).patches.append(p)
            return
        refs = _lookup_refs(p)
        b = next((self.refmap[r] for r in refs if r in self.refmap), None)
        if b is None:
            b = self._by_markers(p)
        if b is None or p.number in b.numbers:
            b = self._new(p, p.info.total, [*refs[1:], p.msgid])
        b.patches.append(p)
        # Patchwork does not do this; it lets deep-threaded replies find the series.
        self.refmap.setdefault(p.msgid, b)

    def add_cover(self, p: Patch) -> bool:
        """Add a cover letter; False if Patchwork would take it for a comment."""
        name = patchwork_name(p.subject)
        if (p.in_reply_to or p.references) and any(
            b.cover is not None and patchwork_name(b.cover.subject) == name for b in self.builders
        ):
            return False
        b = self.refmap.get(p.msgid)
        if b is None or b.cover is not None:
            b = self._new(p, p.info.total or 0, [p.msgid])
        b.cover = p
        self.refmap[p.msgid] = b
        return True


def _series_name(b: _Builder) -> str:
    if b.cover is not None and b.cover.info.title:
        return b.cover.info.title
    first = b.patches[0] if b.patches else b.first
    return patchwork_name(first.subject)


def _finish(b: _Builder, source: str) -> Series:
    patches = sorted(b.patches, key=lambda p: p.number or 1)
    total = b.total or max((p.number or 1 for p in patches), default=0)
    have = b.numbers
    problems = [f"missing patch {i}/{total}" for i in range(1, total + 1) if i not in have]
    problems += [
        f"patch {p.number}/{p.info.total} does not fit a series of {total}"
        for p in patches
        if (p.number or 1) > total
    ]
    if not patches:
        problems.insert(0, "cover letter without patches")
    return Series(
        source=source,
        key=b.key,
        name=_series_name(b),
        version=max(m.info.version for m in b.mails),
        total=total,
        patches=tuple(patches),
        cover=b.cover,
        submitter=b.first.author,
        date=b.first.date,
        complete=not problems,
        problems=tuple(problems),
    )


def _trailers(p: Patch, b: _Builder, target: str) -> list[Trailer]:
    text = "\n".join(ln for ln in body_text(p.raw).splitlines() if not ln.startswith(">"))
    return [
        Trailer(b.key, target, m.group(1), m.group(2), p.msgid) for m in _TRAILER_RE.finditer(text)
    ]


def _attach_comments(
    g: _Grouper, comments: list[tuple[str, Patch]], rejected: list[Rejected]
) -> list[tuple[_Builder, Patch, str]]:
    """Replies whose thread reaches a series; the rest are rejected as not patches."""
    attached: list[tuple[_Builder, Patch, str]] = []
    for loc, p in comments:
        refs = _lookup_refs(p)[1:]
        hit = next((r for r in refs if r in g.refmap), None)
        if hit is None:
            why = "reply (Re:) to no patch here" if is_reply(p.subject) else "no diff"
            rejected.append(Rejected(loc, f"not a patch: {why}"))
            continue
        b = g.refmap[hit]
        g.refmap.setdefault(p.msgid, b)
        attached.append((b, p, hit))
        log.debug("%s: comment %s on series %s dropped", loc, p.msgid, b.key)
    return attached


def group_series(mails: Iterable[tuple[str, Patch]], source: str = "local") -> Ingested:
    """Group parsed mails into series the way Patchwork v3.2.1 does (see module doc)."""
    g = _Grouper()
    rejected: list[Rejected] = []
    comments: list[tuple[str, Patch]] = []
    seen: set[str] = set()
    for loc, p in mails:
        if p.msgid in seen:
            rejected.append(Rejected(loc, f"duplicate Message-Id {p.msgid}"))
            continue
        seen.add(p.msgid)
        if is_reply(p.subject):
            comments.append((loc, p))
        elif p.number == 0:
            if not g.add_cover(p):
                comments.append((loc, p))
        elif p.has_diff or p.pull_url:  # Patchwork keeps a pull request as a patch
            g.add_patch(p)
        else:
            comments.append((loc, p))
    attached = _attach_comments(g, comments, rejected)
    done = {id(b): _finish(b, source) for b in g.builders}
    trailers = [t for b, p, hit in attached for t in _trailers(p, b, hit)]
    for s in done.values():
        log.info("series %s: %r v%d %d/%d", s.key, s.name, s.version, len(s.patches), s.total)
    return Ingested(tuple(done.values()), tuple(rejected), tuple(trailers))


def load_series(path: Path, source: str = "local") -> Ingested:
    """read_messages + parse_mail + group_series; unparsable mails become Rejected."""
    parsed: list[tuple[str, Patch]] = []
    rejected: list[Rejected] = []
    for loc, raw in read_messages(Path(path)):
        try:
            parsed.append((loc, parse_mail(raw)))
        except MalformedMail as e:
            log.warning("%s: rejected: %s", loc, e)
            rejected.append(Rejected(loc, str(e)))
    grouped = group_series(parsed, source)
    return Ingested(grouped.series, (*rejected, *grouped.rejected), grouped.trailers)
