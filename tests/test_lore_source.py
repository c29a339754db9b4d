"""`type = "lore"` sources (issue 13) against a real public-inbox server on loopback:
the demo's series delivered to the list become series (cover, patches, a reroll), a
series completed over two polls, a reply that is no series, a feed that is not XML."""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from patchci.cli import main
from patchci.config import load_settings
from patchci.daemon import open_store
from patchci.sources.lore import Entry, parse_atom, split_mbox
from tests.loreserver import PublicInbox
from tests.test_daemon import Demo, demo

__all__ = ["demo"]


@pytest.fixture
def inbox(tmp_path: Path) -> Iterator[PublicInbox]:
    pi = PublicInbox(tmp_path / "pi")
    pi.start()
    yield pi
    pi.stop()


def _mails(mbox: bytes) -> list[bytes]:
    return [m for m in re.split(rb"(?m)^(?=From [0-9a-f]{40} )", mbox) if m.strip()]


def _config(tmp_path: Path, url: str, demo: Demo, b4: bool = True) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = tmp_path / "patchci.toml"
    cfg.write_text(f"""data_dir = "{tmp_path / "data"}"
[[sources]]
name = "lore"
type = "lore"
url = "{url}"
b4 = {str(b4).lower()}
[[trees]]
name = "net-next"
path = "{demo.tree}"
branch = "main"
checks = ["signed_off_by"]
[report.patchwork]
enabled = false
""")
    return cfg


def _stored(cfg: Path) -> list[tuple[str, int, int, bool, str]]:
    store = open_store(load_settings(cfg))
    try:
        out = []
        for row in sorted(store.list_series(limit=100), key=lambda r: r.id):
            s = store.load_series(row.id)
            out.append((s.name, s.version, len(s.patches), s.complete, row.state))
        return out
    finally:
        store.close()


def test_the_lists_series_are_read_from_the_inbox(
    tmp_path: Path, inbox: PublicInbox, demo: Demo
) -> None:
    clean = next(s for s in demo.samples if s.label == "clean series for net-next")
    cover, *patches = _mails(clean.mbox)
    assert len(patches) == 3 and b"0/3]" in cover.split(b"\n\n", 1)[0]
    cfg = _config(tmp_path, inbox.url, demo)
    inbox.deliver(cover, patches[0], patches[1])  # the last patch is still on its way
    assert main(["-c", str(cfg), "ingest", "--once"]) == 0
    ((name, version, n, complete, state),) = _stored(cfg)
    assert (name, version, n, complete, state) == ("foo: device reset", 1, 2, False, "incomplete")
    inbox.deliver(patches[2])  # a new message of the thread: the thread is read again
    reply = (
        b"From: Ray <ray@example.org>\nTo: test@list.example\nSubject: Re: [PATCH net-next"
        b" 1/3] foo: add foo_reset()\nMessage-ID: <ray-1@example.org>\nIn-Reply-To: "
        + re.search(rb"(?im)^Message-I[dD]: (<[^>]+>)", patches[0]).group(1)  # type: ignore[union-attr]
        + b"\nDate: Mon, 7 Dec 2026 10:00:00 +0000\n\nReviewed-by: Ray <ray@example.org>\n"
    )
    inbox.deliver(reply)
    assert main(["-c", str(cfg), "ingest", "--once"]) == 0
    # patches already stored keep their mail: a trailer that comes later is not added
    store = open_store(load_settings(cfg))
    try:
        (row,) = store.list_series(limit=10)
        assert b"Reviewed-by: Ray" not in store.load_series(row.id).patches[0].raw
    finally:
        store.close()
    (series,) = _stored(cfg)
    assert series[:4] == ("foo: device reset", 1, 3, True)
    assert series[4] in ("checked", "reported", "done")

    # polled again: nothing new
    assert main(["-c", str(cfg), "ingest", "--once"]) == 0
    assert len(_stored(cfg)) == 1


