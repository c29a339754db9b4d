"""Which series a test branch must leave out because of review: newer revisions and the
maintainers' Patchwork states. Pure: the facts come in, reasons come out.

With v1 and v2 of a series stored, the brancher once tested v1 and left v2 out. A series
is superseded by a newer revision in our database: same submitter, same name, higher
version; or one whose cover (first patch without a cover) is In-Reply-To the older's
cover or first patch (b4 and git send-email --in-reply-to thread v2 under v1).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from patchci.subject import normalise_space, parse_subject

# Patchwork states that keep a series out of test branches (its patches are not going in,
# or not in this form). Any other state (new, under-review, rfc, awaiting-upstream…) may go.
LEFT_OUT_STATES = (
    "superseded", "accepted", "rejected", "changes-requested", "deferred", "not-applicable",
)  # fmt: skip


@dataclass(frozen=True)
class Revision:
    """What supersede detection needs of one stored series."""

    series_id: int
    source: str
    name: str
    version: int
    submitter: str  # e-mail, any case
    root_msgid: str  # the cover's, or the first patch's
    in_reply_to: str | None  # of that same mail


def _name(text: str) -> str:
    """Patchwork names a series "[net-next,v2] foo: bar": compare the titles."""
    return normalise_space(parse_subject(text).title if text.startswith("[") else text).casefold()


def superseded(revisions: Iterable[Revision]) -> dict[int, str]:
    """series id → why a newer revision replaces it ("superseded by series 7 (v2)")."""
    revs = list(revisions)
    by_root = {(r.source, r.root_msgid): r for r in revs if r.root_msgid}
    out: dict[int, str] = {}

    def mark(old: Revision, new: Revision, how: str) -> None:
        if old.series_id == new.series_id or old.series_id in out:
            return
        out[old.series_id] = f"superseded by series {new.series_id} (v{new.version}, {how})"

    groups: dict[tuple[str, str, str], list[Revision]] = {}
    for r in revs:
        if r.submitter and r.name:
            groups.setdefault((r.source, r.submitter.casefold(), _name(r.name)), []).append(r)
    for group in groups.values():
        newest = max(group, key=lambda r: (r.version, r.series_id))
        for r in group:
            if r.version < newest.version:
                mark(r, newest, "same submitter and name")
    for r in revs:
        parent = by_root.get((r.source, r.in_reply_to or ""))
        if parent is not None and (r.version, r.series_id) > (parent.version, parent.series_id):
            mark(parent, r, "sent in reply to it")
    return out


def state_reason(states: Mapping[int, str]) -> str | None:
    """Why a series whose patches have these Patchwork *states* (patch id → state slug)
    stays out of branches, or None. One accepted patch of three is enough: the series
    will not be applied as sent."""
    bad = sorted({s for s in states.values() if s in LEFT_OUT_STATES})
    if not bad:
        return None
    which = ", ".join(bad)
    return f"Patchwork state: {which}"
