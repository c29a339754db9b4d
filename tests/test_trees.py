"""Trees are fetched before a series is applied: `file://` remotes driven through the CLI.

Before, nothing cloned a `url` tree ("working directory does not exist: …/trees/net-next"
for every series) and a `path` tree was used at whatever commit its checkout was on.
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from patchci.cli import main
from patchci.config import load_settings
from patchci.daemon import open_store, retry_due
from patchci.git import Git
from patchci.model import RETRY
from patchci.trees import TreeSync
from tests.gitrepo import commit_file, make_repo


class Upstream:
    """A remote tree (served as file://) and an mbox of mails written against it."""

    def __init__(self, root: Path) -> None:
        self.git = make_repo(root / "upstream", {"net/core.c": "int core;\n"})
        self.mbox = root / "in.mbox"
        self.mbox.write_bytes(b"")
        self.n = 0

    @property
    def url(self) -> str:
        return f"file://{self.git.repo}"

    def head(self) -> str:
        sha = self.git.rev_parse("main")
        assert sha is not None
        return sha

    def advance(self, name: str) -> str:
        return commit_file(self.git, name, f"{name}\n", f"net: add {name}")

    def mail_patch(self, path: str, content: str) -> None:
        """Mail a one-patch series changing *path* on today's upstream head, which is then
        left as it was: the patch applies only on a base that has *path*."""
        self.n += 1
        head = self.head()
        commit_file(self.git, path, content, f"net: change {path} ({self.n})\n\n"
                    "Signed-off-by: Jane Doe <jane@example.com>")  # fmt: skip
        raw = self.git.run("format-patch", "--stdout", "-1", "HEAD").stdout
        self.git.run("reset", "--quiet", "--hard", head)
        first, rest = raw.split("\n", 1)
        with self.mbox.open("a", encoding="utf-8") as f:
            f.write(f"{first}\nMessage-Id: <p{self.n}@test>\n{rest}\n")


def _config(tmp: Path, tree: str) -> Path:
    cfg = tmp / "patchci.toml"
    cfg.write_text(
        f'data_dir = "{tmp / "data"}"\n\n[[sources]]\nname = "m"\ntype = "mbox"\n'
        f'path = "{tmp / "in.mbox"}"\n\n[[trees]]\nname = "net"\n{tree}'
        'checks = ["signed_off_by"]\n[report.patchwork]\nenabled = false\n'
    )
    return cfg


def _apply_results(cfg: Path) -> list[tuple[str, str, str]]:
    """(outcome, description, base) of every series' latest apply result, oldest first."""
    store = open_store(load_settings(cfg))
    out = []
    for row in sorted(store.list_series(limit=100), key=lambda r: r.id):
        for r in store.latest_results(row.id):
            if r.check == "apply":
                out.append((r.outcome.value, r.description, dict(r.details).get("base", "")))
    return out


def test_url_tree_is_cloned_fetched_before_each_series_and_follows_a_force_push(
    tmp_path: Path,
) -> None:
    up = Upstream(tmp_path)
    cfg = _config(tmp_path, f'url = "{up.url}"\nbranch = "main"\nfetch_interval = 0\n')
    up.mail_patch("net/core.c", "int core = 1;\n")
    assert main(["-c", str(cfg), "ingest", "--once"]) == 0
    first_base = up.head()
    # upstream moves on; the next patch needs the new file, so a stale base would not do
    up.advance("net/new.c")
    up.mail_patch("net/new.c", "changed\n")
    assert main(["-c", str(cfg), "ingest", "--once"]) == 0
    second_base = up.head()
    # a force-push rewrites upstream: the mirror follows it
    up.git.run("reset", "--quiet", "--hard", first_base)
    up.advance("net/rewritten.c")
    up.mail_patch("net/rewritten.c", "changed too\n")
    assert main(["-c", str(cfg), "ingest", "--once"]) == 0
    results = _apply_results(cfg)
    assert [(o, b) for o, _, b in results] == [
        ("pass", first_base), ("pass", second_base), ("pass", up.head())
    ]  # fmt: skip
    # the mirror is a bare clone in the data directory; the worktree is kept and reused
    data = tmp_path / "data"
    (mirror,) = (data / "mirrors").glob("upstream-*.git")
    assert (mirror / "HEAD").is_file() and not (mirror / "net").exists()
    assert sorted(p.name for p in (data / "worktrees" / "net").iterdir() if p.is_dir()) == [
        "slot-0"
    ]
    # the bare mirror itself, then only slot-0: no per-series worktree left behind
    assert Git(mirror).worktrees()[1:] == [data / "worktrees" / "net" / "slot-0"]


def test_a_remote_that_is_gone_is_our_error_retried_never_the_patch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("patchci.trees.FETCH_BACKOFF", 0.01)
    up = Upstream(tmp_path)
    cfg = _config(tmp_path, f'url = "{up.url}"\nbranch = "main"\nfetch_interval = 0\n')
    up.mail_patch("net/core.c", "int core = 1;\n")
    assert main(["-c", str(cfg), "ingest", "--once"]) == 0
    up.advance("net/new.c")
    up.mail_patch("net/new.c", "changed\n")
    moved = tmp_path / "moved-away"
    shutil.move(up.git.repo, moved)
    capsys.readouterr()
    main(["-c", str(cfg), "ingest", "--once"])
    (outcome, desc, _) = _apply_results(cfg)[-1]
    assert outcome == "error", desc
    assert "fetching" in desc and "failed 3 times" in desc and up.url in desc
    assert "fatal:" in desc and "-c core.abbrev" not in desc  # git's own words, not argv
    store = open_store(load_settings(cfg))
    last = max(store.list_series(limit=10), key=lambda r: r.id)
    assert last.state == RETRY
    # the remote is back: the retry (its back-off over) checks the patch on the new base
    shutil.move(moved, up.git.repo)
    assert retry_due(store, datetime.now(UTC) + timedelta(hours=1)) == 1
    assert main(["-c", str(cfg), "ingest", "--once"]) == 0
    assert _apply_results(cfg)[-1][0] == "pass"


def test_path_tree_with_a_remote_is_fetched_and_never_modified(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    user = tmp_path / "user"
    subprocess.run(["git", "clone", "-q", up.url, str(user)], check=True)
    (user / "wip.txt").write_text("my own work\n")  # the user's checkout stays as it is
    user_git = Git(user)
    head_before = user_git.rev_parse("HEAD")
    up.advance("net/new.c")
    up.mail_patch("net/new.c", "changed\n")
    cfg = _config(tmp_path, f'path = "{user}"\nremote = "origin"\nbranch = "main"\n')
    assert main(["-c", str(cfg), "ingest", "--once"]) == 0
    assert _apply_results(cfg) == [
        ("pass", "Applied 1 patch on net (base " + up.head()[:12] + ")", up.head())
    ]
    assert user_git.rev_parse("HEAD") == head_before
    assert user_git.rev_parse("main") == head_before
    assert (user / "wip.txt").read_text() == "my own work\n"
    assert len(user_git.worktrees()) == 2  # the user's and patchci's kept one, nothing else


def test_fetches_are_throttled_by_the_interval(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    cfg = _config(tmp_path, f'url = "{up.url}"\nfetch_interval = 3600\n')
    (tree,) = load_settings(cfg).model_trees()
    sync = TreeSync()
    assert sync.base(tree) == up.head()
    old = up.head()
    up.advance("net/new.c")
    assert sync.base(tree) == old  # fetched a moment ago
    assert sync.base(tree, force=True) == up.head()


def test_fetch_failures_are_retried_with_backoff_then_raised(tmp_path: Path) -> None:
    from patchci.errors import FetchError

    up = Upstream(tmp_path)
    cfg = _config(tmp_path, f'url = "{up.url}"\n')
    (tree,) = load_settings(cfg).model_trees()
    shutil.rmtree(up.git.repo)
    waits: list[float] = []
    sync = TreeSync(attempts=3, backoff=2.0, sleep=waits.append)
    with pytest.raises(FetchError, match="fetching .* failed 3 times"):
        sync.base(tree)
    assert waits == [2.0, 4.0]
    # nothing half-cloned stays to be mistaken for a mirror
    assert not list((tmp_path / "data" / "mirrors").glob("*.git"))


def test_reused_worktree_is_reset_between_series(tmp_path: Path) -> None:
    git = make_repo(tmp_path / "repo", {"a": "1\n"})
    base = git.rev_parse("main")
    assert base is not None
    root = tmp_path / "wts"
    with git.reused_worktree(base, root) as wt:
        (wt.repo / "a").write_text("dirty\n")
        (wt.repo / "build.o").write_text("object\n")
        commit_file(wt, "b", "2\n", "local commit")
    with git.reused_worktree(base, root) as wt:
        assert wt.repo == root / "slot-0"
        assert wt.rev_parse("HEAD") == base
        assert (wt.repo / "a").read_text() == "1\n"
        assert not (wt.repo / "build.o").exists() and not (wt.repo / "b").exists()
        with git.reused_worktree(base, root) as other:  # a second worker: its own slot
            assert other.repo == root / "slot-1"


def test_a_correct_fixes_tag_on_a_shallow_tree_is_ours_not_the_patch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a shallow clone a correct Fixes: tag failed as "unknown commit id": the patch was
    blamed for the tree's missing history."""
    up = Upstream(tmp_path)
    old = up.advance("net/old.c")
    subject = up.git.subject(old)
    for i in range(3):
        up.advance(f"net/later{i}.c")
    shallow = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", up.url, str(shallow)], check=True)
    commit_file(up.git, "net/old.c", "fixed\n",
                f'net: fix old\n\nFixes: {old[:12]} ("{subject}")\n'
                "Signed-off-by: Jane Doe <jane@example.com>")  # fmt: skip
    patch = tmp_path / "fix.patch"
    patch.write_text(up.git.run("format-patch", "--stdout", "-1", "HEAD").stdout)
    rc = main(["check", str(patch), "--tree", str(shallow), "--checks", "fixes_tag"])
    out = capsys.readouterr().out
    assert rc == 2, out  # ours: exit 2, not 1
    assert "shallow clone" in out and "unknown commit id" not in out
    # the same patch on the full tree passes
    assert main(["check", str(patch), "--tree", str(up.git.repo), "--base", "HEAD~1",
                 "--checks", "fixes_tag"]) == 0  # fmt: skip


def test_a_kept_worktree_only_git_wrote_to_is_reset_without_a_clean(tmp_path: Path) -> None:
    """`git clean` walked the whole kernel tree at every reset (~110 ms of a ~600 ms series)
    although only `git am` had written there. It is skipped while the worktree is marked
    clean, and runs again as soon as someone says they wrote there (`touched`)."""
    from patchci.git import touched

    git = make_repo(tmp_path / "repo", {"a": "1\n"})
    base = git.rev_parse("main")
    assert base is not None
    root = tmp_path / "wts"
    with git.reused_worktree(base, root, git_writes_only=True) as wt:
        commit_file(wt, "b", "2\n", "applied patch")
        (wt.repo / "unknown.o").write_text("x\n")  # written behind the contract's back
    with git.reused_worktree(base, root, git_writes_only=True) as wt:
        assert wt.rev_parse("HEAD") == base and not (wt.repo / "b").exists()
        assert (wt.repo / "unknown.o").exists()  # no clean: only git was said to write
        touched(wt.repo)
    with git.reused_worktree(base, root, git_writes_only=True) as wt:
        assert not (wt.repo / "unknown.o").exists()
        (wt.repo / "x.o").write_text("x\n")
    with git.reused_worktree(base, root) as wt:  # a user who promises nothing: cleaned next
        (wt.repo / "y.o").write_text("y\n")
    with git.reused_worktree(base, root, git_writes_only=True) as wt:
        assert not (wt.repo / "y.o").exists()
