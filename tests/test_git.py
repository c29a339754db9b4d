"""Git adapter: queries, scratch worktrees that leave the user's checkout alone."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from patchci.errors import CommandFailed, InfraError
from patchci.git import Git
from patchci.model import Person
from tests.gitrepo import commit_file, make_repo, write


def _checkout_state(git: Git) -> dict[str, str]:
    """Everything about the user's checkout that patchci must never change."""
    return {
        "head": git.run("symbolic-ref", "HEAD").stdout,
        "head_sha": git.run("rev-parse", "HEAD").stdout,
        "branches": git.run("for-each-ref", "--format=%(refname) %(objectname)").stdout,
        "status": git.run("status", "--porcelain=v1", "--untracked-files=all").stdout,
        "index": git.run("ls-files", "--stage").stdout,
        "staged_diff": git.run("diff", "--cached").stdout,
        "worktree_diff": git.run("diff").stdout,
        "readme": (git.repo / "README").read_text(),
    }


@pytest.fixture
def repo(tmp_path: Path) -> Git:
    git = make_repo(tmp_path / "repo")
    commit_file(git, "net/core/dev.c", "int x;\n", "net: add dev.c")
    commit_file(
        git, "drivers/net/foo.c", "int y;\n", "foo: add driver", Person("Jane Doe", "jane@x.org")
    )
    return git


def test_rev_parse_and_ancestry(repo: Git) -> None:
    head = repo.rev_parse("HEAD")
    first = repo.rev_parse("HEAD~2")
    assert head is not None and len(head) == 40
    assert first is not None
    assert repo.rev_parse(head[:12]) == head
    assert repo.rev_parse("no-such-branch") is None
    assert repo.rev_parse("0" * 40) is None
    assert repo.rev_parse("--all") is None  # never read as an option
    assert repo.commit_exists(head)
    assert not repo.commit_exists("deadbeefdead")
    assert repo.is_ancestor(first, head)
    assert repo.is_ancestor(head, head)
    assert not repo.is_ancestor(head, first)
    with pytest.raises(CommandFailed):
        repo.is_ancestor("0" * 40, head)


def test_commit_metadata(repo: Git) -> None:
    assert repo.subject("HEAD") == "foo: add driver"
    assert repo.message("HEAD").startswith("foo: add driver\n")
    assert repo.author("HEAD") == Person("Jane Doe", "jane@x.org")
    assert repo.committer("HEAD") == Person("Test Committer", "committer@example.com")
    assert repo.author("HEAD~1") == Person("Test Author", "author@example.com")
    assert repo.log_subjects("HEAD") == ["foo: add driver", "net: add dev.c", "Initial commit"]
    assert repo.log_subjects("HEAD~1..HEAD") == ["foo: add driver"]
    assert repo.log_subjects("HEAD", max_count=1) == ["foo: add driver"]
    assert repo.changed_files("HEAD") == ["drivers/net/foo.c"]
    assert repo.changed_files("HEAD~2") == ["README"]  # root commit


def test_changed_files_lists_both_sides_of_a_rename(repo: Git) -> None:
    repo.run("mv", "net/core/dev.c", "net/core/dev2.c")
    repo.commit("net: rename dev.c")
    assert repo.changed_files("HEAD") == ["net/core/dev.c", "net/core/dev2.c"]


def test_commit_with_author_and_date(tmp_path: Path) -> None:
    git = make_repo(tmp_path / "r")
    write(git.repo, "a", "1\n")
    git.add_all()
    sha = git.commit(
        "x: y\n\nbody\n", author=Person("A B", "a@b"), date="2024-01-02T03:04:05+00:00"
    )
    assert git.rev_parse("HEAD") == sha
    assert git.author(sha) == Person("A B", "a@b")
    assert git.run("log", "-1", "--format=%aI %cI").stdout.split() == [
        "2024-01-02T03:04:05+00:00",
        "2024-01-02T03:04:05+00:00",
    ]


