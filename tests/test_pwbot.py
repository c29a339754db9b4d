"""pw-bot (issue 13, netdev's mailbot): `pw-bot: <state>` replies read from a mail source
change the series' state on Patchwork (the emulator, which implements PATCH
/patches/N/ as 3.2.1 does), when a maintainer asks, or the author asks to withdraw;
once per reply, through `patchci ingest`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from patchci.cli import main
from patchci.db.store import Store
from patchci.devtools.pwemu import FakePatchwork
from patchci.report.pwbot import command
from tests.pwconfig import SOURCE, TOKEN_ENV, tree_toml, write_config
from tests.test_daemon import Demo, demo, emu

__all__ = ["demo", "emu"]

BOSS = "Mae Maintainer <mae@example.org>"


def test_command_lines() -> None:
    assert command("Looks wrong.\n\npw-bot: cr\n") == ("changes-requested", None)
    assert command("pw-bot: Accepted\n") == ("accepted", None)
    assert command("> pw-bot: accepted\nthanks\n") == (None, None)  # quoted: not theirs
    assert command("pw-bot: bogus\n") == (None, "bogus")
    assert command("pw-bot: new\nlater:\npw-bot: deferred\n") == ("deferred", None)


def _reply(n: int, parent: str, sender: str, body: str) -> str:
    return (f"From x Mon Sep 17 00:00:00 2001\nFrom: {sender}\nTo: netdev@vger.example.org\n"
            f"Subject: Re: [PATCH] foo\nMessage-ID: <reply{n}@example.org>\n"
            f"In-Reply-To: {parent}\nReferences: {parent}\n"
            f"Date: Mon, 7 Dec 2026 10:0{n}:00 +0000\n\n{body}\n")  # fmt: skip


def test_replies_set_the_series_state_once_when_the_sender_may(
    tmp_path: Path, emu: FakePatchwork, demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox = tmp_path / "list.mbox"
    inbox.write_text("")
    trees = tree_toml("net-next", demo.tree, "main", ["signed_off_by"])
    cfg = write_config(
        tmp_path,
        emu,
        trees
        + f"""
[[sources]]
name = "list"
type = "mbox"
path = "{inbox}"
[pwbot]
enabled = true
maintainers = ["mae@example.org"]
""",
    )
    clean = next(s for s in demo.samples if s.label == "clean series for net-next")
    pw_id = emu.add_series_from_mbox(clean.mbox)
    patches = emu.series[pw_id].patch_ids
    monkeypatch.setenv(TOKEN_ENV, emu.token)
    assert main(["-c", str(cfg), "ingest", "--once"]) == 0
    store = Store.open(f"sqlite:///{tmp_path / 'data' / 'patchci.db'}")
    try:
        sid = store.find_series(SOURCE, str(pw_id))
        assert sid is not None
        series = store.load_series(sid)
        first, second = series.patches[0].msgid, series.patches[1].msgid
        author = f"{series.patches[0].author.name} <{series.patches[0].author.email}>"
    finally:
        store.close()

    def states() -> set[str]:
        return {emu.submissions[p].state for p in patches}

    # a stranger may not; quoted text is nobody's command; the maintainer may
    inbox.write_text(_reply(1, second, "Eve <eve@example.org>", "pw-bot: accepted")
                     + _reply(2, first, "Ray <ray@example.org>", "> pw-bot: accepted\nok"))  # fmt: skip
    assert main(["-c", str(cfg), "ingest", "--once"]) == 0
    assert states() == {"new"}
    # the maintainer's reply while Patchwork refuses the token: ours, retried later
    with inbox.open("a") as f:
        f.write(_reply(3, second, BOSS, "Please respin.\n\npw-bot: cr"))
    monkeypatch.setenv(TOKEN_ENV, "wrong-token")
    main(["-c", str(cfg), "ingest", "--once"])
    assert states() == {"new"}
    monkeypatch.setenv(TOKEN_ENV, emu.token)
    assert main(["-c", str(cfg), "ingest", "--once"]) == 0
    assert states() == {"changes-requested"}
    events = len(emu.events)
    assert main(["-c", str(cfg), "ingest", "--once"]) == 0
    assert len(emu.events) == events  # once per reply
    # the author may withdraw the series
    with inbox.open("a") as f:
        f.write(_reply(4, first, author, "pw-bot: superseded"))
    assert main(["-c", str(cfg), "ingest", "--once"]) == 0
    assert states() == {"superseded"}

    store = Store.open(f"sqlite:///{tmp_path / 'data' / 'patchci.db'}")
    try:
        ledger = [
            (d.fingerprint, d.status, d.error) for d in store.series_deliveries(sid, "pwbot:")
        ]
    finally:
        store.close()
    by = {fp: (st, err) for fp, st, err in ledger}
    assert by["<reply1@example.org>"][0] == "refused"
    assert "eve@example.org may not set accepted" in by["<reply1@example.org>"][1]
    assert "<reply2@example.org>" not in by
    assert [st for fp, st, _ in ledger if fp == "<reply3@example.org>"] == ["failed", "sent"]
    assert by["<reply4@example.org>"][0] == "sent"


def test_a_pw_bot_reply_on_the_lore_list_sets_the_state(
    tmp_path: Path, emu: FakePatchwork, demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reply is read from the list's public-inbox (a real server), the series it
    answers came from Patchwork: its patches there become changes-requested."""
    from tests.loreserver import PublicInbox

    inbox = PublicInbox(tmp_path / "pi")
    inbox.start()
    try:
        trees = tree_toml("net-next", demo.tree, "main", ["signed_off_by"])
        cfg = write_config(
            tmp_path,
            emu,
            trees
            + f"""
[[sources]]
name = "lore"
type = "lore"
url = "{inbox.url}"
[pwbot]
enabled = true
maintainers = ["mae@example.org"]
""",
        )
        clean = next(s for s in demo.samples if s.label == "clean series for net-next")
        pw_id = emu.add_series_from_mbox(clean.mbox)
        monkeypatch.setenv(TOKEN_ENV, emu.token)
        # the series from Patchwork; the list has no message yet (no feed: not an error)
        assert main(["-c", str(cfg), "ingest", "--once"]) == 0
        store = Store.open(f"sqlite:///{tmp_path / 'data' / 'patchci.db'}")
        try:
            sid = store.find_series(SOURCE, str(pw_id))
            assert sid is not None
            parent = store.load_series(sid).patches[0].msgid
        finally:
            store.close()
        # the list has the patches too (lore stores its own copy of the series) and the reply
        inbox.deliver(*[m for m in re.split(rb"(?m)^(?=From [0-9a-f]{40} )", clean.mbox)
                        if m.strip()])  # fmt: skip
        inbox.deliver(_reply(5, parent, BOSS, "Needs work.\n\npw-bot: changes-requested").encode())
        assert main(["-c", str(cfg), "ingest", "--once"]) == 0
        assert {emu.submissions[p].state for p in emu.series[pw_id].patch_ids} == {
            "changes-requested"}  # fmt: skip
    finally:
        inbox.stop()
