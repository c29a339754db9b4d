"""Parse one raw mail into a Patch.

Pure: bytes in, dataclasses out. Headers are split by hand rather than through the stdlib
`email` header machinery, because list archives are full of raw 8-bit bytes, folded
Message-Ids and repeated In-Reply-To headers, and the stdlib turns those into `Header`
objects or drops them. Only multipart bodies go through `email`, for the MIME walk.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import email
import email.utils
import hashlib
import logging
import quopri
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message

from patchci.errors import PatchError
from patchci.model import Patch, Person
from patchci.subject import normalise_space, parse_subject

log = logging.getLogger(__name__)


class MalformedMail(PatchError):
    """The bytes are not a usable mail (no headers, no Message-Id and no Subject...)."""


_HEADER_LINE_RE = re.compile(rb"^([!-9;-~]+)[ \t]*:(.*)$", re.DOTALL)
_ENCODED_WORD_RE = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")
_EW_GAP_RE = re.compile(r"(\?=)[ \t\r\n]+(=\?)")
_MSGID_RE = re.compile(r"<[^<>\s]+>")
_TEXT_SUBTYPES = ("plain", "x-patch", "x-diff")

# A diff is a `diff --git` line, or `--- x` + `+++ y` + `@@` hunk, or a bare binary notice.
# One alternation so that paths come out in the order the diff touches them.
_DIFF_PATH_RE = re.compile(
    r"^diff --git (?P<git>[^\n]+)$"
    r"|^--- (?P<old>\S+)[^\n]*\n\+\+\+ (?P<new>\S+)[^\n]*\n@@ -\d"
    r"|^(?:rename|copy) (?:from|to) (?P<ren>[^\n]+)$",
    re.MULTILINE,
)
_BINARY_RE = re.compile(r"^(GIT binary patch|Binary files .+ differ)$", re.MULTILINE)


@dataclass(frozen=True)
class _Headers:
    """Header fields in order, names lower-cased, values undecoded and unfolded."""

    fields: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        for k, v in self.fields:
            if k == name:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self.fields if k == name]


def decode_bytes(data: bytes, charset: str | None = None) -> str:
    """Bytes → str: the declared charset if it works, else UTF-8, else Latin-1. Never raises."""
    for cs in (charset and _text_charset(charset), "utf-8"):
        if not cs:
            continue
        try:
            return data.decode(cs)
        except (UnicodeError, LookupError, ValueError):  # NUL in a charset name: ValueError
            continue
    return data.decode("latin-1")


def _decode_word(m: re.Match[str]) -> str:
    charset, enc, text = m.group(1).split("*")[0], m.group(2).upper(), m.group(3)
    try:
        if enc == "B":
            data = base64.b64decode(text + "=" * (-len(text) % 4))
        else:
            data = quopri.decodestring(text.replace("_", " ").encode("ascii", "replace"))
    except (binascii.Error, ValueError):
        return m.group(0)
    try:
        return data.decode(_text_charset(charset), errors="replace")
    except (UnicodeError, ValueError):  # idna/punycode ignore errors="replace"
        return data.decode("utf-8", errors="replace")


# Codecs that look up fine but cannot decode arbitrary bytes with errors="replace".
_BAD_CODECS = frozenset({"idna", "punycode", "undefined"})


def _text_charset(charset: str) -> str:
    """*charset* when it names a text codec that can decode any bytes, else UTF-8 (an
    unknown name, NUL in it, "rot13" and such)."""
    try:
        info = codecs.lookup(charset)
    except (LookupError, ValueError, TypeError):
        return "utf-8"
    if not getattr(info, "_is_text_encoding", True) or info.name in _BAD_CODECS:
        return "utf-8"
    return info.name


def decode_header_value(value: str) -> str:
    """Decode RFC 2047 encoded words and collapse whitespace (folding included)."""
    value = _EW_GAP_RE.sub(r"\1\2", value)  # blanks between encoded words are not text
    return normalise_space(_ENCODED_WORD_RE.sub(_decode_word, value))


def _split_header_block(raw: bytes) -> tuple[_Headers, int]:
    """Header fields and the offset where the body starts.

    A leading mbox `From ` line is skipped. A line that is neither a field nor a
    continuation ends the headers (the stdlib does the same: it becomes body).
    """
    pos = 0
    if raw.startswith(b"From "):
        nl = raw.find(b"\n")
        pos = len(raw) if nl < 0 else nl + 1
    # Each field's value as its lines: joining once at the end keeps a header folded over
    # thousands of lines linear (appending to one bytes value copied it every line).
    fields: list[tuple[str, list[bytes]]] = []
    while pos < len(raw):
        nl = raw.find(b"\n", pos)
        end = len(raw) if nl < 0 else nl
        line = raw[pos:end].rstrip(b"\r")
        nxt = end + 1
        if not line:
            pos = nxt
            break
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1][1].append(line.strip())
        else:
            m = _HEADER_LINE_RE.match(line)
            if not m:
                break
            fields.append((m.group(1).decode("ascii").lower(), [m.group(2).strip()]))
        pos = nxt
    decoded = tuple((k, decode_bytes(b" ".join(v))) for k, v in fields)
    return _Headers(decoded), min(pos, len(raw))


def _msgids(value: str | None) -> list[str]:
    if not value:
        return []
    found = _MSGID_RE.findall(value)
    if found:
        return found
    bare = value.strip().split()
    return [f"<{bare[0]}>"] if bare else []


# email.utils recurses per special character: a 2 KB From: of 1 000 colons overflowed the
# stack. Longer values are cut (no real address is this long).
_MAX_ADDR_HEADER = 1000


def _parse_addresses(values: list[str]) -> list[tuple[str, str]]:
    try:
        return email.utils.getaddresses([v[: _MAX_ADDR_HEADER * 8] for v in values])
    except (RecursionError, ValueError, IndexError):
        return [("", a) for v in values for a in re.findall(r"[^\s<>,;:\"]+@[^\s<>,;:\"]+", v)]


def _person(value: str | None) -> Person:
    if not value:
        return Person("", "")
    value = value[:_MAX_ADDR_HEADER]
    pairs = _parse_addresses([value])
    name, addr = pairs[0] if pairs else ("", "")
    if not addr and "@" not in value:
        return Person(decode_header_value(value), "")
    return Person(decode_header_value(name).strip('"'), addr or value.strip())


def _recipients(hdrs: _Headers) -> tuple[Person, ...]:
    values = hdrs.get_all("to") + hdrs.get_all("cc")
    out: list[Person] = []
    for name, addr in _parse_addresses(values):
        if addr:
            out.append(Person(decode_header_value(name).strip('"'), addr))
    return tuple(out)


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        d = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return d if d.tzinfo is not None else d.replace(tzinfo=UTC)


def _param(content_type: str, name: str) -> str | None:
    m = re.search(rf';\s*{name}\s*=\s*"?([^";\s]+)"?', content_type, re.IGNORECASE)
    return m.group(1) if m else None


def _transfer_decode(body: bytes, cte: str) -> bytes:
    cte = cte.strip().lower()
    if cte == "quoted-printable":
        return quopri.decodestring(body)
    if cte == "base64":
        try:
            return base64.b64decode(re.sub(rb"[^A-Za-z0-9+/=]", b"", body) + b"==")
        except (binascii.Error, ValueError):
            return body
    return body


def _unflow(text: str, delsp: bool) -> str:
    """RFC 3676 format=flowed: join soft-broken lines, undo space-stuffing."""
    out: list[str] = []
    cur = ""
    for line in text.split("\n"):
        line = line.rstrip("\r")
        if line.startswith(" "):
            line = line[1:]
        if line.endswith(" ") and line != "-- ":
            cur += line[:-1] if delsp else line
            continue
        out.append(cur + line)
        cur = ""
    if cur:
        out.append(cur)
    return "\n".join(out)


def _single_part_text(hdrs: _Headers, body: bytes) -> str:
    ctype = hdrs.get("content-type") or "text/plain"
    data = _transfer_decode(body, hdrs.get("content-transfer-encoding") or "")
    text = decode_bytes(data, _param(ctype, "charset"))
    if (_param(ctype, "format") or "").lower() == "flowed":
        text = _unflow(text, (_param(ctype, "delsp") or "").lower() == "yes")
    return text


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    text = decode_bytes(data, part.get_content_charset())
    if (part.get_param("format") or "") == "flowed":
        text = _unflow(text, str(part.get_param("delsp") or "").lower() == "yes")
    return text


def _multipart_text(raw: bytes) -> str:
    msg = email.message_from_bytes(raw)
    texts = [
        _part_text(part)
        for part in msg.walk()
        if part.get_content_maintype() == "text" and part.get_content_subtype() in _TEXT_SUBTYPES
    ]
    return "\n".join(t.rstrip("\n") for t in texts)


def _body_from(hdrs: _Headers, raw: bytes, body_start: int) -> str:
    ctype = (hdrs.get("content-type") or "").lower().strip()
    if ctype.startswith("multipart/"):
        return _multipart_text(raw)
    if ctype and not ctype.startswith("text/"):
        return ""
    return _single_part_text(hdrs, raw[body_start:]).replace("\r\n", "\n")


def body_text(raw: bytes) -> str:
    """The decoded text body (text/plain and patch attachments). Never raises."""
    hdrs, start = _split_header_block(raw)
    try:
        return _body_from(hdrs, raw, start)
    except RecursionError:
        return ""


def _strip_prefix(path: str) -> str:
    path = path.strip().split("\t")[0]
    if path.startswith('"') and path.endswith('"') and len(path) > 1:
        path = path[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")
        path = path.encode("latin-1", "replace").decode("utf-8", "replace")
    return path.split("/", 1)[1] if "/" in path else path


def _git_diff_paths(args: str) -> list[str]:
    """`a/x b/y` → [x, y]; paths may hold blanks (then a rename tells the truth too)."""
    args = args.rstrip("\r")
    if args.startswith("a/"):
        half = (len(args) - 1) // 2
        if args[half] == " " and args[2:half] == args[half + 3 :]:
            return [args[2:half]]
        if args.count(" b/") == 1:
            old, new = args.split(" b/")
            return [old[2:], new]
    parts = args.split(" ")
    if len(parts) == 2:
        return [_strip_prefix(parts[0]), _strip_prefix(parts[1])]
    return [_strip_prefix(args)]


# Patchwork's pull request test: "The following changes since commit" then "are available
# in the git repository at:" then the URL and the ref (wrapped or not).
_PULL_RE = re.compile(
    r"^The following changes since commit.*"
    r"^are available in the git repository at:\s*\n"
    r"^\s*([\w+-]+(?:://|@)[\w/.@:~-]+[\s\\]*[\w/._-]*)\s*$",
    re.DOTALL | re.MULTILINE | re.IGNORECASE,
)


def find_pull_url(text: str) -> str | None:
    """"URL REF" of a `git request-pull` mail body, as Patchwork's pull_url; None if none."""
    m = _PULL_RE.search(text)
    if m is None:
        return None
    return re.sub(r"[\s\\]+", " ", m.group(1)).strip() or None


