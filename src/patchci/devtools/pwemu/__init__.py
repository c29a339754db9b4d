"""A fake Patchwork v3.2.1 server: real HTTP on 127.0.0.1, quirks included.

Behaviour follows the steering repository's shared/reference/patchwork-api.md (observed on a real server):
unversioned `/api/` root, `Link` pagination with absolute URLs, events newest-first with
naive server-local dates, `200 []` for invalid filter values, HTTP 500 for a time-zone
suffix in `since`/`before`, slug-only check contexts and maintainer-only check posting.

Tests drive it with Python methods (add_series_from_mbox, add_patch_to_series, fail_next,
delay_next, ...) and inspect `requests` to see exactly what a client sent.

Layout: records (the in-memory data model and API vocabulary), mail (mbox and mail
parsing), responses (HTTP response values), emulator (FakePatchwork: state, test
control, web pages), api and shapes (REST routes, filters and quirks; JSON per version),
server (the threaded HTTP server around it).
"""

from patchci.devtools.pwemu.emulator import FakePatchwork, PatchworkEmulator
from patchci.devtools.pwemu.mail import parse_mail, split_mbox
from patchci.devtools.pwemu.records import (
    CHECK_STATES,
    EVENT_CATEGORIES,
    NO_PERM,
    SLUG_MSG,
    VERSIONS,
    CheckRec,
    EventRec,
    Json,
    LoggedRequest,
    Mail,
    SeriesRec,
    Submission,
    User,
)
from patchci.devtools.pwemu.responses import Resp

__all__ = [
    "CHECK_STATES",
    "EVENT_CATEGORIES",
    "NO_PERM",
    "SLUG_MSG",
    "VERSIONS",
    "CheckRec",
    "EventRec",
    "FakePatchwork",
    "Json",
    "LoggedRequest",
    "Mail",
    "PatchworkEmulator",
    "Resp",
    "SeriesRec",
    "Submission",
    "User",
    "parse_mail",
    "split_mbox",
]
