"""What a test left behind in the VM: network namespaces, interfaces, routes, rules and
`net.*` sysctls of the initial namespace, from a snapshot taken before and after it.

The guest's runner writes the snapshots (`SNAPSHOT_SH`, POSIX sh, only `ip` and `sysctl`);
the comparison is pure. A test that passed but left something is a warning on that test,
since the next test in the same boot starts from a changed machine.
"""

from __future__ import annotations

import re

# The shell function the runner defines: `snap FILE`. Kernel-owned routes (local,
# broadcast, multicast, anycast) come and go with addresses; `expires` counts down.
SNAPSHOT_SH = r"""snap() {
  {
    echo "## netns"; ip netns list 2>/dev/null | cut -d' ' -f1
    echo "## link"; ip -o link show 2>/dev/null | cut -d: -f2 | cut -d@ -f1 | tr -d ' '
    echo "## route"
    ip route show table all 2>/dev/null | grep -v '^\(local\|broadcast\|multicast\) '
    ip -6 route show table all 2>/dev/null | grep -v '^\(local\|multicast\|anycast\) '
    echo "## rule"; ip rule show 2>/dev/null; ip -6 rule show 2>/dev/null
    echo "## sysctl"; sysctl -a 2>/dev/null | grep '^net\.'
  } | sed 's/ expires [0-9]*sec//' > "$1"
}"""

SECTIONS = ("netns", "link", "route", "rule", "sysctl")
# Counters and per-boot secrets, not settings a test changes.
VOLATILE_SYSCTLS = re.compile(r"(nf_conntrack_count|\.stable_secret|\.base_reachable_time_ms"
                              r"|fastopen_key|netdev_rss_key|\.hash_secret)")  # fmt: skip
MAX_SHOWN = 8


def parse_snapshot(text: str) -> dict[str, list[str]]:
    """Section name → its non-empty lines, in order."""
    out: dict[str, list[str]] = {s: [] for s in SECTIONS}
    current: str | None = None
    for raw in text.splitlines():
        line = " ".join(raw.split())
        if line.startswith("## "):
            current = line[3:].strip()
            out.setdefault(current, [])
        elif line and current is not None:
            out[current].append(line)
    return out


def _sysctls(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        key, sep, value = line.partition(" = ")
        if sep and not VOLATILE_SYSCTLS.search(key):
            out[key.strip()] = " ".join(value.split())
    return out


def leftovers(before: str, after: str) -> list[str]:
    """What is in *after* and not in *before*, one line each: a namespace, an interface,
    a route or rule added, a sysctl whose value changed (`key: old -> new`). A sysctl that
    appeared belongs to a new interface or namespace, already named."""
    b, a = parse_snapshot(before), parse_snapshot(after)
    out: list[str] = []
    for section, label in (("netns", "netns"), ("link", "interface"), ("route", "route"),
                           ("rule", "rule")):  # fmt: skip
        had = set(b.get(section, []))
        out += [f"{label} {x}" for x in dict.fromkeys(a.get(section, [])) if x not in had]
    old, new = _sysctls(b.get("sysctl", [])), _sysctls(a.get("sysctl", []))
    out += [f"sysctl {k}: {old[k]} -> {v}" for k, v in new.items() if k in old and old[k] != v]
    return out


def summary(items: list[str]) -> str:
    """One line for the test's note: the first few, and how many in all."""
    shown = "; ".join(items[:MAX_SHOWN])
    more = f" (+{len(items) - MAX_SHOWN} more)" if len(items) > MAX_SHOWN else ""
    return f"left behind {len(items)}: {shown}{more}"
