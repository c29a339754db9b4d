"""A public-inbox (lore.kernel.org) list as a source (`type = "lore"`).

Each poll reads the list's Atom feed (`<url>/new.atom`: its newest messages) and, for each
message not seen before, the whole thread it is in (`<url>/<Message-ID>/t.mbox.gz`), which
is grouped into series as the mbox source groups a local mailbox (covers, rerolls,
replies). A series whose later patches arrive in later polls is completed by them: the
thread is read again and the bigger view adds the new patches. Messages are remembered by
Message-ID, not by date (a mail's Date can be older than what was already read).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit
from xml.etree import ElementTree as ET

import httpx

from patchci import proc
from patchci.errors import CommandTimeout, FetchError

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
        except zlib.error as e:
            raise FetchError(f"GET {url}: not gzip: {e}") from e
        return split_mbox(raw)


def find_b4() -> str | None:
    """b4 on PATH or next to our interpreter (the venv's bin), or None."""
    here = str(Path(sys.executable).parent)
    return shutil.which("b4", path=os.pathsep.join([here, os.environ.get("PATH", "")]))


_CTE_OK = (b"", b"7bit", b"8bit")


def with_b4_trailers(raws: list[bytes], msgid: str, b4: str, work: Path) -> list[bytes]:
    """*raws* (a thread) with the trailers b4 collects from the replies (`b4 am`, on the
    thread as a local mbox: no network) in the bodies of the patches of the series *msgid*
    is in; the original headers are kept (b4 rewrites the subject, dropping the tree tag).
    *raws* unchanged when b4 fails."""
    work.mkdir(parents=True, exist_ok=True)
    mbox = work / "thread.mbox"
    mbox.write_bytes(b"".join(b"From patchci Mon Sep 17 00:00:00 2001\n" + r
                              + (b"" if r.endswith(b"\n") else b"\n") for r in raws))  # fmt: skip
    try:
        res = proc.run([b4, "-q", "am", "-m", str(mbox), "-o", "-", msgid], cwd=work,
                       env={"HOME": str(work)}, timeout=120)  # fmt: skip
    except (CommandTimeout, OSError) as e:
        log.warning("b4 am %s: %s; the thread is used as is", msgid, e)
        return raws
    if not res.ok:
        log.warning("b4 am %s: exit %d: %s", msgid, res.returncode, res.stderr.strip()[-200:])
        return raws
    bodies = {}
    for mail in split_mbox(res.stdout.encode("utf-8", "surrogateescape")):
        head, _, body = mail.partition(b"\n\n")
        m = re.search(rb"(?im)^message-id:\s*(<[^>]+>)", head)
        if m:
            bodies[m.group(1).lower()] = body
    out = []
    for raw in raws:
        head, sep, _ = raw.partition(b"\n\n")
        m = re.search(rb"(?im)^message-id:\s*(<[^>]+>)", head)
        cte = re.search(rb"(?im)^content-transfer-encoding:\s*(\S*)", head)
        ok = (cte.group(1).lower() if cte else b"") in _CTE_OK
        new = bodies.get(m.group(1).lower()) if m else None
        out.append(head + sep + new if new is not None and ok and sep else raw)
    return out
