"""Check delivery survives crashes and lost answers: every check lands exactly once.

The ledger writes `intent` before a POST and `sent` after it. These tests kill the daemon
(or lose the server's answer) at each point in between, restart it on the same database
and count what Patchwork ends up holding per (patch, context).
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import patchci.service.check
import patchci.service.report
from patchci.checks.signed_off_by import SignedOffBy
from patchci.daemon import open_store, report_pending
from patchci.db.store import Store
from patchci.devtools.pwemu import FakePatchwork
from patchci.errors import InfraError
from patchci.model import Outcome
from patchci.report.deliver import deliver_checks
from patchci.sources.patchwork import PatchworkClient
from tests.test_daemon import (
    CHECKS,
    CLEAN_3,
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
    make_settings,
    rig,
)

__all__ = ["demo", "emu", "rig"]  # fixtures shared with test_daemon

N = len(CHECKS)  # checks posted on a one-patch series that applies


def _target(emu: FakePatchwork) -> str:
    return f"patchwork:{emu.url}"


def _exactly_once(rig: Rig, pw_series: int) -> None:
    patches = rig.patch_ids(pw_series)
    assert_once_each(rig.emu, patches)
    for pid in patches:
        assert set(Counter(c.context for c in rig.emu.checks_for(pid))) == set(CHECKS)


def _kill_on_call(
    monkeypatch: pytest.MonkeyPatch, nth: int, *, after_post: bool
) -> Callable[[], int]:
    """Make the nth PatchworkClient.post_check die like a killed process (KeyboardInterrupt
    is not caught by the daemon), before sending or after the server stored the check."""
    calls = 0
    real = PatchworkClient.post_check

    def post_check(self: PatchworkClient, *args: Any, **kw: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == nth and not after_post:
            raise KeyboardInterrupt
        remote = real(self, *args, **kw)
        if calls == nth:
            raise KeyboardInterrupt
        return remote

    monkeypatch.setattr(PatchworkClient, "post_check", post_check)
    return lambda: calls


# ---------------------------------------------------------------- crashes and restarts


def _later(store: Store) -> None:
    """Time passes past the in-flight grace: the ledger's rows are an hour older."""
    from sqlalchemy import select, update

    from patchci.db import tables as t

    dc = t.deliveries.c
    with store.engine.begin() as conn:
        for row in conn.execute(select(dc.id, dc.created_at)).all():
            when = row.created_at - timedelta(hours=1)
            conn.execute(update(t.deliveries).where(dc.id == row.id).values(created_at=when))


def test_posts_that_failed_with_502_are_posted_after_a_restart(rig: Rig, demo: Demo) -> None:
    emu = rig.emu
    sid = emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)
    r = rig.restart(retries=0)
    emu.fail_next(N, 502, method="POST")

    stats = r.cycle()
    assert stats["posted"] == 0 and stats["checked"] == 1
    assert emu.checks == {}
    assert r.state(sid) == "checked"  # not reported yet: retried next cycle

    r = r.restart()
    # A proxy's 502 may come after Patchwork stored the check: not asked again at once.
    assert r.cycle()["posted"] == 0 and emu.checks == {}
    _later(r.store)
    assert r.cycle()["posted"] == N
    assert r.state(sid) == "reported"
    _exactly_once(r, sid)


