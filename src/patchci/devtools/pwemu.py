"""A fake Patchwork v3.2.1 server: real HTTP on 127.0.0.1, quirks included.

Behaviour follows /work/shared/reference/patchwork-api.md (observed on a real server):
unversioned `/api/` root, `Link` pagination with absolute URLs, events newest-first with
naive server-local dates, `200 []` for invalid filter values, HTTP 500 for a time-zone
suffix in `since`/`before`, slug-only check contexts and maintainer-only check posting.

Tests drive it with Python methods (add_series_from_mbox, add_patch_to_series, fail_next,
delay_next, ...) and inspect `requests` to see exactly what a client sent.
"""

from __future__ import annotations

import base64
import email
import email.header
import email.message
import email.policy
import email.utils
import hashlib
import json
import math
import re
import secrets
import socketserver
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from patchci.model import SubjectInfo
from patchci.subject import parse_subject, patchwork_name, strip_reply

VERSIONS = ("1.0", "1.1", "1.2", "1.3")
CHECK_STATES = ("pending", "success", "warning", "fail")
EVENT_CATEGORIES = (
    "cover-created", "patch-created", "patch-completed", "patch-state-changed",
    "patch-delegated", "patch-relation-changed", "check-created", "series-created",
    "series-completed", "cover-comment-created", "patch-comment-created",
)  # fmt: skip
SLUG_MSG = 'Enter a valid "slug" consisting of letters, numbers, underscores or hyphens.'
NO_PERM = "You do not have permission to perform this action."
_SLUG_RE = re.compile(r"^[-a-zA-Z0-9_]+\Z")
_WHEN_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?(Z|[+-]\d{2}:?\d{2})?$"
)
_URL_RE = re.compile(
    r"^(?:https?|ftps?)://(?:[^\s:@/]+(?::[^\s:@/]*)?@)?"
    r"(?:localhost|\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]|"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}\.?)"
    r"(?::\d{1,5})?(?:[/?#]\S*)?\Z"
)
_MBOX_SPLIT_RE = re.compile(rb"(?m)^From [^\n]*\n(?=[!-9;-~]+:)")
_DIFF_START_RE = re.compile(r"(?m)^(?:diff --git |Index: |--- \S)")
_TAG_RE = re.compile(r"(?m)^(?:Acked|Reviewed|Tested|Reported|Suggested|Nacked)-by:.*$")
_POSTSCRIPT_RE = re.compile(r"\n-{2,3} ?\n")
_SKIP_HEADERS = {"content-type", "mime-version", "content-transfer-encoding"}

Json = dict[str, Any]


@dataclass
class Mail:
    """One parsed mail: what Patchwork keeps of it."""

    msgid: str
    subject: str
    info: SubjectInfo
    from_name: str
    from_email: str
    date: datetime  # naive UTC, from the Date: header
    headers: list[tuple[str, str]]  # raw (name, value), folding kept
    body: str
    in_reply_to: str | None
    is_reply: bool

    @property
    def stripped_msgid(self) -> str:
        return self.msgid.strip("<>")


@dataclass
class User:
    id: int
    username: str
    email: str
    token: str
    password: str | None = None
    maintainer: bool = False


@dataclass
class Submission:
    """A patch or a cover letter stored in the fake."""

    id: int
    kind: str  # "patch" or "cover"
    mail: Mail
    series_id: int
    submitter_id: int
    content: str
    diff: str
    comments: list[Mail] = field(default_factory=list)
    state: str = "new"


@dataclass
class SeriesRec:
    id: int
    name: str
    version: int
    total: int
    date: datetime
    submitter_id: int
    cover_id: int | None
    patch_ids: list[int]
    held_back: list[Mail]
    completed: bool = False


@dataclass
class CheckRec:
    id: int
    patch_id: int
    user_id: int
    date: datetime  # naive server-local
    state: str
    context: str
    target_url: str | None
    description: str | None


@dataclass
class EventRec:
    id: int
    category: str
    date: datetime  # naive server-local
    series_id: int | None = None
    patch_id: int | None = None
    cover_id: int | None = None
    check_id: int | None = None
    actor_id: int | None = None


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    query: str  # raw query string, exactly as sent
    status: int
    authorization: str | None  # only the scheme ("Token", "Bearer"), never the secret

    @property
    def params(self) -> dict[str, list[str]]:
        return parse_qs(self.query, keep_blank_values=True)


@dataclass
class _Fault:
    remaining: int
    status: int = 0
    delay: float = 0.0
    method: str | None = None
    path_contains: str | None = None
    after: bool = False

    def matches(self, method: str, path: str) -> bool:
        if self.remaining <= 0 or (self.method and self.method != method):
            return False
        return not (self.path_contains and self.path_contains not in path)


@dataclass
class Resp:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


class _Abort(Exception):
    def __init__(self, resp: Resp) -> None:
        super().__init__(resp.status)
        self.resp = resp


def _json(status: int, obj: Any, headers: list[tuple[str, str]] | None = None) -> Resp:
    body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    return Resp(status, body, "application/json", headers or [])


def _html(status: int, title: str) -> Resp:
    body = f"<!DOCTYPE html><html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
    return Resp(status, body.encode(), "text/html; charset=utf-8")


