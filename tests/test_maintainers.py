"""MAINTAINERS parsing and matching, checked against real get_maintainer.pl outputs.

tests/data/checks/MAINTAINERS-6.1.xz is Linux 6.1's MAINTAINERS (Debian linux-source-6.1);
each get_maintainer-<file>.txt is `scripts/get_maintainer.pl --no-git -f <file>` of the same
tree (get_maintainer-sample-keyword.patch.txt: run on sample-keyword.patch, for K:).
"""

from __future__ import annotations

import lzma
from functools import cache
from pathlib import Path

import pytest

from patchci.maintainers import (
    Entry,
    MailingList,
    entries_for,
    file_matches,
    get_maintainer_output,
    parse_list,
    parse_maintainers,
    parse_person,
    pattern_depth,
    recipients,
)
from patchci.model import Person

DATA = Path(__file__).parent / "data" / "checks"


@cache
def _entries() -> tuple[Entry, ...]:
    with lzma.open(DATA / "MAINTAINERS-6.1.xz", "rt", encoding="utf-8") as f:
        return tuple(parse_maintainers(f.read()))


def _gm(name: str) -> list[tuple[Person, str]]:
    return get_maintainer_output((DATA / f"get_maintainer-{name}.txt").read_text().splitlines())


def test_parse_real_file() -> None:
    es = _entries()
    assert len(es) > 2500
    assert es[0].name == "3C59X NETWORK DRIVER"  # the header's indented examples are skipped
    assert es[-1].name == "THE REST"
    mptcp = next(e for e in es if e.name == "NETWORKING [MPTCP]")
    assert mptcp.maintainers == (
        Person("Mat Martineau", "mathew.j.martineau@linux.intel.com"),
        Person("Matthieu Baerts", "matthieu.baerts@tessares.net"),
    )
    assert mptcp.reviewers == ()
    assert [ml.address for ml in mptcp.lists] == ["netdev@vger.kernel.org", "mptcp@lists.linux.dev"]
    assert mptcp.status == "Maintained"
    assert "net/mptcp/" in mptcp.files
    assert mptcp.values("B") == ("https://github.com/multipath-tcp/mptcp_net-next/issues",)
    assert mptcp.line == 14439


def test_get_maintainer_output_parser() -> None:
    got = _gm("protocol.c")
    assert len(got) == 9
    assert got[0] == (
        Person("Mat Martineau", "mathew.j.martineau@linux.intel.com"),
        "maintainer:NETWORKING [MPTCP]",
    )
    assert got[2] == (
        Person("David S. Miller", "davem@davemloft.net"),
        "maintainer:NETWORKING [GENERAL]",
    )
    assert got[-1] == (Person("", "linux-kernel@vger.kernel.org"), "open list")
    # roles with parentheses inside: "maintainer:NETWORKING DRIVERS (WIRELESS)"
    ath = _gm("main.c")
    assert ath[1][1] == "maintainer:NETWORKING DRIVERS (WIRELESS)"
    assert ath[0][0] == Person("Toke Høiland-Jørgensen", "toke@toke.dk")


def test_mptcp_protocol_c_matches_get_maintainer() -> None:
    es = entries_for(["net/mptcp/protocol.c"], _entries())
    assert [e.name for e in es] == ["NETWORKING [MPTCP]", "NETWORKING [GENERAL]", "THE REST"]
    expected = _gm("protocol.c")
    people = [p for p, role in expected if not role.startswith(("open list", "moderated"))]
    lists = [p.email for p, role in expected if role.startswith(("open list", "moderated"))]
    assert [p for e in es for p in e.maintainers if p.email != "torvalds@linux-foundation.org"] == (
        people
    )
    assert [r for e in es for r in e.reviewers] == []
    seen: list[str] = []
    for ml in (ml for e in es for ml in e.lists):
        if ml.address not in seen:
            seen.append(ml.address)
    assert seen == lists
    assert recipients(es) == expected


@pytest.mark.parametrize(
    ("path", "golden"),
    [
        ("net/mptcp/protocol.c", "protocol.c"),
        ("drivers/net/ethernet/intel/e1000/e1000_main.c", "e1000_main.c"),
        ("include/net/sock.h", "sock.h"),
        ("net/ipv6/route.c", "route.c"),
        ("drivers/gpu/drm/tegra/dc.c", "dc.c"),  # N: [^a-z]tegra
        ("tools/testing/selftests/net/mptcp/mptcp_join.sh", "mptcp_join.sh"),
        ("drivers/net/phy/bcm7xxx.c", "bcm7xxx.c"),  # R: with a list as a person
        ("net/bluetooth/hci_core.c", "hci_core.c"),
        ("drivers/net/wireless/ath/ath9k/main.c", "main.c"),
        ("drivers/char/random.c", "random.c"),  # X: drivers/char/random.c in CHAR and MISC
        ("drivers/char/mem.c", "mem.c"),
        ("drivers/usb/cdns3/cdnsp-gadget.c", "cdnsp-gadget.c"),  # X: drivers/usb/cdns3/cdnsp*
    ],
)
def test_recipients_match_real_get_maintainer(path: str, golden: str) -> None:
    assert recipients(entries_for([path], _entries())) == _gm(golden)


def test_intel_e1000_details() -> None:
    es = entries_for(["drivers/net/ethernet/intel/e1000/e1000_main.c"], _entries())
    assert es[0].name == "INTEL ETHERNET DRIVERS"
    assert es[0].status == "Supported"
    wired = es[0].lists[0]
    assert wired == MailingList("intel-wired-lan@lists.osuosl.org", "moderated for non-subscribers")
    assert wired.moderated and not wired.subscribers_only


