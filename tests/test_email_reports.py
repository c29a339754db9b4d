"""Report mails (issue 13): `patchci ingest` with `[report.email]` replies in the series'
thread through a real SMTP server on loopback (aiosmtpd), once per set of findings, even
across kill -9; a refusing server is recorded and retried; dry runs write .eml files."""

from __future__ import annotations

import asyncio
import email
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.utils import getaddresses
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from patchci.cli import main
from patchci.db.store import Store
from patchci.devtools.pwemu import FakePatchwork
from patchci.sources.mail import parse_mail
from patchci.sources.mbox import _split_mbox
from tests.pwconfig import SOURCE, TOKEN_ENV, tree_toml, write_config
from tests.test_daemon import Demo, demo, emu

__all__ = ["demo", "emu"]
REPO = Path(__file__).resolve().parents[1]
LIST = "netdev@vger.example.org"
# The demo samples whose checks fail: missing Signed-off-by, bad Fixes tag, does not apply.
FAILING = {"missing Signed-off-by": "signed_off_by", "bad Fixes tag": "fixes_tag",
           "does not apply": "apply"}  # fmt: skip


@dataclass
class Handler:
    """An SMTP server's receiving end: keeps what it accepts; can refuse or stall DATA."""

    received: list[Message] = field(default_factory=list)
    envelopes: list[list[str]] = field(default_factory=list)
    refuse: str | None = None  # an SMTP reply to DATA, e.g. "451 4.3.0 try later"
    stall: threading.Event | None = None  # DATA waits for it (a kill -9 lands meanwhile)
    in_data: threading.Event = field(default_factory=threading.Event)
    attempts: int = 0  # DATA commands seen

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.attempts += 1
        self.in_data.set()
        if self.stall is not None:
            while not self.stall.is_set():
                await asyncio.sleep(0.05)
        if self.refuse:
            return self.refuse
        self.received.append(email.message_from_bytes(envelope.content))
        self.envelopes.append(list(envelope.rcpt_tos))
        return "250 OK"


@dataclass
class Smtp:
    handler: Handler
    port: int


@pytest.fixture
def smtp() -> Iterator[Smtp]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    handler = Handler()
    ctl = Controller(handler, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        yield Smtp(handler, port)
    finally:
        if handler.stall is not None:
            handler.stall.set()
        ctl.stop()


def _config(tmp_path: Path, emu: FakePatchwork, demo: Demo, port: int, **email_opts: Any) -> Path:
    extra = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in email_opts.items())
    extra = extra.replace("True", "true").replace("False", "false")
    checks = ["signed_off_by", "fixes_tag", "series_format"]
    trees = tree_toml("net", demo.tree, "net", checks) + tree_toml(
        "net-next", demo.tree, "main", checks, paths=["drivers/", "net/", "include/"]
    )
    return write_config(
        tmp_path,
        emu,
        trees
        + f"""
[report.patchwork]
web_url = "https://ci.example.org"

[report.email]
enabled = true
from = "patchci <ci@example.org>"
cc = ["{LIST}"]
smtp_host = "127.0.0.1"
smtp_port = {port}
{extra}""",
        retries="1",
        timeout="5",
    )


