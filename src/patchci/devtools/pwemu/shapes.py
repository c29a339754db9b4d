"""The JSON shapes of the API objects, with the fields each API version adds or drops."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from patchci.devtools.pwemu.mail import _diff_hash
from patchci.devtools.pwemu.records import (
    VERSIONS,
    CheckRec,
    EventRec,
    Json,
    SeriesRec,
    Submission,
    User,
)
from patchci.subject import patchwork_name

if TYPE_CHECKING:
    from patchci.devtools.pwemu.emulator import FakePatchwork


def _fmt(dt: datetime) -> str:
    """Django's rendering of a naive datetime: microseconds only when non-zero."""
    return dt.isoformat()


class _Shapes:
    """JSON rendering for one API request; _Api adds routing, auth, filters and views."""

    fake: FakePatchwork
    version: str
    prefix: str

    def _v(self, at_least: str) -> bool:
        return VERSIONS.index(self.version) >= VERSIONS.index(at_least)

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
