"""cc_maintainers and maintainers_entry on a small tree with a MAINTAINERS file."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from patchci.checks.base import Check, CheckContext, run_check
from patchci.checks.maintainers import (
    CcMaintainers,
    Expected,
    MaintainersEntry,
    cc_verdict,
    expected_from_get_maintainer,
)
from patchci.git import Git
from patchci.model import CheckResult, Outcome, Person, Tree
from tests.gitrepo import commit_file, format_patches, make_repo, series_from_mails

MAINTAINERS = """\
List of maintainers

FOO DRIVER
M:\tFiona Foo <fiona@foo.example.org>
R:\tRay Reviewer <ray@example.org>
L:\tnetdev@vger.example.org
S:\tMaintained
F:\tdrivers/net/foo.c

NETWORKING
M:\tNora Net <nora@net.example.org>
L:\tnetdev@vger.example.org
S:\tMaintained
F:\tnet/
F:\tdrivers/net/
"""


@pytest.fixture
def repo(tmp_path: Path) -> Git:
    files = {"MAINTAINERS": MAINTAINERS, "drivers/net/foo.c": "int foo;\n",
             "net/core/dev.c": "int dev;\n", "README": "x\n"}  # fmt: skip
    files.update({f"net/core/f{i}.c": "\n" for i in range(5)})
    return make_repo(tmp_path / "repo", files)


def _mail_ctx(git: Git, base: str, to: str, cc: str, idx: int | None,
              tmp: Path) -> CheckContext:  # fmt: skip
    mails = format_patches(git, f"{base}..HEAD")
    mails = [m.replace(b"\nSubject:", f"\nTo: {to}\nCc: {cc}\nSubject:".encode(), 1)
             for m in mails]  # fmt: skip
    commits = tuple(git.run("rev-list", "--reverse", f"{base}..HEAD").stdout.split())
    return CheckContext(series_from_mails(mails), Tree("net", str(git.repo)), git.repo, base,
                        commits, idx, {}, tmp / "logs")  # fmt: skip


def _run(chk: Check, ctx: CheckContext) -> CheckResult:
    return run_check(chk, ctx)


NETDEV_ML, FIONA, NORA, RAY = ("netdev@vger.example.org", "fiona@foo.example.org",
                                "nora@net.example.org", "ray@example.org")


@pytest.mark.parametrize(
    ("policy", "to", "cc", "outcome", "desc"),
    [
        ("strict", NETDEV_ML, f"Fiona Foo <{FIONA}>", Outcome.FAIL,
         f"CCed 1 of 2 maintainers, missing: {NORA}"),
        ("strict", NETDEV_ML, "fiona@foo.example.org, NORA@net.example.org", Outcome.WARN,
         f"CCed 2 of 2 maintainers; missing reviewers/lists: {RAY}"),
        ("strict", FIONA, f"{NORA}, {RAY}", Outcome.WARN,
         f"CCed 2 of 2 maintainers; missing reviewers/lists: {NETDEV_ML}"),
        ("strict", NETDEV_ML, f"{FIONA}, {NORA}, {RAY}", Outcome.PASS, "CCed 2 of 2 maintainers"),
        # NIPA's: every wanted address alike; warn while more than one of them was CCed
        ("netdev", NETDEV_ML, f"Fiona Foo <{FIONA}>", Outcome.WARN,
         f"2 maintainers not CCed: {NORA} {RAY}"),
        ("netdev", NETDEV_ML, "fiona@foo.example.org, NORA@net.example.org", Outcome.WARN,
         f"1 maintainers not CCed: {RAY}"),
        ("netdev", "x@y.org", FIONA, Outcome.FAIL,
         f"3 maintainers not CCed: {NORA} {RAY} {NETDEV_ML}"),
        ("netdev", NETDEV_ML, f"{FIONA}, {NORA}, {RAY}", Outcome.PASS, "CCed 4 of 4 maintainers"),
    ],
)  # fmt: skip
def test_cc_maintainers(repo: Git, tmp_path: Path, policy: str, to: str, cc: str,
                        outcome: Outcome, desc: str) -> None:  # fmt: skip
    base = repo.rev_parse("HEAD")
    assert base
    commit_file(repo, "drivers/net/foo.c", "int foo = 1;\n", "foo: init")
    res = _run(CcMaintainers({"policy": policy}), _mail_ctx(repo, base, to, cc, 0, tmp_path))
    assert (res.outcome, res.description) == (outcome, desc)


def test_cc_maintainers_author_counts_and_ignore_list(repo: Git, tmp_path: Path) -> None:
    base = repo.rev_parse("HEAD")
    assert base
    author = Person("Nora Net", "nora@net.example.org")
    commit_file(repo, "net/core/dev.c", "int dev = 1;\n", "net: init", author=author)
    ctx = _mail_ctx(repo, base, "netdev@vger.example.org", "x@y.org", 0, tmp_path)
    assert _run(CcMaintainers(), ctx).outcome is Outcome.PASS
    commit_file(repo, "README", "changed\n", "doc")  # no entry covers README
    ctx2 = _mail_ctx(repo, base, "x@y.org", "x@y.org", 1, tmp_path / "2")
    res = _run(CcMaintainers(), ctx2)
    assert (res.outcome, res.description) == (
        Outcome.PASS,
        "no MAINTAINERS entry covers the touched files",
    )


def test_cc_verdict_ignore_and_get_maintainer_roles() -> None:
    exp = expected_from_get_maintainer([
        (Person("A", "a@x"), "maintainer:NET"), (Person("B", "b@x"), "supporter:NET"),
        (Person("C", "c@x"), "reviewer:NET"), (Person("", "l@x"), "open list:NET"),
        (Person("", "lkml@x"), "open list"), (Person("D", "d@x"), "commit_signer:1/2=50%"),
    ])  # fmt: skip
    assert exp == Expected(["a@x", "b@x"], ["c@x"], ["l@x", "lkml@x"])
    assert cc_verdict(exp, {"a@x", "b@x", "c@x", "l@x"}, ["LKML@x"]) == (
        Outcome.PASS,
        "CCed 2 of 2 maintainers",
    )


def test_maintainers_entry(repo: Git, tmp_path: Path) -> None:
    base = repo.rev_parse("HEAD")
    assert base
    commit_file(repo, "net/core/new.c", "int n;\n", "net: new file")
    commit_file(repo, "Documentation/new.rst", "doc\n", "doc")
    ctx = _mail_ctx(repo, base, "a@b", "", None, tmp_path)
    # NETWORKING covers 8 files: specific by default (< 75), broad when specific means < 5,
    # subsystem-wide (fail) when that means < 5 too, as NIPA's 75/500 at this tree's scale.
    res = _run(MaintainersEntry(), ctx)
    assert (res.outcome, res.description) == (Outcome.PASS, "new files covered: 1")
    res = _run(MaintainersEntry({"specific_threshold": 5}), ctx)
    assert (res.outcome, res.description) == (
        Outcome.WARN,
        "only a broad MAINTAINERS entry (>= 5 files) for net/core/new.c",
    )
    res = _run(MaintainersEntry({"broad_threshold": 5}), ctx)
    assert (res.outcome, res.description) == (
        Outcome.FAIL,
        "expecting a MAINTAINERS entry for net/core/new.c",
    )
    # The series adds an entry for its file: covered.
    commit_file(repo, "MAINTAINERS", MAINTAINERS + "\nNEW THING\nM:\tN <n@x>\nS:\tMaintained"
                "\nF:\tnet/core/new.c\n", "MAINTAINERS: add new")  # fmt: skip
    ctx = _mail_ctx(repo, base, "a@b", "", None, tmp_path / "3")
    res = _run(MaintainersEntry({"broad_threshold": 5}), ctx)
    assert res.outcome is Outcome.PASS
    assert "NEW THING (1 files)" in Path(res.log_path or "").read_text()


def _dated(monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    monkeypatch.setenv("GIT_AUTHOR_DATE", when)
    monkeypatch.setenv("GIT_COMMITTER_DATE", when)


ALL_CC = f"{FIONA}, {NORA}, {RAY}"
_FIXES = itertools.count(10)
BOB = Person("Bob Blamed", "bob@old.example.org")


def _fix_ctx(repo: Git, tmp_path: Path, cc: str, monkeypatch: pytest.MonkeyPatch,
             buggy_date: str = "2026-03-01T00:00:00", reviewed: str = "") -> CheckContext:  # fmt: skip
    n = next(_FIXES)  # each call commits new contents
    _dated(monkeypatch, buggy_date)
    buggy = commit_file(repo, "drivers/net/foo.c", f"int foo = {n};\n", "foo: use two", author=BOB)
    if reviewed:  # Bob reviews something later
        _dated(monkeypatch, reviewed)
        commit_file(repo, "README", f"reviewed {n}\n", f"doc\n\nReviewed-by: Bob <{BOB.email}>\n")
    _dated(monkeypatch, "2026-06-01T00:00:00")
    commit_file(repo, "net/core/dev.c", f"int dev; /* {n} */\n", "net: the base")
    base = repo.rev_parse("HEAD")
    assert base
    commit_file(repo, "drivers/net/foo.c", f"int foo = {n + 1000};\n",
                f'foo: use three\n\nFixes: {buggy[:12]} ("foo: use two")\n')  # fmt: skip
    return _mail_ctx(repo, base, NETDEV_ML, cc, 0, tmp_path)


def test_blamed_authors_of_the_fixed_commits_are_required(
    repo: Git, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NIPA's "blamed authors not CCed" (get_maintainer's blamed_fixes): the author of the
    commit a Fixes: tag names must be CCed, under either policy."""
    for policy in ("netdev", "strict"):
        ctx = _fix_ctx(repo, tmp_path / policy, ALL_CC, monkeypatch)
        res = _run(CcMaintainers({"policy": policy}), ctx)
        assert (res.outcome, res.description) == (
            Outcome.FAIL, "1 blamed authors not CCed: bob@old.example.org; 0 maintainers not CCed:")  # fmt: skip
    ctx = _fix_ctx(repo, tmp_path / "cc", f"{ALL_CC}, {BOB.email}", monkeypatch)
    res = _run(CcMaintainers(), ctx)
    assert (res.outcome, res.description) == (Outcome.PASS, "CCed 5 of 5 maintainers")
    assert "blamed (authors of the commits it fixes): bob@old.example.org" in Path(
        res.log_path or "").read_text()  # fmt: skip
    assert _run(CcMaintainers({"blamed": False}), _fix_ctx(
        repo, tmp_path / "off", ALL_CC, monkeypatch)).outcome is Outcome.PASS  # fmt: skip


