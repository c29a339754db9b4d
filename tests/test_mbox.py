"""read_messages / group_series / load_series against Patchwork v3.2.1's own grouping.

The expected table is tests/data/mail-corpus/README.md ("Patchwork v3.2.1 result").
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from patchci import proc
from patchci.sources.mail import parse_mail
from patchci.sources.mbox import (
    Rejected,
    group_series,
    load_series,
    read_messages,
)

CORPUS = Path(__file__).parent / "data" / "mail-corpus"
BAD = Path(__file__).parent / "data" / "mail"


@dataclass(frozen=True)
class Expect:
    file: str
    msgs: int
    version: int
    total: int
    cover: bool
    patches: int
    name: str
    patch_names: tuple[str, ...] = ()
    comments: int = 0


EXPECTED = [
    Expect(
        "base-different-versions.mbox", 5, 3, 4, True, 4, "net: dsa: Multi-CPU ground work (v3)"
    ),
    Expect(
        "base-no-references.mbox",
        2,
        2,
        2,
        False,
        2,
        "[net,v2,1/2] net: ieee802154: remove explicit set skb->sk",
        (
            "[net,v2,1/2] net: ieee802154: remove explicit set skb->sk",
            "[net,v2,2/2] net: ieee802154: fix net_device reference release too early",
        ),
    ),
    Expect("bugs-multiple-references.mbox", 5, 2, 4, True, 4, "PM / OPP: Minor cleanups"),
    Expect(
        "base-no-references-no-cover.mbox",
        3,
        1,
        2,
        True,
        2,
        "powerpc/dlpar: Correct display of hot-add/hot-remove CPUs and memory",
        (
            "[1/2] powerpc/numa: Update CPU topology when VPHN enabled",
            "[2/2] : powerpc/hotplug/mm: Fix hot-add memory node assoc",
        ),
    ),
    Expect(
        "bugs-multiple-content-types.mbox",
        2,
        1,
        1,
        False,
        1,
        "[-next] bpf: Use PTR_ERR_OR_ZERO in xsk_map_inc()",
        ("[-next] bpf: Use PTR_ERR_OR_ZERO in xsk_map_inc()",),
        comments=1,
    ),
    Expect(
        "0012-invalid-header-char.mbox",
        1,
        1,
        1,
        False,
        1,
        "[dpdk-dev] kni: fix compilation error when debug enabled",
    ),
    Expect(
        "0013-with-utf8-body.mbox", 1, 1, 1, False, 1, "MAINTAINERS: Update entry for BCM5301X ARM"
    ),
    Expect(
        "0014-with-unencoded-utf8-headers.mbox",
        1,
        1,
        1,
        False,
        1,
        "MAINTAINERS: Update entry for BCM5301X ARM to include Rafał Miłecki",
    ),
    Expect(
        "0022-git-mode-change.mbox",
        1,
        1,
        1,
        False,
        1,
        "[1/1] kconfig: Make nconf-cfg.sh executable",
    ),
    Expect(
        "generated/net-foo-v1.mbox",
        4,
        1,
        3,
        True,
        3,
        "net: foo: queue handling fixes",
        (
            "[net-next,1/3] net: foo: start queue on open",
            "[net-next,2/3] net: foo: add ndo_stop",
            "[net-next,3/3] net: foo: make driver optional",
        ),
    ),
    Expect(
        "generated/net-foo-v2.mbox",
        4,
        2,
        3,
        True,
        3,
        "net: foo: queue handling fixes",
        (
            "[net-next,v2,1/3] net: foo: start queue on open",
            "[net-next,v2,2/3] net: foo: add ndo_stop",
            "[net-next,v2,3/3] net: foo: make driver optional",
        ),
    ),
]


def test_every_corpus_file_is_covered() -> None:
    files = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*.mbox")}
    assert files == {e.file for e in EXPECTED}


@pytest.mark.parametrize("exp", EXPECTED, ids=[e.file for e in EXPECTED])
def test_corpus_grouping_matches_patchwork(exp: Expect) -> None:
    path = CORPUS / exp.file
    assert len(list(read_messages(path))) == exp.msgs
    ing = load_series(path)
    assert ing.rejected == ()
    assert len(ing.series) == 1
    s = ing.series[0]
    assert (s.version, s.total, s.cover is not None) == (exp.version, exp.total, exp.cover)
    assert len(s.patches) == exp.patches
    assert s.name == exp.name
    assert s.complete and s.problems == ()
    assert [p.number or 1 for p in s.patches] == list(range(1, exp.patches + 1))
    assert all(p.has_diff for p in s.patches)
    first = s.cover or s.patches[0]
    assert s.key == first.msgid
    assert s.submitter == first.author and s.date == first.date
    assert s.source == "local"
    if exp.patch_names:
        from patchci.subject import patchwork_name

        assert tuple(patchwork_name(p.subject) for p in s.patches) == exp.patch_names


def test_reply_is_a_comment_and_its_acked_by_is_collected() -> None:
    ing = load_series(CORPUS / "bugs-multiple-content-types.mbox")
    (s,) = ing.series
    assert len(s.patches) == 1 and not s.patches[0].subject.startswith("Re:")
    (t,) = ing.trailers
    assert (t.name, t.value) == ("Acked-by", "Björn Töpel <bjorn.topel@intel.com>")
    assert t.series_key == s.key == t.target_msgid


def test_same_message_id_twice_is_rejected_as_duplicate(tmp_path: Path) -> None:
    """0014 is 0013 again with raw UTF-8 headers; Patchwork dropped the second copy."""
    both = tmp_path / "both.mbox"
    both.write_bytes(
        (CORPUS / "0013-with-utf8-body.mbox").read_bytes()
        + (CORPUS / "0014-with-unencoded-utf8-headers.mbox").read_bytes()
    )
    ing = load_series(both)
    assert len(ing.series) == 1
    assert ing.series[0].name == "MAINTAINERS: Update entry for BCM5301X ARM"
    assert ing.rejected == (
        Rejected(
            "both.mbox#2",
            "duplicate Message-Id <1464811283-10381-1-git-send-email-zajec5@gmail.com>",
        ),
    )


def test_v2_in_reply_to_v1_cover_is_a_new_series(tmp_path: Path) -> None:
    both = tmp_path / "v1v2.mbox"
    gen = CORPUS / "generated"
    both.write_bytes(
        (gen / "net-foo-v1.mbox").read_bytes() + (gen / "net-foo-v2.mbox").read_bytes()
    )
    ing = load_series(both)
    assert ing.rejected == ()
    v1, v2 = ing.series
    assert (v1.version, v2.version) == (1, 2)
    assert v1.key == "<cover.1795271358.git.ci.tester@example.com>"
    assert v2.key == "<cover.1795271462.git.ci.tester@example.com>"
    assert all("v2" in p.subject for p in v2.patches)
    assert not any("v2" in p.subject for p in v1.patches)
    assert len(v1.patches) == len(v2.patches) == 3


def _mails(path: Path) -> list[tuple[str, bytes]]:
    return list(read_messages(path))


def test_incomplete_series_lists_missing_patch() -> None:
    mails = [
        (loc, parse_mail(raw)) for loc, raw in _mails(CORPUS / "generated" / "net-foo-v1.mbox")
    ]
    ing = group_series(mails[:3], source="test")
    (s,) = ing.series
    assert s.source == "test"
    assert (s.total, len(s.patches), s.complete) == (3, 2, False)
    assert s.problems == ("missing patch 3/3",)


def test_arrival_order_does_not_matter_for_threaded_series() -> None:
    mails = [(loc, parse_mail(raw)) for loc, raw in _mails(CORPUS / "base-different-versions.mbox")]
    (s,) = group_series(list(reversed(mails))).series
    assert [p.number for p in s.patches] == [1, 2, 3, 4]
    assert s.cover is not None and s.total == 4 and s.version == 3
    assert s.name == "net: dsa: Multi-CPU ground work (v3)"


def _patch_mail(n: int, total: int, date: str, msgid: str, sender: str = "a@x") -> bytes:
    return (
        f"From: A <{sender}>\nSubject: [PATCH {n}/{total}] x: change {n}\nMessage-Id: <{msgid}>\n"
        f"Date: {date}\n\n---\ndiff --git a/f{n} b/f{n}\n--- a/f{n}\n+++ b/f{n}\n@@ -1 +1 @@\n-a\n+b\n"
    ).encode()


def test_unthreaded_markers_need_same_sender_and_20_minutes() -> None:
    raws = [
        _patch_mail(1, 2, "Tue, 23 May 2017 13:21:05 +0800", "m1@x"),
        _patch_mail(2, 2, "Tue, 23 May 2017 13:29:39 +0800", "m2@x"),
        _patch_mail(1, 2, "Tue, 23 May 2017 13:22:00 +0800", "o1@x", sender="other@x"),
        _patch_mail(2, 2, "Tue, 23 May 2017 14:30:00 +0800", "late@x"),
    ]
    ing = group_series([(f"m#{i}", parse_mail(r)) for i, r in enumerate(raws)])
    keys = [(s.key, [p.msgid for p in s.patches], s.complete) for s in ing.series]
    assert keys == [
        ("<m1@x>", ["<m1@x>", "<m2@x>"], True),
        ("<o1@x>", ["<o1@x>"], False),
        ("<late@x>", ["<late@x>"], False),
    ]
    assert ing.series[1].problems == ("missing patch 2/2",)
    assert ing.series[2].problems == ("missing patch 1/2",)


def test_not_a_patch_and_orphan_reply_are_rejected() -> None:
    note = b"From: A <a@x>\nSubject: hello list\nMessage-Id: <note@x>\n\njust talking\n"
    reply = b"From: B <b@x>\nSubject: Re: [PATCH] gone\nMessage-Id: <r@x>\nIn-Reply-To: <nowhere@x>\n\nok\n"
    ing = group_series([("a", parse_mail(note)), ("b", parse_mail(reply))])
    assert ing.series == ()
    assert ing.rejected == (
        Rejected("a", "not a patch: no diff"),
        Rejected("b", "not a patch: reply (Re:) to no patch here"),
    )


def test_bad_mails_become_rejected_not_exceptions(tmp_path: Path) -> None:
    for name in ("empty.eml", "garbage.bin", "no-id-no-subject.eml", "binary-diff.eml"):
        shutil.copy(BAD / name, tmp_path / (name.split(".")[0] + ".eml"))
    ing = load_series(tmp_path)
    assert sorted(ing.rejected, key=lambda r: r.location) == [
        Rejected("empty.eml", "empty mail"),
        Rejected("garbage.eml", "no mail headers found"),
        Rejected("no-id-no-subject.eml", "no Message-Id and no Subject header"),
    ]
    (s,) = ing.series
    assert s.name == "firmware: update blob" and s.patches[0].files == ("firmware/blob.bin",)


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="mail source not found"):
        load_series(tmp_path / "nope.mbox")


def test_mboxrd_from_lines_are_unescaped(tmp_path: Path) -> None:
    mb = tmp_path / "rd.mbox"
    mb.write_bytes(
        b"From mboxrd@z Thu Jan  1 00:00:00 1970\n"
        + _patch_mail(1, 1, "Tue, 23 May 2017 13:21:05 +0800", "rd@x").replace(
            b"\n---\n", b"\n>From the start of time\n>>From nested\nFrom here on no split\n---\n"
        )
    )
    ((loc, raw),) = _mails(mb)
    assert loc == "rd.mbox#1"
    assert b"\nFrom the start of time\n>From nested\nFrom here on no split\n" in raw
    assert not raw.startswith(b"From mboxrd")


def test_maildir(tmp_path: Path) -> None:
    md = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (md / sub).mkdir(parents=True)
    msgs = [raw for _, raw in _mails(CORPUS / "generated" / "net-foo-v1.mbox")]
    for i, raw in enumerate(msgs[:3]):
        (md / "cur" / f"17000000{i}.M1P1.host:2,S").write_bytes(raw)
    (md / "new" / "170000009.M1P1.host").write_bytes(msgs[3])
    (md / "tmp" / "partial").write_bytes(b"half a mail")
    locs = [loc for loc, _ in _mails(md)]
    assert (
        locs[0] == "Maildir/cur/170000000.M1P1.host:2,S"
        and locs[-1] == "Maildir/new/170000009.M1P1.host"
    )
    (s,) = load_series(md).series
    assert s.complete and s.name == "net: foo: queue handling fixes" and len(s.patches) == 3


def _git(repo: Path, *args: str) -> str:
    return proc.run(["git", *args], cwd=repo, timeout=60, check=True).stdout


def test_directory_of_git_format_patch_files(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.c").write_text("int a;\n")
    (repo / "run.sh").write_text("echo hi\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "base")
    (repo / "a.c").write_text("int a = 1;\n")
    _git(repo, "commit", "-qam", "a: init a\n\nSigned-off-by: Test Author <author@example.com>")
    (repo / "run.sh").chmod(0o755)
    _git(repo, "commit", "-qam", "run: make executable")
    (repo / "blob.bin").write_bytes(bytes(range(256)) * 4)
    _git(repo, "add", "blob.bin")
    _git(repo, "commit", "-qm", "add blob")
    out = tmp_path / "out"
    _git(
        repo,
        "format-patch",
        "-q",
        "--cover-letter",
        "--thread=shallow",
        "-v3",
        "--binary",
        "-o",
        str(out),
        "HEAD~3",
    )
    names = sorted(p.name for p in out.iterdir())
    assert names[0] == "v3-0000-cover-letter.patch" and len(names) == 4
    ing = load_series(out)
    assert ing.rejected == ()
    (s,) = ing.series
    assert (s.version, s.total, s.complete) == (3, 3, True)
    assert s.cover is not None and s.name == "*** SUBJECT HERE ***"
    assert [p.files for p in s.patches] == [("a.c",), ("run.sh",), ("blob.bin",)]
    assert all(p.has_diff for p in s.patches)
    # git writes the cover letter From the committer, the patches From their author.
    assert s.submitter is not None and s.submitter.email == "committer@example.com"
    assert {p.author.email for p in s.patches} == {"author@example.com"}
    assert all(p.in_reply_to == s.key for p in s.patches)


def test_twenty_megabyte_mbox_is_read_once_and_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = "".join(
        f"+generated line {i:07d} with some padding to make it long\n" for i in range(360_000)
    )
    big = (
        "From 1234 Mon Sep 17 00:00:00 2001\nFrom: Big <big@x>\nSubject: [PATCH 1/2] big: table\n"
        "Message-Id: <big1@x>\nDate: Tue, 23 May 2017 13:21:05 +0800\n\n---\n"
        "diff --git a/big.c b/big.c\nnew file mode 100644\n--- /dev/null\n+++ b/big.c\n"
        f"@@ -0,0 +1,360000 @@\n{body}\n"
    ).encode()
    mb = tmp_path / "big.mbox"
    mb.write_bytes(
        big
        + _patch_mail(2, 2, "Tue, 23 May 2017 13:22:05 +0800", "big2@x").replace(
            b"From: A <a@x>",
            b"From 1234 Mon Sep 17 00:00:00 2001\nFrom: Big <big@x>\nIn-Reply-To: <big1@x>",
        )
    )
    assert mb.stat().st_size > 20_000_000
    reads: list[Path] = []
    orig = Path.read_bytes

    def counting(self: Path) -> bytes:
        reads.append(self)
        return orig(self)

    monkeypatch.setattr(Path, "read_bytes", counting)
    start = time.monotonic()
    ing = load_series(mb)
    elapsed = time.monotonic() - start
    assert reads == [mb]
    (s,) = ing.series
    assert s.complete and s.patches[0].files == ("big.c",) and len(s.patches[0].raw) > 20_000_000
    assert elapsed < 15, f"took {elapsed:.1f}s"
