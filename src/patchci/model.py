"""Frozen dataclasses and enums shared by every pipeline stage.

Pure: no I/O, no adapters. Stages exchange these, never dicts.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime


class Outcome(enum.Enum):
    """The one status vocabulary of patchci.

    ERROR means *our* infrastructure failed (fetch, VM boot, a check's tool crashed); it is
    never the patch's fault. TIMEOUT and CRASH are the code under test misbehaving.
    """

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"
    XFAIL = "xfail"
    CRASH = "crash"
    TIMEOUT = "timeout"
    ERROR = "error"
    PENDING = "pending"

    # Members are singletons compared by identity: hash them so, in C (Enum's own __hash__
    # is Python code, a tenth of a KTAP parse).
    __hash__ = object.__hash__

    @property
    def is_patch_failure(self) -> bool:
        return self in (Outcome.FAIL, Outcome.CRASH, Outcome.TIMEOUT)

    @classmethod
    def stored(cls, value: str) -> Outcome:
        """An outcome read back from the database: one this version does not know (written
        by a newer one) reads as an error rather than failing the whole page."""
        try:
            return cls(value)
        except ValueError:
            return cls.ERROR

    @classmethod
    def stored_or_none(cls, value: str | None) -> Outcome | None:
        return None if value is None else cls.stored(value)


# Worst first; written once (as kunit's TestCounts.get_status does).
OUTCOME_PRIORITY: tuple[Outcome, ...] = (
    Outcome.CRASH,
    Outcome.FAIL,
    Outcome.TIMEOUT,
    Outcome.ERROR,
    Outcome.WARN,
    Outcome.PENDING,
    Outcome.PASS,
    Outcome.XFAIL,
    Outcome.SKIP,
)


def worst(outcomes: Iterable[Outcome], default: Outcome = Outcome.SKIP) -> Outcome:
    """The most severe outcome of *outcomes* by OUTCOME_PRIORITY, or *default* if empty."""
    seen = set(outcomes)
    for o in OUTCOME_PRIORITY:
        if o in seen:
            return o
    return default


class Scope(enum.Enum):
    """What a check looks at: one patch (run once per patch) or the whole series."""

    PATCH = "patch"
    SERIES = "series"


@dataclass(frozen=True)
class Person:
    name: str
    email: str

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


@dataclass(frozen=True)
class SubjectInfo:
    """What the `[...]` prefixes of a mail subject say.

    `tags` are the prefix tokens other than PATCH/RFC/vN/n/m (e.g. ("net-next",)).
    """

    title: str
    prefixes: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    version: int = 1
    number: int | None = None
    total: int | None = None
    is_rfc: bool = False
    has_patch_prefix: bool = False

    @property
    def is_cover(self) -> bool:
        return self.number == 0


# Bidirectional embedding, override and isolate controls: in user text (an author's name,
# a subject) U+202E reversed the rest of the line on the web pages and in the console.
_BIDI_CONTROLS = dict.fromkeys(
    [*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C], None
)


def strip_bidi(text: str) -> str:
    """*text* without bidi controls, so user text cannot reorder what follows it."""
    return text.translate(_BIDI_CONTROLS)


# Series states, in the order a series normally moves through them. "malformed": a mail
# of the series does not parse (the patch's fault, reported where the source can show it).
NEW, INCOMPLETE, EXPIRED, CHECKED, REPORTED, DONE, ERROR, MALFORMED = (
    "new", "incomplete", "expired", "checked", "reported", "done", "error", "malformed",
)  # fmt: skip
# While a worker holds the series (a job with a lease): checks running, results posting.
CHECKING, REPORTING = "checking", "reporting"
# Reported, but an infrastructure error (ours) left a result unknown: checked again later.
RETRY = "retry"


@dataclass(frozen=True)
class Patch:
    """One mail of a series carrying a diff (or the cover letter when number == 0)."""

    msgid: str
    subject: str
    author: Person
    date: datetime | None
    info: SubjectInfo
    raw: bytes
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    recipients: tuple[Person, ...] = ()
    has_diff: bool = False
    files: tuple[str, ...] = ()
    pw_id: int | None = None
    web_url: str | None = None
    # "URL REF" of a pull request mail (Patchwork's pull_url): no diff, a branch to pull.
    pull_url: str | None = None

    @property
    def number(self) -> int | None:
        return self.info.number


@dataclass(frozen=True)
class Series:
    """A series as the pipeline sees it, whatever its source.

    `key` is stable per source (Patchwork series id, or the msgid of the thread root for
    local mail) so that ingesting twice stores it once.
    """

    source: str
    key: str
    name: str
    version: int
    total: int
    patches: tuple[Patch, ...]
    cover: Patch | None = None
    submitter: Person | None = None
    date: datetime | None = None
    complete: bool = True
    pw_id: int | None = None
    web_url: str | None = None
    problems: tuple[str, ...] = ()

    @property
    def pull_url(self) -> str | None:
        """A pure pull request (NIPA's is_pure_pull): its one mail names a branch to pull
        and carries no diff; None for a series of patches (a pull cover co-posted with its
        patches is a series of patches)."""
        if len(self.patches) == 1 and not self.patches[0].has_diff:
            return self.patches[0].pull_url
        return None

    @property
    def subjects(self) -> tuple[str, ...]:
        subj = [p.subject for p in self.patches]
        if self.cover is not None:
            subj.insert(0, self.cover.subject)
        return tuple(subj)


@dataclass(frozen=True)
class Tree:
    """A git tree patches are routed to (from the configuration)."""

    name: str
    path: str
    branch: str = "main"
    tags: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    url: str | None = None
    remote: str | None = None  # a `path` tree: the remote fetched for its base
    fetch_interval: float = 60.0

    @property
    def match_tags(self) -> tuple[str, ...]:
        return self.tags or (self.name,)

    @property
    def base_ref(self) -> str:
        return base_ref(self.url, self.remote, self.branch)


def base_ref(url: str | None, remote: str | None, branch: str) -> str:
    """The ref a tree's series are applied to and its test branches cut from: a `url`
    tree's mirror keeps the remote's branches as origin's remote-tracking refs (so that a
    fetch never prunes the test branches cut in it); a `path` tree's own branch, or its
    remote's with `remote`."""
    if url:
        return f"refs/remotes/origin/{branch}"
    return f"refs/remotes/{remote}/{branch}" if remote else branch


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict on one patch (patch_index set) or the whole series (None)."""

    check: str
    outcome: Outcome
    description: str
    patch_index: int | None = None
    log_path: str | None = None
    duration: float = 0.0
    reproducer: str | None = None
    details: tuple[tuple[str, str], ...] = field(default_factory=tuple)
