"""Ingest never stalls on one bad series (issue: hardening, part 2), through run_cycle,
the daemon's own cycle, against the Patchwork emulator over real HTTP."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from patchci.daemon import run_cycle
from patchci.db.store import Store
from patchci.errors import ApplyFailed
from patchci.model import Outcome
from patchci.service import ingest
from patchci.service.ingest import GONE_ATTEMPTS
from tests.test_daemon import (
    CHECKS,
    NET_FIX,
    NO_SOB,
    SOURCE,
    TWO_OF_THREE,
    Demo,
    Rig,
    demo,
    emu,
    rig,
)
from tests.test_ingest_faults import _completed_event_date, _responses

__all__ = ["demo", "emu", "rig"]


def _cycle_at(rig: Rig, minutes: float) -> dict[str, int]:
    now = datetime.now(UTC) + timedelta(minutes=minutes)
    return run_cycle(rig.store, rig.settings, {SOURCE: rig.client}, now=now)


def test_unparsable_mail_is_recorded_malformed_and_the_source_goes_on(rig: Rig, demo: Demo) -> None:
    """One patch mbox that did not parse (MalformedMail) aborted poll_patchwork: the cursor
    never moved, and every later series of the source was never stored, cycle after cycle
    ("poll failed, will retry")."""
    emu = rig.emu
    bad = emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)
    (bad_patch,) = rig.patch_ids(bad)
    mangled = b"\x00\xff not a mail at all\n"
    emu.mangle_mbox(bad_patch, mangled)
    emu.advance(60)
    good = emu.add_series_from_mbox(demo.samples[NO_SOB].mbox)

    stats = rig.cycle()

    assert stats["errors"] == 0 and stats["new"] == 2
    assert rig.state(good) == "reported"
    assert rig.state(bad) == "malformed"
    sid = rig.series_id(bad)
    assert sid is not None
    row = rig.store.series_row(sid)
    assert row.state_reason.startswith(f"patch 1 (Patchwork {bad_patch}): mail does not parse: ")
    assert rig.store.get_cursor(SOURCE) == _completed_event_date(emu, good)
    # The raw bytes are kept, in the database and as a log the check links to.
    assert rig.store.load_series(sid).patches[0].raw == mangled
    (res,) = rig.store.latest_results(sid)
    assert (res.check, res.outcome, res.patch_index) == ("mail", Outcome.FAIL, 0)
    assert Path(res.log_path or "").read_bytes() == mangled
    # Reported as the patch's fault, once.
    checks = emu.checks_for(bad_patch)
    assert [(c.context, c.state) for c in checks] == [("mail", "fail")]
    assert "does not parse" in (checks[0].description or "")
    posts = len(emu.checks)
    assert rig.cycle()["new"] == 0
    assert len(emu.checks) == posts
    assert rig.state(bad) == "malformed"


def test_a_crashing_mail_parser_is_ours_not_the_patch(
    rig: Rig, demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parser bug (any exception but MalformedMail) must neither stop the source nor be
    reported as the author's fault."""
    emu = rig.emu
    sid_pw = emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)

    def broken(_raw: bytes) -> None:
        raise ValueError("Exceeds the limit (4300 digits) for integer string conversion")

    monkeypatch.setattr(ingest, "parse_mail", broken)
    stats = rig.cycle()

    assert stats["errors"] == 0
    assert rig.state(sid_pw) == "malformed"
    sid = rig.series_id(sid_pw)
    assert sid is not None
    (res,) = rig.store.latest_results(sid)
    assert res.outcome is Outcome.ERROR
    assert "not the patch" in res.description and "4300 digits" in res.description
    (pid,) = rig.patch_ids(sid_pw)
    assert all(c.state != "fail" for c in emu.checks_for(pid))


