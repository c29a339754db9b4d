"""parse_subject / patchwork_name against what Patchwork v3.2.1 does with the same subjects."""

from __future__ import annotations

import pytest

from patchci.subject import parse_subject, patchwork_name, strip_reply

# subject, patchwork name, version, number, total, tags, is_rfc, has_patch_prefix
CASES = [
    (
        "[PATCH net-next v2 3/7] net: foo: bar",
        "[net-next,v2,3/7] net: foo: bar",
        2,
        3,
        7,
        ("net-next",),
        False,
        True,
    ),
    ("[PATCH iwl-net] ice: fix", "[iwl-net] ice: fix", 1, None, None, ("iwl-net",), False, True),
    (
        "[bpf-next/net] bpf: x",
        "[bpf-next/net] bpf: x",
        1,
        None,
        None,
        ("bpf-next/net",),
        False,
        False,
    ),
    (
        "[net,v2,1/2] net: ieee802154: remove explicit set skb->sk",
        "[net,v2,1/2] net: ieee802154: remove explicit set skb->sk",
        2,
        1,
        2,
        ("net",),
        False,
        False,
    ),
    ("[PATCH v3 0/4] cover title", "[v3,0/4] cover title", 3, 0, 4, (), False, True),
    (
        "[RFC PATCH net-next] net: idea",
        "[RFC,net-next] net: idea",
        1,
        None,
        None,
        ("net-next",),
        True,
        True,
    ),
    ("Re: [PATCH] foo: bar", "foo: bar", 1, None, None, (), False, True),
    ("[PATCHv2 1/2] foo: bar", "[PATCHv2,1/2] foo: bar", 2, 1, 2, (), False, True),
    (
        "[Patch 2/2]: powerpc/hotplug/mm: Fix hot-add memory node assoc",
        "[2/2] : powerpc/hotplug/mm: Fix hot-add memory node assoc",
        1,
        2,
        2,
        (),
        False,
        True,
    ),
    (
        "[dpdk-dev] [PATCH] kni: fix compilation error when debug enabled",
        "[dpdk-dev] kni: fix compilation error when debug enabled",
        1,
        None,
        None,
        ("dpdk-dev",),
        False,
        True,
    ),
    ("[PATCH -next] bpf: Use X", "[-next] bpf: Use X", 1, None, None, ("-next",), False, True),
    (
        "[PATCH V2 0/4] PM / OPP: Minor cleanups",
        "[V2,0/4] PM / OPP: Minor cleanups",
        2,
        0,
        4,
        (),
        False,
        True,
    ),
    # Patchwork's parse_version() falls back to "(vN)" in the title.
    (
        "[PATCH net-next 0/4] net: dsa: Multi-CPU ground work (v3)",
        "[net-next,0/4] net: dsa: Multi-CPU ground work (v3)",
        3,
        0,
        4,
        ("net-next",),
        False,
        True,
    ),
    ("[PATCH1/8] x: y", "[PATCH1/8] x: y", 1, 1, 8, (), False, False),
    ("MAINTAINERS: Update entry", "MAINTAINERS: Update entry", 1, None, None, (), False, False),
    (
        "[PATCH 1/1] kconfig: folded\n\t subject",
        "[1/1] kconfig: folded subject",
        1,
        1,
        1,
        (),
        False,
        True,
    ),
    ("", "", 1, None, None, (), False, False),
    ("[PATCH", "[PATCH", 1, None, None, (), False, False),
]


@pytest.mark.parametrize(
    "subject,name,version,number,total,tags,rfc,has_patch", CASES, ids=[c[0][:40] for c in CASES]
)
def test_parse_subject_table(
    subject: str,
    name: str,
    version: int,
    number: int | None,
    total: int | None,
    tags: tuple[str, ...],
    rfc: bool,
    has_patch: bool,
) -> None:
    info = parse_subject(subject)
    assert patchwork_name(subject) == name
    assert (info.version, info.number, info.total) == (version, number, total)
    assert info.tags == tags
    assert info.is_rfc is rfc
    assert info.has_patch_prefix is has_patch
    assert info.is_cover is (number == 0)


def test_title_excludes_prefixes() -> None:
    assert parse_subject("[PATCH net-next v2 3/7] net: foo: bar").title == "net: foo: bar"
    assert parse_subject("[dpdk-dev] [PATCH] kni: x").prefixes == ("dpdk-dev", "PATCH")


def test_first_version_prefix_wins_like_patchwork() -> None:
    assert parse_subject("[PATCH v3 v4 1/2] x (v9)").version == 3


@pytest.mark.parametrize(
    "subject,rest,stripped",
    [
        ("Re: Re: [PATCH] x", "[PATCH] x", True),
        ("Fwd: x", "x", True),
        ("Regression: x", "Regression: x", False),
    ],
)
def test_strip_reply(subject: str, rest: str, stripped: bool) -> None:
    assert strip_reply(subject) == (rest, stripped)
