"""cc_maintainers and maintainers_entry on a small tree with a MAINTAINERS file."""

from __future__ import annotations

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


@pytest.mark.parametrize(
    ("to", "cc", "outcome", "desc"),
    [
        (
            "netdev@vger.example.org",
            "Fiona Foo <fiona@foo.example.org>",
            Outcome.FAIL,
            "CCed 1 of 2 maintainers, missing: nora@net.example.org",
        ),
        (
            "netdev@vger.example.org",
            "fiona@foo.example.org, NORA@net.example.org",
            Outcome.WARN,
            "CCed 2 of 2 maintainers; missing reviewers/lists: ray@example.org",
        ),
        (
            "fiona@foo.example.org",
            "nora@net.example.org, ray@example.org",
            Outcome.WARN,
            "CCed 2 of 2 maintainers; missing reviewers/lists: netdev@vger.example.org",
        ),
        (
            "netdev@vger.example.org",
            "fiona@foo.example.org, nora@net.example.org, ray@example.org",
            Outcome.PASS,
            "CCed 2 of 2 maintainers",
        ),
    ],
)
def test_cc_maintainers(repo: Git, tmp_path: Path, to: str, cc: str, outcome: Outcome,
                        desc: str) -> None:  # fmt: skip
    base = repo.rev_parse("HEAD")
    assert base
    commit_file(repo, "drivers/net/foo.c", "int foo = 1;\n", "foo: init")
    res = _run(CcMaintainers(), _mail_ctx(repo, base, to, cc, 0, tmp_path))
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
