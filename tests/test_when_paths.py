"""`[checks.X] when_paths` (issue 14): a check runs only when the patch (the series, for a
series check) touches one of its paths, e.g. a Rust build only when `*.rs` changes;
otherwise it is a skip that says why. Through `patchci ingest` on the Patchwork emulator."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchci.cli import main
from patchci.db.store import Store
from patchci.devtools.pwemu import FakePatchwork
from tests.pwconfig import SOURCE, TOKEN_ENV, tree_toml, write_config
from tests.test_daemon import Demo, demo, emu

__all__ = ["demo", "emu"]


def test_checks_run_only_for_their_paths(
    tmp_path: Path, emu: FakePatchwork, demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = tree_toml("net-next", demo.tree, "main", ["rust", "drivers", "series_format"],
                     tags=["net-next", "net"])  # fmt: skip
    cfg = write_config(
        tmp_path,
        emu,
        tree
        + """
[checks.rust]
kind = "external"
options = { command = ["true"] }
when_paths = ["*.rs"]

[checks.drivers]
kind = "external"
options = { command = ["true"] }
when_paths = ["drivers/"]

[checks.series_format]
when_paths = ["include/"]
""",
    )
    wide = next(s for s in demo.samples if s.label == "clean series for net-next")
    narrow = next(s for s in demo.samples if s.label == "missing Signed-off-by")
    ids = {"wide": emu.add_series_from_mbox(wide.mbox),
           "narrow": emu.add_series_from_mbox(narrow.mbox)}  # fmt: skip
    monkeypatch.setenv(TOKEN_ENV, emu.token)
    assert main(["config", "check", str(cfg)]) == 0
    main(["-c", str(cfg), "ingest", "--once"])

    store = Store.open(f"sqlite:///{tmp_path / 'data' / 'patchci.db'}")
    try:

        def checks(key: str) -> dict[str, tuple[str, str]]:
            sid = store.find_series(SOURCE, str(ids[key]))
            assert sid is not None
            return {r.check: (r.outcome.value, r.description)
                    for r in store.latest_results(sid)}  # fmt: skip

        wide, narrow = checks("wide"), checks("narrow")
    finally:
        store.close()
    # nobody touches Rust: a skip that says why (not posted: Patchwork has no "skip")
    for got in (wide, narrow):
        assert got["rust"] == ("skip", "not run: the patch touches none of *.rs")
    assert narrow["drivers"][0] == "pass"
    # series_format is a series check: the whole series touches include/ or not
    assert wide["series_format"][0] != "skip"
    assert narrow["series_format"] == ("skip", "not run: the series touches none of include/")


def test_a_misspelt_when_paths_is_refused_by_config_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('data_dir = "d"\n[checks.build]\nwhen_path = ["*.rs"]\n')
    assert main(["config", "check", str(cfg)]) == 2
    assert "when_path" in capsys.readouterr().err
