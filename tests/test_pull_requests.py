"""`[GIT PULL]` mails (NIPA's pure pulls): the URL and ref Patchwork would store as
pull_url are read from a real `git request-pull` body, the branch is fetched and merged
onto the tree's base, and only the checks marked for pull requests run on the merge (NIPA's
`"pull-requests": true`); the rest are skipped with that reason. Through `patchci check`."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest

from patchci.cli import main
from patchci.git import Git
from patchci.sources.mail import find_pull_url, parse_mail
from patchci.sources.mbox import load_series
from tests.gitrepo import commit_file, make_repo
from tests.prereq import unavailable
from tests.test_checks_build import DEV, FOO, MAKEFILE

SOB = "\n\nSigned-off-by: Pat Puller <pat@example.org>"


def _request_pull(contrib: Git, base: str, branch: str) -> str:
    url = f"file://{contrib.repo}"
    res = subprocess.run(["git", "request-pull", base, url, branch], cwd=contrib.repo,
                         capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    return res.stdout


def _mail(body: str, subject: str = "[GIT PULL net-next] foo: updates", n: int = 1) -> bytes:
    date = format_datetime(datetime(2026, 12, 1, tzinfo=UTC))
    return (f"From pat Mon Sep 17 00:00:00 2001\nFrom: Pat Puller <pat@example.org>\n"
            f"To: netdev@vger.example.org\nSubject: {subject}\nDate: {date}\n"
            f"Message-ID: <pull{n}@example.org>\n\nHi,\n\nplease pull.\n\n{body}").encode()  # fmt: skip


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Git, Git]:
    if shutil.which("gcc") is None or shutil.which("make") is None:
        unavailable("needs gcc and make (make test installs them)")
    tree = make_repo(tmp_path / "tree", {"Makefile": MAKEFILE, "foo.c": FOO, "dev.c": DEV})
    contrib = Git(tmp_path / "contrib")
    subprocess.run(["git", "clone", "-q", str(tree.repo), str(contrib.repo)], check=True)
    return tree, contrib


def test_find_pull_url_reads_git_request_pull(trees: tuple[Git, Git]) -> None:
    tree, contrib = trees
    base = contrib.rev_parse("HEAD")
    assert base
    contrib.run("checkout", "-q", "-b", "for-next")
    commit_file(contrib, "foo.c", FOO.replace("+ 1", "+ 2"), "foo: add two" + SOB)
    body = _request_pull(contrib, base, "for-next")
    assert find_pull_url(body) == f"file://{contrib.repo} for-next"
    wrapped = body.replace(
        f"file://{contrib.repo} for-next", f"file://{contrib.repo} \\\n  for-next"
    )
    assert find_pull_url(wrapped) == f"file://{contrib.repo} for-next"
    assert find_pull_url("no pull here\n") is None
    patch = parse_mail(_mail(body))
    assert patch.pull_url == f"file://{contrib.repo} for-next" and not patch.has_diff


def _check(tmp_path: Path, mail: bytes, tree: Git, capsys: pytest.CaptureFixture[str],
           monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:  # fmt: skip
    monkeypatch.setenv("PATCHCI_BUILD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "400")
    tmp_path.mkdir(parents=True, exist_ok=True)
    mbox = tmp_path / "pull.mbox"
    mbox.write_bytes(mail)
    (series,) = load_series(mbox).series
    assert series.pull_url
    rc = main(["check", str(mbox), "--tree", str(tree.repo), "--name", "net-next",
               "--checks", "build,signed_off_by"])  # fmt: skip
    return rc, " ".join(capsys.readouterr().out.replace("┃", "│").split())


def test_a_pull_is_merged_and_only_pull_checks_run(
    trees: tuple[Git, Git], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    tree, contrib = trees
    base = contrib.rev_parse("HEAD")
    assert base
    contrib.run("checkout", "-q", "-b", "for-next")
    commit_file(contrib, "foo.c", FOO.replace("return a + 1;", "int unused_p;\n\treturn a + 1;"),
                "foo: a variable" + SOB)  # fmt: skip
    commit_file(contrib, "dev.c", DEV + "int dev2;\n", "dev: another" + SOB)
    before = tree.rev_parse("HEAD")
    rc, out = _check(tmp_path, _mail(_request_pull(contrib, base, "for-next")), tree, capsys,
                     monkeypatch)  # fmt: skip
    assert rc == 1, out
    assert (
        f"Pulled file://{contrib.repo} for-next into net-next (base {base[:12]}): 2 commits" in out
    )
    assert "new warnings: 1: foo.c: unused variable 'unused_p'" in out
    assert "signed_off_by │ skip │ not run on a pull request" in out
    assert tree.rev_parse("HEAD") == before  # the tree's own branch is untouched


def test_a_pull_that_conflicts_or_cannot_be_fetched_fails(
    trees: tuple[Git, Git], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    tree, contrib = trees
    base = contrib.rev_parse("HEAD")
    assert base
    contrib.run("checkout", "-q", "-b", "for-next")
    commit_file(contrib, "foo.c", FOO.replace("+ 1", "+ 2"), "foo: two" + SOB)
    body = _request_pull(contrib, base, "for-next")
    commit_file(tree, "foo.c", FOO.replace("+ 1", "+ 3"), "foo: three")  # the base moved
    rc, out = _check(tmp_path / "c", _mail(body), tree, capsys, monkeypatch)
    assert rc == 1, out
    assert "Pull to net-next failed: CONFLICT (content): Merge conflict in foo.c" in out
    gone = body.replace(f"file://{contrib.repo}", f"file://{tmp_path}/nope")
    rc, out = _check(tmp_path / "g", _mail(gone, n=2), tree, capsys, monkeypatch)
    assert rc == 1, out
    assert "Pull to net-next failed: fatal: '" in out and "does not appear to be a git" in out


def test_the_daemon_stores_and_pulls_a_pull_request(
    trees: tuple[Git, Git], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`patchci ingest` on an mbox source: the pull_url survives the database, the branch
    is pulled, and a check not marked for pulls is a skip with the reason."""
    from patchci.config import load_settings
    from patchci.daemon import open_store
    from patchci.service.contest import PULL_LEFT_OUT, candidates

    tree, contrib = trees
    base = contrib.rev_parse("HEAD")
    assert base
    contrib.run("checkout", "-q", "-b", "for-next")
    commit_file(contrib, "foo.c", FOO.replace("+ 1", "+ 2"), "foo: two" + SOB)
    (tmp_path / "in.mbox").write_bytes(_mail(_request_pull(contrib, base, "for-next")))
    cfg = tmp_path / "patchci.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n\n[[sources]]\nname = "m"\ntype = "mbox"\n'
        f'path = "{tmp_path / "in.mbox"}"\n\n[[trees]]\nname = "net-next"\npath = "{tree.repo}"\n'
        'branch = "main"\nchecks = ["signed_off_by"]\n[report.patchwork]\nenabled = false\n')  # fmt: skip
    assert main(["-c", str(cfg), "ingest", "--once"]) == 0
    store = open_store(load_settings(cfg))
    try:
        (row,) = store.list_series(limit=10)
        assert store.load_series(row.id).pull_url == f"file://{contrib.repo} for-next"
        got = {r.check: (r.outcome.value, r.description) for r in store.latest_results(row.id)}
        (cand,) = candidates(store, "net-next")
        assert cand.review == PULL_LEFT_OUT  # test branches leave it out, saying why
    finally:
        store.close()
    assert got["apply"] == ("pass", f"Pulled file://{contrib.repo} for-next into net-next "
                                    f"(base {base[:12]}): 1 commit")  # fmt: skip
    assert got["signed_off_by"][0] == "skip"