def test_scratch_worktree_leaves_user_checkout_untouched(repo: Git) -> None:
    # the user has local work in progress: a modified file, a staged file, an untracked one
    write(repo.repo, "README", "user edit\n")
    write(repo.repo, "staged.txt", "staged\n")
    repo.run("add", "staged.txt")
    write(repo.repo, "untracked.txt", "mine\n")
    before = _checkout_state(repo)
    base = repo.rev_parse("HEAD~1")
    assert base is not None
    with repo.scratch_worktree("HEAD~1") as wt:
        assert wt.repo != repo.repo and wt.repo.is_dir()
        assert wt.rev_parse("HEAD") == base
        assert wt.run("symbolic-ref", "-q", "HEAD", check=False).returncode == 1  # detached
        assert not (wt.repo / "drivers/net/foo.c").exists()
        assert (wt.repo / "README").read_text() == "hello\n"
        # work inside the scratch worktree must not leak out
        commit_file(wt, "README", "scratch\n", "scratch change")
        path = wt.repo
    assert not path.exists()
    assert _checkout_state(repo) == before
    assert len(repo.worktrees()) == 1


def test_scratch_worktree_removed_on_exception(repo: Git, tmp_path: Path) -> None:
    path = tmp_path / "work" / "wt"
    with pytest.raises(RuntimeError, match="boom"), repo.scratch_worktree("HEAD", path) as wt:
        assert wt.repo == path and path.is_dir()
        write(path, "junk", "x\n")
        raise RuntimeError("boom")
    assert not path.exists()
    assert len(repo.worktrees()) == 1


def test_scratch_worktree_bad_base_raises_infra_and_cleans(repo: Git, tmp_path: Path) -> None:
    path = tmp_path / "wt"
    with pytest.raises(InfraError), repo.scratch_worktree("no-such-rev", path):
        pass
    assert not path.exists()
    assert len(repo.worktrees()) == 1


def test_stale_worktree_is_replaced_but_foreign_dir_is_refused(repo: Git, tmp_path: Path) -> None:
    path = tmp_path / "wt"
    repo.run("worktree", "add", "--detach", str(path), "HEAD~2")  # left by a crashed job
    with repo.scratch_worktree("HEAD", path) as wt:
        assert wt.rev_parse("HEAD") == repo.rev_parse("HEAD")
    assert not path.exists()
    foreign = tmp_path / "precious"
    write(foreign, "data.txt", "keep me\n")
    with pytest.raises(InfraError, match="not a worktree"), repo.scratch_worktree("HEAD", foreign):
        pass
    assert (foreign / "data.txt").read_text() == "keep me\n"


def test_parallel_worktrees_on_one_repo(repo: Git) -> None:
    errors: list[BaseException] = []
    heads: list[str | None] = []

    def job(rev: str) -> None:
        try:
            for _ in range(3):
                with repo.scratch_worktree(rev) as wt:
                    heads.append(wt.rev_parse("HEAD"))
        except BaseException as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=job, args=(r,)) for r in ("HEAD", "HEAD~1", "HEAD~2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(heads) == 9 and None not in heads
    assert len(repo.worktrees()) == 1


def test_identity_config_only_when_none_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    git = make_repo(tmp_path / "r")
    assert git.identity_config() == []  # env + config name a committer
    monkeypatch.delenv("GIT_COMMITTER_NAME")
    monkeypatch.delenv("GIT_COMMITTER_EMAIL")
    assert git.identity_config() == []  # still configured through git config
    monkeypatch.setenv("GIT_CONFIG_COUNT", "0")
    assert git.identity_config() == [
        "-c",
        "user.name=patchci",
        "-c",
        "user.email=patchci@localhost",
    ]
    git.run("config", "user.email", "ci@example.org")
    assert git.identity_config() == ["-c", "user.name=patchci"]
    write(git.repo, "b", "2\n")
    git.add_all()
    sha = git.commit("with fallback identity")
    assert git.committer(sha) == Person("patchci", "ci@example.org")
