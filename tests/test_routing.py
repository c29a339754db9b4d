"""Series → tree routing: exact tag tokens, MAINTAINERS-style paths, the apply fallback."""

from __future__ import annotations

import pytest

from patchci.model import Tree
from patchci.routing import (
    Route,
    match_tag,
    pattern_specificity,
    route_by_paths,
    route_by_tags,
    route_series,
    series_files,
)
from tests.gitrepo import make_series

NET = Tree("net", "/t/net")
NET_NEXT = Tree("net-next", "/t/net-next")
IWL_NET = Tree("iwl-net", "/t/iwl-net")
BPF_NEXT = Tree("bpf-next", "/t/bpf-next")
BPF_NEXT_NET = Tree("bpf-next-net", "/t/bpf-next-net", tags=("bpf-next/net",))


@pytest.mark.parametrize(
    ("subjects", "cover", "trees", "expected"),
    [
        (["[PATCH net-next v2 3/7] foo: bar"], None, [NET, NET_NEXT], "net-next"),
        # NIPA listed net-next before net because its regex let `net` match `net-next`
        (["[PATCH net-next] foo: bar"], None, [NET_NEXT, NET], "net-next"),
        (["[PATCH iwl-net] iwlwifi: fix"], None, [NET, NET_NEXT, IWL_NET], "iwl-net"),
        (["[bpf-next/net] bpf: x"], None, [NET, NET_NEXT, BPF_NEXT], "bpf-next"),
        (["[PATCH bpf-next/net] bpf: x"], None, [NET, BPF_NEXT, BPF_NEXT_NET], "bpf-next-net"),
        (["[net,v2,1/2] a: b", "[net,v2,2/2] a: c"], None, [NET_NEXT, NET], "net"),
        (["[PATCH net] tcp: fix"], None, [NET, NET_NEXT], "net"),
        (["[PATCH net] tcp: fix"], None, [NET_NEXT, NET], "net"),
        (["[PATCH NET-NEXT] tcp: x"], None, [NET, NET_NEXT], "net-next"),
        (
            ["[RFC PATCH net-next 1/2] a", "[RFC PATCH net-next 2/2] b"],
            None,
            [NET, NET_NEXT],
            "net-next",
        ),
        (["[PATCHv3 net-next] a"], None, [NET, NET_NEXT], "net-next"),
        (["[PATCH 1/2] a", "[PATCH 2/2] b"], "[PATCH net 0/2] fixes", [NET, NET_NEXT], "net"),
        (["[PATCH -next] foo: bar"], None, [NET, NET_NEXT], None),
        (["[PATCH] foo: bar"], None, [NET, NET_NEXT], None),
        (["[RFC PATCH] foo: bar"], None, [NET, NET_NEXT], None),
        (["foo: bar"], None, [NET, NET_NEXT], None),
        (["[PATCH iproute2-next] ip: x"], None, [NET, NET_NEXT], None),
        (
            ["[PATCH net/next] x"],
            None,
            [NET_NEXT],
            None,
        ),  # first component is `net`, not a tree here
    ],
)
def test_route_by_tags(
    subjects: list[str], cover: str | None, trees: list[Tree], expected: str | None
) -> None:
    route = route_by_tags(make_series(subjects, cover=cover), trees)
    if expected is None:
        assert route is None
    else:
        assert route == Route(expected, f"Clearly marked for {expected}", "tags", False)


def test_tag_matching_never_uses_later_path_components() -> None:
    assert match_tag("bpf-next/net", [NET, NET_NEXT]) is None
    assert match_tag("bpf-next/net", [NET, BPF_NEXT]) == BPF_NEXT
    assert match_tag("-next", [NET, NET_NEXT]) is None
    assert match_tag("-next", [NET, Tree("linux-next", "/t", tags=("-next",))]) is not None
    assert match_tag("", [NET]) is None


def test_configured_tags_replace_the_name() -> None:
    wl = Tree("wireless", "/t/wl", tags=("wireless", "wifi"))
    assert route_by_tags(make_series(["[PATCH wifi] x"]), [NET, wl]) == Route(
        "wireless", "Clearly marked for wireless", "tags", False
    )


def test_conflicting_tags_name_both_trees() -> None:
    series = make_series(["[PATCH net 1/2] a", "[PATCH net-next 2/2] b"])
    route = route_by_tags(series, [NET, NET_NEXT])
    assert route is not None and route.tree is None and route.method == "tags"
    assert "net (patch 1 [net])" in route.reason
    assert "net-next (patch 2 [net-next])" in route.reason
    # and route_series does not guess past a conflict
    assert route_series(series, [NET, NET_NEXT], lambda t: True).tree is None


@pytest.mark.parametrize(
    ("pattern", "path", "covered"),
    [
        ("net/", "net/core/dev.c", True),
        ("net/", "net", False),
        ("net/", "netfilter/x.c", False),
        ("net/core", "net/core/dev.c", True),  # a literal directory covers what is below
        ("net/core", "net/core", True),
        ("net/core", "net/corex/a.c", False),
        ("drivers/net/*", "drivers/net/foo.c", True),
        ("drivers/net/*", "drivers/net/eth/foo.c", False),  # `*` stops at `/`
        ("drivers/net/*/", "drivers/net/eth/foo.c", True),
        ("include/net/*.h", "include/net/sock.h", True),
        ("include/net/*.h", "include/net/sock.c", False),
        ("*/net/", "drivers/net/a.c", True),
        ("MAINTAINERS", "MAINTAINERS", True),
        ("", "a", False),
    ],
)
def test_pattern_semantics(pattern: str, path: str, covered: bool) -> None:
    assert (pattern_specificity(pattern, path) > 0) is covered


