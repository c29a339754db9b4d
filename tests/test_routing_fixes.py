"""Routing by `Fixes:` (issue 14): a series with no tree tag goes where the commits it fixes
are, as NIPA guesses (all fixed commits in net: net, otherwise net-next), through
`patchci ingest` on the Patchwork emulator."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from patchci.cli import main
from patchci.db.store import Store
from patchci.devtools.pwemu import FakePatchwork
from patchci.git import Git
from tests.pwconfig import SOURCE, TOKEN_ENV, tree_toml, write_config
from tests.test_daemon import Demo, demo, emu

__all__ = ["demo", "emu"]


def test_a_series_without_a_tree_tag_follows_its_fixes(
    tmp_path: Path, emu: FakePatchwork, demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    # net-next first: the configuration order must not decide
    trees = "".join(tree_toml(name, demo.tree, branch, ["signed_off_by"])
                    for name, branch in (("net-next", "main"), ("net", "net")))  # fmt: skip
    cfg = write_config(tmp_path, emu, trees)
    fix = next(s for s in demo.samples if s.label == "fix for net with a good Fixes tag")
    untagged = fix.mbox.replace(b"[PATCH net]", b"[PATCH]")
    assert b"[PATCH]" in untagged and b"\nFixes: " in untagged
    git = Git(demo.tree)
    only_next = git.run("rev-list", "net..main", "--").stdout.split()[0]
    subject = git.subject(only_next)
    to_next = re.sub(rb"(?m)^Fixes: .*$", f'Fixes: {only_next[:12]} ("{subject}")'.encode(),
                     untagged)  # fmt: skip
    to_next = re.sub(rb"(?mi)^(Message-I[dD]: <)", rb"\1next.", to_next)
    ids = {"net": emu.add_series_from_mbox(untagged), "next": emu.add_series_from_mbox(to_next)}
    monkeypatch.setenv(TOKEN_ENV, emu.token)
    assert main(["-c", str(cfg), "ingest", "--once"]) == 0

    store = Store.open(f"sqlite:///{tmp_path / 'data' / 'patchci.db'}")
    try:
        for key, tree in (("net", "net"), ("next", "net-next")):
            sid = store.find_series(SOURCE, str(ids[key]))
            assert sid is not None
            assert store.series_row(sid).tree == tree
            (sel,) = [r for r in store.latest_results(sid) if r.check == "tree_selection"]
            assert sel.description.startswith(f"Guessed tree name to be {tree} (Fixes: ")
    finally:
        store.close()


def test_a_series_under_no_trees_paths_is_not_for_this_ci(
    tmp_path: Path, emu: FakePatchwork, demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NIPA's "Not a local patch": with trees that declare paths, an untagged series none
    of whose files is under them is recorded with why, never applied to every tree in turn,
    and nothing is posted for it; one with a single covered file is still routed."""
    trees = "".join(tree_toml(name, demo.tree, branch, ["signed_off_by"], paths=["net/core/"])
                    for name, branch in (("net", "net"), ("net-next", "main")))  # fmt: skip
    cfg = write_config(tmp_path, emu, trees)
    fix = next(s for s in demo.samples if s.label == "fix for net with a good Fixes tag")
    clean = next(s for s in demo.samples if s.label == "clean series for net-next")
    foreign = fix.mbox.replace(b"[PATCH net]", b"[PATCH]").replace(b"\nFixes: ", b"\nX-Fixes: ")
    local = clean.mbox.replace(b"[PATCH net-next", b"[PATCH")
    assert b"net/core/" not in foreign and b"diff --git a/net/core/dev.c" in local
    ids = {"foreign": emu.add_series_from_mbox(foreign), "local": emu.add_series_from_mbox(local)}
    monkeypatch.setenv(TOKEN_ENV, emu.token)
    assert main(["-c", str(cfg), "ingest", "--once"]) == 0

    store = Store.open(f"sqlite:///{tmp_path / 'data' / 'patchci.db'}")
    try:
        sid = store.find_series(SOURCE, str(ids["foreign"]))
        assert sid is not None
        row = store.series_row(sid)
        assert row.tree is None and row.state_reason.startswith("Not for this CI: none of its")
        results = store.latest_results(sid)
        assert [(r.check, r.outcome.value) for r in results] == [("tree_selection", "skip")]
        log = Path(results[0].log_path or "").read_text()
        assert "decision: no tree by not-local" in log
        patches = emu.series[ids["foreign"]].patch_ids
        assert all(not emu.checks_for(p) for p in patches)  # skip is never posted
        lid = store.find_series(SOURCE, str(ids["local"]))
        assert lid is not None and store.series_row(lid).tree == "net-next"  # applies there
    finally:
        store.close()
