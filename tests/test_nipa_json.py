"""NIPA executor JSON: export, import, round trip, manifest handling."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from patchci.executor.base import CrashRef, RunResult, Subtest, TestResult
from patchci.executor.nipa_json import (
    MANIFEST,
    ManifestEntry,
    cookie,
    load_run_file,
    mark_running,
    parse_manifest,
    publish,
    run_filename,
    run_from_nipa,
    run_to_nipa,
    update_manifest,
)
from patchci.model import Outcome

DATA = Path(__file__).parent / "data" / "nipa"
START = datetime(2026, 8, 20, 3, 10, 11, 123456, tzinfo=UTC)
END = datetime(2026, 8, 20, 5, 40, 0, 1, tzinfo=UTC)
WARN = CrashRef("warning", "warning:netdev_thing:dev_do_thing", "WARNING: CPU: 0", "l1\nl2")
KNOWN = CrashRef("kmemleak", "kmemleak:known", "unreferenced object", "", ignored=True)


def sample_run() -> RunResult:
    nested = (
        Subtest("a", 1, "a", Outcome.PASS, 0.5),
        Subtest("a/x", 2, "x", Outcome.PASS, 0.25),
        Subtest("a/x/deep", 3, "deep", Outcome.XFAIL),
        Subtest("a/y", 2, "y", Outcome.FAIL, None, Outcome.PASS),
        Subtest("b/with/slashes", 1, "b/with/slashes", Outcome.SKIP),
        Subtest("c", 1, "c", Outcome.TIMEOUT, 45.0, Outcome.TIMEOUT),
    )
    tests = (
        TestResult("selftests-net", "tcp-ao-sh", Outcome.PASS, 35.2, log_path="/l/1/stdout",
                   reproduce="timeout 300 ./tcp_ao.sh"),
        TestResult("selftests-net", "nested", Outcome.FAIL, 10.0, Outcome.PASS, 9.5, nested,
                   log_path="/l/2/stdout", retry_log_path="/l/2-retry/stdout"),
        TestResult("selftests-net", "splat", Outcome.CRASH, 3.0, Outcome.CRASH, 3.1,
                   crashes=(WARN, KNOWN), log_path="/l/3/stdout"),
        TestResult("selftests-net", "hang", Outcome.TIMEOUT, 300.0, Outcome.TIMEOUT, 300.0),
        TestResult("selftests-net", "noexec", Outcome.ERROR),
        TestResult("selftests-net", "warned", Outcome.WARN),
    )  # fmt: skip
    return RunResult(
        executor="local-net",
        branch="net-next-2026-08-20--03-00",
        started=START,
        finished=END,
        status="done",
        tests=tests,
        reproduce="#!/bin/sh\n...",
        kernel="6.18.0",
        config="kselftest-net",
        log_dir="/l",
        link="https://ci.example/results/1",
    )


def test_round_trip_is_exact() -> None:
    run = sample_run()
    data = json.loads(json.dumps(run_to_nipa(run)))
    back = run_from_nipa(data)
    assert back.problems == ()
    assert back.run == run


def test_export_speaks_nipa() -> None:
    data = run_to_nipa(sample_run())
    assert data["start"] == "2026-08-20 03:10:11.123456+00:00"
    assert data["end"] == "2026-08-20 05:40:00.000001+00:00"
    assert "status" not in data and "error" not in data
    res = {r["test"]: r for r in data["results"]}
    assert res["tcp-ao-sh"] == {
        "test": "tcp-ao-sh", "group": "selftests-net", "result": "pass",
        "link": "/l/1/stdout", "time": 35.2, "reproduce": "timeout 300 ./tcp_ao.sh",
    }  # fmt: skip
    nested = res["nested"]
    assert (nested["result"], nested["retry"], nested["retry-link"]) == (
        "fail",
        "pass",
        "/l/2-retry/stdout",
    )
    assert "outcome" not in nested  # NIPA's word is exact: no extension needed
    a = nested["results"][0]
    assert a["test"] == "a" and [k["test"] for k in a["results"]] == ["x", "y"]
    assert a["results"][0]["results"] == [{"test": "deep", "result": "pass", "outcome": "xfail"}]
    assert nested["results"][1] == {"test": "b/with/slashes", "result": "skip"}
    splat = res["splat"]
    assert (splat["result"], splat["outcome"]) == ("fail", "crash")
    assert splat["crashes"] == [WARN.fingerprint]  # ignored crashes are not reported
    assert [c["fingerprint"] for c in splat["crash-info"]] == [WARN.fingerprint, "kmemleak:known"]
    assert (res["hang"]["result"], res["hang"]["outcome"]) == ("fail", "timeout")
    assert (res["hang"]["retry"], res["hang"]["retry-outcome"]) == ("fail", "timeout")
    assert (res["noexec"]["result"], res["noexec"]["outcome"]) == ("fail", "error")
    assert res["warned"]["result"] == "warn"


def test_link_base_makes_urls() -> None:
    data = run_to_nipa(sample_run(), link_base="https://ci.example/logs/7/")
    res = {r["test"]: r for r in data["results"]}
    assert res["tcp-ao-sh"]["link"] == "https://ci.example/logs/7/1/stdout"
    assert res["nested"]["retry-link"] == "https://ci.example/logs/7/2-retry/stdout"
    assert res["hang"]["link"] is None


def test_error_and_running_runs() -> None:
    err = RunResult("x", "b", START, END, "error", "VM never booted")
    data = run_to_nipa(err)
    assert (data["status"], data["error"], data["results"]) == ("error", "VM never booted", [])
    assert run_from_nipa(data).run == err
    wip = RunResult("x", "b", START, None, "running")
    data = run_to_nipa(wip)
    assert data["results"] is None
    assert run_from_nipa(data).run == wip


def test_import_hand_written_nipa_file() -> None:
    imp = load_run_file(DATA / "results-948303.json")
    run = imp.run
    assert run is not None
    assert (run.executor, run.branch, run.status) == (
        "vmksft-net",
        "net-next-2026-08-20--03-00",
        "done",
    )
    assert run.started == START and run.finished == END
    assert run.link == "https://ci.example/results/948303"
    res = {t.name: t for t in run.tests}
    assert len(run.tests) == 6  # the nameless entry is skipped
    tcp = res["tcp-ao-sh"]
    assert (tcp.outcome, tcp.duration, tcp.retry_outcome) == (Outcome.PASS, 35.2, None)
    assert tcp.log_path == "https://ci.example/results/948303/1-tcp-ao-sh"
    assert [(s.path, s.depth, s.outcome, s.duration) for s in tcp.subtests] == [
        ("ipv4-basic", 1, Outcome.PASS, 3.0),
        ("ipv6-basic", 1, Outcome.SKIP, 0.0),
    ]
    udp = res["udpgro-sh"]
    assert (udp.outcome, udp.retry_outcome) == (Outcome.FAIL, Outcome.PASS)
    assert udp.is_flake
    assert udp.subtests[0].retry_outcome is Outcome.PASS
    assert not res["so-txtime-sh"].is_flake
    rtnl = res["rtnetlink-sh"]
    assert rtnl.crashes == (
        CrashRef("unknown", "kmalloc_trace_noprof:tcp_ao_alloc_info:do_tcp_setsockopt"),
    )
    assert not rtnl.is_flake  # failed, passed on retry, but crashed
    assert res["ping-py"].outcome is Outcome.WARN
    assert res["fcnal-test-sh"].outcome is Outcome.ERROR
    assert res["fcnal-test-sh"].duration is None
    assert len(imp.problems) == 3
    assert any("bogus-word" in p for p in imp.problems)
    assert any("'slow'" in p for p in imp.problems)
    assert any("results[6]" in p for p in imp.problems)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ([], "not a JSON object"),
        ({"branch": "b"}, "lacks executor"),
        ("garbage", "not a JSON object"),
    ],
)
def test_import_unreadable_runs(data: object, problem: str) -> None:
    imp = run_from_nipa(data)
    assert imp.run is None and problem in imp.problems[0]


def test_import_tolerates_bad_pieces() -> None:
    data = {
        "executor": "e", "branch": "b", "start": "yesterday", "status": "weird",
        "results": [
            "not-a-dict",
            {"test": "t", "group": "g", "result": "pass", "results": "nope",
             "crashes": "nope", "retry": "later"},
        ],
    }  # fmt: skip
    imp = run_from_nipa(data)
    assert imp.run is not None
    assert imp.run.started == datetime(1970, 1, 1, tzinfo=UTC)
    assert imp.run.status == "done"
    (t,) = imp.run.tests
    assert (t.outcome, t.retry_outcome, t.subtests, t.crashes) == (
        Outcome.PASS,
        Outcome.ERROR,
        (),
        (),
    )
    assert len(imp.problems) == 6
    assert load_run_file(Path("/nonexistent/x.json")).run is None


def test_manifest_parse_and_update() -> None:
    entries = parse_manifest(json.loads((DATA / "results.json").read_text()))
    assert len(entries) == 3
    assert entries[2] == ManifestEntry(None, "net-next-2026-08-20--06-00", "vmksft-net")
    done = ManifestEntry("u3", "net-next-2026-08-20--06-00", "vmksft-net")
    updated = update_manifest(entries, done)
    assert updated == [*entries[:2], done]  # the in-progress entry is replaced
    other = ManifestEntry(None, "net-next-2026-08-20--06-00", "other")
    assert update_manifest(entries, other)[-2:] == [entries[2], other]
    assert len(update_manifest(entries, done, keep=2)) == 2
    assert parse_manifest({"not": "a list"}) == []


def test_cookie() -> None:
    assert cookie(START) == int(START.timestamp() / 60) % 1_000_000
    assert run_filename(sample_run()) == f"results-{cookie(START)}.json"


def test_publish_writes_run_and_manifest(tmp_path: Path) -> None:
    run = sample_run()
    mark_running(tmp_path, run.branch, run.executor)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest == [{"url": None, "branch": run.branch, "executor": run.executor}]
    path = publish(run, tmp_path, "https://ci.example/json/")
    assert path.name == run_filename(run)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest == [
        {"url": f"https://ci.example/json/{path.name}", "branch": run.branch,
         "executor": run.executor}
    ]  # fmt: skip
    assert load_run_file(path).run == run
    (tmp_path / MANIFEST).write_text("{broken")
    publish(run, tmp_path, "https://ci.example/json")
    assert len(json.loads((tmp_path / MANIFEST).read_text())) == 1


@pytest.mark.parametrize(
    ("fingerprint", "kind"),
    [
        ("warning:netdev_thing:dev_do_thing", "warning"),
        ("kasan/slab-use-after-free:tcp_close", "kasan"),
        ("kmalloc_trace_noprof:tcp_ao_alloc_info", "unknown"),  # NIPA: frames only
        ("crash-extract-fail", "unknown"),
    ],
)
def test_crash_kind_from_bare_fingerprints(fingerprint: str, kind: str) -> None:
    data = {"executor": "e", "branch": "b", "start": str(START), "end": str(END), "results": [
        {"test": "t", "group": "g", "result": "fail", "crashes": [fingerprint]}]}  # fmt: skip
    imp = run_from_nipa(data)
    assert imp.run is not None
    assert imp.run.tests[0].crashes == (CrashRef(kind, fingerprint),)
