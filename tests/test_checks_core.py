"""signed_off_by, fixes_tag and series_format, run through run_check on real commits."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from patchci.apply import apply_series
from patchci.checks.base import CheckContext, run_check
from patchci.checks.fixes_tag import parse_fixes, subject_matches
from patchci.checks.registry import make_check
from patchci.checks.signed_off_by import sign_offs
from patchci.git import Git
from patchci.model import CheckResult, Outcome, Person, Series, Tree
from patchci.routing import Route
from tests.gitrepo import commit_file, format_patches, make_repo, make_series, series_from_mails

JANE = Person("Jane Doe", "jane@example.org")


def _ctx(
    git: Git,
    tmp_path: Path,
    commit: str,
    *,
    series: Series | None = None,
    tree: Tree | None = None,
    base: str | None = None,
) -> CheckContext:
    base_sha = base or git.rev_parse(f"{commit}~1")
    assert base_sha is not None
    return CheckContext(
        series=series or make_series(["[PATCH net] x"]),
        tree=tree or Tree("net", str(git.repo)),
        worktree=git.repo,
        base=base_sha,
        commits=(commit,),
        patch_index=0,
        options={},
        log_dir=tmp_path / "logs",
    )


def _run(kind: str, ctx: CheckContext, **options: object) -> CheckResult:
    chk = make_check(kind, options=options)
    ctx.options = chk.options
    return run_check(chk, ctx)


@pytest.fixture
def repo(tmp_path: Path) -> Git:
    return make_repo(tmp_path / "net")


# -- signed_off_by ------------------------------------------------------------------------


def test_sign_offs_parser() -> None:
    msg = (
        "x: y\n\nbody\n\nSigned-off-by: Jane Doe <jane@example.org>\n"
        "signed-off-by:   Bob <BOB@x.org>  \nSigned-off-by: just a name\nReviewed-by: R <r@x>\n"
    )
    assert sign_offs(msg) == [
        Person("Jane Doe", "jane@example.org"),
        Person("Bob", "BOB@x.org"),
        Person("just a name", ""),
    ]
    assert sign_offs("") == []


@pytest.mark.parametrize(
    ("trailers", "outcome", "description"),
    [
        ("Signed-off-by: Jane Doe <jane@example.org>", Outcome.PASS, "Signed-off-by present for author"),
        ("Signed-off-by: J. Doe <JANE@example.org>", Outcome.PASS, None),  # email matches
        ("Signed-off-by: jane doe <jd@elsewhere.org>", Outcome.PASS, None),  # name matches
        ("Signed-off-by: Bob <bob@x.org>", Outcome.FAIL,
         "Missing Signed-off-by from author Jane Doe <jane@example.org>"),
        ("Acked-by: Jane Doe <jane@example.org>", Outcome.FAIL, None),
        ("", Outcome.FAIL, None),
    ],
)  # fmt: skip
def test_signed_off_by_author(
    repo: Git, tmp_path: Path, trailers: str, outcome: Outcome, description: str | None
) -> None:
    sha = commit_file(repo, "a.c", "x\n", f"net: add a\n\nBody.\n\n{trailers}\n", JANE)
    result = _run("signed_off_by", _ctx(repo, tmp_path, sha))
    assert result.outcome is outcome
    if description is not None:
        assert result.description == description
    assert (
        result.log_path is not None and "Signed-off-by lines" in Path(result.log_path).read_text()
    )


def test_signed_off_by_committer_only_when_required(repo: Git, tmp_path: Path) -> None:
    sha = commit_file(
        repo, "a.c", "x\n", "net: add a\n\nSigned-off-by: Jane Doe <jane@example.org>\n", JANE
    )
    ctx = _ctx(repo, tmp_path, sha)
    assert _run("signed_off_by", ctx).outcome is Outcome.PASS
    strict = _run("signed_off_by", ctx, require_committer=True)
    assert strict.outcome is Outcome.FAIL
    assert strict.description == (
        "Missing Signed-off-by from committer Test Committer <committer@example.com>"
    )
    both = commit_file(
        repo, "b.c", "y\n",
        "net: add b\n\nSigned-off-by: Jane Doe <jane@example.org>\n"
        "Signed-off-by: Test Committer <committer@example.com>\n",
        JANE,
    )  # fmt: skip
    ok = _run("signed_off_by", _ctx(repo, tmp_path, both), require_committer=True)
    assert ok.outcome is Outcome.PASS and "author and committer" in ok.description


def test_signed_off_by_on_applied_series(repo: Git, tmp_path: Path) -> None:
    """Through `git am`: the author comes from the mail, the committer is the CI."""
    repo.run("checkout", "-q", "-b", "feature")
    commit_file(
        repo, "a.c", "1\n", "net: one\n\nSigned-off-by: Jane Doe <jane@example.org>\n", JANE
    )
    commit_file(repo, "b.c", "2\n", "net: two\n", JANE)
    series = series_from_mails(format_patches(repo, "main..feature", prefix="PATCH net"))
    repo.run("checkout", "-q", "main")
    chk = make_check("signed_off_by")
    with apply_series(repo, "main", series, tmp_path / "work") as applied:
        assert applied.ok
        results = [
            run_check(
                chk,
                CheckContext(
                    series,
                    Tree("net", str(repo.repo)),
                    applied.worktree,
                    applied.base,
                    applied.commits,
                    i,
                    {},
                    tmp_path / "logs",
                ),
            )  # fmt: skip
            for i in range(2)
        ]
    assert [r.outcome for r in results] == [Outcome.PASS, Outcome.FAIL]
    assert results[1].patch_index == 1


# -- fixes_tag ----------------------------------------------------------------------------


@pytest.fixture
def history(repo: Git) -> dict[str, str]:
    """A target commit on main, and a commit on a side branch (not an ancestor of main)."""
    target = commit_file(repo, "f.c", "1\n", "net: add the frobnicator")
    repo.run("checkout", "-q", "-b", "side")
    side = commit_file(repo, "s.c", "1\n", "side: unrelated work")
    repo.run("checkout", "-q", "main")
    commit_file(repo, "g.c", "1\n", "net: more work")
    return {"target": target, "side": side}


def _fixes(repo: Git, tmp_path: Path, *fixes: str) -> CheckResult:
    tags = "".join(f"Fixes: {f}\n" for f in fixes)
    msg = f"net: fix the frobnicator\n\nBody.\n\n{tags}Signed-off-by: Jane Doe <jane@example.org>\n"
    sha = commit_file(repo, "f.c", "2\n", msg, JANE)
    return _run("fixes_tag", _ctx(repo, tmp_path, sha))


def test_fixes_none(repo: Git, tmp_path: Path) -> None:
    result = _fixes(repo, tmp_path)
    assert (result.outcome, result.description) == (Outcome.PASS, "No Fixes tags")


def test_fixes_correct(repo: Git, tmp_path: Path, history: dict[str, str]) -> None:
    t = history["target"]
    result = _fixes(repo, tmp_path, f'{t[:12]} ("net: add the frobnicator")')
    assert result.outcome is Outcome.PASS, Path(result.log_path or "").read_text()
    assert result.description == "Fixes tag look correct (1)"


def test_fixes_truncated_subject_and_full_sha(
    repo: Git, tmp_path: Path, history: dict[str, str]
) -> None:
    t = history["target"]
    result = _fixes(
        repo, tmp_path, f'{t[:12]} ("net: add the frob...")', f'{t} ("net: add the frobnicator")'
    )
    assert result.outcome is Outcome.PASS
    assert result.description == "Fixes tags look correct (2)"


@pytest.mark.parametrize(
    ("tag", "problem"),
    [
        ('{short} ("net: add the frobnicator")', "at least 12 digits (has 8)"),
        ('0123456789ab ("net: add the frobnicator")', "unknown commit id 0123456789ab"),
        (
            '{t12} ("net: add the widget")',
            'subject does not match the commit: "net: add the frobnicator"',
        ),
        ('{side12} ("side: unrelated work")', "is not an ancestor of the base"),
        ('commit {t12} ("net: add the frobnicator")', 'drop the word "commit"'),
        ("{t12} (net: add the frobnicator)", "not enclosed in double quotes"),
        ('{t12} ("net: add the frobnicator"', "balanced parentheses"),
        ("{t12}", "no subject"),
        ("the frobnicator commit", "does not start with a commit id"),
    ],
)
def test_fixes_problems(
    repo: Git, tmp_path: Path, history: dict[str, str], tag: str, problem: str
) -> None:
    t, side = history["target"], history["side"]
    line = tag.format(short=t[:8], t12=t[:12], side12=side[:12])
    result = _fixes(repo, tmp_path, line)
    assert result.outcome is Outcome.FAIL
    assert result.description.startswith("Fixes tag problems: ")
    text = Path(result.log_path or "").read_text()
    assert problem in text
    if "unknown" not in problem and "does not start" not in problem:
        assert f"expected: Fixes: {(side if 'ancestor' in problem else t)[:12]} (" in text


def test_fixes_counts_every_problem(repo: Git, tmp_path: Path, history: dict[str, str]) -> None:
    t = history["target"]
    result = _fixes(
        repo, tmp_path, f'{t[:8]} ("wrong subject")', f'{t[:12]} ("net: add the frobnicator")'
    )
    assert result.outcome is Outcome.FAIL
    assert result.description == "Fixes tag problems: 2"  # short id + wrong subject; 2nd tag ok
    log = Path(result.log_path or "").read_text()
    assert log.count("Fixes: ") >= 3 and "  ok" in log


def test_fixes_wrapped_over_two_lines(repo: Git, tmp_path: Path, history: dict[str, str]) -> None:
    t = history["target"]
    msg = (
        f'net: fix\n\nFixes: {t[:12]} ("net: add the\n  frobnicator")\n'
        "Signed-off-by: Jane Doe <jane@example.org>\n"
    )
    sha = commit_file(repo, "f.c", "3\n", msg, JANE)
    result = _run("fixes_tag", _ctx(repo, tmp_path, sha))
    assert result.outcome is Outcome.FAIL
    assert result.description == "Fixes tag problems: 1"
    assert "split across lines" in Path(result.log_path or "").read_text()


def test_fixes_may_name_an_earlier_patch_of_the_series(repo: Git, tmp_path: Path) -> None:
    first = commit_file(repo, "a.c", "1\n", "net: first patch")
    second = commit_file(
        repo, "a.c", "2\n", f'net: second\n\nFixes: {first[:12]} ("net: first patch")\n'
    )
    ctx = _ctx(repo, tmp_path, second, base=repo.rev_parse(f"{first}~1"))
    ctx.commits = (first, second)
    ctx.patch_index = 1
    assert _run("fixes_tag", ctx).outcome is Outcome.PASS


def test_parse_fixes_pure() -> None:
    tags = parse_fixes('x\n\nfixes: 0123456789abcdef ("Revert "foo (bar)"")\nFixes:\n')
    assert [(t.sha, t.subject, t.problems) for t in tags[:1]] == [
        ("0123456789abcdef", 'Revert "foo (bar)"', ())
    ]
    assert tags[1].sha is None and tags[1].problems
    assert parse_fixes("no tags here\nPrefixes: nope\n") == []
    assert subject_matches("a  b", "a b")
    assert subject_matches("net: add...", "net: add the frobnicator")
    assert not subject_matches("...", "anything")
    assert not subject_matches("net: adx...", "net: add the frobnicator")


# -- series_format ------------------------------------------------------------------------


def _format(
    tmp_path: Path, series: Series, tree: Tree | None = None, **options: object
) -> CheckResult:
    ctx = CheckContext(
        series,
        tree or Tree("net", "/nonexistent"),
        tmp_path,
        "0" * 40,
        (),
        None,
        {},
        tmp_path / "logs",
    )
    return _run("series_format", ctx, **options)


def _subjects(n: int, tag: str = "net") -> list[str]:
    return [f"[PATCH {tag} {i}/{n}] x: patch {i}" for i in range(1, n + 1)]


def test_series_format_pass(tmp_path: Path) -> None:
    result = _format(tmp_path, make_series(_subjects(3), cover="[PATCH net 0/3] x: cover"))
    assert (result.outcome, result.patch_index) == (Outcome.PASS, None)
    assert result.description == "Posting correctly formatted (3 patches)"
    single = _format(tmp_path, make_series(["[PATCH net] x: one"]))
    assert single.outcome is Outcome.PASS


def test_series_format_no_cover_letter(tmp_path: Path) -> None:
    assert _format(tmp_path, make_series(_subjects(2))).outcome is Outcome.PASS
    result = _format(tmp_path, make_series(_subjects(3)))
    assert result.outcome is Outcome.WARN
    assert result.description == "Series has 3 patches but no cover letter"


def test_series_format_too_long(tmp_path: Path) -> None:
    cover = "[PATCH net 0/16] big"
    result = _format(tmp_path, make_series(_subjects(16), cover=cover))
    assert result.outcome is Outcome.FAIL
    assert result.description == "Series longer than 15 patches (16)"
    assert (
        _format(tmp_path, make_series(_subjects(16), cover=cover), max_patches=20).outcome
        is Outcome.PASS
    )
    worse = _format(tmp_path, make_series(_subjects(16, tag="PATCH")))  # no cover, no tag too
    assert worse.outcome is Outcome.FAIL
    assert worse.description.startswith("Series longer than 15 patches (16); ")
    assert "no cover letter" in worse.description


def test_series_format_tree_tag(tmp_path: Path) -> None:
    untagged = make_series(["[PATCH] x: one"])
    result = _format(tmp_path, untagged)
    assert result.outcome is Outcome.WARN
    assert (
        result.description == "Target tree name not specified in the subject (expected one of: net)"
    )
    assert _format(tmp_path, untagged, require_tree_tag=False).outcome is Outcome.PASS
    wrong = make_series(["[PATCH net-next] x: one"])
    assert _format(tmp_path, wrong).outcome is Outcome.WARN
    tagged_tree = Tree("wireless", "/x", tags=("wifi", "wireless"))
    assert _format(tmp_path, make_series(["[PATCH wifi] x"]), tagged_tree).outcome is Outcome.PASS


def test_series_format_gets_the_routing_decision_through_check_series(
    repo: Git, tmp_path: Path
) -> None:
    """series_format never received the routing decision: the pipeline put it in
    ctx.options while the check read its own options, and this test passed the route as a
    check option, so it passed while the real path said "Target tree name not specified"
    for a series routed by its paths instead of "Guessed tree name"."""
    from patchci.pipeline import check_series

    base = repo.rev_parse("HEAD")
    assert base
    commit_file(repo, "net/core/dev.c", "int dev;\n", "net: add dev\n\nSigned-off-by: J <j@x>")
    mails = format_patches(repo, f"{base}..HEAD")  # "[PATCH] net: add dev": no tree tag
    repo.run("reset", "--quiet", "--hard", base)
    trees = [Tree("net", str(repo.repo), branch="main", tags=("net",), paths=("net/",))]
    checks = [make_check("series_format")]

    verdict = check_series(series_from_mails(mails), trees, lambda _t: checks, tmp_path / "l")

    fmt = next(r for r in verdict.results if r.check == "series_format")
    assert verdict.route.guessed and verdict.route.tree == "net"
    assert fmt.outcome is Outcome.WARN
    assert fmt.description.startswith("Target tree name not specified in the subject (Guessed")
    tagged = make_series(["[PATCH net] x"])
    clear = Route("net", "Clearly marked for net", "tags", False)
    ctx = CheckContext(tagged, trees[0], tmp_path, "0" * 40, (), None, {}, tmp_path / "l2",
                       route=clear)  # fmt: skip
    assert run_check(make_check("series_format"), ctx).outcome is Outcome.PASS


def test_series_format_numbering(tmp_path: Path) -> None:
    subjects = ["[PATCH net 1/3] a", "[PATCH net 3/3] c"]
    result = _format(tmp_path, make_series(subjects))
    assert result.outcome is Outcome.WARN
    assert result.description == "Patch numbering does not match a 2-patch series (numbers: 1, 3)"


def test_series_format_does_not_need_apply() -> None:
    chk = make_check("series_format")
    assert chk.needs_apply is False and chk.scope.value == "series"


def test_reproducers_are_valid_shell_and_do_not_need_the_scratch_worktree(
    repo: Git, tmp_path: Path
) -> None:
    """The reproduce commands were bash syntax errors (`cd …/wt-<msgid>`) and pointed at
    worktrees deleted after the check."""
    import subprocess

    from patchci.apply import apply_series

    base = repo.rev_parse("HEAD")
    assert base
    commit_file(repo, "a.c", "int a;\n", "a: add\n\nSigned-off-by: J <j@x>")
    mails = format_patches(repo, f"{base}..HEAD")
    repo.run("reset", "--quiet", "--hard", base)
    # an mbox source's key is the Message-Id of the thread root: <...@...>
    series = dataclasses.replace(series_from_mails(mails), key="<20261206.1-a@example.org>")
    with apply_series(repo, "main", series, tmp_path / "work") as applied:
        assert applied.worktree is not None and "<" not in str(applied.worktree)
        ctx = CheckContext(series, Tree("net", str(repo.repo)), applied.worktree, base,
                           applied.commits, 0, {}, tmp_path / "logs")  # fmt: skip
        repro = ctx.reproducer(["scripts/checkpatch.pl", "--strict", "a file with spaces"])
        show = ctx.reproducer(["cat", "a.c"])
    assert subprocess.run(["bash", "-n", "-c", repro], check=False).returncode == 0
    assert str(tmp_path / "work") not in repro  # the scratch worktree is gone by now
    r = subprocess.run(["bash", "-c", show], cwd=tmp_path, capture_output=True, text=True,
                       check=False)  # fmt: skip
    assert r.stdout.endswith("int a;\n"), r.stdout + r.stderr  # the patched tree, rebuilt
