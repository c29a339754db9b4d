"""The expectations file: validation (through `patchci expectations check`, the command a
maintainer runs), matching by test, subtest, scope and kernel version, and expiry."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from patchci.analysis.expectations import Scope, in_range, parse
from patchci.cli import main
from patchci.errors import ConfigError

TODAY = date(2026, 12, 7)

GOOD = """
[[expect]]
test = "net/mptcp-*"
executor = "vmksft-*"
kernel = ">=6.1, <6.7"
outcome = "fail"
reason = "needs a newer iproute2 in the guest"
link = "https://bugzilla.kernel.org/show_bug.cgi?id=1"
until = 2027-03-31

[[expect]]
test = "net/tcp-ao-sh"
subtest = "*ipv6*"
outcome = "flaky"
reason = "ipv6 DAD races"

[[expect]]
test = "net/old-sh"
outcome = "fail"
reason = "removed upstream"
until = 2026-11-30
"""


@pytest.mark.parametrize(
    ("spec", "version", "ok"),
    [
        (">=6.1, <6.7", "6.1.192", True),
        (">=6.1, <6.7", "6.7.0", False),
        (">=6.1, <6.7", "6.6.63-rc1+", True),
        ("6.1", "6.1.192", True),  # a bare major.minor: any sublevel
        ("6.1", "6.12.0", False),
        ("6.1.5", "6.1.50", False),
        ("<6.12", "6.12.0-rc4", False),
        ("!=6.6", "6.6.1", True),  # != compares the whole version: 6.6.1 is not 6.6.0
        (">6", "not a version", False),
    ],
)
def test_kernel_ranges(spec: str, version: str, ok: bool) -> None:
    assert in_range(version, spec) is ok


@pytest.mark.parametrize(
    ("scope", "group", "name", "outcome", "subtests", "entry"),
    [
        (Scope("net-next", "nn", "vmksft-mptcp", "6.6.3"), "net", "mptcp-join-sh", "fail", (), 1),
        (Scope("net-next", "nn", "vmksft-mptcp", "6.12.0"), "net", "mptcp-join-sh", "fail", (), None),
        (Scope("net-next", "nn", "vmksft-mptcp", None), "net", "mptcp-join-sh", "fail", (), None),
        (Scope("net-next", "nn", "local", "6.6.3"), "net", "mptcp-join-sh", "fail", (), None),
        (Scope(), "net", "mptcp-join-sh", "skip", (), None),  # expects a failure, not a skip
        (Scope(), "net", "tcp-ao-sh", "fail", ("a/ipv6-x", "b/ipv6-y"), 2),  # flaky covers fail
        (Scope(), "net", "tcp-ao-sh", "fail", ("a/ipv6-x", "b/ipv4"), None),  # not every one
        (Scope(), "net", "tcp-ao-sh", "fail", (), None),  # a subtest entry needs subtests
        (Scope(), "net", "tcp-ao-sh", "flaky", ("a/ipv6",), 2),
        (Scope(), "net", "old-sh", "fail", (), None),  # expired: no longer applies
    ],
)
def test_matching(
    scope: Scope, group: str, name: str, outcome: str, subtests: tuple[str, ...],
    entry: int | None,
) -> None:  # fmt: skip
    m = parse(GOOD).match(scope, group, name, outcome, subtests, today=TODAY)
    assert (m.index if m else None) == entry


def test_expired_entries_are_listed_and_stop_applying() -> None:
    x = parse(GOOD)
    assert [m.index for m in x.expired(TODAY)] == [3]
    assert [m.index for m in x.live(TODAY)] == [1, 2]
    assert [m.index for m in x.live(date(2026, 11, 30))] == [1, 2, 3]  # `until` is inclusive


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('[[expect]]\ntest = "a/b"\noutcome = "fial"\nreason = "x"\n',
         "entry 1.outcome: Input should be 'fail', 'skip' or 'flaky'"),
        ('[[expect]]\ntest = "a/b"\noutcome = "fail"\nreason = "x"\n[[expect]]\ntest = "a"\n'
         'outcome = "fail"\nreason = "y"\n', "entry 2.test: 'a' is not '<group>/<name>'"),
        ('[[expect]]\ntest = "a/b"\noutcome = "fail"\nreason = "x"\nkernel = "6.x"\n',
         "entry 1.kernel: not a version condition: '6.x'"),
        ('[[expect]]\ntest = "a/b"\noutcome = "fail"\nreason = "x"\nuntill = 2027-01-01\n',
         "entry 1.untill: unknown key (typo?)"),
        ('[[expect]]\ntest = "a/b"\noutcome = "fail"\n', "entry 1.reason: required key"),
        ('[[expect]]\ntest = "a/b"\noutcome = "fail"\nreason = "x"\nuntil = "soon"\n',
         "entry 1.until: Input should be a valid date"),
        ('[[expect]\n', "not valid TOML"),
    ],
)  # fmt: skip
def test_check_names_the_bad_entry_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, error: str
) -> None:
    f = tmp_path / "expect.toml"
    f.write_text(text)
    assert main(["expectations", "check", str(f)]) == 2
    err = capsys.readouterr().err
    assert error in err and "Traceback" not in err
    with pytest.raises(ConfigError):
        parse(text)


def test_check_lists_entries_in_force_and_warns_about_expired(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the command reads today's date: dates around it, so the test does not expire
    today = datetime.now(UTC).date()
    soon, past = today + timedelta(days=30), today - timedelta(days=1)
    f = tmp_path / "expect.toml"
    f.write_text(GOOD.replace("2027-03-31", str(soon)).replace("2026-11-30", str(past)))
    assert main(["expectations", "check", str(f)]) == 0
    out = capsys.readouterr().out
    assert "3 entries, 2 in force, 1 expired" in out
    assert f"1: net/mptcp-*: fail (executor vmksft-*, kernel >=6.1, <6.7) until {soon}" in out
    assert f"warning: entry 3 (net/old-sh) expired on {past}" in out


def test_config_check_validates_the_configured_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "expect.toml").write_text('[[expect]]\ntest = "a/b"\noutcome = "x"\n')
    cfg = tmp_path / "patchci.toml"
    cfg.write_text(f'data_dir = "{tmp_path}/data"\n[verdicts]\nexpectations = "expect.toml"\n')
    assert main(["config", "check", str(cfg)]) == 2
    assert "verdicts.expectations:" in capsys.readouterr().err
    (tmp_path / "expect.toml").write_text(GOOD)
    assert main(["config", "check", str(cfg)]) == 0
