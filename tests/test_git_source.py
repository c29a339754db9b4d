"""`type = "git"` sources (issue 13): a fork's branches and Patchew-style tags tested as
series through `patchci ingest`, on real repositories: new and force-pushed refs, a ref
with nothing new, one with too many commits, an annotated tag, a remote that is down."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from patchci.cli import main
from patchci.config import load_settings
from patchci.daemon import open_store
from patchci.git import Git
from tests.gitrepo import commit_file, make_repo

SOB = "\n\nSigned-off-by: Fay Fork <fay@example.org>"


def _setup(
    tmp_path: Path, refs: str = '["refs/heads/*"]', max_commits: int = 50
) -> tuple[Path, Git, Git]:
    tree = make_repo(tmp_path / "tree", {"net/a.c": "int a;\n", "net/b.c": "int b;\n"})
    fork = Git(tmp_path / "fork")
    subprocess.run(["git", "clone", "-q", str(tree.repo), str(fork.repo)], check=True)
    cfg = tmp_path / "patchci.toml"
    cfg.write_text(f"""data_dir = "{tmp_path / "data"}"
[[sources]]
name = "forks"
type = "git"
url = "{fork.repo}"
tree = "net-next"
refs = {refs}
max_commits = {max_commits}
[[trees]]
name = "net-next"
path = "{tree.repo}"
branch = "main"
checks = ["signed_off_by"]
[report.patchwork]
enabled = false
""")
    return cfg, tree, fork


def _series(cfg: Path) -> dict[str, tuple[str, str, int, str | None]]:
    store = open_store(load_settings(cfg))
    try:
        out = {}
        for row in store.list_series(limit=100):
            s = store.load_series(row.id)
            out[row.key] = (row.state, row.name, len(s.patches), row.tree)
        return out
    finally:
        store.close()


def test_branches_become_series_and_a_force_push_a_new_one(tmp_path: Path) -> None:
    cfg, _tree, fork = _setup(tmp_path)
    fork.run("checkout", "-q", "-b", "feature")
    commit_file(fork, "net/a.c", "int a = 1;\n", "net: set a" + SOB)
    commit_file(fork, "net/b.c", "int b = 1;\n", "net: set b" + SOB)
    first = fork.rev_parse("HEAD")
    assert main(["-c", str(cfg), "ingest", "--once"]) == 0
    got = _series(cfg)
    key = f"refs/heads/feature@{first}"
    assert got[key][2] == 2 and got[key][3] == "net-next"
    assert got[key][1] == "feature: net: set a"
    assert got[key][0] in ("reported", "checked", "done")
    assert f"refs/heads/main@{first}" not in got  # main: nothing on top of the tree
    main_keys = [k for k in got if k.startswith("refs/heads/main@")]
    assert [got[k][0] for k in main_keys] == ["malformed"]
    # polled again: nothing new; force-pushed: a new series, the old one kept
    assert main(["-c", str(cfg), "ingest", "--once"]) == 0
    assert len(_series(cfg)) == len(got)
    fork.run("reset", "-q", "--hard", "HEAD~1")
    commit_file(fork, "net/b.c", "int b = 2;\n", "net: set b to 2" + SOB)
    assert main(["-c", str(cfg), "ingest", "--once"]) == 0
    after = _series(cfg)
    moved = f"refs/heads/feature@{fork.rev_parse('HEAD')}"
    assert key in after and moved in after and after[moved][2] == 2


def test_tags_too_many_commits_and_a_remote_that_is_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, _tree, fork = _setup(tmp_path, refs='["refs/tags/patchew/*", "refs/heads/big"]',
                              max_commits=2)  # fmt: skip
    fork.run("checkout", "-q", "-b", "small")
    commit_file(fork, "net/a.c", "int a = 3;\n", "net: a is 3" + SOB)
    fork.run("tag", "-a", "-m", "series", "patchew/20261201-1")
    fork.run("checkout", "-q", "-b", "big")
    for i in range(3):
        commit_file(fork, "net/b.c", f"int b = {i + 10};\n", f"net: b is {i + 10}" + SOB)
    assert main(["-c", str(cfg), "ingest", "--once"]) == 0
    got = _series(cfg)
    (tag,) = [v for k, v in got.items() if k.startswith("refs/tags/patchew/20261201-1@")]
    assert tag[2] == 1 and tag[1] == "patchew/20261201-1: net: a is 3"
    (big,) = [v for k, v in got.items() if k.startswith("refs/heads/big@")]
    assert big[0] == "malformed"
    store = open_store(load_settings(cfg))
    try:
        row = next(r for r in store.list_series(limit=10) if r.key.startswith("refs/heads/big@"))
        assert "4 commits on top of net-next's main (more than max_commits = 2)" in row.state_reason
    finally:
        store.close()
    # the fork disappears: a source error (ours), exit 2, nothing stored is lost
    subprocess.run(["mv", str(fork.repo), str(tmp_path / "gone")], check=True)
    assert main(["-c", str(cfg), "ingest", "--once"]) == 2
    out = capsys.readouterr()
    assert "1 source errors" in out.out + out.err
    assert _series(cfg) == got
