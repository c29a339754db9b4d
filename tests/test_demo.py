"""The demo runs the whole pipeline and every sample ends as its expectation says."""

from __future__ import annotations

import os
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


def test_the_demos_tests_run_sandboxed(tmp_path: Path) -> None:
    """The demo's contest executor ran the branch's tests with no sandbox (patch code with
    the database in reach), unlike the daemon's. Now it is the daemon's sandbox; the
    flaky test's state directory stays writable."""
    from patchci.demo.contest_demo import STATE_ENV, demo_executor
    from patchci.demo.run import demo_settings
    from patchci.executor.base import TestSpec
    from patchci.model import Outcome

    root = tmp_path / "demo"
    root.mkdir()
    (root / "patchci.db").write_text("SECRET-DB")
    settings = demo_settings(root, "http://127.0.0.1:9")
    sandbox = settings.untrusted()
    assert sandbox.isolated  # make test installs bubblewrap
    work = root / "contest"
    wt = tmp_path / "wt"
    wt.mkdir()
    script = (
        f'echo "TAP version 13"; echo "1..2"; '
        f'if grep -q SECRET-DB {root / "patchci.db"} 2>/dev/null; then echo "not ok 1 db hidden"; '
        f'else echo "ok 1 db hidden"; fi; '
        f'if echo x > "${STATE_ENV}/count"; then echo "ok 2 state writable"; '
        f'else echo "not ok 2 state writable"; fi'
    )
    ex = demo_executor(work, "branch", sandbox)
    run = ex.run("b", wt, [TestSpec("g", "t", ("sh", "-c", script), 20)], tmp_path / "out")
    t = run.tests[0]
    assert [(s.name, s.outcome) for s in t.subtests] == [
        ("db hidden", Outcome.PASS), ("state writable", Outcome.PASS),
    ]
    assert (work / "state" / "branch" / "count").read_text() == "x\n"


@pytest.mark.parametrize("width", [80, 100, 110, 132, 160])
def test_the_sample_table_keeps_the_sample_names_on_a_narrow_terminal(
    tmp_path: Path, width: int
) -> None:
    """At <= 110 columns the sample column shrank to nothing: the grid of one column per
    check does not fit, so below 132 the checks share one folded column."""
    from rich.console import Console

    from patchci.demo.run import CHECKS, _series_table
    from patchci.demo.series import Sample

    store = Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        samples = [Sample("clean fix for net (Fixes:, net tag)", b""),
                   Sample("adds a compiler warning", b"")]  # fmt: skip
        table, bad = _series_table(store, samples, [1, 2], {}, width)
    finally:
        store.close()
    console = Console(width=width, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(table)
    text = console.export_text()
    assert bad == 2  # none was ingested
    assert all(len(line) <= width for line in text.splitlines())
    flat = " ".join(text.split())
    for word in ("clean", "fix", "net", "(Fixes:,", "compiler", "warning", "not", "ingested"):
        assert word in flat, (width, text)
    assert "NO" in text and ("as expected" in text or "ok?" in text)
    assert len(CHECKS) == 8
