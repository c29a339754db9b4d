"""One REST API request: routing, auth, query filters, pagination and the views."""

from __future__ import annotations

import base64
import email
import json
import math
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

from patchci.devtools.pwemu.mail import _diff_hash
from patchci.devtools.pwemu.records import (
    CHECK_STATES,
    EVENT_CATEGORIES,
    NO_PERM,
    SLUG_MSG,
    VERSIONS,
    Json,
    Submission,
    User,
)
from patchci.devtools.pwemu.responses import Resp, _Abort, _detail, _html, _json
from patchci.devtools.pwemu.shapes import _Shapes

if TYPE_CHECKING:
    from patchci.devtools.pwemu.emulator import FakePatchwork

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


PATCH_STATES = ("new", "under-review", "accepted", "rejected", "rfc", "not-applicable",
                "changes-requested", "awaiting-upstream", "superseded", "deferred")  # fmt: skip

class _Api(_Shapes):
    """One API request: routing, auth, filters and JSON shapes for one version prefix."""

    def __init__(self, fake: FakePatchwork, version: str | None, headers: dict[str, str]) -> None:
        self.fake = fake
        self.version = version or VERSIONS[-1]
        self.prefix = f"{fake.url}/api/{version}/" if version else f"{fake.url}/api/"
        self.headers = headers
        self.user = self._authenticate()

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
            (r"patches/(\d+)/", self.patch_detail, ("GET", "PATCH", "PUT")),
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
        if self.method in ("PATCH", "PUT"):
            self._update_patch(sub)
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

    def _update_patch(self, patch: Submission) -> None:
        """PATCH /patches/N/ as 3.2.1: a maintainer may set `state` (a slug, or its name
        with spaces); a bad one is a 400 listing the slugs."""
        if self.user is None or not self.user.maintainer:
            raise _detail(403, NO_PERM)
        data = self._form()
        state = data.get("state")
        if state is None:
            return
        slug = str(state).strip().lower().replace(" ", "-")
        if slug not in PATCH_STATES:
            raise _Abort(_json(400, {"state": [
                f"Invalid state {state}. Expected one of: {', '.join(PATCH_STATES)}."]}))  # fmt: skip
        self.fake.set_patch_state(patch.id, slug)

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
