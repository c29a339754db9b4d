"""Ingest under server faults: 5xx bursts, a series that cannot be fetched, slow answers.

Whatever fails, the cursor never moves past a series that was not stored, so a later poll
picks it up: nothing is lost and nothing is posted twice.
"""

from __future__ import annotations

import time

from patchci.devtools.pwemu import FakePatchwork
from tests.test_daemon import (
    BAD_FIXES,
    CHECKS,
    NET_FIX,
    NO_SOB,
    SOURCE,
    Demo,
    Rig,
    assert_once_each,
    check_posts,
    demo,
    emu,
    make_client,
    rig,
)

__all__ = ["demo", "emu", "rig"]  # fixtures shared with test_daemon


def _completed_event_date(emu: FakePatchwork, series_id: int) -> str:
    (ev,) = [
        e
        for e in emu.events.values()
        if e.category == "series-completed" and e.series_id == series_id
    ]
    return ev.date.isoformat()


def _responses(emu: FakePatchwork, path_part: str) -> list[int]:
    return [r.status for r in emu.requests if r.method == "GET" and path_part in r.path]


def test_burst_of_502_on_events_is_retried(rig: Rig, demo: Demo) -> None:
    emu = rig.emu
    sid = emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)
    emu.fail_next(3, 502, path_contains="/events/")
    r = rig.restart(retries=3)

    stats = r.cycle()

    assert stats["errors"] == 0 and stats["new"] == 1
    assert _responses(emu, "/events/")[:4] == [502, 502, 502, 200]
    assert r.state(sid) == "reported"


def test_persistent_500_on_a_series_keeps_the_cursor_before_it(rig: Rig, demo: Demo) -> None:
    emu = rig.emu
    first = emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)
    rig.cycle()
    cursor_after_first = rig.store.get_cursor(SOURCE)
    assert cursor_after_first == _completed_event_date(emu, first)

    emu.advance(60)
    broken = emu.add_series_from_mbox(demo.samples[NO_SOB].mbox)
    emu.advance(60)
    after = emu.add_series_from_mbox(demo.samples[BAD_FIXES].mbox)
    # every attempt of this cycle (1 + retries) gets a 500 on the series fetch
    emu.fail_next(rig.client.retries + 1, 500, method="GET", path_contains=f"/series/{broken}/")

    stats = rig.cycle()

    assert stats["errors"] == 1
    assert rig.series_id(broken) is None
    assert rig.series_id(after) is None  # the poll stopped at the broken series
    cursor = rig.store.get_cursor(SOURCE)
    assert cursor is not None and cursor < _completed_event_date(emu, broken)
    assert _responses(emu, f"/series/{broken}/") == [500] * (rig.client.retries + 1)

    stats = rig.cycle()  # the fault is gone

    assert stats == {"new": 2, "checked": 2, "posted": 2 * len(CHECKS), "errors": 0,
                     "post_failures": 0}  # fmt: skip
    assert rig.state(broken) == "reported" and rig.state(after) == "reported"
    assert rig.store.get_cursor(SOURCE) == _completed_event_date(emu, after)
    for sid in (first, broken, after):
        assert_once_each(emu, rig.patch_ids(sid))
    assert len(check_posts(emu)) == len(emu.checks) == 3 * len(CHECKS)


def test_500_on_a_patch_mbox_stores_nothing_partial(rig: Rig, demo: Demo) -> None:
    emu = rig.emu
    sid = emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)
    emu.fail_next(rig.client.retries + 1, 500, path_contains="/mbox/")
    assert rig.cycle()["errors"] == 1
    assert rig.series_id(sid) is None
    assert rig.store.get_cursor(SOURCE) is None
    assert rig.cycle()["new"] == 1
    assert rig.state(sid) == "reported"


def test_slow_answer_past_the_client_timeout_is_retried(rig: Rig, demo: Demo) -> None:
    emu = rig.emu
    sid = emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)
    emu.delay_next(1, 2.5, method="GET", path_contains=f"/series/{sid}/")
    r = rig.restart(timeout=1.0)

    t0 = time.monotonic()
    stats = r.cycle()

    assert stats["errors"] == 0 and stats["new"] == 1
    assert r.state(sid) == "reported"
    assert time.monotonic() - t0 < 10
    # the server answered the slow request too, after the client had given up on it
    deadline = time.monotonic() + 5
    while len(_responses(emu, f"/series/{sid}/")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _responses(emu, f"/series/{sid}/") == [200, 200]


def test_timeouts_on_every_attempt_are_a_source_error(rig: Rig, demo: Demo) -> None:
    emu = rig.emu
    sid = emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)
    slow = make_client(emu, timeout=1.0, retries=1)
    emu.delay_next(2, 2.5, path_contains="/events/")
    r = Rig(emu, rig.settings, rig.store, slow)
    assert r.cycle()["errors"] == 1
    assert r.series_id(sid) is None
    assert r.cycle()["new"] == 1


def test_event_dated_before_the_cursor_is_not_lost(rig: Rig, demo: Demo) -> None:
    """Patchwork dates events in naive server-local time (Australia/Canberra by default),
    so when DST ends the clock repeats an hour and new events sort before the cursor.
    The daemon polled from the cursor exactly and never saw such a series."""
    emu = rig.emu
    first = emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)
    rig.cycle()
    emu.advance(-1800)  # the server's wall clock goes back half an hour
    late = emu.add_series_from_mbox(demo.samples[NO_SOB].mbox)
    assert _completed_event_date(emu, late) < _completed_event_date(emu, first)

    stats = rig.cycle()

    assert stats["new"] == 1
    assert rig.state(late) == "reported"
    assert rig.cycle()["new"] == 0  # the lookback re-reads events, but stores them once
    for sid in (first, late):
        assert_once_each(emu, rig.patch_ids(sid))


def test_a_series_that_is_gone_does_not_block_the_source(rig: Rig, demo: Demo) -> None:
    """A 404 for one series (deleted on the server) made every poll fail at that event
    forever, so no later series was ever ingested."""
    emu = rig.emu
    gone = emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)
    after = emu.add_series_from_mbox(demo.samples[NO_SOB].mbox)
    emu.fail_next(1000, 404, method="GET", path_contains=f"/api/1.3/series/{gone}/")

    stats = rig.cycle()

    assert stats["errors"] == 0 and stats["new"] == 1
    assert rig.series_id(gone) is None
    assert rig.state(after) == "reported"
    fetches = len(_responses(emu, f"/api/1.3/series/{gone}/"))
    rig.cycle()
    assert len(_responses(emu, f"/api/1.3/series/{gone}/")) == fetches  # not asked again