def _ingest(cfg: Path, emu: FakePatchwork, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv(TOKEN_ENV, emu.token)
    return main(["-c", str(cfg), "ingest", "--once"])


def _add_samples(emu: FakePatchwork, demo: Demo) -> dict[str, int]:
    return {s.label: emu.add_series_from_mbox(s.mbox) for s in demo.samples}


def _root_mail(demo: Demo, label: str) -> Any:
    """The sample's cover letter, or its first patch: the mail a reply must thread under."""
    sample = next(s for s in demo.samples if s.label == label)
    mails = [parse_mail(raw) for _, raw in _split_mbox(sample.mbox, label)]
    return next((m for m in mails if not m.in_reply_to), mails[0])


def test_each_failing_series_gets_one_reply_in_its_thread(
    tmp_path: Path, emu: FakePatchwork, demo: Demo, smtp: Smtp, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    pw = _add_samples(emu, demo)
    cfg = _config(tmp_path, emu, demo, smtp.port)
    assert _ingest(cfg, emu, monkeypatch) == 0
    mails = smtp.handler.received
    assert len(mails) == len(FAILING), [m["Subject"] for m in mails]
    by_series = {}
    for label, check in FAILING.items():
        root = _root_mail(demo, label)
        mail = next(m for m in mails if m["In-Reply-To"] == root.msgid)
        by_series[label] = mail
        assert mail["Subject"] == f"Re: {root.subject}"
        assert root.msgid in mail["References"].split()
        to = getaddresses(mail.get_all("To", []))
        assert [a for _, a in to] == [root.author.email]
        assert [a for _, a in getaddresses(mail.get_all("Cc", []))] == [LIST]
        assert mail["From"] == "patchci <ci@example.org>"
        assert mail["Auto-Submitted"] == "auto-generated"
        assert mail["Message-ID"].startswith("<patchci.") and mail["Message-ID"].endswith(
            "@example.org>"
        )
        body = mail.get_payload(decode=True).decode()
        assert f"{check}: FAIL - " in body
        assert "All results: https://ci.example.org/series/" in body
    envelope = smtp.handler.envelopes[0]
    assert LIST in envelope and len(envelope) == 2
    # a second run, and a third: nothing new to say, nothing sent
    assert _ingest(cfg, emu, monkeypatch) == 0
    assert _ingest(cfg, emu, monkeypatch) == 0
    assert len(smtp.handler.received) == len(FAILING)
    # `patchci mail ID` shows what was sent, as sent; and nothing for a clean series
    store = Store.open(f"sqlite:///{tmp_path / 'data' / 'patchci.db'}")
    try:
        bad = store.find_series(SOURCE, str(pw["missing Signed-off-by"]))
        clean = store.find_series(SOURCE, str(pw["clean series for net-next"]))
    finally:
        store.close()
    capsys.readouterr()
    assert main(["-c", str(cfg), "mail", str(bad)]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("# sent ") and f"envelope to {smtp.handler.envelopes[0][0]}" in shown
    sent = by_series["missing Signed-off-by"]
    assert f"Message-ID: {sent['Message-ID']}" in shown and "signed_off_by: FAIL" in shown
    assert main(["-c", str(cfg), "mail", str(clean)]) == 1


def test_a_refusing_server_is_recorded_and_tried_again(
    tmp_path: Path, emu: FakePatchwork, demo: Demo, smtp: Smtp, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    pw = emu.add_series_from_mbox(demo.samples[2].mbox)  # missing Signed-off-by
    cfg = _config(tmp_path, emu, demo, smtp.port)
    caplog.set_level(logging.WARNING, logger="patchci")
    smtp.handler.refuse = "451 4.3.0 mailbox busy, try later"
    assert _ingest(cfg, emu, monkeypatch) == 2  # a mail that failed is a failure of the run
    assert smtp.handler.received == []
    assert "report mail not sent (ours, retried next cycle): SMTP 451" in caplog.text
    store = Store.open(f"sqlite:///{tmp_path / 'data' / 'patchci.db'}")
    try:
        sid = store.find_series(SOURCE, str(pw))
        assert sid is not None
        rows = store.series_deliveries(sid, "email:")
        assert [r.status for r in rows] == ["intent", "failed"]
        assert "451" in rows[-1].error
        # the series itself was reported: the mail is ours, not the patch's
        assert store.series_row(sid).state == "reported"
    finally:
        store.close()
    smtp.handler.refuse = None
    assert _ingest(cfg, emu, monkeypatch) == 0
    assert len(smtp.handler.received) == 1


def test_killed_while_sending_is_never_sent_twice(
    tmp_path: Path, emu: FakePatchwork, demo: Demo, smtp: Smtp
) -> None:
    """kill -9 while the SMTP server holds the DATA: the server may have taken the mail,
    so the next daemon does not send it again (at most once) and records it as unknown."""
    emu.add_series_from_mbox(demo.samples[2].mbox)
    cfg = _config(tmp_path, emu, demo, smtp.port)
    smtp.handler.stall = threading.Event()
    exe = REPO / ".venv" / "bin" / "patchci"
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "patchci"]
    env = {**os.environ, TOKEN_ENV: emu.token}
    p = subprocess.Popen([*argv, "-c", str(cfg), "ingest", "--once"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert smtp.handler.in_data.wait(120), "the daemon never reached DATA"
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    smtp.handler.stall.set()  # the server finishes its side: the mail is delivered
    time.sleep(0.3)
    again = subprocess.run([*argv, "-c", str(cfg), "ingest", "--once"], env=env,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert smtp.handler.attempts == 1  # never a second SMTP transaction
    assert "killed while sending" in again.stderr
    store = Store.open(f"sqlite:///{tmp_path / 'data' / 'patchci.db'}")
    try:
        (row,) = store.list_series()
        assert [r.status for r in store.series_deliveries(row.id, "email:")] == [
            "intent",
            "unknown",
        ]
    finally:
        store.close()


def test_dry_run_writes_eml_files_and_respects_the_rate_limit(
    tmp_path: Path, emu: FakePatchwork, demo: Demo, smtp: Smtp, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.WARNING, logger="patchci")  # another test may have raised it
    _add_samples(emu, demo)
    cfg = _config(tmp_path, emu, demo, smtp.port, dry_run=True, max_per_hour=2)
    assert _ingest(cfg, emu, monkeypatch) == 0
    outbox = tmp_path / "data" / "outbox"
    files = sorted(outbox.glob("*.eml"))
    assert len(files) == 2 and smtp.handler.received == []
    assert "1 report(s) wait for the next cycle (max_per_hour = 2)" in caplog.text
    first = email.message_from_bytes(files[0].read_bytes())
    assert first["In-Reply-To"] and first["Subject"].startswith("Re: ")
    mtimes = [f.stat().st_mtime_ns for f in files]
    assert _ingest(cfg, emu, monkeypatch) == 0  # within the hour: still only 2
    assert sorted(outbox.glob("*.eml")) == files
    assert [f.stat().st_mtime_ns for f in files] == mtimes  # not rewritten


def test_config_check_rejects_a_bad_email_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('data_dir = "d"\n[report.email]\nenabled = true\noutcomes = ["broken"]\n')
    assert main(["config", "check", str(cfg)]) == 2
    assert "report.email.outcomes" in capsys.readouterr().err
