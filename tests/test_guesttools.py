"""missing_commands on real guest output: a test that failed because the executor lacks a
tool is told from one that failed on its own (kernel executor: ERROR, not FAIL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchci.executor.guesttools import install_hint, missing_commands

GUEST = Path(__file__).resolve().parent / "data" / "guest"


def test_mptcp_connect_without_ping() -> None:
    """Recorded from examples/mptcp.toml's first run here (6.12, host without ping)."""
    text = (GUEST / "mptcp_connect-without-ping.log").read_text()
    assert missing_commands(text) == ["ping"]


def test_a_real_failure_names_no_missing_command() -> None:
    """userspace_pm.sh failing its own checks (same run): nothing is missing."""
    assert missing_commands((GUEST / "userspace_pm-fails.log").read_text()) == []


@pytest.mark.parametrize(
    ("line", "found"),
    [
        ("# ./mptcp_join.sh: line 12: iptables: command not found", ["iptables"]),
        ("# sh: 3: socat: not found", ["socat"]),
        ("env: 'ethtool': No such file or directory", ["ethtool"]),
        ('exec of "tc" failed: No such file or directory', ["tc"]),
        ("# [FAIL] no such route", []),
        ("# ping: connect: Network is unreachable", []),
    ],
)
def test_missing_command_lines(line: str, found: list[str]) -> None:
    assert missing_commands(line) == found


def test_install_hint_names_the_package() -> None:
    assert install_hint(["ping", "frob"]) == "ping (apt-get install iputils-ping), frob"
