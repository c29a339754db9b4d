"""checkpatch, kernel-doc and get_maintainer of the real Linux 6.1 source on real patches.

The scripts are those of the installed linux-source-6.1; the files they read and the tests
patch (pm_netlink.c, MAINTAINERS, .mailmap) are pinned in tests/data/checks, so no 6.1.x
point release changes what is asserted (tests/data/checks/kernel/README.md; checked with
linux-source-6.1 6.1.192-3). The patches are the shared fixtures sample-{bad,clean}.patch;
the expected checkpatch totals are those of the fixture outputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from patchci.checks.base import CheckContext, run_check
from patchci.checks.checkpatch import Checkpatch
from patchci.checks.kdoc import KernelDoc
from patchci.checks.maintainers import CcMaintainers, MaintainersEntry
from patchci.git import Git
from patchci.model import CheckResult, Outcome, Tree
from tests.gitrepo import commit_file, series_from_mails
from tests.kernel_tree import kernel_tree

DATA = Path(__file__).parent / "data" / "checks"
MPTCP = (
    "mathew.j.martineau@linux.intel.com",
    "matthieu.baerts@tessares.net",
    "davem@davemloft.net",
    "edumazet@google.com",
    "kuba@kernel.org",
    "pabeni@redhat.com",
)
LISTS = ("netdev@vger.kernel.org", "mptcp@lists.linux.dev")


@pytest.fixture
def ktree(tmp_path: Path) -> Git:
    return Git(kernel_tree(tmp_path / "linux"))


def _mail(name: str, to: tuple[str, ...] = (), cc: tuple[str, ...] = ()) -> bytes:
    raw = (DATA / f"{name}.patch").read_text()
    headers = "".join(f"{h}: {', '.join(a)}\n" for h, a in (("To", to), ("Cc", cc)) if a)
    return raw.replace("\nDate:", f"\n{headers}Date:", 1).encode()


def _apply(git: Git, mail: bytes) -> tuple[str, str]:
    base = git.rev_parse("HEAD")
    assert base
    git.run("am", "-q", "--whitespace=nowarn", input=mail)
    head = git.rev_parse("HEAD")
    assert head and head != base
    return base, head


def _check(git: Git, chk: object, mail: bytes, base: str, head: str, tmp: Path,
           series_scope: bool = False) -> CheckResult:  # fmt: skip
    series = series_from_mails([mail])
    ctx = CheckContext(series, Tree("net-next", str(git.repo)), git.repo, base, (head,),
                       None if series_scope else 0, {}, tmp / "logs")  # fmt: skip
    assert hasattr(chk, "run")
    return run_check(chk, ctx)  # type: ignore[arg-type]


def test_checkpatch_bad_patch_fails_with_the_fixture_totals(ktree: Git, tmp_path: Path) -> None:
    mail = _mail("sample-bad")
    base, head = _apply(ktree, mail)
    # Without netdev's options the totals are those of checkpatch-default.txt.
    res = _check(ktree, Checkpatch({"args": [], "ignore": []}), mail, base, head, tmp_path)
    assert res.outcome is Outcome.FAIL
    assert res.description.startswith("total: 11 errors, 2 warnings, 0 checks; ")
    for t in ("OPEN_BRACE", "SPACING", "LEADING_SPACE", "TRAILING_WHITESPACE",
              "TRAILING_STATEMENTS", "PRINTK_WITHOUT_KERN_LEVEL"):  # fmt: skip
        assert t in res.description
    strict = _check(ktree, Checkpatch(), mail, base, head, tmp_path / "strict")
    assert strict.outcome is Outcome.FAIL
    assert "--strict" in Path(strict.log_path or "").read_text() or strict.reproducer
    ignoring = Checkpatch({"ignore": ["SPACING", "OPEN_BRACE", "TRAILING_WHITESPACE",
                                      "TRAILING_STATEMENTS"]})  # fmt: skip
    warn = _check(ktree, ignoring, mail, base, head, tmp_path / "ign")
    assert warn.outcome is Outcome.WARN
    assert warn.description.startswith("total: 0 errors, 2 warnings")


def test_checkpatch_clean_patch_passes(ktree: Git, tmp_path: Path) -> None:
    mail = _mail("sample-clean")
    base, head = _apply(ktree, mail)
    res = _check(ktree, Checkpatch(), mail, base, head, tmp_path)
    assert (res.outcome, res.description) == (Outcome.PASS, "total: 0 errors, 0 warnings, 0 checks")


def test_kernel_doc_before_after(ktree: Git, tmp_path: Path) -> None:
    mail = _mail("sample-clean")
    base, head = _apply(ktree, mail)
    res = _check(ktree, KernelDoc(), mail, base, head, tmp_path)
    assert res.outcome is Outcome.PASS
    assert res.description == "Warnings before: 0 after: 0 (add: 0 del: 0)"
    # A follow-up patch drops the @msk line: one new warning, named in the log.
    path = "net/mptcp/pm_netlink.c"
    text = (ktree.repo / path).read_text().replace(" * @msk: the MPTCP socket\n", "", 1)
    bad = commit_file(ktree, path, text, "mptcp: pm: shorten the doc")
    res2 = _check(ktree, KernelDoc(), mail, head, bad, tmp_path / "2")
    assert res2.outcome is Outcome.FAIL
    assert res2.description == "Warnings before: 0 after: 1 (add: 1 del: 0)"
    log = Path(res2.log_path or "").read_text()
    assert "Function parameter or member 'msk' not described in 'mptcp_pm_nl_is_enabled'" in log


@pytest.mark.parametrize("source", ["maintainers", "get_maintainer"])
@pytest.mark.parametrize(
    ("to", "cc", "outcome", "desc"),
    [
        ((), (), Outcome.FAIL, "CCed 0 of 6 maintainers, missing: " + ", ".join(MPTCP)),
        (
            LISTS[:1],
            MPTCP,
            Outcome.WARN,
            "CCed 6 of 6 maintainers; missing reviewers/lists: mptcp@lists.linux.dev",
        ),
        (
            LISTS,
            MPTCP[1:],
            Outcome.FAIL,
            "CCed 5 of 6 maintainers, missing: mathew.j.martineau@linux.intel.com",
        ),
        (LISTS, tuple(a.upper() for a in MPTCP), Outcome.PASS, "CCed 6 of 6 maintainers"),
    ],
)
def test_cc_maintainers_both_sources(
    ktree: Git, tmp_path: Path, source: str, to: tuple[str, ...], cc: tuple[str, ...],
    outcome: Outcome, desc: str,
) -> None:  # fmt: skip
    mail = _mail("sample-clean", to, cc)
    base, head = _apply(ktree, mail)
    chk = CcMaintainers({"source": source, "policy": "strict"})
    res = _check(ktree, chk, mail, base, head, tmp_path)
    assert (res.outcome, res.description) == (outcome, desc)


@pytest.mark.parametrize("source", ["maintainers", "get_maintainer"])
def test_cc_maintainers_netdev_policy_both_sources(ktree: Git, tmp_path: Path, source: str) -> None:
    """NIPA's policy: one maintainer missing while the others were CCed warns, with both
    sources alike; nobody but the lists CCed fails."""
    mail = _mail("sample-clean", LISTS, MPTCP[1:])
    base, head = _apply(ktree, mail)
    res = _check(ktree, CcMaintainers({"source": source}), mail, base, head, tmp_path)
    assert (res.outcome, res.description) == (
        Outcome.WARN, "1 maintainers not CCed: mathew.j.martineau@linux.intel.com")  # fmt: skip


def test_maintainers_entry_on_the_kernel(ktree: Git, tmp_path: Path) -> None:
    base = ktree.rev_parse("HEAD")
    assert base
    commit_file(ktree, "net/mptcp/pm_debug.c", "// SPDX-License-Identifier: GPL-2.0\n", "a")
    head = commit_file(ktree, "drivers/widget/widget.c", "// SPDX\n", "b")
    mail = _mail("sample-clean")
    # The subset tree is small, so "broad" is scaled down: THE REST covers every file.
    chk = MaintainersEntry({"broad_threshold": 10})
    res = _check(ktree, chk, mail, base, head, tmp_path, series_scope=True)
    assert res.outcome is Outcome.FAIL  # only THE REST covers it: NIPA's fail
    assert res.description == "expecting a MAINTAINERS entry for drivers/widget/widget.c"