def _detail(status: int, msg: str) -> _Abort:
    return _Abort(_json(status, {"detail": msg}))


# ---------------------------------------------------------------- mail parsing


def split_mbox(data: bytes) -> list[bytes]:
    """Split an mbox into messages on `From ` lines that are followed by a header."""
    parts = _MBOX_SPLIT_RE.split(data)
    return [p for p in parts if p.strip()]


def _decode_header(value: Any) -> str:
    if value is None:
        return ""
    out = []
    try:
        chunks = email.header.decode_header(value)
    except Exception:
        return re.sub(r"\s+", " ", str(value)).strip()
    for chunk, cs in chunks:
        if isinstance(chunk, bytes):
            try:
                out.append(chunk.decode(cs if cs and cs != "unknown-8bit" else "utf-8", "replace"))
            except LookupError:
                out.append(chunk.decode("utf-8", "replace"))
        else:
            out.append(chunk)
    return re.sub(r"\s+", " ", "".join(out)).strip()


def _body_text(msg: email.message.Message) -> str:
    for part in msg.walk():
        if part.get_content_maintype() == "multipart":
            continue
        if part.get_content_type() == "text/plain" or not part.get_content_type():
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                continue
            charset = part.get_content_charset() or "utf-8"
            try:
                return payload.decode(charset, "replace")
            except LookupError:
                return payload.decode("utf-8", "replace")
    return ""


def parse_mail(raw: bytes, now_utc: datetime) -> Mail:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    subject = _decode_header(msg.get("Subject"))
    name, addr = email.utils.parseaddr(_decode_header(msg.get("From")))
    try:
        date = email.utils.parsedate_to_datetime(_decode_header(msg.get("Date")))
        if date.tzinfo is not None:
            date = date.astimezone(UTC).replace(tzinfo=None)
    except (TypeError, ValueError):
        date = now_utc.replace(tzinfo=None, microsecond=0)
    msgid = _decode_header(msg.get("Message-Id")) or f"<{secrets.token_hex(8)}@fake>"
    irt = _decode_header(msg.get("In-Reply-To")) or None
    _, is_reply = strip_reply(subject)
    return Mail(
        msgid=msgid.split()[0],
        subject=subject,
        info=parse_subject(subject),
        from_name=name,
        from_email=addr,
        date=date,
        headers=[(k, str(v)) for k, v in msg.raw_items()],
        body=_body_text(msg),
        in_reply_to=irt.split()[0] if irt else None,
        is_reply=is_reply,
    )


def _split_diff(body: str) -> tuple[str, str]:
    m = _DIFF_START_RE.search(body)
    if not m:
        return body.rstrip(), ""
    return body[: m.start()].rstrip(), body[m.start() :]


def _diff_hash(diff: str) -> str:
    lines = [ln for ln in diff.splitlines() if not ln.startswith("index ")]
    return hashlib.sha1("\n".join(lines).encode()).hexdigest()


def _fmt(dt: datetime) -> str:
    """Django's rendering of a naive datetime: microseconds only when non-zero."""
    return dt.isoformat()


