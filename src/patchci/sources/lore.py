"""A public-inbox (lore.kernel.org) list as a source (`type = "lore"`).

Each poll reads the list's Atom feed (`<url>/new.atom`: its newest messages) and, for each
message not seen before, the whole thread it is in (`<url>/<Message-ID>/t.mbox.gz`), which
is grouped into series as the mbox source groups a local mailbox (covers, rerolls,
replies). A series whose later patches arrive in later polls is completed by them: the
thread is read again and the bigger view adds the new patches. Messages are remembered by
Message-ID, not by date (a mail's Date can be older than what was already read).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import re
import zlib
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit
from xml.etree import ElementTree as ET

import httpx

from patchci.errors import FetchError

log = logging.getLogger(__name__)

ATOM = "{http://www.w3.org/2005/Atom}"
MAX_THREAD_BYTES = 64 * 1024 * 1024  # a gunzipped thread larger than this is refused
_FROM_LINE = re.compile(rb"^From mboxrd@z .*$|^From [^\s]+ +\w{3} \w{3} [ \d]\d .*$", re.M)


@dataclass(frozen=True)
class Entry:
    msgid: str  # without <>
    updated: str  # ISO 8601, as the feed says
    title: str


def event_id(msgid: str) -> int:
    """A stable 60-bit id for a Message-ID (the events table keys on integers)."""
    return int(hashlib.sha256(msgid.encode("utf-8", "surrogateescape")).hexdigest()[:15], 16)


def parse_atom(text: bytes, base_url: str) -> list[Entry]:
    """The entries of a public-inbox Atom feed, oldest first; ValueError when it is not
    one (not XML, no feed)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise ValueError(f"the feed is not XML: {e}") from e
    if root.tag != f"{ATOM}feed":
        raise ValueError(f"not an Atom feed (root element {root.tag!r})")
    prefix = urlsplit(base_url.rstrip("/") + "/").path
    out = []
    for item in root.iter(f"{ATOM}entry"):
        link = item.find(f"{ATOM}link")
        href = link.get("href", "") if link is not None else ""
        path = urlsplit(href).path
        if not path.startswith(prefix):
            continue
        mid = unquote(path[len(prefix) :].strip("/"))
        if not mid or "/" in mid:
            continue
        out.append(Entry(mid, (item.findtext(f"{ATOM}updated") or "").strip(),
                         (item.findtext(f"{ATOM}title") or "").strip()))  # fmt: skip
    return sorted(out, key=lambda x: x.updated)


def split_mbox(data: bytes) -> list[bytes]:
    """An mboxrd (public-inbox's `t.mbox.gz`) as raw mails, `>From ` lines unquoted."""
    starts = [m.start() for m in _FROM_LINE.finditer(data)]
    mails = []
    for a, b in zip(starts, [*starts[1:], len(data)], strict=True):
        chunk = data[a:b]
        body = chunk.split(b"\n", 1)[1] if b"\n" in chunk else b""
        mails.append(re.sub(rb"(?m)^>(>*From )", rb"\1", body))
    return mails


def _escape(msgid: str) -> str:
    # public-inbox's mid_escape: everything but these is percent-encoded ('/' too)
    return quote(msgid, safe="!$&'()*+,;=:@-._~")


class LoreClient:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/") + "/"
        self._http = httpx.Client(timeout=timeout, follow_redirects=True,
                                  headers={"User-Agent": "patchci"})  # fmt: skip

    def close(self) -> None:
        self._http.close()

    def _get(self, url: str, missing_ok: bool = False) -> bytes | None:
        try:
            resp = self._http.get(url)
        except httpx.HTTPError as e:
            raise FetchError(f"GET {url}: {type(e).__name__}: {e}") from e
        if resp.status_code == 404 and missing_ok:
            return None
        if resp.status_code != 200:
            raise FetchError(f"GET {url}: HTTP {resp.status_code}")
        return resp.content

    def feed(self) -> list[Entry]:
        url = self.url + "new.atom"
        data = self._get(url, missing_ok=True)
        if data is None:  # public-inbox has no feed for an inbox without messages yet
            self._get(self.url + "_/text/config/raw")  # the inbox answers; a wrong URL: 404
            return []
        try:
            return parse_atom(data, self.url)
        except ValueError as e:
            raise FetchError(f"GET {url}: {e}") from e

    def thread(self, msgid: str) -> list[bytes]:
        """Every mail of the thread holding *msgid*, as raw mails."""
        url = f"{self.url}{_escape(msgid)}/t.mbox.gz"
        data = self._get(url) or b""
        try:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            raw = d.decompress(data, MAX_THREAD_BYTES)
            if d.unconsumed_tail:
                raise FetchError(f"GET {url}: thread larger than {MAX_THREAD_BYTES} bytes")
        except (zlib.error, gzip.BadGzipFile) as e:
            raise FetchError(f"GET {url}: not gzip: {e}") from e
        return split_mbox(raw)