def find_diff(text: str) -> tuple[bool, tuple[str, ...]]:
    """Whether *text* holds a unified/git diff, and the paths it touches in order."""
    files: list[str] = []
    for m in _DIFF_PATH_RE.finditer(text):
        if m.group("git"):
            files.extend(_git_diff_paths(m.group("git")))
        elif m.group("ren"):
            files.append(m.group("ren").rstrip("\r"))
        else:
            files.extend(_strip_prefix(m.group(g)) for g in ("old", "new"))
    has = bool(files) or bool(_BINARY_RE.search(text))
    seen: dict[str, None] = {}
    for f in files:
        if f and f not in ("dev/null", "/dev/null"):
            seen.setdefault(f, None)
    return has, tuple(seen)


def _pw_id(value: str | None) -> int | None:
    v = (value or "").strip()
    # ASCII digits only ("²".isdigit() is true) and bounded (int() refuses 4 300 digits).
    if v.isascii() and v.isdigit() and len(v) <= 18:
        return int(v)
    return None


def parse_mail(raw: bytes) -> Patch:
    """Parse *raw* into a Patch; raise MalformedMail (one-line reason) if it is no mail."""
    try:
        return _parse_mail(raw)
    except RecursionError as e:  # 1 200 nested multiparts overflowed the stdlib's parser
        raise MalformedMail("too deeply nested (MIME parts or addresses)") from e