def test_killed_between_storing_results_and_reporting(
    rig: Rig, demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = rig.emu.add_series_from_mbox(demo.samples[CLEAN_3].mbox)
    real = patchci.service.report.report_pending

    def killed(*a: Any, **k: Any) -> Any:
        if k.get("only") is not None:  # the post right after the series' checks
            raise KeyboardInterrupt
        return real(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(patchci.service.check, "report_pending", killed)
        with pytest.raises(KeyboardInterrupt):
            rig.cycle()
    assert rig.state(sid) == "checked"
    assert check_posts(rig.emu) == []

    r = rig.restart()
    stats = r.cycle()
    assert stats == {"new": 0, "checked": 0, "posted": 3 * N, "errors": 0, "post_failures": 0}
    _exactly_once(r, sid)


@pytest.mark.parametrize("after_post", [False, True], ids=["before-post", "after-post"])
def test_killed_in_the_middle_of_posting(
    rig: Rig, demo: Demo, monkeypatch: pytest.MonkeyPatch, after_post: bool
) -> None:
    """after-post: the check reached Patchwork but the process died before writing `sent`;
    the restart must find it there (intent newer than sent) instead of posting it again."""
    emu = rig.emu
    sid = emu.add_series_from_mbox(demo.samples[CLEAN_3].mbox)
    with monkeypatch.context() as m:
        calls = _kill_on_call(m, 4, after_post=after_post)
        with pytest.raises(KeyboardInterrupt):
            rig.cycle()
        assert calls() == 4
    assert len(emu.checks) == (4 if after_post else 3)

    r = rig.restart()
    r.cycle()  # the 4th POST may still be in flight: left for later
    assert len(emu.checks) == 3 * N - 1 + (1 if after_post else 0)
    _later(r.store)
    r.cycle()
    _exactly_once(r, sid)
    assert len(emu.checks) == 3 * N
    assert r.cycle()["posted"] == 0


def test_500_after_the_check_was_stored_is_reconciled_not_reposted(rig: Rig, demo: Demo) -> None:
    """Patchwork stored the check, then answered 500. The client does not repeat a POST
    that got a 500; the next cycle asks the server and records it as sent."""
    emu = rig.emu
    sid = emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)
    emu.fail_next(1, 500, method="POST", after=True)

    stats = rig.cycle()
    assert stats["posted"] == N - 1
    assert len(emu.checks) == N  # the "failed" one is on the server all the same
    (pid,) = rig.patch_ids(sid)
    first_ctx = emu.checks_for(pid)[0].context
    target = _target(emu)
    failed = rig.store.last_delivery(target, pid, first_ctx, status="failed")
    intent = rig.store.last_delivery(target, pid, first_ctx, status="intent")
    assert failed is not None and intent is not None and intent.id < failed.id
    assert "500" in failed.error
    assert rig.store.last_delivery(target, pid, first_ctx) is None  # no `sent` yet
    assert rig.state(sid) == "checked"

    r = rig.restart()
    emu.clear_log()
    _later(r.store)
    again = report_pending(r.store, r.settings, {SOURCE: r.client})

    assert (again.posted, again.reconciled, again.unchanged, again.failed) == (0, 1, N - 1, 0)
    assert check_posts(emu) == []
    sent = r.store.last_delivery(target, pid, first_ctx)
    assert sent is not None and sent.id > failed.id
    assert r.state(sid) == "reported"
    _exactly_once(r, sid)


@pytest.mark.parametrize("status", [502, 504])
def test_proxy_error_after_the_check_was_stored_is_not_posted_twice(
    rig: Rig, demo: Demo, status: int
) -> None:
    """A proxy's 504 (or 502) can come after Patchwork committed the check: the client
    repeated such a POST at once and Patchwork held two copies. A POST is now tried once;
    the next cycle asks the server before trying again."""
    emu = rig.emu
    sid = emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)
    emu.fail_next(1, status, method="POST", after=True)

    first = rig.cycle()
    assert first["posted"] == N - 1
    assert len(check_posts(emu)) == N  # one attempt each
    assert report_pending(rig.store, rig.settings, {SOURCE: rig.client}).deferred == 1
    _later(rig.store)  # past the in-flight grace: asked, found, not posted again
    second = report_pending(rig.store, rig.settings, {SOURCE: rig.client})
    assert (second.posted, second.reconciled) == (0, 1)
    _exactly_once(rig, sid)


def test_proxy_error_before_the_check_was_stored_is_posted_next_cycle(rig: Rig, demo: Demo) -> None:
    emu = rig.emu
    sid = emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)
    emu.fail_next(2, 503, method="POST")
    assert rig.cycle()["posted"] == N - 2
    assert rig.client.retries == 2  # GETs still retry
    _later(rig.store)
    assert rig.cycle()["posted"] == 2
    _exactly_once(rig, sid)


