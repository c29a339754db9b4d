"""Failed posts and missing credentials are never silent (issue 16, first part), through
`patchci ingest --once` and `config check` against the Patchwork emulator.

With a non-maintainer token or no token at all, ingest printed "0 source errors" and
exited 0; with the token's variable unset, every post got 403 with the hint "the CI
account must be a maintainer", though no credentials were sent.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from patchci.devtools.pwemu import FakePatchwork
from tests.test_daemon import NET_FIX, SOURCE, Demo, demo, emu
from tests.test_leases import _config

__all__ = ["demo", "emu"]


def _run(cfg: Path, token: str | None) -> tuple[int, str, str]:
    """`patchci ingest --once` with *token* in its environment, or none at all."""
    exe = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "patchci"
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "patchci"]
    env = {k: v for k, v in os.environ.items() if k != "PATCHCI_TEST_PW_TOKEN"}
    if token is not None:
        env["PATCHCI_TEST_PW_TOKEN"] = token
    r = subprocess.run([*argv, "-c", str(cfg), "ingest", "--once"], env=env, text=True,
                       capture_output=True, timeout=120, check=False)  # fmt: skip
    return r.returncode, r.stdout, r.stderr


def test_failed_posts_are_counted_and_exit_2(
    tmp_path: Path, emu: FakePatchwork, demo: Demo
) -> None:
    emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)
    reader = emu.add_user("reader")  # not a maintainer: every post is a 403
    cfg = _config(tmp_path, emu, demo)

    rc, out, err = _run(cfg, reader)

    assert rc == 2, out + err
    assert "0 checks posted, 5 posts failed" in out
    # ... and the status page and /metrics say so too, until they are posted
    from patchci.config import load_settings
    from patchci.web.app import create_app
    from tests.web_server import client_for

    with client_for(create_app(load_settings(cfg))) as http:
        metrics = http.get("/metrics").text
        status = http.get("/status").text
    assert f'patchci_checks_undelivered{{target="patchwork:{emu.url}"}} 5' in metrics
    assert "403" in status


def test_an_unset_token_is_said_at_start_and_not_blamed_on_the_account(
    tmp_path: Path, emu: FakePatchwork, demo: Demo, capsys: pytest.CaptureFixture[str]
) -> None:
    from patchci.cli import main

    emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)
    cfg = _config(tmp_path, emu, demo)

    rc, out, err = _run(cfg, None)

    assert rc == 2
    assert "$PATCHCI_TEST_PW_TOKEN is not set" in err
    assert "posts failed" in out and "0 posts failed" not in out
    os.environ.pop("PATCHCI_TEST_PW_TOKEN", None)
    assert main(["config", "check", str(cfg)]) == 0
    assert f"sources.{SOURCE}: $PATCHCI_TEST_PW_TOKEN is not set" in capsys.readouterr().out
    db = sqlite3.connect(tmp_path / "data" / "patchci.db")
    errors = [e for (e,) in db.execute("select error from deliveries where status='failed'")]
    assert errors and all("no token was sent" in e for e in errors)
    assert not any("maintainer" in e for e in errors)


def test_tree_selection_checks_link_to_a_log_of_the_routing_decision(
    tmp_path: Path, emu: FakePatchwork, demo: Demo
) -> None:
    """Every other check linked to its log; tree_selection carried no link at all."""
    pw = emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)
    cfg = _config(tmp_path, emu, demo)
    with cfg.open("a") as f:
        f.write('[report.patchwork]\nlog_url = "https://ci.example.org/patchci/logs"\n')

    rc, out, err = _run(cfg, emu.token)
    assert rc in (0, 1), out + err

    (pid, _), *_ = emu.series_patches(pw)
    (check,) = [c for c in emu.checks_for(pid) if c.context == "tree_selection"]
    assert check.target_url is not None
    assert check.target_url.startswith("https://ci.example.org/patchci/logs/series-")
    assert check.target_url.endswith("/tree_selection.log")
    rel = check.target_url.removeprefix("https://ci.example.org/patchci/logs/")
    text = (tmp_path / "data" / "logs" / rel).read_text()
    assert "decision: net by tags" in text and "trees configured:" in text
    # a check's log names the Patchwork series and the folder it is in (named by our id)
    (sob,) = [c for c in emu.checks_for(pid) if c.context == "signed_off_by"]
    assert sob.target_url is not None
    rel = sob.target_url.removeprefix("https://ci.example.org/patchci/logs/")
    head = (tmp_path / "data" / "logs" / rel).read_text().splitlines()[1]
    assert head == f"series: {pw} on {SOURCE} (patchci's logs: {'/'.join(rel.split('/')[:2])})"


def test_requeue_checks_a_series_again_and_posts_only_what_changed(
    tmp_path: Path, emu: FakePatchwork, demo: Demo, capsys: pytest.CaptureFixture[str]
) -> None:
    """NIPA re-queues a series by hand through its local socket; patchci had no way to."""
    from patchci.cli import main

    emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)
    cfg = _config(tmp_path, emu, demo)
    rc, out, err = _run(cfg, emu.token)
    assert rc in (0, 1), out + err
    posted = len(emu.checks)
    db = tmp_path / "data" / "patchci.db"
    jobs = lambda: sqlite3.connect(db).execute(  # noqa: E731
        "select count(*) from jobs where kind='checks'").fetchone()[0]  # fmt: skip
    assert jobs() == 1

    assert main(["-c", str(cfg), "requeue", "1"]) == 0
    assert "series 1: requeued (was reported)" in capsys.readouterr().out
    rc, out, err = _run(cfg, emu.token)
    assert rc in (0, 1), out + err
    assert jobs() == 2  # checked again
    assert len(emu.checks) == posted  # the same results: nothing posted twice

    assert main(["-c", str(cfg), "requeue", "1", "42"]) == 2
    assert "series 42 is not in the database" in capsys.readouterr().err
