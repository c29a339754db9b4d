"""Applying a series with `git am -3` in a scratch worktree."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchci.apply import Applied, ApplyStatus, apply_result, apply_series
from patchci.errors import InfraError
from patchci.git import Git
from patchci.model import Outcome, Person, Series
from tests.gitrepo import commit_file, format_patches, make_repo, series_from_mails, write

JANE = Person("Jane Doe", "jane@example.org")
FILES = {"README": "hello\n", "net/a.c": "a1\na2\na3\n", "net/b.c": "b1\nb2\nb3\n"}


def _series(git: Git, base: str = "main", cover: bool = True) -> Series:
    """Three patches on a side branch, formatted and parsed; the repo is left on main."""
    git.run("checkout", "-q", "-b", "feature", base)
    commit_file(
        git,
        "net/a.c",
        "a1\nA2\na3\n",
        "net: change a\n\nSigned-off-by: Jane Doe <jane@example.org>",
        JANE,
    )
    commit_file(
        git,
        "net/b.c",
        "b1\nB2\nb3\n",
        "net: change b\n\nSigned-off-by: Jane Doe <jane@example.org>",
        JANE,
    )
    commit_file(
        git, "net/c.c", "c\n", "net: add c\n\nSigned-off-by: Jane Doe <jane@example.org>", JANE
    )
    mails = format_patches(git, f"{base}..feature", prefix="PATCH net", cover=cover)
    git.run("checkout", "-q", "main")
    return series_from_mails(mails)


@pytest.fixture
def repo(tmp_path: Path) -> Git:
    return make_repo(tmp_path / "net", FILES)


def _state(git: Git) -> tuple[str, str, str]:
    return (
        git.run("rev-parse", "HEAD").stdout,
        git.run("status", "--porcelain").stdout,
        git.run("for-each-ref").stdout,
    )


def test_series_applies(repo: Git, tmp_path: Path) -> None:
    series = _series(repo)
    assert [p.info.number for p in series.patches] == [1, 2, 3] and series.cover is not None
    before = _state(repo)
    base = repo.rev_parse("main")
    assert base is not None
    with apply_series(repo, "main", series, tmp_path / "work") as applied:
        assert applied.status is ApplyStatus.APPLIED and applied.ok
        assert applied.base == base and applied.failed_index is None
        assert len(applied.commits) == 3
        wt = applied.git
        assert wt.rev_parse("HEAD") == applied.commits[-1]
        assert [wt.subject(c) for c in applied.commits] == [
            "net: change a",
            "net: change b",
            "net: add c",
        ]
        assert wt.author(applied.commits[0]) == JANE
        assert (applied.worktree / "net/c.c").read_text() == "c\n"
        assert "Applying: net: change b" in applied.output
        worktree = applied.worktree
        result = apply_result(applied, "net")
    assert not worktree.exists()
    assert _state(repo) == before
    assert len(repo.worktrees()) == 1
    assert result.check == "apply" and result.outcome is Outcome.PASS
    assert result.description == f"Applied 3 patches on net (base {base[:12]})"


def test_conflict_fails_and_names_the_patch(repo: Git, tmp_path: Path) -> None:
    series = _series(repo)
    commit_file(repo, "net/b.c", "b1\nCONFLICT\nb3\n", "net: conflicting change")
    with apply_series(repo, "main", series, tmp_path / "work") as applied:
        assert applied.status is ApplyStatus.FAILED
        assert applied.failed_index == 1
        assert len(applied.commits) == 1  # patch 1 went in before patch 2 stopped
        assert "patch 2/3 does not apply" in applied.output
        assert "net/b.c" in applied.output  # git's own conflict report is kept
        # `am --abort` ran: nothing left in progress
        state = Path(applied.git.run("rev-parse", "--git-path", "rebase-apply").stdout.strip())
        assert not (applied.worktree / state).exists()
        assert applied.git.run("status", "--porcelain").stdout == ""
        result = apply_result(applied, "net", log_dir=tmp_path / "logs")
    assert result.outcome is Outcome.FAIL
    assert result.description == "Patch 2/3 does not apply to net"
    assert result.log_path is not None
    assert "net/b.c" in Path(result.log_path).read_text()


def test_already_applied_by_content(repo: Git, tmp_path: Path) -> None:
    series = _series(repo)
    repo.run("merge", "-q", "--ff-only", "feature")
    with apply_series(repo, "main", series, tmp_path / "work") as applied:
        assert applied.status is ApplyStatus.ALREADY_APPLIED and applied.already_applied
        assert applied.commits == () and applied.failed_index is None
        result = apply_result(applied, "net")
    assert result.outcome is Outcome.PASS and "already applied" in result.description


def test_already_applied_by_titles_even_when_content_differs(repo: Git, tmp_path: Path) -> None:
    """As NIPA: applied upstream in a modified form, every title is in the base's log."""
    series = _series(repo)
    commit_file(repo, "net/a.c", "a1\nA2-edited\na3\n", "net: change a")
    commit_file(repo, "net/b.c", "b1\nB2-edited\nb3\n", "net: change b")
    commit_file(repo, "net/c.c", "c edited\n", "net: add c")
    with apply_series(repo, "main", series, tmp_path / "work") as applied:
        assert applied.status is ApplyStatus.ALREADY_APPLIED


