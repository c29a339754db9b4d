"""The fake's in-memory data model: what Patchwork stores, plus the API's fixed vocabulary."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from patchci.model import SubjectInfo

VERSIONS = ("1.0", "1.1", "1.2", "1.3")
CHECK_STATES = ("pending", "success", "warning", "fail")
EVENT_CATEGORIES = (
    "cover-created", "patch-created", "patch-completed", "patch-state-changed",
    "patch-delegated", "patch-relation-changed", "check-created", "series-created",
    "series-completed", "cover-comment-created", "patch-comment-created",
)  # fmt: skip
SLUG_MSG = 'Enter a valid "slug" consisting of letters, numbers, underscores or hyphens.'
NO_PERM = "You do not have permission to perform this action."

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