def test_post_that_times_out_but_lands_is_not_posted_twice(rig: Rig, demo: Demo) -> None:
    emu = rig.emu
    sid = emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)
    r = rig.restart(timeout=1.0)
    emu.delay_next(1, 2.5, method="POST")

    stats = r.cycle()
    assert stats["posted"] == N - 1  # a timed-out POST is never repeated blindly
    deadline = time.monotonic() + 5
    while len(emu.checks) < N and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(emu.checks) == N

    assert r.cycle()["posted"] == 0
    assert r.state(sid) == "checked"  # within the grace: the POST may still land
    _later(r.store)
    assert r.cycle()["posted"] == 0  # reconciled: it landed
    assert r.state(sid) == "reported"
    _exactly_once(r, sid)


def test_a_restart_while_a_slow_post_is_in_flight_posts_no_duplicate(rig: Rig, demo: Demo) -> None:
    """A kill while a check POST was still being handled by a slow Patchwork gave a
    duplicate: the restarted daemon reconciled before the first POST had landed, then
    posted again (all 7 duplicates of the kill campaign)."""
    emu = rig.emu
    sid = emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)
    r = rig.restart(timeout=1.0)
    emu.delay_next(1, 2.5, method="POST")  # the server takes 2.5 s to store this one
    r.cycle()  # the client gives up after 1 s: as good as killed mid-POST

    r = r.restart(timeout=1.0)  # restarted at once, the slow POST not landed yet
    r.cycle()
    deadline = time.monotonic() + 5
    while len(emu.checks) < N and time.monotonic() < deadline:
        time.sleep(0.05)
    _later(r.store)
    r.cycle()

    _exactly_once(r, sid)
    assert r.state(sid) == "reported"


def test_changed_results_are_posted_again_once(rig: Rig, demo: Demo) -> None:
    emu = rig.emu
    sid = emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)
    rig.cycle()
    local = rig.series_id(sid)
    assert local is not None
    results = rig.store.latest_results(local)
    (pid,) = rig.patch_ids(sid)
    changed = [
        dataclasses.replace(x, outcome=Outcome.WARN, description="now a warning")
        if x.check == "fixes_tag"
        else x
        for x in results
    ]

    def deliver(res: list[Any]) -> tuple[int, int]:
        s = deliver_checks(
            rig.store, rig.client, target=_target(emu), series_id=local, results=res,
            patch_ids=[pid], log_url=lambda _r: None,
        )  # fmt: skip
        return s.posted, s.unchanged

    assert deliver(changed) == (1, N - 1)
    assert deliver(changed) == (0, N)
    fixes = [c for c in emu.checks_for(pid) if c.context == "fixes_tag"]
    assert [c.state for c in fixes] == ["success", "warning"]
    assert fixes[-1].description == "now a warning"


# ---------------------------------------------------------------- infrastructure errors


def _posted(emu: FakePatchwork, pw_series: int) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for pid, _ in emu.series_patches(pw_series):
        for c in emu.checks_for(pid):
            out[c.context] = (c.state, c.description or "")
    return out


@pytest.mark.parametrize(
    "error", [InfraError("scratch disk full"), RuntimeError("bug in the check")]
)
def test_a_check_that_errors_is_pending_never_fail(
    rig: Rig, demo: Demo, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    # This sample really lacks a Signed-off-by: the broken check must not say "fail".
    sid = rig.emu.add_series_from_mbox(demo.samples[NO_SOB].mbox)

    def broken(self: SignedOffBy, ctx: object) -> object:
        raise error

    monkeypatch.setattr(SignedOffBy, "run", broken)
    rig.cycle()

    state, desc = _posted(rig.emu, sid)["signed_off_by"]
    assert state == "pending"
    assert desc.startswith("infrastructure error")
    assert str(error) in desc


def test_a_missing_tree_is_pending_never_fail(
    tmp_path: Path, emu: FakePatchwork, demo: Demo
) -> None:
    settings = make_settings(tmp_path / "data", emu.url, tmp_path / "no-such-tree")
    r = Rig(emu, settings, open_store(settings), make_client(emu))
    sid = emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)

    r.cycle()

    posted = _posted(emu, sid)
    assert posted["apply"][0] == "pending"
    assert posted["apply"][1].startswith("infrastructure error")
    assert all(state != "fail" for state, _ in posted.values()), posted
