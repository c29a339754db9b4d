"""Commands a selftest needs from the executor. virtme-ng boots the branch's kernel on the
host's own root file system, so a tool the host lacks is missing in the guest too: the
first MPTCP run here failed mptcp_connect.sh with `exec of "ping" failed` in every
namespace. That is the executor's fault, never the patch's: a failing test whose output
names a missing command is ERROR (ours), with the package to install.
"""

from __future__ import annotations

import re
import shutil

# What the networking selftests call, and the Debian package of each.
GUEST_TOOLS: dict[str, str] = {
    "ping": "iputils-ping",
    "iptables": "iptables",
    "ip6tables": "iptables",
    "ip": "iproute2",
    "ss": "iproute2",
    "tc": "iproute2",
    "nstat": "iproute2",
    "ethtool": "ethtool",
    "socat": "socat",
}

_PATTERNS = (
    re.compile(r'exec of "([\w.+-]+)" failed: No such file or directory'),  # ip netns exec
    re.compile(r"(?:^|[\s:])([\w.+-]+): command not found"),  # bash
    re.compile(r"^(?:# )*(?:\S+: )?\d+: ([\w.+-]+): not found$"),  # dash: `sh: 3: ping: not found`
    re.compile(r"env: '([\w.+-]+)': No such file or directory"),
)


def missing_commands(text: str) -> list[str]:
    """The commands a test's output says could not be run, in first-seen order. Pure."""
    found: dict[str, None] = {}
    for line in text.splitlines():
        for pat in _PATTERNS:
            for m in pat.finditer(line.strip()):
                found[m.group(1)] = None
    return list(found)


def install_hint(commands: list[str]) -> str:
    """`ping (apt-get install iputils-ping), foo` for a note."""
    return ", ".join(
        f"{c} (apt-get install {GUEST_TOOLS[c]})" if c in GUEST_TOOLS else c for c in commands
    )


def absent_tools() -> list[str]:
    """GUEST_TOOLS missing on this host (so in its guests), for a preflight warning."""
    return [c for c in GUEST_TOOLS if shutil.which(c) is None]