def test_partly_present_series_fails(repo: Git, tmp_path: Path) -> None:
    series = _series(repo)
    repo.run("cherry-pick", "feature~2")  # only patch 1 is upstream
    with apply_series(repo, "main", series, tmp_path / "work") as applied:
        assert applied.status is ApplyStatus.FAILED
        assert applied.failed_index == 0
        assert len(applied.commits) == 2


def test_patch_without_diff_fails(repo: Git, tmp_path: Path) -> None:
    series = _series(repo, cover=False)
    from dataclasses import replace

    empty = replace(
        series.patches[0], raw=b"From: a <a@b>\nSubject: [PATCH] nothing\n\ntext only\n"
    )
    series = replace(series, patches=(empty,))
    with apply_series(repo, "main", series, tmp_path / "work") as applied:
        assert applied.status is ApplyStatus.FAILED and applied.failed_index == 0
        assert "Patch is empty" in applied.output


def test_unknown_base_is_infrastructure_error(repo: Git, tmp_path: Path) -> None:
    series = _series(repo)
    with apply_series(repo, "no-such-branch", series, tmp_path / "work") as applied:
        assert applied.status is ApplyStatus.ERROR
        result = apply_result(applied)
    assert result.outcome is Outcome.ERROR
    assert "infrastructure" in result.description and "no-such-branch" in result.description
    assert "net" in result.description  # the tree's repo name when none is given


def test_worktree_creation_failure_is_error(repo: Git, tmp_path: Path) -> None:
    series = _series(repo)
    work = tmp_path / "work"
    write(work, f"wt-{series.key}/data", "not ours\n")  # something else is in the way
    with apply_series(repo, "main", series, work) as applied:
        assert applied.status is ApplyStatus.ERROR
        assert apply_result(applied, "net").outcome is Outcome.ERROR
    assert (work / f"wt-{series.key}/data").read_text() == "not ours\n"


def test_worktree_removed_when_the_caller_raises(repo: Git, tmp_path: Path) -> None:
    series = _series(repo)
    seen: list[Applied] = []
    with (
        pytest.raises(InfraError, match="caller"),
        apply_series(repo, "main", series, tmp_path / "w") as applied,
    ):
        seen.append(applied)
        raise InfraError("caller")
    assert seen and not seen[0].worktree.exists()
    assert len(repo.worktrees()) == 1


def test_fallback_committer_identity(
    repo: Git, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    series = _series(repo)
    monkeypatch.delenv("GIT_COMMITTER_NAME")
    monkeypatch.delenv("GIT_COMMITTER_EMAIL")
    monkeypatch.setenv("GIT_CONFIG_COUNT", "0")
    with apply_series(repo, "main", series, tmp_path / "work") as applied:
        assert applied.ok
        assert applied.git.committer(applied.commits[0]) == Person("patchci", "patchci@localhost")
        assert applied.git.author(applied.commits[0]) == JANE


def test_timeout_is_infrastructure_error_and_still_cleans_up(repo: Git, tmp_path: Path) -> None:
    series = _series(repo)
    work = tmp_path / "work"
    with apply_series(repo, "main", series, work, timeout=0.0001) as applied:
        assert applied.status is ApplyStatus.ERROR
        assert "timed out" in applied.output
        assert apply_result(applied, "net").outcome is Outcome.ERROR
    assert not (work / f"wt-{series.key}").exists()
    assert len(repo.worktrees()) == 1
    with apply_series(repo, "main", series, work) as again:  # nothing stale left behind
        assert again.ok
