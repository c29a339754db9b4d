"""The daemon end to end against the Patchwork emulator: ingest, check, report, once.

The sample series of `patchci demo` (each with the outcome it must reach) are posted to a
FakePatchwork; the daemon polls it over real HTTP, checks them against the demo tree and
posts its checks back. The helpers here are shared by test_ingest_faults and test_deliver.
"""

from __future__ import annotations

import logging
import socket
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from patchci.cli import main
from patchci.config import Settings, build_settings
from patchci.daemon import open_store, run_cycle
from patchci.db.store import Store
from patchci.demo.series import Sample, build_samples
from patchci.demo.tree import build_tree
from patchci.devtools.pwemu import FakePatchwork
from patchci.service.ingest import expire_incomplete
from patchci.sources.patchwork import PatchworkClient

PROJECT = "demo"
SOURCE = "pw"
CHECKS = ("tree_selection", "apply", "signed_off_by", "fixes_tag", "series_format")
PW_STATE = {"pass": "success", "warn": "warning", "fail": "fail"}
# Indexes into build_samples()
CLEAN_3, NET_FIX, NO_SOB, BAD_FIXES, NO_APPLY, WRONG_TAG, NO_TAG, TWO_OF_THREE = range(8)


@dataclass(frozen=True)
class Demo:
    tree: Path
    samples: list[Sample]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """The demo tree and its samples, built once per module (checks only read the tree)."""
    root = tmp_path_factory.mktemp("demo-tree")
    git = build_tree(root / "tree")
    return Demo(Path(git.repo), build_samples(git))


@pytest.fixture
def emu() -> Iterator[FakePatchwork]:
    with FakePatchwork(project=PROJECT, project_name="Demo") as fake:
        yield fake


def make_settings(
    data_dir: Path,
    url: str,
    tree: Path,
    *,
    extra_sources: Sequence[dict[str, Any]] = (),
    first_sources: Sequence[dict[str, Any]] = (),
    **source: Any,
) -> Settings:
    pw = {"name": SOURCE, "type": "patchwork", "url": url, "project": PROJECT}
    pw.update(source)
    checks = list(CHECKS[2:])
    return build_settings(
        {
            "data_dir": str(data_dir),
            "sources": [*first_sources, pw, *extra_sources],
            "trees": [
                {"name": "net", "path": str(tree), "branch": "net", "tags": ["net"],
                 "checks": checks},
                {"name": "net-next", "path": str(tree), "branch": "main", "tags": ["net-next"],
                 "paths": ["drivers/", "net/", "include/"], "checks": checks},
            ],
            "checks": {"series_format": {"options": {"max_patches": 15}}},
        },
        env={},
    )  # fmt: skip


def make_client(
    emu: FakePatchwork, token: str | None = None, project: str = PROJECT, **kw: Any
) -> PatchworkClient:
    """A client that retries without sleeping."""
    kw.setdefault("retries", 2)
    kw.setdefault("timeout", 5.0)
    return PatchworkClient(
        emu.url, project, emu.token if token is None else token, sleep=lambda _s: None, **kw
    )


@dataclass
class Rig:
    """One daemon "process": settings, a store on the SQLite file and a client."""

    emu: FakePatchwork
    settings: Settings
    store: Store
    client: PatchworkClient

    def cycle(self) -> dict[str, int]:
        return run_cycle(self.store, self.settings, {SOURCE: self.client})

    def restart(self, **client_kw: Any) -> Rig:
        """A new process: new Store on the same database file, new client."""
        self.client.close()
        self.store.close()
        return Rig(
            self.emu, self.settings, open_store(self.settings), make_client(self.emu, **client_kw)
        )

    def series_id(self, pw_series: int) -> int | None:
        return self.store.find_series(SOURCE, str(pw_series))

    def state(self, pw_series: int) -> str:
        sid = self.series_id(pw_series)
        assert sid is not None, f"Patchwork series {pw_series} was not stored"
        return self.store.series_row(sid).state

    def patch_ids(self, pw_series: int) -> list[int]:
        return [pid for pid, _ in self.emu.series_patches(pw_series)]


