"""Known failures, written down by the maintainer: which results are expected.

A TOML file of `[[expect]]` entries (`patchci expectations check FILE` validates it):

    [[expect]]
    test = "net/mptcp-*"          # "<group>/<name>" glob
    subtest = "*ipv6*"            # optional: only these subtests (path glob)
    tree = "net-next"             # optional scope, globs: tree, stream, executor
    executor = "vmksft-*"
    kernel = ">=6.1, <6.7"        # optional: the branch's kernel version range
    outcome = "fail"              # fail | skip | flaky
    reason = "needs a newer iproute2 in the guest"
    link = "https://bugzilla.kernel.org/show_bug.cgi?id=1"
    until = 2027-03-31            # stops applying after this day

A result that matches a live entry is *expected*: never a regression, and the page says
which entry matched. An entry past its `until` no longer applies and shows on the status
page as an alarm. A kernel crash is never expected: a splat is a bug whatever the list
says. Pure: loading reads the file, matching does no I/O.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from patchci.errors import ConfigError

FAIL, SKIP, FLAKY = "fail", "skip", "flaky"
_RANGE = re.compile(r"\s*(>=|<=|==|!=|>|<)?\s*(\d+(?:\.\d+){0,2})\s*")
_VERSION = re.compile(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?")


def version_tuple(text: str) -> tuple[int, int, int] | None:
    """(major, minor, sublevel) of "6.12.3", "6.12.0-rc4+", "6.1"; None when not a version."""
    m = _VERSION.match(text.strip())
    if m is None:
        return None
    a, b, c = m.groups()
    return (int(a), int(b or 0), int(c or 0))


def _parse_range(text: str) -> list[tuple[str, tuple[int, int, int], int]]:
    """(operator, version, how many of its parts were written) per condition."""
    out = []
    for part in text.split(","):
        m = _RANGE.fullmatch(part)
        if m is None:
            raise ValueError(f"not a version condition: {part.strip()!r} (e.g. '>=6.1, <6.7')")
        v = version_tuple(m.group(2))
        assert v is not None
        out.append((m.group(1) or "==", v, m.group(2).count(".") + 1))
    return out


def in_range(version: str, spec: str) -> bool:
    """Whether *version* satisfies every condition of *spec* (">=6.1, <6.7"); a bare "6.1"
    means 6.1.x, whatever the sublevel."""
    v = version_tuple(version)
    if v is None:
        return False
    for op, want, parts in _parse_range(spec):
        if op == "==" and parts < 3:
            ok = v[:parts] == want[:parts]
        else:
            ok = {
                ">=": v >= want, "<=": v <= want, ">": v > want, "<": v < want,
                "==": v == want, "!=": v != want,
            }[op]  # fmt: skip
        if not ok:
            return False
    return True


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    test: Annotated[str, Field(min_length=1)]
    subtest: str | None = None
    tree: str | None = None
    stream: str | None = None
    executor: str | None = None
    kernel: str | None = None
    outcome: Literal["fail", "skip", "flaky"]
    reason: Annotated[str, Field(min_length=1)]
    link: Annotated[str, Field(pattern=r"^https?://")] | None = None
    until: date | None = None

    @field_validator("test")
    @classmethod
    def _group_slash_name(cls, v: str) -> str:
        if "/" not in v:
            raise ValueError(f"{v!r} is not '<group>/<name>' (a glob, e.g. 'net/tcp-ao-*')")
        return v

    @field_validator("kernel")
    @classmethod
    def _range(cls, v: str | None) -> str | None:
        if v is not None:
            _parse_range(v)
        return v


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    expect: tuple[Entry, ...] = ()


@dataclass(frozen=True)
class Scope:
    """Where a result comes from: what an entry's scope is matched against."""

    tree: str = ""
    stream: str = ""
    executor: str = ""
    kernel: str | None = None  # the branch's kernel version, when known


@dataclass(frozen=True)
class Match:
    index: int  # 1-based, in file order
    entry: Entry

    def describe(self) -> str:
        link = f" ({self.entry.link})" if self.entry.link else ""
        return f"expected by entry {self.index}: {self.entry.reason}{link}"


@dataclass(frozen=True)
class Expectations:
    entries: tuple[Entry, ...] = ()
    source: str = ""

    def live(self, today: date) -> list[Match]:
        return [Match(i, e) for i, e in enumerate(self.entries, 1)
                if e.until is None or e.until >= today]  # fmt: skip

    def expired(self, today: date) -> list[Match]:
        return [Match(i, e) for i, e in enumerate(self.entries, 1)
                if e.until is not None and e.until < today]  # fmt: skip

    def match(
        self, scope: Scope, group: str, name: str, outcome: str,
        subtests: Sequence[str] = (), *, today: date,
    ) -> Match | None:  # fmt: skip
        """The first live entry that expects *outcome* (fail, skip, flaky) of the test in
        *scope*. With *subtests* (the failing ones), an entry naming a subtest glob must
        cover every one of them; an entry without one covers the whole test. A `flaky`
        entry also covers failures: a flaky test fails sometimes."""
        for m in self.live(today):
            e = m.entry
            if e.outcome != outcome and not (e.outcome == FLAKY and outcome == FAIL):
                continue
            if not fnmatchcase(f"{group}/{name}", e.test):
                continue
            if e.subtest is not None and (
                not subtests or not all(fnmatchcase(s, e.subtest) for s in subtests)
            ):
                continue
            if not _in_scope(e, scope):
                continue
            return m
        return None


def _in_scope(e: Entry, s: Scope) -> bool:
    for want, have in ((e.tree, s.tree), (e.stream, s.stream), (e.executor, s.executor)):
        if want is not None and not fnmatchcase(have, want):
            return False
    return e.kernel is None or (s.kernel is not None and in_range(s.kernel, e.kernel))


def parse(text: str, origin: str = "expectations") -> Expectations:
    """An expectations file's text, validated; ConfigError names the entry and key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{origin}: not valid TOML: {e}") from e
    try:
        f = _File.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = list(err["loc"])
        where = ".".join(str(p) for p in loc)
        if len(loc) >= 2 and loc[0] == "expect" and isinstance(loc[1], int):
            where = f"entry {loc[1] + 1}" + ("." + ".".join(map(str, loc[2:])) if loc[2:] else "")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (typo?)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        raise ConfigError(f"{origin}: {where}: {msg}") from e
    return Expectations(f.expect, origin)


def load(path: str | Path) -> Expectations:
    from patchci.config import read_file  # config imports this module lazily, not at the top

    p = Path(path)
    return parse(read_file(p, "expectations file"), str(p))
