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