@pytest.fixture
def rig(tmp_path: Path, emu: FakePatchwork, demo: Demo) -> Iterator[Rig]:
    settings = make_settings(tmp_path / "data", emu.url, demo.tree)
    r = Rig(emu, settings, open_store(settings), make_client(emu))
    yield r
    r.client.close()
    r.store.close()


def check_posts(emu: FakePatchwork) -> list[str]:
    """Paths of every check POST the emulator answered, in order."""
    return [r.path for r in emu.requests if r.method == "POST" and "/checks/" in r.path]


def checks_per_context(emu: FakePatchwork, patch_id: int) -> Counter[str]:
    return Counter(c.context for c in emu.checks_for(patch_id))


def assert_once_each(emu: FakePatchwork, patch_ids: Sequence[int]) -> None:
    for pid in patch_ids:
        dup = {k: n for k, n in checks_per_context(emu, pid).items() if n != 1}
        assert not dup, f"patch {pid}: contexts posted more than once: {dup}"


# ---------------------------------------------------------------- the happy path


def test_ingest_posts_every_expected_check_exactly_once(rig: Rig, demo: Demo) -> None:
    emu = rig.emu
    pw_ids = [emu.add_series_from_mbox(s.mbox) for s in demo.samples]

    first = rig.cycle()

    assert first["errors"] == 0
    assert first["new"] == len(demo.samples) - 1  # the 2-of-3 series never completes
    posts = check_posts(emu)
    assert first["posted"] == len(posts) == len(emu.checks) > 0
    for sample, sid in zip(demo.samples, pw_ids, strict=True):
        patches = rig.patch_ids(sid)
        if sample.expect_state != "checked":
            assert rig.state(sid) == sample.expect_state
            assert all(not emu.checks_for(p) for p in patches), sample.label
            continue
        assert rig.state(sid) == "reported", sample.label
        assert_once_each(emu, patches)
        for pid in patches:
            # one POST per check stored: nothing was posted and then lost
            assert posts.count(f"/api/1.3/patches/{pid}/checks/") == len(emu.checks_for(pid))
            got = {c.context: c.state for c in emu.checks_for(pid)}
            assert {"tree_selection", "apply", "series_format"} <= set(got), sample.label
            for check in CHECKS:
                if check in sample.expect:
                    assert got.get(check) == PW_STATE[sample.expect[check]], (sample.label, check)
                elif check in got:
                    assert got[check] == "success", (sample.label, check, got)

    emu.clear_log()
    second = rig.cycle()
    assert second == {"new": 0, "checked": 0, "posted": 0, "errors": 0, "post_failures": 0}
    assert check_posts(emu) == []


