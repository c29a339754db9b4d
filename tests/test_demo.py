"""The demo runs the whole pipeline and every sample ends as its expectation says."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchci.db.store import Store
from patchci.demo.run import run_demo


def test_demo_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "demo"
    assert run_demo(root) == 0
    out = capsys.readouterr().out
    assert "every sample series ended as expected" in out
    assert "nothing changed, nothing posted twice" in out
    assert "second ingest: 0 new, 0 posted" in out
    # rich must not eat subject prefixes as markup
    assert "[net-next,1/3] foo: add foo_reset()" in out
    store = Store.open(f"sqlite:///{root / 'patchci.db'}")
    try:
        rows = store.list_series(limit=50)
        states = sorted(r.state for r in rows)
        assert states.count("reported") == 12 and states.count("incomplete") == 1
        incomplete = next(r for r in rows if r.state == "incomplete")
        assert "2 of 3" in incomplete.state_reason
    finally:
        store.close()
    # the user-visible logs exist for every stored result
    logs = list((root / "logs").rglob("*.log"))
    assert len(logs) > 20


def test_demo_rerun_with_keep_reuses_directory(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    assert run_demo(root) == 0
    marker = root / "marker"
    marker.write_text("x")
    assert run_demo(root) == 0  # fresh: wiped
    assert not marker.exists()


def test_demo_never_deletes_a_directory_it_did_not_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`patchci demo --dir DIR` deleted DIR and everything in it without asking: a user's
    file was gone."""
    from patchci.cli import main

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("three years of work")

    assert main(["demo", "--dir", str(mine)]) == 2

    assert (mine / "thesis.tex").read_text() == "three years of work"
    assert "not made by `patchci demo`" in capsys.readouterr().err


def test_demo_keep_runs_again_on_its_own_directory(tmp_path: Path) -> None:
    """`demo --keep` failed with "a branch named 'net' already exists"."""
    from patchci.cli import main

    root = tmp_path / "demo"
    assert run_demo(root) == 0
    assert main(["demo", "--dir", str(root), "--keep"]) == 0
    assert (root / "patchci.db").exists()