def test_excluded_entry_is_dropped() -> None:
    names = [e.name for e in entries_for(["drivers/char/random.c"], _entries())]
    assert "RANDOM NUMBER DRIVER" in names
    assert "CHAR and MISC DRIVERS" not in names
    names = [e.name for e in entries_for(["drivers/char/mem.c"], _entries())]
    assert "CHAR and MISC DRIVERS" in names


def test_keyword_on_patch_content() -> None:
    patch = (DATA / "sample-keyword.patch").read_text()
    es = entries_for(["net/mptcp/protocol.c"], _entries(), patch)
    assert es[-1].name == "PTP HARDWARE CLOCK SUPPORT"
    assert recipients(es) == _gm("sample-keyword.patch")
    # the same keyword on a context line (neither + nor -) does not count
    context_only = patch.replace("+#include <linux/ptp_clock_kernel.h>", " #include <linux/ptp.h>")
    names = [e.name for e in entries_for(["net/mptcp/protocol.c"], _entries(), context_only)]
    assert "PTP HARDWARE CLOCK SUPPORT" not in names


def test_several_files_no_duplicates() -> None:
    es = entries_for(["net/mptcp/protocol.c", "include/net/sock.h", "net/mptcp/pm.c"], _entries())
    assert [e.name for e in es] == ["NETWORKING [MPTCP]", "NETWORKING [GENERAL]", "THE REST"]


@pytest.mark.parametrize(
    ("pattern", "path", "hit"),
    [
        ("drivers/net/", "drivers/net/a/b/c.c", True),
        ("drivers/net/*", "drivers/net/c.c", True),
        ("drivers/net/*", "drivers/net/a/c.c", False),  # "all files in, but not below"
        ("*/net/*", "foo/net/x.c", True),
        ("*/net/*", "foo/net/y/x.c", False),
        ("net/mptcp", "net/mptcp/protocol.c", True),  # a directory named without a slash
        ("net/mptcp", "net/mptcpx/protocol.c", False),
        ("drivers/edac/altera_edac.[ch]", "drivers/edac/altera_edac.h", True),
        ("drivers/edac/altera_edac.[ch]", "drivers/edac/altera_edacxh", False),  # . is literal
        ("drivers/input/misc/da72??.[ch]", "drivers/input/misc/da7280.c", True),
        ("include/net/sock.h", "include/net/sock.h", True),
        ("include/net/sock.h", "include/net/sock.c", False),
        ("*", "Makefile", True),
        ("*", "net/Makefile", False),
        ("*/", "net/Makefile", True),
        ("", "x", False),
    ],
)
def test_file_matches(pattern: str, path: str, hit: bool) -> None:
    assert file_matches(pattern, path) is hit


def test_pattern_depth() -> None:
    assert pattern_depth("net/") == 1
    assert pattern_depth("net/mptcp/") == 2
    assert pattern_depth("net/mptcp/protocol.c") == 3
    assert pattern_depth("*") == -1 and pattern_depth("*/") == -1


def test_inline_entries_and_regex_errors() -> None:
    text = """\
Header prose that is not an entry.
\tM: *Mail* patches to: FullName <address@domain>

FOO DRIVER
M:\tJane Dev <jane@example.org>
R:\t"Doe, John" <john@example.org>
L:\tfoo@lists.example.org (subscribers-only)
S:\tOdd Fixes
F:\tdrivers/foo/
X:\tdrivers/foo/legacy/
N:\t[unclosed
K:\t(?P<broken
"""
    (e,) = parse_maintainers(text)
    assert e.name == "FOO DRIVER"
    assert e.reviewers == (Person("Doe, John", "john@example.org"),)
    assert e.lists[0].subscribers_only
    assert entries_for(["drivers/foo/a.c"], [e], "+anything") == [e]
    assert entries_for(["drivers/foo/legacy/a.c"], [e]) == []
    # odd fixer role; subscribers-only lists are not printed by get_maintainer
    assert recipients([e]) == [
        (Person("Jane Dev", "jane@example.org"), "odd fixer:FOO DRIVER"),
        (Person("Doe, John", "john@example.org"), "reviewer:FOO DRIVER"),
    ]


@pytest.mark.parametrize(
    ("text", "person"),
    [
        ("Jane <j@x.org>", Person("Jane", "j@x.org")),
        (
            '"David S. Miller" <davem@davemloft.net>',
            Person("David S. Miller", "davem@davemloft.net"),
        ),
        ("<j@x.org>", Person("", "j@x.org")),
        ("j@x.org", Person("", "j@x.org")),
        ("no address here", None),
        ("", None),
    ],
)
def test_parse_person(text: str, person: Person | None) -> None:
    assert parse_person(text) == person


def test_parse_list() -> None:
    assert parse_list("a@b.org") == MailingList("a@b.org", "")
    ml = parse_list("alsa-devel@alsa-project.org (moderated for non-subscribers)")
    assert ml.address == "alsa-devel@alsa-project.org" and ml.moderated


def test_get_maintainer_output_skips_non_people() -> None:
    lines = ["", "git git://git.kernel.org/pub/scm/foo.git", "Maintained", "a@b.org"]
    assert get_maintainer_output(lines) == [(Person("", "a@b.org"), "")]