def test_a_transient_404_is_retried_over_minutes_then_stored(rig: Rig, demo: Demo) -> None:
    """One transient 404 on a patch mbox marked the series "gone" forever (exit 0,
    "0 source errors"): it was never checked."""
    emu = rig.emu
    pw = emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)
    # The series-completed poll meets a 404 (the series-created poll then leaves the
    # series to the queued retry), then the first retry does.
    emu.fail_next(2, 404, method="GET", path_contains="/mbox/")

    assert _cycle_at(rig, 0)["new"] == 0
    (retry,) = rig.store.retries(SOURCE)
    assert (retry.remote_id, retry.status, retry.attempts) == (pw, "retrying", 1)
    assert _cycle_at(rig, 0.1)["new"] == 0  # not due yet: nothing fetched
    assert rig.store.retries(SOURCE)[0].attempts == 1
    assert _cycle_at(rig, 1)["new"] == 0  # due: 404 again
    assert rig.store.retries(SOURCE)[0].attempts == 2
    assert _cycle_at(rig, 1.5)["new"] == 0  # the next wait doubled: not due yet

    stats = _cycle_at(rig, 3)

    assert stats["new"] == 1 and stats["errors"] == 0
    assert rig.state(pw) == "reported"
    (retry,) = rig.store.retries()
    assert retry.status == "done" and retry.attempts == 3  # fetches: 404, 404, 200
    assert rig.cycle()["new"] == 0  # stored once
    assert_posted = {c.context for c in emu.checks_for(rig.patch_ids(pw)[0])}
    assert assert_posted >= set(CHECKS)


def test_a_series_that_stays_404_is_recorded_gone_after_bounded_retries(
    rig: Rig, demo: Demo
) -> None:
    emu = rig.emu
    gone = emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)
    after = emu.add_series_from_mbox(demo.samples[NO_SOB].mbox)
    path = f"/api/1.3/series/{gone}/"
    emu.fail_next(1000, 404, method="GET", path_contains=path)

    assert _cycle_at(rig, 0)["new"] == 1  # the later series is not held up
    assert rig.state(after) == "reported"
    for minutes in (1, 2, 4, 8, 16, 32, 64):
        _cycle_at(rig, minutes)

    (retry,) = rig.store.retries(SOURCE)
    assert retry.status == "gone" and retry.attempts == GONE_ATTEMPTS
    assert f"{GONE_ATTEMPTS} fetches over" in retry.error
    assert len(_responses(emu, path)) == GONE_ATTEMPTS
    assert rig.series_id(gone) is None


def test_an_incomplete_series_is_stored_incomplete_in_the_same_transaction(
    rig: Rig, demo: Demo
) -> None:
    """A kill between save_series_with_event and the arrival state left an incomplete
    series `new`: it was checked as complete and its later patches never got checks."""
    emu = rig.emu
    pw = emu.add_series_from_mbox(demo.samples[TWO_OF_THREE].mbox, complete=False)
    series = ingest.fetch_pw_series(rig.client, SOURCE, pw).series
    assert not series.complete

    sid = rig.store.save_series_with_event(series, f"{SOURCE}#created", 1, "2026-01-01T00:00:00")

    # A second process sees the final state at once: there is no later step to miss.
    other = Store.open(rig.settings.db_url)
    try:
        row = other.series_row(sid)
    finally:
        other.close()
    assert row.state == "incomplete" and row.state_reason.startswith("incomplete: ")


def test_patch_error_in_the_checks_is_the_patch_fault_not_ours(
    rig: Rig, demo: Demo, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """process_series logged a PatchError as "infrastructure error" and put the series in
    `error`: it is the patch's fault, and reported as such."""
    emu = rig.emu
    pw = emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)

    def fails(*_a: object, **_k: object) -> None:
        raise ApplyFailed(0, "net: fix", "error: patch failed")

    monkeypatch.setattr("patchci.service.check.check_series", fails)
    with caplog.at_level(logging.WARNING, logger="patchci.service.check"):
        rig.cycle()

    assert "infrastructure error" not in caplog.text
    assert "the patch's fault" in caplog.text
    assert rig.state(pw) == "reported"
    (pid,) = rig.patch_ids(pw)
    assert {c.context: c.state for c in emu.checks_for(pid)} == {"series": "fail"}
