"""FakePatchwork: the server's state, the test controls, faults and the web (mbox) pages."""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from patchci.devtools.pwemu.api import _Api
from patchci.devtools.pwemu.mail import _split_diff, parse_mail, split_mbox
from patchci.devtools.pwemu.records import (
    VERSIONS,
    CheckRec,
    EventRec,
    LoggedRequest,
    Mail,
    SeriesRec,
    Submission,
    User,
    _Fault,
)
from patchci.devtools.pwemu.responses import Resp, _Abort, _html
from patchci.devtools.pwemu.server import _Handler, _Server
from patchci.subject import patchwork_name

_TAG_RE = re.compile(r"(?m)^(?:Acked|Reviewed|Tested|Reported|Suggested|Nacked)-by:.*$")
_POSTSCRIPT_RE = re.compile(r"\n-{2,3} ?\n")
_SKIP_HEADERS = {"content-type", "mime-version", "content-transfer-encoding"}


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
        self.mangled: dict[int, bytes] = {}  # patch id -> mbox bytes served instead
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

    def clear_faults(self) -> None:
        """Drop the faults not triggered yet (fail_next, delay_next)."""
        with self._lock:
            self._faults.clear()

    def mangle_mbox(self, patch_id: int, body: bytes) -> None:
        """Serve *body* as the mbox of patch *patch_id* (a mail stored mangled, a proxy
        that cut it): for the client's handling of mail it cannot parse."""
        with self._lock:
            self.mangled[patch_id] = body

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

    def set_patch_state(self, patch_id: int, state: str) -> None:
        """A maintainer changes the patch's state (patch-state-changed, as Patchwork)."""
        with self._lock:
            self.submissions[patch_id].state = state
            self._event("patch-state-changed", patch_id=patch_id)

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
            if len(subs) == 1 and sub.id in self.mangled and sub.kind == "patch":
                return Resp(200, self.mangled[sub.id], "text/plain; charset=utf-8")
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


# The demo's name for it.
PatchworkEmulator = FakePatchwork
