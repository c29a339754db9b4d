"""PatchworkClient against the fake Patchwork server (real HTTP on loopback)."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from patchci.devtools.pwemu import FakePatchwork, split_mbox
from patchci.errors import FetchError, InfraError
from patchci.model import Person
from patchci.sources.patchwork import (
    PatchworkAuthError,
    PatchworkClient,
    PatchworkNotFound,
    PatchworkRequestError,
    naive_since,
)

DATA = Path(__file__).parent / "data" / "patchwork"
# The server's clock is years away from the test machine's: only its dates may be used.
T0 = datetime(2031, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)


def mbox(name: str) -> bytes:
    return (DATA / name).read_bytes()


@pytest.fixture
def pw() -> Iterator[FakePatchwork]:
    with FakePatchwork(clock=lambda: T0) as fake:
        yield fake


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(pw: FakePatchwork, sleeps: list[float]) -> Iterator[PatchworkClient]:
    with PatchworkClient(pw.url, "netdev", pw.token, timeout=5, sleep=sleeps.append) as c:
        yield c


def posts(pw: FakePatchwork) -> int:
    return sum(1 for r in pw.requests if r.method == "POST")


def test_probe_finds_1_3(client: PatchworkClient, pw: FakePatchwork) -> None:
    assert client.probe() == "1.3"
    assert [r.path for r in pw.requests] == ["/api/1.3/"]


def test_probe_falls_back_on_404() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path in ("/api/1.3/", "/api/1.2/"):
            return httpx.Response(404, text="<html>Page not found</html>")
        return httpx.Response(200, json={"series": "x"})

    with PatchworkClient(
        "http://pw.test/api/", "netdev", transport=httpx.MockTransport(handler)
    ) as c:
        assert c.probe() == "1.1"
        assert c.api("series/") == "http://pw.test/api/1.1/series/"
    assert seen == ["/api/1.3/", "/api/1.2/", "/api/1.1/"]


def test_get_series_incomplete_then_complete(client: PatchworkClient, pw: FakePatchwork) -> None:
    sid = pw.add_series_from_mbox(mbox("net-foo-v1.mbox"), complete=False)
    s = client.get_series(sid)
    assert (s.total, s.received_total, s.received_all) == (3, 2, False)
    assert s.name == "net: foo: queue handling fixes" and s.version == 1
    assert s.submitter == Person("Ci Tester", "ci.tester@example.com")
    assert s.cover is not None and s.cover.msgid == "<cover.1795271358.git.ci.tester@example.com>"
    assert [p.name for p in s.patches] == [
        "[net-next,1/3] net: foo: start queue on open",
        "[net-next,2/3] net: foo: add ndo_stop",
    ]
    assert s.patches[0].list_archive_url and s.patches[0].web_url
    assert list(client.iter_series_completed(None)) == []

    pw.advance(600)  # "10 minutes late"
    pw.add_patch_to_series(sid)
    assert client.get_series(sid).received_all is True
    [event] = client.iter_series_completed(None)
    assert (event.series_id, event.series_name) == (sid, "net: foo: queue handling fixes")
    assert event.date == "2031-03-04T16:16:07.123456"  # server-local, as given


def test_mboxes(client: PatchworkClient, pw: FakePatchwork) -> None:
    sid = pw.add_series_from_mbox(mbox("net-foo-v1.mbox"))
    s = client.get_series(sid)
    data = client.series_mbox(s)
    assert len(split_mbox(data)) == 3 and b"0/3" not in data
    one = client.patch_mbox(s.patches[1])
    assert one.startswith(b"From patchwork ")
    assert f"\nX-Patchwork-Id: {s.patches[1].id}\n".encode() in one
    assert client.fetch_mbox(f"{pw.url}/patch/{s.patches[1].id}/mbox/") == one  # 302 followed


def test_series_without_cover(client: PatchworkClient, pw: FakePatchwork) -> None:
    s = client.get_series(pw.add_series_from_mbox(mbox("base-no-references.mbox")))
    assert s.cover is None and s.version == 2 and len(s.patches) == 2


def test_events_follow_pagination(pw: FakePatchwork, sleeps: list[float]) -> None:
    for _ in range(5):
        pw.add_series_from_mbox(mbox("base-no-references.mbox"))
        pw.advance(1)
    with PatchworkClient(pw.url, "netdev", per_page=2, sleep=sleeps.append) as c:
        events = list(c.iter_series_completed(None))
    assert [e.series_id for e in events] == [1, 2, 3, 4, 5]  # oldest first
    reqs = [r for r in pw.requests if r.path == "/api/1.3/events/"]
    assert len(reqs) == 3
    assert [r.params.get("page") for r in reqs] == [None, ["2"], ["3"]]
    for r in reqs:
        assert r.params["category"] == ["series-completed"]
        assert r.params["order"] == ["date"] and r.params["project"] == ["netdev"]


def test_inclusive_since_and_dedupe_by_id(client: PatchworkClient, pw: FakePatchwork) -> None:
    pw.add_series_from_mbox(mbox("base-no-references.mbox"))
    pw.add_series_from_mbox(mbox("net-foo-v1.mbox"))  # same server time: same date
    first = list(client.iter_series_completed(None))
    assert len(first) == 2 and first[0].date == first[1].date
    cursor = first[-1].date
    # since is >=: both events come back; the caller drops the ids it has handled
    again = list(client.iter_series_completed(cursor))
    assert [e.id for e in again] == [e.id for e in first]
    handled = {e.id for e in first}
    assert list(client.iter_series_completed(cursor, skip_ids=handled)) == []
    pw.advance(30)
    pw.add_series_from_mbox(mbox("net-foo-v2.mbox"))
    new = list(client.iter_series_completed(cursor, skip_ids=handled))
    assert [e.series_id for e in new] == [3]
    sent = [r.params["since"] for r in pw.requests if "since" in r.params]
    assert sent == [[cursor], [cursor], [cursor]]


def test_no_timezone_suffix_is_ever_sent(client: PatchworkClient, pw: FakePatchwork) -> None:
    pw.add_series_from_mbox(mbox("net-foo-v1.mbox"))
    [event] = client.iter_series_completed(None)
    list(client.iter_series_completed(event.date))
    for bad in ("2031-03-04T16:06:07Z", "2031-03-04T16:06:07+00:00", "2031-03-04T16:06:07+1100"):
        with pytest.raises(ValueError, match="naive"):
            list(client.iter_series_completed(bad))
    for r in pw.requests:
        assert "Z" not in r.query and "+00" not in r.query and "%2B" not in r.query, r
    assert all(r.status < 500 for r in pw.requests)


def test_lookback_moves_the_cursor_in_server_time(
    client: PatchworkClient, pw: FakePatchwork
) -> None:
    """A DST zone repeats an hour of naive server time; a lookback plus dedupe covers it."""
    pw.add_series_from_mbox(mbox("base-no-references.mbox"))
    [old] = client.iter_series_completed(None)
    pw.advance(1800)
    pw.add_series_from_mbox(mbox("net-foo-v1.mbox"))
    [_, new] = client.iter_series_completed(None)
    got = list(client.iter_series_completed(new.date, skip_ids={new.id}, lookback=3600))
    assert [e.id for e in got] == [old.id]
    assert pw.requests[-1].params["since"] == ["2031-03-04T15:36:07.123456"]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("2026-11-22T01:29:42.935608", True),
        ("2026-11-22T01:29:42", True),
        ("2026-11-22 01:29:42", True),
        ("2026-11-22", True),
        ("2026-11-22T01:29:42Z", False),
        ("2026-11-22T01:29:42-05:00", False),
        ("yesterday", False),
    ],
)
def test_naive_since(value: str, ok: bool) -> None:
    if ok:
        assert naive_since(value) == value
    else:
        with pytest.raises(ValueError):
            naive_since(value)


def test_5xx_burst_then_success(
    client: PatchworkClient, pw: FakePatchwork, sleeps: list[float]
) -> None:
    sid = pw.add_series_from_mbox(mbox("net-foo-v1.mbox"))
    pw.fail_next(3, status=500)
    assert client.get_series(sid).id == sid
    assert [r.status for r in pw.requests] == [500, 500, 500, 200]
    assert len(sleeps) == 3
    assert sleeps[0] <= 1.0 < sleeps[2] <= 4.0  # exponential backoff with jitter


def test_timeout_then_success(pw: FakePatchwork, sleeps: list[float]) -> None:
    sid = pw.add_series_from_mbox(mbox("net-foo-v1.mbox"))
    pw.delay_next(1, 1.0)
    with PatchworkClient(pw.url, "netdev", timeout=0.2, sleep=sleeps.append) as c:
        assert c.get_series(sid).total == 3
    assert len(sleeps) == 1
    deadline = time.monotonic() + 3
    while len(pw.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # the delayed request is logged when the server finishes it
    assert [r.path for r in pw.requests] == [f"/api/1.3/series/{sid}/"] * 2


def test_persistent_5xx_raises_fetch_error(pw: FakePatchwork, sleeps: list[float]) -> None:
    pw.fail_next(100, status=503)
    with (
        PatchworkClient(pw.url, "netdev", retries=3, sleep=sleeps.append) as c,
        pytest.raises(FetchError, match=r"failed after 4 attempts: HTTP 503") as info,
    ):
        c.get_series(1)
    assert isinstance(info.value, InfraError)
    assert len(pw.requests) == 4 and len(sleeps) == 3


def test_connect_error_is_retried_then_fetch_error(sleeps: list[float]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    with PatchworkClient(
        f"http://127.0.0.1:{port}", "netdev", "t" * 40, retries=2, sleep=sleeps.append
    ) as c:
        with pytest.raises(FetchError, match="ConnectError"):
            c.get_series(1)
        with pytest.raises(FetchError, match="after 3 attempts"):
            c.post_check(1, "success", "build")  # never reached the app: safe to repeat
    assert len(sleeps) == 4


def test_post_check_and_list(client: PatchworkClient, pw: FakePatchwork) -> None:
    pw.add_series_from_mbox(mbox("net-foo-v1.mbox"))
    cid = client.post_check(1, "success", "build", "Built clean", "https://ci.example.com/1")
    assert cid == 1
    client.post_check(1, "warning", "checkpatch", "2 warnings")
    client.post_check(1, "success", "checkpatch")
    [c] = pw.checks_for(1)[:1]
    assert (c.state, c.context, c.description, c.target_url) == (
        "success", "build", "Built clean", "https://ci.example.com/1",
    )  # fmt: skip
    checks = client.list_checks(1)
    assert [(k.id, k.context, k.state) for k in checks] == [
        (1, "build", "success"), (2, "checkpatch", "warning"), (3, "checkpatch", "success"),
    ]  # fmt: skip
    assert checks[0].user == "ci-bot" and checks[2].description is None
    assert [k.id for k in client.list_checks(1, context="checkpatch")] == [2, 3]
    assert {k: v.state for k, v in client.latest_checks(1).items()} == {
        "build": "success", "checkpatch": "success",
    }  # fmt: skip


def test_list_checks_follows_pagination(pw: FakePatchwork) -> None:
    pw.add_series_from_mbox(mbox("net-foo-v1.mbox"))
    for i in range(7):
        pw.add_check(2, "pending", f"ctx{i}")
    with PatchworkClient(pw.url, "netdev", per_page=3) as c:
        assert [k.context for k in c.list_checks(2)] == [f"ctx{i}" for i in range(7)]
    assert len(pw.requests) == 3


def test_post_check_is_not_retried_on_500(
    client: PatchworkClient, pw: FakePatchwork, sleeps: list[float]
) -> None:
    """A 500 means the app ran and may have stored the check: repeating would duplicate it."""
    pw.add_series_from_mbox(mbox("net-foo-v1.mbox"))
    pw.fail_next(1, status=500, method="POST", after=True)
    with pytest.raises(FetchError, match="not retried"):
        client.post_check(1, "success", "build")
    assert posts(pw) == 1 and len(pw.checks_for(1)) == 1 and sleeps == []


@pytest.mark.parametrize("status", [502, 503, 504])
def test_post_check_is_not_repeated_on_proxy_errors(
    client: PatchworkClient, pw: FakePatchwork, sleeps: list[float], status: int
) -> None:
    """A 504 can come after the app stored the check; the delivery ledger reconciles."""
    pw.add_series_from_mbox(mbox("net-foo-v1.mbox"))
    pw.fail_next(1, status=status, method="POST", after=True)
    with pytest.raises(FetchError, match="not retried"):
        client.post_check(1, "fail", "build", "broken")
    assert posts(pw) == 1 and len(pw.checks_for(1)) == 1 and sleeps == []


def test_post_check_read_timeout_is_not_retried(pw: FakePatchwork, sleeps: list[float]) -> None:
    pw.add_series_from_mbox(mbox("net-foo-v1.mbox"))
    pw.delay_next(1, 0.6, method="POST")
    c = PatchworkClient(pw.url, "netdev", pw.token, timeout=0.2, sleep=sleeps.append)
    with c, pytest.raises(FetchError, match="ReadTimeout"):
        c.post_check(1, "success", "build")
    deadline = time.monotonic() + 3
    while not pw.checks_for(1) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(pw.checks_for(1)) == 1  # the server did store it: a retry would duplicate
    assert posts(pw) == 1 and sleeps == []


def test_403_bad_token(
    pw: FakePatchwork, caplog: pytest.LogCaptureFixture, sleeps: list[float]
) -> None:
    pw.add_series_from_mbox(mbox("net-foo-v1.mbox"))
    secret = "f" * 40
    caplog.set_level(logging.DEBUG)
    with PatchworkClient(pw.url, "netdev", secret, sleep=sleeps.append) as c:
        with pytest.raises(PatchworkAuthError, match="Invalid token") as info:
            c.post_check(1, "success", "build")
        assert secret not in repr(c)
    assert info.value.detail == "Invalid token."
    assert secret not in str(info.value) and secret not in caplog.text
    assert posts(pw) == 1 and sleeps == []


def test_403_not_a_maintainer(pw: FakePatchwork, sleeps: list[float]) -> None:
    pw.add_series_from_mbox(mbox("net-foo-v1.mbox"))
    token = pw.add_user("someone", maintainer=False)
    c = PatchworkClient(pw.url, "netdev", token, sleep=sleeps.append)
    with c, pytest.raises(PatchworkAuthError, match="must be a maintainer of project netdev"):
        c.post_check(1, "success", "build")
    anon = PatchworkClient(pw.url, "netdev", sleep=sleeps.append)
    with anon, pytest.raises(PatchworkAuthError, match="do not have permission"):
        anon.post_check(1, "success", "build")
    assert posts(pw) == 2 and pw.checks_for(1) == [] and sleeps == []


def test_400_carries_field_errors(client: PatchworkClient, pw: FakePatchwork) -> None:
    pw.add_series_from_mbox(mbox("net-foo-v1.mbox"))
    with pytest.raises(PatchworkRequestError, match="target_url: Enter a valid URL") as info:
        client.post_check(1, "success", "build", target_url="not-a-url")
    assert info.value.errors == {"target_url": ["Enter a valid URL."]}


def test_invalid_state_or_context_is_refused_locally(
    client: PatchworkClient, pw: FakePatchwork
) -> None:
    with pytest.raises(ValueError, match="state"):
        client.post_check(1, "passed", "build")
    with pytest.raises(ValueError, match="slug"):
        client.post_check(1, "success", "netdev/build")
    assert pw.requests == []


def test_404_is_not_retried(
    client: PatchworkClient, pw: FakePatchwork, sleeps: list[float]
) -> None:
    with pytest.raises(PatchworkNotFound, match="No Series matches"):
        client.get_series(42)
    with pytest.raises(PatchworkNotFound):
        client.post_check(999, "success", "build")
    assert len(pw.requests) == 2 and sleeps == []