def test_cli_ingest_once(
    tmp_path: Path,
    emu: FakePatchwork,
    demo: Demo,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sid = emu.add_series_from_mbox(demo.samples[NO_SOB].mbox)
    monkeypatch.setenv("PATCHCI_TEST_PW_TOKEN", emu.token)
    cfg = tmp_path / "patchci.toml"
    cfg.write_text(
        f"""
data_dir = "data"

[[sources]]
name = "pw"
type = "patchwork"
url = "{emu.url}"
project = "{PROJECT}"
token_env = "PATCHCI_TEST_PW_TOKEN"
retries = 1
timeout = 5

[[trees]]
name = "net-next"
path = "{demo.tree}"
branch = "main"
tags = ["net-next"]
checks = ["signed_off_by", "fixes_tag", "series_format"]
"""
    )

    assert main(["-c", str(cfg), "ingest", "--once"]) == 0

    out = capsys.readouterr().out
    assert "1 new series, 1 checked" in out
    # Progress per series and check, then a summary naming the series and its verdict
    # (`ingest --once` showed nothing for the 26 minutes six kernel series took).
    assert "  series 1: applying to net-next" in out
    assert "  series 1: patch 1/1: signed_off_by" in out
    assert "  series 1: fail (" in out
    assert "series this run" in out and "reported" in out
    assert main(["-c", str(cfg), "series"]) == 0
    listing = capsys.readouterr().out
    assert "verdict" in listing and "fail" in listing  # `series` listed no verdict
    (pid,) = [p for p, _ in emu.series_patches(sid)]
    got = {c.context: c.state for c in emu.checks_for(pid)}
    assert got["signed_off_by"] == "fail"
    assert got["apply"] == "success"
    assert (tmp_path / "data" / "patchci.db").exists()  # data_dir is relative to the file
    # The posts were authenticated with the token from the environment.
    assert {r.authorization for r in emu.requests if r.method == "POST"} == {"Token"}


# ---------------------------------------------------------------- incomplete series


def test_series_completing_ten_minutes_late_is_checked_once_complete(rig: Rig, demo: Demo) -> None:
    emu = rig.emu
    sid = emu.add_series_from_mbox(demo.samples[CLEAN_3].mbox, complete=False)

    first = rig.cycle()
    assert first["errors"] == 0
    assert rig.state(sid) == "incomplete"
    local = rig.series_id(sid)
    assert local is not None
    assert "2 of 3" in rig.store.series_row(local).state_reason
    assert check_posts(emu) == []

    emu.advance(600)
    emu.add_patch_to_series(sid)
    second = rig.cycle()

    assert rig.series_id(sid) == local  # the same row, completed in place
    assert rig.state(sid) == "reported"
    series = rig.store.load_series(local)
    assert series.complete and len(series.patches) == 3
    patches = rig.patch_ids(sid)
    assert [p.pw_id for p in series.patches] == patches
    for pid in patches:
        assert checks_per_context(emu, pid) == Counter({c: 1 for c in CHECKS})
    assert second["posted"] == 3 * len(CHECKS)
    assert rig.cycle()["posted"] == 0
    assert_once_each(emu, patches)


def test_series_that_never_completes_expires_with_a_reason(rig: Rig, demo: Demo) -> None:
    """The reason said only "never completed: incomplete: 2 of 3 patches received"; it now
    names what is missing and for how long."""
    sid = rig.emu.add_series_from_mbox(demo.samples[TWO_OF_THREE].mbox)
    rig.cycle()
    assert rig.state(sid) == "incomplete"
    local = rig.series_id(sid)
    assert local is not None

    # not yet: a day has not passed
    assert expire_incomplete(rig.store, 86400) == 0
    later = datetime.now(UTC) + timedelta(days=2)
    assert expire_incomplete(rig.store, 86400, now=later) == 1

    row = rig.store.series_row(local)
    assert row.state == "expired"
    assert "1 of 3 patches missing" in row.state_reason
    assert check_posts(rig.emu) == []
    assert rig.cycle()["posted"] == 0


def test_expired_series_is_revived_when_its_last_patch_arrives(
    tmp_path: Path, emu: FakePatchwork, demo: Demo
) -> None:
    settings = make_settings(tmp_path, emu.url, demo.tree, incomplete_after=0.001)
    r = Rig(emu, settings, open_store(settings), make_client(emu))
    sid = emu.add_series_from_mbox(demo.samples[CLEAN_3].mbox, complete=False)
    r.cycle()
    assert r.state(sid) == "expired"  # run_cycle expires with the source's own limit

    emu.advance(3600)
    emu.add_patch_to_series(sid)
    r.cycle()
    assert r.state(sid) == "reported"
    assert_once_each(emu, r.patch_ids(sid))
    assert len(emu.checks) == 3 * len(CHECKS)


def test_expiry_of_one_source_leaves_other_sources_alone(rig: Rig, demo: Demo) -> None:
    """run_cycle expired the incomplete series of every source with the limit of whichever
    Patchwork source it was polling."""
    sid = rig.emu.add_series_from_mbox(demo.samples[TWO_OF_THREE].mbox)
    rig.cycle()
    later = datetime.now(UTC) + timedelta(days=2)
    assert expire_incomplete(rig.store, 86400, now=later, source="other") == 0
    assert rig.state(sid) == "incomplete"


# ---------------------------------------------------------------- auth and config


def test_non_maintainer_token_records_a_clear_error_and_the_cycle_returns(
    rig: Rig, demo: Demo
) -> None:
    emu = rig.emu
    sid = emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)
    r = rig.restart(token=emu.add_user("reader"))

    stats = r.cycle()

    assert stats["new"] == 1 and stats["checked"] == 1 and stats["posted"] == 0
    assert emu.checks == {}
    assert r.state(sid) == "checked"  # not reported: it will be retried
    (pid,) = r.patch_ids(sid)
    failed = r.store.last_delivery(f"patchwork:{emu.url}", pid, "apply", status="failed")
    assert failed is not None
    assert "403" in failed.error and "maintainer of project demo" in failed.error


