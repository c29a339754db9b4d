"""Supersede detection and Patchwork states (pure), table-driven."""

from __future__ import annotations

import pytest

from patchci.analysis.revisions import Revision, state_reason, superseded


def rev(sid: int, name: str = "net: fix foo", version: int = 1, who: str = "a@x.org",
        root: str = "", reply: str | None = None, source: str = "pw") -> Revision:  # fmt: skip
    return Revision(sid, source, name, version, who, root or f"<{sid}@x>", reply)


@pytest.mark.parametrize(
    ("revs", "expected"),
    [
        ([rev(1), rev(2, version=2)], {1: "superseded by series 2 (v2, same submitter and name)"}),
        # v3 supersedes both; v1 names v3, the newest
        ([rev(1), rev(2, version=2), rev(3, version=3)],
         {1: "superseded by series 3 (v3, same submitter and name)",
          2: "superseded by series 3 (v3, same submitter and name)"}),
        # name compared without case and extra spaces; the submitter's case is no matter
        ([rev(1, "Net:  fix foo"), rev(2, "net: fix foo", 2, "A@X.org")],
         {1: "superseded by series 2 (v2, same submitter and name)"}),
        # another submitter, another name, another source: not the same series
        ([rev(1), rev(2, version=2, who="b@x.org")], {}),
        ([rev(1), rev(2, "net: fix bar", 2)], {}),
        ([rev(1), rev(2, version=2, source="other")], {}),
        # same version twice (a resend): neither supersedes the other by name
        ([rev(1), rev(2)], {}),
        # a renamed v2 sent in reply to v1's cover
        ([rev(1, root="<c1@x>"), rev(2, "net: fix foo properly", 2, reply="<c1@x>")],
         {1: "superseded by series 2 (v2, sent in reply to it)"}),
        # a reply that is older than its parent is not a new revision
        ([rev(5, root="<c5@x>"), rev(4, "other", 1, reply="<c5@x>")], {}),
    ],
)  # fmt: skip
def test_superseded(revs: list[Revision], expected: dict[int, str]) -> None:
    assert superseded(revs) == expected


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ({1: "new", 2: "under-review"}, None),
        ({1: "rfc"}, None),
        ({1: "awaiting-upstream"}, None),
        ({1: "accepted", 2: "new"}, "Patchwork state: accepted"),
        ({1: "changes-requested", 2: "superseded"},
         "Patchwork state: changes-requested, superseded"),
        ({1: "deferred"}, "Patchwork state: deferred"),
        ({1: "not-applicable"}, "Patchwork state: not-applicable"),
        ({1: "rejected"}, "Patchwork state: rejected"),
        ({}, None),
    ],
)  # fmt: skip
def test_state_reason(states: dict[int, str], expected: str | None) -> None:
    assert state_reason(states) == expected
