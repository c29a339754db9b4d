"""`[[remotes]]`: a NIPA-style executor elsewhere publishes results.json and run files over
HTTP (a real http.server here); patchci stores its runs of the branches it cut.

Before, a lab running NIPA's executor had no way to report into patchci.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select

from patchci.cli import main
from patchci.db import tables as t
from patchci.db.migrate import make_engine
from tests.workersite import Redis, Site

DATA = Path(__file__).parent / "data" / "nipa"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP, as a lab's NIPA executor publishes it."""
    root = tmp_path / "lab"
    root.mkdir()
    handler = functools.partial(_Quiet, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    th = threading.Thread(target=server.serve_forever, daemon=True)
    th.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _site(tmp_path: Path, manifest_url: str) -> tuple[Site, str]:
    site = Site(tmp_path, Redis(0, tmp_path))
    site.write_config(sleep=0, executors=1)
    text = site.cfg.read_text()
    site.cfg.write_text(text[: text.index("[broker]")] + f"""
[[remotes]]
name = "lab"
url = "{manifest_url}"
""")
    assert main(["-c", str(site.cfg), "branch", "--now"]) == 0
    (run,) = site.runs()
    engine = make_engine(f"sqlite:///{site.db}")
    with engine.connect() as conn:
        branch = conn.execute(select(t.branches.c.name)).scalar_one()
    engine.dispose()
    return site, str(branch)


def _tests_of(site: Site, executor: str) -> list[tuple[str, str]]:
    engine = make_engine(f"sqlite:///{site.db}")
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.tests.c.name, t.tests.c.outcome)
            .join(t.runs, t.runs.c.id == t.tests.c.run_id)
            .where(t.runs.c.executor == executor)
        ).all()
    engine.dispose()
    return sorted((r[0], r[1]) for r in rows)


def test_a_remotes_runs_of_our_branches_are_imported_once(
    tmp_path: Path, lab: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    root, url = lab
    site, branch = _site(tmp_path, f"{url}/json/results.json")
    (root / "json").mkdir()
    run = json.loads((DATA / "results-948303.json").read_text())
    run["branch"] = branch
    (root / "json" / "results-1.json").write_text(json.dumps(run))
    (root / "json" / "results.json").write_text(json.dumps([
        {"url": "results-1.json", "branch": branch, "executor": "vmksft-net"},
        {"url": "results-2.json", "branch": "not-cut-here", "executor": "vmksft-net"},
        {"url": None, "branch": branch, "executor": "vmksft-other"},  # still running
        {"url": f"{url}/json/missing.json", "branch": branch, "executor": "vmksft-gone"},
    ]))  # fmt: skip
    # the daemon's cycle imports it (the path a deployment takes)
    assert main(["-c", str(site.cfg), "ingest", "--once"]) == 0
    imported = _tests_of(site, "lab:vmksft-net")
    named = [r for r in run["results"] if "test" in r]  # the file has one broken entry
    assert len(imported) == len(named) == 6
    assert ("udpgro-sh", "fail") in imported  # the first outcome; the retry passed
    # by hand, once more: nothing new, nothing twice; the missing run file is exit 2
    capsys.readouterr()
    assert main(["-c", str(site.cfg), "remotes", "import"]) == 2
    out = capsys.readouterr().out
    assert "remote lab: 0 runs imported, 1 known, 1 of branches not cut here, 1 unreadable" in out
    assert len(_tests_of(site, "lab:vmksft-net")) == len(named)
    # and the branch's contest now shows the lab's run beside ours
    assert main(["-c", str(site.cfg), "contest", branch]) in (0, 1)
    assert "lab:vmksft-net" in capsys.readouterr().out


def test_a_remote_that_does_not_answer_is_logged_and_loses_nothing(
    tmp_path: Path, lab: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    root, url = lab
    site, _ = _site(tmp_path, f"{url}/nothing/results.json")
    capsys.readouterr()
    assert main(["-c", str(site.cfg), "remotes", "import"]) == 2
    assert "remote lab: not reachable or not a manifest" in capsys.readouterr().out
    (root / "nothing").mkdir()
    (root / "nothing" / "results.json").write_text("<html>not json</html>")
    assert main(["-c", str(site.cfg), "remotes", "import"]) == 2
    assert [r["executor"] for r in site.runs()] == ["ex-0"]  # ours, untouched