def test_bad_token_is_a_source_error_not_a_crash(rig: Rig, demo: Demo) -> None:
    rig.emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)
    r = rig.restart(token="0" * 40)
    stats = r.cycle()
    assert stats == {"new": 0, "checked": 0, "posted": 0, "errors": 1, "post_failures": 0}


def test_unknown_project_is_reported_not_silently_empty(
    rig: Rig, demo: Demo, caplog: pytest.LogCaptureFixture
) -> None:
    """Patchwork answers `?project=<typo>` with 200 []: without a probe a typo in the
    configuration looked like a project where nobody ever posts."""
    emu = rig.emu
    emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)
    typo = make_client(emu, project="dmeo")
    assert list(typo.iter_series_completed(None)) == []  # the server's quirk itself

    r = Rig(emu, rig.settings, rig.store, typo)
    with caplog.at_level(logging.ERROR, logger="patchci.daemon"):
        stats = r.cycle()
    assert stats["errors"] == 1 and stats["new"] == 0
    assert f"project 'dmeo' not found on {emu.url}" in caplog.text


def test_project_is_probed_until_the_first_event_only(rig: Rig, demo: Demo) -> None:
    """Once an event came in, the project exists: no probe per poll."""
    rig.emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)
    rig.cycle()
    rig.cycle()
    probes = [r for r in rig.emu.requests if r.path == f"/api/1.3/projects/{PROJECT}/"]
    assert len(probes) == 1


# ---------------------------------------------------------------- sources are independent


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_a_failing_source_does_not_stop_the_others(
    tmp_path: Path, emu: FakePatchwork, demo: Demo
) -> None:
    inbox = tmp_path / "inbox.mbox"
    inbox.write_bytes(demo.samples[BAD_FIXES].mbox)
    dead_url = f"http://127.0.0.1:{_closed_port()}"
    settings = make_settings(
        tmp_path / "data",
        emu.url,
        demo.tree,
        first_sources=[{"name": "dead", "type": "patchwork", "url": dead_url, "project": "x"}],
        extra_sources=[{"name": "inbox", "type": "mbox", "path": str(inbox)}],
    )
    sid = emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)
    store = open_store(settings)
    dead = PatchworkClient(dead_url, "x", retries=1, sleep=lambda _s: None)
    clients = {"dead": dead, SOURCE: make_client(emu)}

    stats = run_cycle(store, settings, clients)

    assert stats["errors"] == 1
    assert stats["new"] == 2 and stats["checked"] == 2
    r = Rig(emu, settings, store, clients[SOURCE])
    assert r.state(sid) == "reported"
    mail_rows = [row for row in store.list_series() if row.source == "inbox"]
    assert [row.state for row in mail_rows] == ["done"]  # no Patchwork to report to
    results = {x.check: x.outcome.value for x in store.latest_results(mail_rows[0].id)}
    assert results["fixes_tag"] == "fail"


def test_a_crash_while_checking_one_series_does_not_stop_the_others(
    rig: Rig, demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception in routing/apply for one series escaped run_cycle, and the
    series stayed "new": every restart crashed on it again."""
    from patchci.pipeline import check_series as real

    emu = rig.emu
    bad = emu.add_series_from_mbox(demo.samples[NET_FIX].mbox)
    good = emu.add_series_from_mbox(demo.samples[NO_SOB].mbox)

    def check_series(series: Any, *args: Any, **kw: Any) -> Any:
        if series.pw_id == bad:
            raise KeyError("unexpected")
        return real(series, *args, **kw)

    monkeypatch.setattr("patchci.service.check.check_series", check_series)
    stats = rig.cycle()

    assert stats["checked"] == 2
    assert rig.state(good) == "reported"
    assert rig.state(bad) == "error"
    local = rig.series_id(bad)
    assert local is not None
    assert "KeyError" in rig.store.series_row(local).state_reason
    assert [j.status for j in rig.store.jobs() if j.series_id == local] == ["error"]
    assert all(not emu.checks_for(p) for p in rig.patch_ids(bad))
