"""fixes_present (issue 14): a series for a fixes tree must carry a Fixes: tag, through
`patchci ingest` on the Patchwork emulator with the check configured on both trees."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from patchci.cli import main
from patchci.devtools.pwemu import FakePatchwork
from tests.pwconfig import TOKEN_ENV, tree_toml, write_config
from tests.test_daemon import Demo, demo, emu

__all__ = ["demo", "emu"]


def _config(tmp_path: Path, emu: FakePatchwork, demo: Demo) -> Path:
    trees = "".join(tree_toml(name, demo.tree, branch, ["fixes_present"])
                    for name, branch in (("net", "net"), ("net-next", "main")))  # fmt: skip
    return write_config(tmp_path, emu, trees)


def _without_fixes(mbox: bytes) -> bytes:
    """The same patch with its Fixes: line gone (and a new Message-ID: another series)."""
    out = re.sub(rb"(?m)^Fixes: .*\n", b"", mbox)
    return re.sub(rb"(?mi)^(Message-I[dD]: <)", rb"\1nofixes.", out)


def test_a_fix_for_net_without_fixes_fails_and_net_next_passes(
    tmp_path: Path, emu: FakePatchwork, demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = next(s for s in demo.samples if s.label == "fix for net with a good Fixes tag")
    assert b"\nFixes: " in good.mbox
    feature = next(s for s in demo.samples if s.label == "clean series for net-next")
    ids = {
        "good": emu.add_series_from_mbox(good.mbox),
        "bare": emu.add_series_from_mbox(_without_fixes(good.mbox)),
        "next": emu.add_series_from_mbox(feature.mbox),
    }
    monkeypatch.setenv(TOKEN_ENV, emu.token)
    assert main(["-c", str(_config(tmp_path, emu, demo)), "ingest", "--once"]) == 0

    def verdict(key: str) -> tuple[str, str]:
        (pid, _), *_ = emu.series_patches(ids[key])
        (chk,) = [c for c in emu.checks_for(pid) if c.context == "fixes_present"]
        return chk.state, chk.description or ""

    assert verdict("good") == ("success", "Fixes: tag on 1 of 1 patches")
    state, desc = verdict("bare")
    assert state == "fail" and "Series targets net, a fixes tree, but doesn't contain" in desc
    assert verdict("next") == ("success", "net-next is not a fixes tree")


@pytest.mark.parametrize(
    ("files", "outcome"),
    [(["Documentation/networking/foo.rst", "MAINTAINERS"], "pass"),
     (["Documentation/networking/foo.rst", "net/core/dev.c"], "fail")],
)  # fmt: skip
def test_documentation_and_maintainers_need_no_fixes(
    tmp_path: Path, files: list[str], outcome: str
) -> None:
    from patchci.checks.base import CheckContext
    from patchci.checks.registry import make_check
    from patchci.model import Tree
    from tests.gitrepo import commit_file, make_repo, make_series

    git = make_repo(tmp_path / "repo", {"a": "1\n"})
    base = git.rev_parse("main")
    assert base is not None
    commit = commit_file(git, files[0], "x\n", "docs: say it better")
    series = make_series(["[PATCH net] docs: say it better"], [files])
    ctx = CheckContext(series, Tree("net", str(git.repo)), git.repo, base, (commit,), None, {},
                       tmp_path / "logs")  # fmt: skip
    assert make_check("fixes_present").run(ctx).outcome.value == outcome