class FakePatchwork:
    """A Patchwork server for tests. Use as a context manager or start()/stop()."""

    def __init__(
        self,
        project: str = "netdev",
        *,
        project_name: str = "Netdev",
        list_id: str = "netdev.vger.kernel.org",
        tz_offset: timedelta = timedelta(hours=11),
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.project = project
        self.project_name = project_name
        self.list_id = list_id
        self.tz_offset = tz_offset
        self._clock = clock or (lambda: datetime.now(UTC))
        self._skew = timedelta()
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._ids: dict[str, int] = {}
        self.users: dict[int, User] = {}
        self.people: dict[str, tuple[int, str]] = {}  # email -> (id, name)
        self.submissions: dict[int, Submission] = {}  # patches
        self.covers: dict[int, Submission] = {}
        self.series: dict[int, SeriesRec] = {}
        self.checks: dict[int, CheckRec] = {}
        self.events: dict[int, EventRec] = {}
        self._faults: list[_Fault] = []
        self._log: list[LoggedRequest] = []
        self.token = self.add_user("ci-bot", maintainer=True, password="ci-bot")

    # ------------------------------------------------------------ lifecycle

    def start(self) -> FakePatchwork:
        handler = type("_Handler", (_Handler,), {"fake": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakePatchwork:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "FakePatchwork is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # ------------------------------------------------------------ clock

    def now_utc(self) -> datetime:
        return self._clock() + self._skew

    def now_local(self) -> datetime:
        """Server wall-clock in TIME_ZONE, naive, as events and checks store it."""
        return (self.now_utc().astimezone(UTC) + self.tz_offset).replace(tzinfo=None)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._skew += timedelta(seconds=seconds)

    # ------------------------------------------------------------ test control

    def _next_id(self, kind: str) -> int:
        self._ids[kind] = self._ids.get(kind, 0) + 1
        return self._ids[kind]

    def add_user(
        self, username: str, *, maintainer: bool = False, password: str | None = None
    ) -> str:
        """Add a user; returns its 40-hex API token."""
        with self._lock:
            uid = self._next_id("user")
            token = secrets.token_hex(20)
            self.users[uid] = User(
                uid, username, f"{username}@example.com", token, password, maintainer
            )
            return token

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        after: bool = False,
    ) -> None:
        """Answer the next *n* matching requests with *status* (HTML body, like a proxy).

        With after=True the request is processed first (side effects happen, e.g. a check is
        stored) and only the response is replaced: the "500 after commit" case.
        """
        with self._lock:
            self._faults.append(_Fault(n, status, 0.0, method, path_contains, after))

    def delay_next(
        self,
        n: int = 1,
        seconds: float = 1.0,
        *,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Sleep *seconds* before handling the next *n* matching requests (client timeouts)."""
        with self._lock:
            self._faults.append(_Fault(n, 0, seconds, method, path_contains))

    @property
    def requests(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def series_patches(self, series_id: int) -> list[tuple[int, str]]:
        """(patch id, Patchwork name) of a series' patches, in order."""
        with self._lock:
            s = self.series[series_id]
            return [
                (pid, patchwork_name(self.submissions[pid].mail.subject)) for pid in s.patch_ids
            ]

    def checks_for(self, patch_id: int) -> list[CheckRec]:
        with self._lock:
            return [c for c in self.checks.values() if c.patch_id == patch_id]

    def add_series_from_mbox(
        self, mbox: bytes | Sequence[bytes], *, complete: bool = True, received: int | None = None
    ) -> int:
        """Parse mails into one series (cover, patches, reply tags); returns the series id.

        complete=False holds back the last patch; `received` holds back all patches after
        the first *received*. Held-back patches arrive with add_patch_to_series().
        """
        raws = split_mbox(mbox) if isinstance(mbox, bytes) else list(mbox)
        mails = [parse_mail(r, self.now_utc()) for r in raws]
        cover = next((m for m in mails if not m.is_reply and m.info.number == 0), None)
        patches = [m for m in mails if not m.is_reply and m is not cover]
        replies = [m for m in mails if m.is_reply]
        patches.sort(key=lambda m: m.info.number if m.info.number is not None else 0)
        if received is None:
            received = len(patches) if complete else len(patches) - 1
        if not patches and cover is None:
            raise ValueError("no cover letter or patch in the given mails")
        if received < 1 and cover is None:
            raise ValueError("a series without a cover letter needs at least one patch")
        first = cover or patches[0]
        total = max([m.info.total or 1 for m in patches] + [first.info.total or 1])
        with self._lock:
            sid = self._next_id("series")
            name = cover.info.title if cover else patchwork_name(first.subject)
            self.series[sid] = SeriesRec(
                sid, name, first.info.version, total, first.date,
                self._person(first), None, [], patches[received:],
            )  # fmt: skip
            if cover is not None:
                self._event("series-created", series_id=sid)
                cid = self._store(sid, "cover", cover)
                self.series[sid].cover_id = cid
                self._event("cover-created", cover_id=cid)
            for i, mail in enumerate(patches[:received]):
                self._add_patch(sid, mail, first_without_cover=(cover is None and i == 0))
            for reply in replies:
                self._attach_reply(reply)
        return sid

    def add_patch_to_series(self, series_id: int, mail: bytes | None = None) -> int:
        """Deliver a held-back patch (or *mail*) late; emits series-completed when complete."""
        with self._lock:
            s = self.series[series_id]
            if mail is not None:
                parsed = parse_mail(mail, self.now_utc())
            elif s.held_back:
                parsed = s.held_back.pop(0)
            else:
                raise ValueError(f"series {series_id} has no held-back patch")
            return self._add_patch(series_id, parsed, first_without_cover=False)

    def add_check(self, patch_id: int, state: str, context: str, **kw: Any) -> int:
        """Store a check as if a maintainer had posted it (for list/pagination tests)."""
        with self._lock:
            return self._create_check(
                patch_id, 1, state, context, kw.get("target_url"), kw.get("description")
            )

    # ------------------------------------------------------------ storage

    def _person(self, mail: Mail) -> int:
        if mail.from_email not in self.people:
            self.people[mail.from_email] = (self._next_id("person"), mail.from_name)
        return self.people[mail.from_email][0]

    def _store(self, sid: int, kind: str, mail: Mail) -> int:
        content, diff = _split_diff(mail.body)
        sub_id = self._next_id(kind)
        table = self.covers if kind == "cover" else self.submissions
        table[sub_id] = Submission(sub_id, kind, mail, sid, self._person(mail), content, diff)
        return sub_id

    def _add_patch(self, sid: int, mail: Mail, *, first_without_cover: bool) -> int:
        s = self.series[sid]
        pid = self._store(sid, "patch", mail)
        self._event("patch-created", patch_id=pid)
        if first_without_cover:
            self._event("series-created", series_id=sid)
        s.patch_ids.append(pid)
        s.patch_ids.sort(key=lambda i: self.submissions[i].mail.info.number or 0)
        self._event("patch-completed", patch_id=pid, series_id=sid)
        if len(s.patch_ids) >= s.total and not s.completed:
            s.completed = True
            self._event("series-completed", series_id=sid)
        return pid

    def _attach_reply(self, reply: Mail) -> None:
        for sub in self.submissions.values():
            if sub.mail.msgid == reply.in_reply_to:
                sub.comments.append(reply)

    def _event(self, category: str, **refs: int) -> int:
        eid = self._next_id("event")
        self.events[eid] = EventRec(eid, category, self.now_local(), **refs)
        return eid

    def _create_check(
        self,
        patch_id: int,
        user_id: int,
        state: str,
        context: str,
        url: str | None,
        desc: str | None,
    ) -> int:
        cid = self._next_id("check")
        self.checks[cid] = CheckRec(
            cid, patch_id, user_id, self.now_local(), state, context, url, desc
        )
        self._event("check-created", patch_id=patch_id, check_id=cid, actor_id=user_id)
        return cid

    # ------------------------------------------------------------ request entry

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Resp:
        parts = urlsplit(target)
        fault = self._take_fault(method, parts.path)
        if fault is not None and fault.delay:
            self._stopping.wait(fault.delay)
        if fault is not None and fault.status and not fault.after:
            resp = self._fault_resp(fault.status)
        else:
            try:
                with self._lock:
                    resp = self._route(method, parts.path, parts.query, headers, body)
            except _Abort as e:
                resp = e.resp
            if fault is not None and fault.status:
                resp = self._fault_resp(fault.status)
        auth = headers.get("authorization", "").split(" ", 1)[0] or None
        with self._lock:
            self._log.append(LoggedRequest(method, parts.path, parts.query, resp.status, auth))
        return resp

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for f in self._faults:
                if f.matches(method, path):
                    f.remaining -= 1
                    return f
        return None

    @staticmethod
    def _fault_resp(status: int) -> Resp:
        titles = {500: "Server Error (500)", 502: "502 Bad Gateway", 503: "503 Service Unavailable",
                  504: "504 Gateway Time-out"}  # fmt: skip
        return _html(status, titles.get(status, f"{status} Error"))

    def _route(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes
    ) -> Resp:
        q = parse_qs(query, keep_blank_values=True)
        m = re.match(r"^/api/(?:(\d+\.\d+)/)?(.*)$", path)
        if m:
            if m.group(1) and m.group(1) not in VERSIONS:
                return _html(404, "Page not found")
            return _Api(self, m.group(1), headers).dispatch(method, m.group(2), q, query, body)
        if method not in ("GET", "HEAD"):
            return _html(405, "Method Not Allowed")
        return self._pages(path, q)

    def _pages(self, path: str, q: dict[str, list[str]]) -> Resp:
        if m := re.match(r"^/series/(\d+)/mbox/$", path):
            s = self.series.get(int(m.group(1)))
            if s is None:
                return _html(404, "Page not found")
            mbox = "\n".join(self._patch_mbox(self.submissions[p]) for p in s.patch_ids)
            slug = re.sub(r"[^a-z0-9]+", "-", s.name.lower()).strip("-")
            return Resp(200, mbox.encode("utf-8", "surrogateescape"), "text/plain",
                        [("Content-Disposition", f"attachment; filename={slug}.patch")])  # fmt: skip
        if m := re.match(r"^/patch/(\d+)/mbox/$", path):
            sub = self.submissions.get(int(m.group(1)))
            if sub is None:
                return _html(404, "Page not found")
            return Resp(302, b"", "text/html", [("Location", self._sub_mbox_url(sub))])
        if m := re.match(r"^/project/([^/]+)/(patch|cover)/(.+)/mbox/$", path):
            table = self.covers if m.group(2) == "cover" else self.submissions
            sub = next((s for s in table.values() if s.mail.stripped_msgid == m.group(3)), None)
            if sub is None or m.group(1) != self.project:
                return _html(404, "Page not found")
            subs = [sub]
            if sub.kind == "patch" and q.get("series"):
                ids = self.series[sub.series_id].patch_ids
                subs = [self.submissions[i] for i in ids[: ids.index(sub.id) + 1]]
            text = "\n".join(self._patch_mbox(s) for s in subs)
            return Resp(200, text.encode("utf-8", "surrogateescape"), "text/plain; charset=utf-8")
        if path.startswith("/project/"):
            return _html(200, "Patchwork")
        return _html(404, "Page not found")

    def _sub_mbox_url(self, sub: Submission) -> str:
        return f"{self.url}/project/{self.project}/{sub.kind}/{sub.mail.stripped_msgid}/mbox/"

    def _patch_mbox(self, sub: Submission) -> str:
        """Patchwork's patch_to_mbox(): content, reply tags, postscript, diff."""
        body = sub.content.strip() + "\n" if sub.content else ""
        parts = _POSTSCRIPT_RE.split(body, maxsplit=1)
        postscript = ""
        if len(parts) == 2:
            body, postscript = parts[0].strip() + "\n", parts[1].rstrip()
        for reply in sub.comments:
            body += "".join(t + "\n" for t in _TAG_RE.findall(reply.body))
        if postscript:
            body += "---\n" + postscript + "\n"
        if sub.diff:
            body += "\n" + sub.diff
        if not body.endswith("\n"):
            body += "\n"
        person = next(p for e, p in self.people.items() if p[0] == sub.submitter_id)
        email_addr = next(e for e, p in self.people.items() if p[0] == sub.submitter_id)
        cte = "7bit" if body.isascii() else "8bit"
        lines = [
            f"From patchwork {sub.mail.date.ctime()}",
            'Content-Type: text/plain; charset="utf-8"',
            "MIME-Version: 1.0",
            f"Content-Transfer-Encoding: {cte}",
            f"X-Patchwork-Submitter: {person[1]} <{email_addr}>",
            f"X-Patchwork-Id: {sub.id}",
        ]
        for name, value in sub.mail.headers:
            if name.lower() in _SKIP_HEADERS:
                continue
            if name.lower() == "message-id" and len(name) + len(value) > 76:
                value = "\n " + value.strip()
            lines.append(f"{name}: {value}")
        return "\n".join(lines) + "\n\n" + body


class _Api:
    """One API request: routing, auth, filters and JSON shapes for one version prefix."""

    def __init__(self, fake: FakePatchwork, version: str | None, headers: dict[str, str]) -> None:
        self.fake = fake
        self.version = version or VERSIONS[-1]
        self.prefix = f"{fake.url}/api/{version}/" if version else f"{fake.url}/api/"
        self.headers = headers
        self.user = self._authenticate()

    def _v(self, at_least: str) -> bool:
        return VERSIONS.index(self.version) >= VERSIONS.index(at_least)

    def _authenticate(self) -> User | None:
        auth = self.headers.get("authorization", "")
        scheme, _, cred = auth.partition(" ")
        if scheme == "Token":
            user = next((u for u in self.fake.users.values() if u.token == cred.strip()), None)
            if user is None:
                raise _detail(403, "Invalid token.")
            return user
        if scheme == "Basic":
            try:
                name, _, pw = base64.b64decode(cred).decode().partition(":")
            except ValueError as e:
                raise _detail(
                    403, "Invalid basic header. Credentials not correctly base64 encoded."
                ) from e
            user = next((u for u in self.fake.users.values() if u.username == name), None)
            if user is None or user.password is None or user.password != pw:
                raise _detail(403, "Invalid username/password.")
            return user
        return None  # Bearer and friends are not authenticators here: anonymous

    def dispatch(
        self, method: str, rest: str, q: dict[str, list[str]], raw: str, body: bytes
    ) -> Resp:
        routes: list[tuple[str, Callable[..., Resp], tuple[str, ...]]] = [
            (r"", self.root, ("GET",)),
            (r"projects/", self.projects, ("GET",)),
            (r"projects/([^/]+)/", self.project_detail, ("GET",)),
            (r"series/", self.series_list, ("GET",)),
            (r"series/(\d+)/", self.series_detail, ("GET",)),
            (r"patches/", self.patch_list, ("GET",)),
            (r"patches/(\d+)/", self.patch_detail, ("GET",)),
            (r"patches/(\d+)/checks/", self.checks_view, ("GET", "POST")),
            (r"patches/(\d+)/checks/(\d+)/", self.check_detail, ("GET",)),
            (r"covers/", self.cover_list, ("GET",)),
            (r"covers/(\d+)/", self.cover_detail, ("GET",)),
            (r"events/", self.event_list, ("GET",)),
            (r"users/", self.users_list, ("GET",)),
        ]
        self.query, self.q, self.method, self.body = raw, q, method, body
        self._path_rest = rest
        for pattern, view, methods in routes:
            m = re.fullmatch(pattern, rest)
            if m:
                if method not in methods and not (method == "HEAD" and "GET" in methods):
                    raise _detail(405, f'Method "{method}" not allowed.')
                return view(*m.groups())
        return _html(404, "Page not found")

    # ------------------------------------------------------------ helpers

    def _arg(self, name: str) -> str | None:
        vals = self.q.get(name)
        return vals[-1] if vals else None

    def _when(self, name: str) -> datetime | None | bool:
        """since/before: a naive datetime, None if absent, False if invalid (-> [])."""
        value = self._arg(name)
        if value is None or value == "":
            return None
        m = _WHEN_RE.match(value)
        if m is None:
            return False
        if m.group(1):
            # Django hands an aware datetime to SQLite with USE_TZ=False: it raises.
            raise _Abort(_html(500, "Server Error (500)"))
        try:
            return datetime.fromisoformat(value.replace(" ", "T"))
        except ValueError:
            return False

    def _date_filter(self, rows: list[Any], get: Callable[[Any], datetime]) -> list[Any] | None:
        since, before = self._when("since"), self._when("before")
        if since is False or before is False:
            return None
        if isinstance(since, datetime):
            rows = [r for r in rows if get(r) >= since]
        if isinstance(before, datetime):
            rows = [r for r in rows if get(r) < before]
        return rows

    def _project_ok(self) -> bool:
        value = self._arg("project")
        return value is None or value in (self.fake.project, "1")

    def _int_arg(self, name: str) -> int | None | bool:
        value = self._arg(name)
        if value is None or value == "":
            return None
        return int(value) if value.isdigit() else False

    def _ordered(
        self, rows: list[Any], fields: dict[str, Callable[[Any], Any]], default: str
    ) -> list[Any]:
        order = self._arg("order") or default
        key = order.lstrip("-")
        if key not in fields:
            order, key = default, default.lstrip("-")
        return sorted(rows, key=lambda r: (fields[key](r), r.id), reverse=order.startswith("-"))

    def _page(self, rows: Sequence[Any] | None, render: Callable[[Any], Json]) -> Resp:
        rows = list(rows or [])
        try:
            per_page = int(self._arg("per_page") or 30)
        except ValueError:
            per_page = 30
        per_page = 30 if per_page <= 0 else min(per_page, 250)
        pages = max(1, math.ceil(len(rows) / per_page))
        raw_page = self._arg("page") or "1"
        page = pages if raw_page == "last" else int(raw_page) if raw_page.isdigit() else 0
        if not 1 <= page <= pages:
            raise _detail(404, "Invalid page.")
        base = self.prefix + self._path_rest

        def link(p: int | None) -> str:
            qd = {k: v for k, v in self.q.items() if k != "page"}
            if p is not None:
                qd["page"] = [str(p)]
            return f"{base}?{urlencode(sorted(qd.items()), doseq=True)}"

        links = []
        if page < pages:
            links.append(f'<{link(page + 1)}>; rel="next"')
        if page > 1:
            links.append(f'<{link(page - 1 if page > 2 else None)}>; rel="prev"')
        links += [f'<{link(1)}>; rel="first"', f'<{link(pages)}>; rel="last"']
        chunk = rows[(page - 1) * per_page : page * per_page]
        return _json(200, [render(r) for r in chunk], [("Link", ", ".join(links))])

    # ------------------------------------------------------------ shapes

    def _project_json(self, full: bool = False) -> Json:
        f = self.fake
        d: Json = {
            "id": 1, "url": f"{self.prefix}projects/1/", "name": f.project_name,
            "link_name": f.project, "list_id": f.list_id,
            "list_email": f.list_id.replace(".", "@", 1), "web_url": "", "scm_url": "",
            "webscm_url": "", "list_archive_url": f"https://lore.kernel.org/{f.project}/",
            "list_archive_url_format": "https://lore.kernel.org/r/{}", "commit_url_format": "",
        }  # fmt: skip
        if full:
            d["maintainers"] = [self._user_json(u) for u in f.users.values() if u.maintainer]
            d["subject_match"] = ""
        return d

    def _user_json(self, u: User | None) -> Json | None:
        if u is None:
            return None
        return {"id": u.id, "url": f"{self.prefix}users/{u.id}/", "username": u.username,
                "first_name": "", "last_name": "", "email": u.email}  # fmt: skip

    def _person_json(self, pid: int) -> Json:
        email_addr, name = next((e, p[1]) for e, p in self.fake.people.items() if p[0] == pid)
        return {"id": pid, "url": f"{self.prefix}people/{pid}/", "name": name, "email": email_addr}

    def _series_ref(self, s: SeriesRec) -> Json:
        d: Json = {"id": s.id, "url": f"{self.prefix}series/{s.id}/",
                   "web_url": f"{self.fake.url}/project/{self.fake.project}/list/?series={s.id}",
                   "date": _fmt(s.date), "name": s.name, "version": s.version,
                   "mbox": f"{self.fake.url}/series/{s.id}/mbox/"}  # fmt: skip
        if not self._v("1.1"):
            del d["web_url"]
        return d

    def _sub_ref(self, sub: Submission) -> Json:
        plural = "covers" if sub.kind == "cover" else "patches"
        mid = sub.mail.stripped_msgid
        d: Json = {
            "id": sub.id, "url": f"{self.prefix}{plural}/{sub.id}/",
            "web_url": f"{self.fake.url}/project/{self.fake.project}/{sub.kind}/{mid}/",
            "msgid": sub.mail.msgid, "list_archive_url": f"https://lore.kernel.org/r/{mid}",
            "date": _fmt(sub.mail.date),
            "name": patchwork_name(sub.mail.subject),
            "mbox": self.fake._sub_mbox_url(sub),
        }  # fmt: skip
        if not self._v("1.2"):
            del d["list_archive_url"]
        if not self._v("1.1"):
            del d["web_url"]
        return d

    def _series_json(self, s: SeriesRec) -> Json:
        d = self._series_ref(s)
        d.update({
            "project": self._project_json(), "submitter": self._person_json(s.submitter_id),
            "total": s.total, "received_total": len(s.patch_ids),
            "received_all": len(s.patch_ids) >= s.total,
            "cover_letter": self._sub_ref(self.fake.covers[s.cover_id]) if s.cover_id else None,
            "patches": [self._sub_ref(self.fake.submissions[p]) for p in s.patch_ids],
        })  # fmt: skip
        return d

    def _aggregate(self, patch_id: int) -> str:
        newest: dict[str, CheckRec] = {}
        for c in sorted(self.fake.checks.values(), key=lambda c: (c.date, c.id)):
            if c.patch_id == patch_id:
                newest[c.context] = c
        states = {c.state for c in newest.values()}
        for st in ("fail", "warning", "pending", "success"):
            if st in states:
                return st
        return "pending"

    def _patch_json(self, sub: Submission, detail: bool) -> Json:
        d = self._sub_ref(sub)
        d.update({
            "project": self._project_json(), "commit_ref": None, "pull_url": None,
            "state": sub.state, "archived": False, "hash": _diff_hash(sub.diff) if sub.diff else None,
            "submitter": self._person_json(sub.submitter_id), "delegate": None,
            "series": [self._series_ref(self.fake.series[sub.series_id])],
            "comments": f"{self.fake.url}/api/patches/{sub.id}/comments/",
            "check": self._aggregate(sub.id),
            "checks": f"{self.fake.url}/api/patches/{sub.id}/checks/",
            "tags": {}, "related": [],
        })  # fmt: skip
        if not self._v("1.2"):
            del d["related"]
        if not self._v("1.1"):
            del d["comments"]
        if detail:
            hdrs: dict[str, Any] = {}
            for k, v in sub.mail.headers:
                hdrs[k] = (
                    [*hdrs[k], v]
                    if isinstance(hdrs.get(k), list)
                    else [hdrs[k], v]
                    if k in hdrs
                    else v
                )
            d.update({"headers": hdrs, "content": sub.content, "diff": sub.diff,
                      "prefixes": [p for p in sub.mail.info.prefixes if p.lower() != "patch"]})  # fmt: skip
        return d

    def _check_json(self, c: CheckRec, event: bool = False) -> Json:
        d: Json = {"id": c.id, "url": f"{self.prefix}patches/{c.patch_id}/checks/{c.id}/",
                   "user": self._user_json(self.fake.users.get(c.user_id)), "date": _fmt(c.date),
                   "state": c.state, "target_url": c.target_url, "context": c.context,
                   "description": c.description}  # fmt: skip
        if event:
            del d["user"], d["description"]
        return d

    def _event_json(self, e: EventRec) -> Json:
        f = self.fake
        payload: Json = {}
        if e.patch_id is not None:
            payload["patch"] = self._sub_ref(f.submissions[e.patch_id])
        if e.cover_id is not None:
            payload["cover"] = self._sub_ref(f.covers[e.cover_id])
        if e.series_id is not None:
            payload["series"] = self._series_ref(f.series[e.series_id])
        if e.check_id is not None:
            payload["check"] = self._check_json(f.checks[e.check_id], event=True)
        return {"id": e.id, "category": e.category, "project": self._project_json(),
                "date": _fmt(e.date), "actor": self._user_json(f.users.get(e.actor_id or 0)),
                "payload": payload}  # fmt: skip

    # ------------------------------------------------------------ views

    def root(self) -> Resp:
        names = ("projects", "users", "people", "patches", "covers", "series", "events", "bundles")
        return _json(200, {n: f"{self.prefix}{n}/" for n in names})

    def users_list(self) -> Resp:
        if self.user is None:
            raise _detail(403, "Authentication credentials were not provided.")
        self._path_rest = "users/"
        return self._page(list(self.fake.users.values()), self._user_json)  # type: ignore[arg-type]

    def projects(self) -> Resp:
        self._path_rest = "projects/"
        return self._page([self.fake], lambda _: self._project_json(full=True))

    def project_detail(self, key: str) -> Resp:
        if key not in ("1", self.fake.project):
            raise _detail(404, "No Project matches the given query.")
        return _json(200, self._project_json(full=True))

    def series_list(self) -> Resp:
        self._path_rest = "series/"
        if self._arg("order") in ("received_all", "-received_all"):
            raise _Abort(_html(500, "Server Error (500)"))  # FieldError in 3.2.1
        rows = self._date_filter(list(self.fake.series.values()), lambda s: s.date)
        if rows is not None and not self._project_ok():
            rows = None
        if rows is not None and (text := self._arg("q")):
            rows = [s for s in rows if text.lower() in s.name.lower()]
        if rows is not None:
            rows = self._ordered(
                rows,
                {"id": lambda s: s.id, "date": lambda s: s.date, "name": lambda s: s.name},
                "id",
            )
        return self._page(rows, self._series_json)

    def series_detail(self, sid: str) -> Resp:
        s = self.fake.series.get(int(sid))
        if s is None:
            raise _detail(404, "No Series matches the given query.")
        return _json(200, self._series_json(s), [("Allow", "GET, HEAD, OPTIONS")])

    def patch_list(self) -> Resp:
        self._path_rest = "patches/"
        rows = self._date_filter(list(self.fake.submissions.values()), lambda p: p.mail.date)
        series = self._int_arg("series")
        if rows is None or not self._project_ok() or series is False:
            return self._page(None, dict)
        if series is not None:
            rows = [p for p in rows if p.series_id == series]
        if text := self._arg("q"):
            rows = [p for p in rows if text.lower() in p.mail.subject.lower()]
        if msgid := self._arg("msgid"):
            rows = [p for p in rows if p.mail.stripped_msgid == msgid]
        if h := self._arg("hash"):
            rows = [p for p in rows if p.diff and _diff_hash(p.diff) == h]
        rows = self._ordered(rows, {"id": lambda p: p.id, "date": lambda p: p.mail.date}, "id")
        return self._page(rows, lambda p: self._patch_json(p, detail=False))

    def patch_detail(self, pid: str) -> Resp:
        sub = self.fake.submissions.get(int(pid))
        if sub is None:
            raise _detail(404, "No Patch matches the given query.")
        return _json(
            200, self._patch_json(sub, detail=True), [("Allow", "GET, PUT, PATCH, HEAD, OPTIONS")]
        )

    def cover_list(self) -> Resp:
        self._path_rest = "covers/"
        series = self._arg("series")
        if series is not None:
            # 3.2.1 bug: the filter's queryset is Project, not Series.
            if series in ("1", self.fake.project):
                raise _Abort(_html(500, "Server Error (500)"))
            return self._page(None, dict)
        rows = self._date_filter(list(self.fake.covers.values()), lambda c: c.mail.date)
        return self._page(rows if self._project_ok() else None, self._sub_ref)

    def cover_detail(self, cid: str) -> Resp:
        sub = self.fake.covers.get(int(cid))
        if sub is None:
            raise _detail(404, "No Cover matches the given query.")
        return _json(200, self._sub_ref(sub))

    def event_list(self) -> Resp:
        self._path_rest = "events/"
        rows = self._date_filter(list(self.fake.events.values()), lambda e: e.date)
        cats = self.q.get("category", [])
        refs = {k: self._int_arg(k) for k in ("series", "patch", "cover")}
        if rows is None or not self._project_ok() or False in refs.values():
            return self._page(None, dict)
        if any(c not in EVENT_CATEGORIES for c in cats):
            return self._page(None, dict)
        if not self._v("1.3"):
            rows = [e for e in rows if not e.category.endswith("comment-created")]
        if cats:
            rows = [e for e in rows if e.category in cats]
        for k, want in refs.items():
            if want is not None:
                rows = [e for e in rows if getattr(e, f"{k}_id") == want]
        rows = self._ordered(rows, {"id": lambda e: e.id, "date": lambda e: e.date}, "-date")
        return self._page(rows, self._event_json)

    def checks_view(self, pid: str) -> Resp:
        self._path_rest = f"patches/{pid}/checks/"
        patch = self.fake.submissions.get(int(pid))
        if patch is None:
            raise _detail(404, "No Patch matches the given query.")
        if self.method == "POST":
            return self._create_check(patch)
        rows = self._date_filter(
            [c for c in self.fake.checks.values() if c.patch_id == patch.id], lambda c: c.date
        )
        state = self._arg("state")
        if rows is not None and state is not None:
            # The filter wants the integer; a state name silently gives [].
            ok = state.isdigit() and int(state) < len(CHECK_STATES)
            rows = [c for c in rows if ok and c.state == CHECK_STATES[int(state)]]
        if rows is not None and (ctx := self._arg("context")) is not None:
            rows = [c for c in rows if c.context == ctx]
        if rows is not None:
            rows = self._ordered(rows, {"id": lambda c: c.id, "date": lambda c: c.date}, "id")
        return self._page(rows, self._check_json)

    def check_detail(self, pid: str, cid: str) -> Resp:
        c = self.fake.checks.get(int(cid))
        if c is None or c.patch_id != int(pid):
            raise _detail(404, "No Check matches the given query.")
        return _json(200, self._check_json(c))

    def _form(self) -> dict[str, Any]:
        ctype = self.headers.get("content-type", "")
        if ctype.startswith("application/json"):
            try:
                data = json.loads(self.body or b"{}")
            except ValueError as e:
                raise _detail(400, f"JSON parse error - {e}") from e
            if not isinstance(data, dict):
                raise _Abort(
                    _json(400, {"non_field_errors": ["Invalid data. Expected a dictionary."]})
                )
            return data
        if ctype.startswith("application/x-www-form-urlencoded"):
            return {
                k: v[-1] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()
            }
        if ctype.startswith("multipart/form-data"):
            msg = email.message_from_bytes(f"Content-Type: {ctype}\r\n\r\n".encode() + self.body)
            out = {}
            for part in msg.walk():
                name = part.get_param("name", header="content-disposition")
                payload = part.get_payload(decode=True)
                if isinstance(name, str) and isinstance(payload, bytes):
                    out[name] = payload.decode()
            return out
        raise _detail(415, f'Unsupported media type "{ctype}" in request.')

    def _create_check(self, patch: Submission) -> Resp:
        if self.user is None or not self.user.maintainer:
            raise _detail(403, NO_PERM)
        data = self._form()
        errors: dict[str, list[str]] = {}
        state = data.get("state")
        if state in (None, ""):
            errors["state"] = ["A check must have a state."]
        elif state not in CHECK_STATES:
            errors["state"] = [f'"{state}" is not a valid choice.']
        context = data.get("context", "default")
        if not isinstance(context, str) or not _SLUG_RE.match(context):
            errors["context"] = [SLUG_MSG]
        elif len(context) > 255:
            errors["context"] = ["Ensure this field has no more than 255 characters."]
        url = data.get("target_url")
        if url not in (None, "") and not (isinstance(url, str) and _URL_RE.match(url)):
            errors["target_url"] = ["Enter a valid URL."]
        if errors:
            raise _Abort(_json(400, errors))
        desc = data.get("description")
        cid = self.fake._create_check(patch.id, self.user.id, str(state), str(context), url, desc)
        body = self._check_json(self.fake.checks[cid])
        return _json(201, body, [("Location", body["url"]), ("Allow", "GET, POST, HEAD, OPTIONS")])


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a delayed request must not block stop()

    def server_bind(self) -> None:
        # HTTPServer.server_bind() does a reverse DNS lookup (getfqdn): slow, and not needed.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]


class _Handler(BaseHTTPRequestHandler):
    fake: FakePatchwork
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body in separate writes: avoid 40 ms stalls
    wbufsize = -1

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        resp = self.fake.handle(self.command, self.path, headers, body)
        try:
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(resp.body)))
            self.send_header("Vary", "Accept, Cookie")
            for k, v in resp.headers:
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(resp.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (timeout test)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


# The demo's name for it.
PatchworkEmulator = FakePatchwork