def test_a_mailmap_alias_on_the_mail_counts(
    repo: Git, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit_file(repo, ".mailmap", "Bob Blamed <bob@new.example.org> <bob@old.example.org>\n",
                "mailmap: bob moved")  # fmt: skip
    ctx = _fix_ctx(repo, tmp_path, f"{ALL_CC}, Bob <bob@new.example.org>", monkeypatch)
    res = _run(CcMaintainers(), ctx)
    assert (res.outcome, res.description) == (Outcome.PASS, "CCed 5 of 5 maintainers")
    # git itself maps the blamed commit's author through the tree's .mailmap
    assert "blamed (authors of the commits it fixes): bob@new.example.org" in Path(
        res.log_path or "").read_text()  # fmt: skip
    # an alias given in the options counts for a maintainer too
    ctx = _fix_ctx(repo, tmp_path / "2", f"{ALL_CC}, bob@new.example.org".replace(
        NORA, "nora@home.example.org"), monkeypatch)  # fmt: skip
    aliases = {"aliases": ["Nora Net <nora@net.example.org> <nora@home.example.org>"]}
    res = _run(CcMaintainers(aliases), ctx)
    assert res.description == "CCed 5 of 5 maintainers"
    assert f"mapped (an alias is on the mail): {NORA}" in Path(res.log_path or "").read_text()
    assert _run(CcMaintainers(), ctx).description == f"1 maintainers not CCed: {NORA}"


def test_a_stale_blamed_author_is_not_required(
    repo: Git, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NIPA drops blamed authors who have not posted for 36 months (it asks lore); here
    the tree's history answers: no commit by the address or naming it since."""
    _dated(monkeypatch, "2018-01-01T00:00:00")
    commit_file(repo, "README", "old\n", "an old commit: the history reaches back")
    ctx = _fix_ctx(repo, tmp_path, ALL_CC, monkeypatch, buggy_date="2020-01-01T00:00:00")
    res = _run(CcMaintainers(), ctx)
    assert (res.outcome, res.description) == (Outcome.PASS, "CCed 4 of 4 maintainers")
    assert "stale (no commit in 36 months): bob@old.example.org" in Path(
        res.log_path or "").read_text()  # fmt: skip
    # a Reviewed-by from Bob last year: active, so required again
    ctx = _fix_ctx(repo, tmp_path / "2", ALL_CC, monkeypatch, buggy_date="2020-01-01T00:00:00",
                   reviewed="2025-12-01T00:00:00")  # fmt: skip
    assert _run(CcMaintainers(), ctx).outcome is Outcome.FAIL
    assert _run(CcMaintainers({"stale_months": 0}), ctx).outcome is Outcome.FAIL