def _parse_mail(raw: bytes) -> Patch:
    if not raw.strip():
        raise MalformedMail("empty mail")
    hdrs, body_start = _split_header_block(raw)
    if not hdrs.fields:
        raise MalformedMail("no mail headers found")
    subject_raw = hdrs.get("subject")
    ids = _msgids(hdrs.get("message-id"))
    if not ids and subject_raw is None:
        raise MalformedMail("no Message-Id and no Subject header")
    if ids:
        msgid = ids[0]
    else:
        msgid = f"<{hashlib.sha256(raw).hexdigest()[:32]}@patchci.invalid>"
        log.debug("mail without Message-Id, using %s", msgid)
    subject = decode_header_value(subject_raw or "")
    in_reply_to = [i for v in hdrs.get_all("in-reply-to") for i in _msgids(v)]
    refs: list[str] = [i for v in hdrs.get_all("references") for i in _msgids(v)]
    refs.extend(i for i in in_reply_to[1:] if i not in refs)
    body = _body_from(hdrs, raw, body_start)
    has_diff, files = find_diff(body)
    return Patch(
        msgid=msgid,
        subject=subject,
        author=_person(hdrs.get("from")),
        date=_date(hdrs.get("date")),
        info=parse_subject(subject),
        raw=raw,
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=tuple(dict.fromkeys(refs)),
        recipients=_recipients(hdrs),
        has_diff=has_diff,
        files=files,
        pw_id=_pw_id(hdrs.get("x-patchwork-id")),
        pull_url=find_pull_url(body),
    )