def test_more_specific_pattern_scores_higher() -> None:
    f = "net/mptcp/pm.c"
    assert pattern_specificity("net/mptcp/", f) > pattern_specificity("net/", f)
    assert pattern_specificity("net/mptcp/pm.c", f) > pattern_specificity("net/mptcp/*", f)


MPTCP = Tree("mptcp", "/t/mptcp", paths=("net/mptcp/", "include/net/mptcp.h"))
NETP = Tree("net", "/t/net", paths=("net/", "drivers/net/", "include/net/"))
NEXTP = Tree("net-next", "/t/net-next", paths=("net/", "drivers/net/", "include/net/"))
BPFP = Tree("bpf", "/t/bpf", paths=("kernel/bpf/", "net/core/filter.c"))


@pytest.mark.parametrize(
    ("files", "trees", "expected"),
    [
        ([["net/mptcp/pm.c"]], [NETP, MPTCP], "mptcp"),
        ([["net/mptcp/pm.c"], ["include/net/mptcp.h"]], [NETP, MPTCP], "mptcp"),
        # one file outside mptcp: only net covers everything
        ([["net/mptcp/pm.c", "net/ipv4/tcp.c"]], [MPTCP, NETP], "net"),
        ([["net/core/filter.c"]], [NETP, BPFP], "bpf"),
        ([["kernel/bpf/core.c", "net/core/filter.c"]], [NETP, BPFP], "bpf"),
        ([["fs/ext4/inode.c"]], [NETP, MPTCP], None),
        ([["net/ipv4/tcp.c"]], [NETP, NEXTP], None),  # a tie is no decision
        ([[]], [NETP], None),
    ],
)
def test_route_by_paths(files: list[list[str]], trees: list[Tree], expected: str | None) -> None:
    series = make_series([f"[PATCH {i + 1}/{len(files)}] x" for i in range(len(files))], files)
    route = route_by_paths(series, trees)
    if expected is None:
        assert route is None
    else:
        assert route == Route(
            expected, f"Guessed tree name to be {expected} (paths)", "paths", True
        )


def test_path_patterns_override_tree_paths() -> None:
    series = make_series(["[PATCH] x"], [["fs/ext4/inode.c"]])
    assert route_by_paths(series, [NETP]) is None
    route = route_by_paths(series, [NETP], {"net": ["fs/"]})
    assert route is not None and route.tree == "net"


def test_series_files_falls_back_to_the_raw_diff() -> None:
    from dataclasses import replace

    series = make_series(["[PATCH] x"])
    raw = b"Subject: x\n\n---\ndiff --git a/net/a.c b/net/b.c\n--- a/net/a.c\n+++ b/net/b.c\n"
    series = replace(series, patches=(replace(series.patches[0], raw=raw),))
    assert series_files(series) == ["net/a.c", "net/b.c"]


def test_route_series_order_tags_paths_applies() -> None:
    tagged = make_series(["[PATCH net] x"], [["net/mptcp/pm.c"]])
    assert route_series(tagged, [NETP, MPTCP]).tree == "net"  # tag beats paths
    by_path = make_series(["[PATCH] x"], [["net/mptcp/pm.c"]])
    route = route_series(by_path, [NETP, MPTCP], lambda t: t.name == "net")
    assert route == Route("mptcp", "Guessed tree name to be mptcp (paths)", "paths", True)


def test_route_series_applies_among_tied_path_candidates() -> None:
    series = make_series(["[PATCH] tcp: x"], [["net/ipv4/tcp.c"]])
    tried: list[str] = []

    def applies(tree: Tree) -> bool:
        tried.append(tree.name)
        return tree.name == "net-next"

    route = route_series(series, [MPTCP, NETP, NEXTP], applies)
    assert route == Route(
        "net-next", "Guessed tree name to be net-next (paths, applies)", "applies", True
    )
    assert tried == ["net", "net-next"]  # mptcp does not cover the files: never tried


def test_route_series_applies_in_config_order() -> None:
    series = make_series(["[PATCH] x"])
    route = route_series(series, [NET, NET_NEXT], lambda t: True)
    assert route == Route("net", "Guessed tree name to be net (applies)", "applies", True)


def test_route_series_nothing_fits() -> None:
    series = make_series(["[PATCH] x"])
    route = route_series(series, [NET, NET_NEXT], lambda t: False)
    assert route == Route(
        None,
        "no tree tag, no path match, does not apply to any of: net, net-next",
        "none",
        False,
    )
    route = route_series(series, [NET, NET_NEXT])
    assert route.tree is None and "not tried applying" in route.reason
    assert route_series(series, []).reason.endswith("(no trees configured)")


def test_not_for_us_when_no_file_is_under_any_trees_paths() -> None:
    """NIPA's "Not a local patch": no file of the series under a local path."""
    tried: list[str] = []

    def applies(tree: Tree) -> bool:
        tried.append(tree.name)
        return True

    foreign = make_series(["[PATCH] x"], [["sound/core/pcm.c", "Documentation/a.rst"]])
    route = route_series(foreign, [NETP, MPTCP], applies)
    assert route.tree is None and route.method == "not-local" and not tried
    assert route.reason == ("Not for this CI: none of its 2 files (Documentation/a.rst, ...) "
                            "is under a tree's paths")  # fmt: skip
    # one covered file is enough to try the trees (NIPA: some patch touches a local path)
    mixed = make_series(["[PATCH] x"], [["sound/core/pcm.c", "net/core/dev.c"]])
    assert route_series(mixed, [NETP, MPTCP], lambda t: True).tree == "net"
    # a tag still wins, and trees without paths keep the apply fallback
    assert route_series(make_series(["[PATCH net] x"], [["sound/a.c"]]), [NETP]).tree == "net"
    assert route_series(foreign, [NET, NET_NEXT], lambda t: True).tree == "net"
