"""parse_mail / body_text on real list mails (tests/data/mail-corpus) and bad inputs."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from patchci.errors import PatchError
from patchci.model import Person
from patchci.sources.mail import MalformedMail, body_text, find_diff, parse_mail

CORPUS = Path(__file__).parent / "data" / "mail-corpus"
BAD = Path(__file__).parent / "data" / "mail"


def _first_mail(name: str) -> bytes:
    """The first mail of a corpus mbox, without its `From ` separator line."""
    data = (CORPUS / name).read_bytes()
    body = data.split(b"\n", 1)[1]
    nxt = body.find(b"\nFrom ")
    return body if nxt < 0 else body[: nxt + 1]


def test_utf8_body_and_rfc2047_from() -> None:
    p = parse_mail((CORPUS / "0013-with-utf8-body.mbox").read_bytes())
    assert p.msgid == "<1464811283-10381-1-git-send-email-zajec5@gmail.com>"
    assert p.subject == "MAINTAINERS: Update entry for BCM5301X ARM"
    assert p.author == Person("Rafał Miłecki", "zajec5@gmail.com")
    assert p.date == datetime(2016, 6, 1, 20, 0, 54, tzinfo=UTC)
    assert p.has_diff and p.files == ("MAINTAINERS",)
    assert p.pw_id == 9148093
    assert p.info.number is None and p.info.version == 1


def test_unencoded_utf8_headers() -> None:
    p = parse_mail((CORPUS / "0014-with-unencoded-utf8-headers.mbox").read_bytes())
    assert p.subject == "MAINTAINERS: Update entry for BCM5301X ARM to include Rafał Miłecki"
    assert p.author.name == "Rafał Miłecki"
    assert p.msgid == "<1464811283-10381-1-git-send-email-zajec5@gmail.com>"


def test_invalid_header_char_is_tolerated() -> None:
    raw = (CORPUS / "0012-invalid-header-char.mbox").read_bytes()
    p = parse_mail(raw)
    assert p.raw == raw
    assert p.subject == "[dpdk-dev] [PATCH] kni: fix compilation error when debug enabled"
    assert p.info.tags == ("dpdk-dev",)
    assert p.files == ("lib/librte_eal/linuxapp/kni/kni_net.c",)
    assert p.date is not None and p.date.utcoffset() == timedelta(hours=1)


def test_mode_only_diff() -> None:
    """0022: `old mode`/`new mode` with no hunk is still a diff touching the file."""
    p = parse_mail((CORPUS / "0022-git-mode-change.mbox").read_bytes())
    assert p.has_diff
    assert p.files == ("scripts/kconfig/nconf-cfg.sh",)
    assert (p.info.number, p.info.total) == (1, 1)
    assert p.recipients == (Person("", "linux-kbuild"),)


def test_folded_message_id_and_two_in_reply_to() -> None:
    raw = (CORPUS / "bugs-multiple-references.mbox").read_bytes()
    second = raw.split(b"\nFrom viresh.kumar@linaro.org ")[2]
    p = parse_mail(b"From viresh.kumar@linaro.org " + second)
    assert (
        p.msgid
        == "<ed9beaec36649c862369a34ea209822c00d86f52.1495511998.git.viresh.kumar@linaro.org>"
    )
    patch1 = "<b9f67b2be37d5e9740a5e1ed85b0e8b4e5c0eb91.1495511998.git.viresh.kumar@linaro.org>"
    cover = "<cover.1495511998.git.viresh.kumar@linaro.org>"
    assert p.in_reply_to == patch1
    assert p.references == (patch1, cover)
    assert p.info.version == 2 and p.number == 2


def test_reply_with_format_flowed_and_quoted_diff() -> None:
    data = (CORPUS / "bugs-multiple-content-types.mbox").read_bytes()
    reply = data[data.index(b"\nFrom mboxrd@z", 10) + 1 :]
    p = parse_mail(reply)
    assert p.subject.startswith("Re: [PATCH -next]")
    assert p.author == Person("Björn Töpel", "bjorn.topel@intel.com")
    assert not p.has_diff, "a quoted (> ) diff is not a diff"
    assert "Acked-by: Björn Töpel <bjorn.topel@intel.com>" in body_text(reply)
    assert p.in_reply_to == "<20190820013652.147041-1-yuehaibing@huawei.com>"


def test_recipients_from_to_and_cc() -> None:
    p = parse_mail(_first_mail("bugs-multiple-content-types.mbox"))
    emails = [r.email for r in p.recipients]
    assert emails[0] == "bjorn.topel@intel.com"
    assert "yuehaibing@huawei.com" in emails and "netdev@vger.kernel.org" in emails
    assert len(emails) == 13


def test_rfc2047_subject_qp_body_and_headers() -> None:
    p = parse_mail((BAD / "encoded-qp.eml").read_bytes())
    assert p.subject == "[PATCH v2 1/2] net: café fix"
    assert (p.info.version, p.number, p.info.total) == (2, 1, 2)
    assert p.msgid == "<qp-1@example.com>"
    assert p.author == Person("Jörg Tester", "joerg@example.com")
    assert p.in_reply_to == "<parent-a@example.com>"
    assert p.references == (
        "<root@example.com>",
        "<parent-a@example.com>",
        "<parent-b@example.com>",
    )
    assert p.recipients == (
        Person("Netdev", "netdev@vger.kernel.org"),
        Person("Doe, John", "jd@example.com"),
        Person("Björn", "bjorn@example.com"),
    )
    assert p.pw_id == 4242
    assert p.files == ("net/café.c",)
    assert "+b=1;" in body_text(p.raw)


def test_multipart_patch_attachment_and_html_ignored() -> None:
    p = parse_mail((BAD / "multipart-attachment.eml").read_bytes())
    assert p.has_diff
    assert p.files == ("drivers/a.c",), "the text/html part must not count"
    text = body_text(p.raw)
    assert "Please apply the attached patch." in text and "Signed-off-by: A" in text


def test_binary_diff() -> None:
    p = parse_mail((BAD / "binary-diff.eml").read_bytes())
    assert p.has_diff and p.files == ("firmware/blob.bin",)


def test_latin1_headers_never_crash() -> None:
    p = parse_mail((BAD / "latin1-subject.eml").read_bytes())
    assert p.subject == "[PATCH] net: fix café ÿ handling"
    assert p.author == Person("Jörg Tester", "joerg@example.com")
    assert p.has_diff and p.files == ("net/core/dev.c",)
    assert "Signed-off-by: Jörg Tester" in body_text(p.raw)


def test_missing_message_id_gets_stable_synthetic_one() -> None:
    raw = (BAD / "no-message-id.eml").read_bytes()
    a, b = parse_mail(raw), parse_mail(raw)
    assert a.msgid == b.msgid and a.msgid.startswith("<") and a.msgid.endswith("@patchci.invalid>")
    assert a.has_diff and a.date is None


@pytest.mark.parametrize(
    "name,reason",
    [
        ("empty.eml", "empty mail"),
        ("garbage.bin", "no mail headers found"),
        ("broken-headers.eml", "no mail headers found"),
        ("no-id-no-subject.eml", "no Message-Id and no Subject header"),
    ],
)
def test_malformed_mail(name: str, reason: str) -> None:
    with pytest.raises(MalformedMail) as ei:
        parse_mail((BAD / name).read_bytes())
    assert str(ei.value) == reason
    assert isinstance(ei.value, PatchError)


def test_body_text_never_raises_on_garbage() -> None:
    assert isinstance(body_text((BAD / "garbage.bin").read_bytes()), str)
    assert body_text(b"") == ""


def test_unparsable_date_is_none_and_naive_date_is_utc() -> None:
    base = b"Subject: [PATCH] x\nMessage-Id: <d@x>\n"
    assert parse_mail(base + b"Date: yesterday-ish\n\nhi\n").date is None
    d = parse_mail(base + b"Date: Tue, 23 May 2017 10:15:11 -0000\n\nhi\n").date
    assert d == datetime(2017, 5, 23, 10, 15, 11, tzinfo=UTC)


def test_crlf_mail_and_plain_unified_diff() -> None:
    raw = (
        b"Subject: [PATCH] a\r\nMessage-Id: <crlf@x>\r\nFrom: A <a@x>\r\n\r\n"
        b"--- old/README\t2020-01-01\r\n+++ new/README\t2020-01-02\r\n@@ -1 +1 @@\r\n-a\r\n+b\r\n"
    )
    p = parse_mail(raw)
    assert p.author == Person("A", "a@x")
    assert p.has_diff and p.files == ("README",)


def test_find_diff_rename_and_new_file() -> None:
    text = (
        "diff --git a/old name.c b/new name.c\nsimilarity index 90%\n"
        "rename from old name.c\nrename to new name.c\n"
        "diff --git a/added.c b/added.c\nnew file mode 100644\n--- /dev/null\n+++ b/added.c\n"
        "@@ -0,0 +1 @@\n+x\n"
    )
    assert find_diff(text) == (True, ("old name.c", "new name.c", "added.c"))
    assert find_diff("just words\n--- not a diff\n") == (False, ())


def test_twenty_megabyte_patch_parses_quickly(tmp_path: Path) -> None:
    hunk = "".join(
        f"+line {i} of a very large generated file, padding padding\n" for i in range(350_000)
    )
    raw = (
        "From: Big <big@example.com>\nSubject: [PATCH] huge: add table\nMessage-Id: <big@x>\n\n"
        "Signed-off-by: Big <big@example.com>\n---\n"
        "diff --git a/huge/table.c b/huge/table.c\nnew file mode 100644\n--- /dev/null\n"
        f"+++ b/huge/table.c\n@@ -0,0 +1,350000 @@\n{hunk}"
    ).encode()
    assert len(raw) > 20_000_000
    path = tmp_path / "big.patch"
    path.write_bytes(raw)
    start = time.monotonic()
    p = parse_mail(path.read_bytes())
    elapsed = time.monotonic() - start
    assert p.has_diff and p.files == ("huge/table.c",)
    assert elapsed < 10, f"20 MB mail took {elapsed:.1f}s"


def test_base64_single_part_body() -> None:
    diff = b"Signed-off-by: X <x@y>\n---\ndiff --git a/q.c b/q.c\n--- a/q.c\n+++ b/q.c\n@@ -1 +1 @@\n-a\n+b\n"
    raw = (
        b"Subject: [PATCH] b64\nMessage-Id: <b@x>\nContent-Type: text/plain; charset=utf-8\n"
        b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(diff)
    )
    p = parse_mail(raw)
    assert p.has_diff and p.files == ("q.c",)
    assert body_text(raw) == diff.decode()


def test_format_flowed_is_unwrapped() -> None:
    raw = (
        b"Subject: Re: x\nMessage-Id: <f@x>\nContent-Type: text/plain; format=flowed; delsp=yes\n\n"
        b"Reviewed-by: A Very Long Name \n<long@example.com>\n  indented stuffed line\n-- \nsig\n"
    )
    assert body_text(raw) == (
        "Reviewed-by: A Very Long Name<long@example.com>\n indented stuffed line\n-- \nsig\n"
    )


def test_bogus_encoded_words_do_not_crash() -> None:
    raw = b"Subject: =?rot13?q?uryyb?= =?x-bogus?b?aGk=?= [PATCH] x\nMessage-Id: <e@x>\n\n"
    assert parse_mail(raw).subject == "uryybhi [PATCH] x"