def test_golden_feed_and_mbox_parsing(tmp_path: Path, inbox: PublicInbox, demo: Demo) -> None:
    """The parser on what this public-inbox serves, and what it must refuse."""
    import httpx

    clean = next(s for s in demo.samples if s.label == "clean series for net-next")
    inbox.deliver(*_mails(clean.mbox))
    feed = httpx.get(inbox.url + "new.atom").content
    entries = parse_atom(feed, inbox.url)
    assert len(entries) == 4 and all(isinstance(e, Entry) and "@" in e.msgid for e in entries)
    assert entries == sorted(entries, key=lambda e: e.updated)
    gz = httpx.get(f"{inbox.url}{entries[0].msgid}/t.mbox.gz").content
    import gzip

    assert len(split_mbox(gzip.decompress(gz))) == 4
    for bad in (b"<html>not a feed</html>", b"\x00\x01 not xml"):
        with pytest.raises(ValueError):
            parse_atom(bad, inbox.url)


def test_a_feed_that_is_not_xml_is_a_source_error(
    tmp_path: Path, demo: Demo, capsys: pytest.CaptureFixture[str]
) -> None:
    class Garbage(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<<<this is not a feed")

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        cfg = _config(tmp_path, f"http://127.0.0.1:{srv.server_address[1]}/x/", demo)
        assert main(["-c", str(cfg), "ingest", "--once"]) == 2
    finally:
        srv.shutdown()
    out = capsys.readouterr()
    assert "1 source errors" in out.out + out.err
    assert _stored(cfg) == []


def test_an_empty_inbox_is_no_error_a_wrong_one_is(
    tmp_path: Path, inbox: PublicInbox, demo: Demo, caplog: pytest.LogCaptureFixture
) -> None:
    """public-inbox has no feed for an inbox without messages (404), nor for a list name
    that does not exist: the first is an empty list, the second a source error."""
    assert main(["-c", str(_config(tmp_path / "a", inbox.url, demo)), "ingest", "--once"]) == 0
    wrong = inbox.url.replace("/test/", "/nosuchlist/")
    assert main(["-c", str(_config(tmp_path / "b", wrong, demo)), "ingest", "--once"]) == 2
    assert "nosuchlist/_/text/config/raw: HTTP 404" in caplog.text


@pytest.mark.parametrize("b4", [True, False])
def test_b4_puts_the_replies_trailers_into_the_patches(
    tmp_path: Path, inbox: PublicInbox, demo: Demo, b4: bool
) -> None:
    """With b4 (a test dependency, so installed) the trailer of a reply is in the patch it
    answers; the mail keeps its own headers (b4 drops the tree tag from the subject)."""
    from patchci.sources.lore import find_b4

    assert find_b4() is not None
    clean = next(s for s in demo.samples if s.label == "clean series for net-next")
    cover, *patches = _mails(clean.mbox)
    parent = re.search(rb"(?im)^Message-I[dD]: (<[^>]+>)", patches[0])
    assert parent is not None
    reply = (b"From: Ray <ray@example.org>\nTo: test@list.example\nSubject: Re: [PATCH net-next"
             b" 1/3] foo: add foo_reset()\nMessage-ID: <ray-2@example.org>\nIn-Reply-To: "
             + parent.group(1) + b"\nDate: Mon, 7 Dec 2026 10:00:00 +0000\n\n"
             b"Reviewed-by: Ray <ray@example.org>\n")  # fmt: skip
    inbox.deliver(cover, *patches, reply)
    cfg = _config(tmp_path, inbox.url, demo, b4=b4)
    assert main(["-c", str(cfg), "ingest", "--once"]) == 0
    store = open_store(load_settings(cfg))
    try:
        (row,) = store.list_series(limit=10)
        stored = store.load_series(row.id)
    finally:
        store.close()
    assert row.tree == "net-next" and len(stored.patches) == 3
    assert (b"Reviewed-by: Ray <ray@example.org>" in stored.patches[0].raw) is b4
    assert b"[PATCH net-next 1/3]" in stored.patches[0].raw
    assert b"Reviewed-by" not in stored.patches[1].raw
