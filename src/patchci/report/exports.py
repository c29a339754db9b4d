"""A test branch's results in the formats other tools read (pure: data in, text out).

- JUnit XML (`junit_xml`): one `<testsuite>` per executor run, one `<testcase>` per test
  (classname its group); fail and timeout are `<failure>`, a kernel crash and our own
  errors are `<error>` (type "crash" or "infrastructure"), skip is `<skipped>`; a test that
  failed and passed on retry passes, with the first attempt in `<system-out>`.
- KCIDB v5 (`kcidb`): the branch is one checkout (its head commit, the patchset hash of
  the series it carries and their Message-IDs), each executor run a build, each test and
  subtest a test (path `group.name.subtest`), each distinct crash an issue with one
  incident per test it hit.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from xml.etree import ElementTree as ET

from patchci.executor.base import RUN_ERROR, RunResult, TestResult
from patchci.model import Outcome

KCIDB_VERSION = {"major": 5, "minor": 3}
_PATH_PART = re.compile(r"[^a-zA-Z0-9_-]+")
# patchci outcome → KCIDB status. ERROR is ours (the harness): KCIDB's MISS. A timeout is
# the code under test hanging: FAIL, as patchci counts it.
KCIDB_STATUS = {
    Outcome.PASS: "PASS", Outcome.XFAIL: "PASS", Outcome.WARN: "PASS", Outcome.FAIL: "FAIL",
    Outcome.CRASH: "FAIL", Outcome.TIMEOUT: "FAIL", Outcome.SKIP: "SKIP", Outcome.ERROR: "MISS",
}  # fmt: skip


def _secs(run: RunResult) -> float:
    if run.finished is None:
        return 0.0
    return max((run.finished - run.started).total_seconds(), 0.0)


def _testcase(suite: ET.Element, t: TestResult) -> None:
    case = ET.SubElement(suite, "testcase", classname=t.group, name=t.name,
                         time=f"{(t.retry_duration or t.duration or 0.0):.3f}")  # fmt: skip
    final = Outcome.CRASH if t.crashed else t.final
    failing = [s.path for s in t.subtests if s.outcome.is_patch_failure]
    detail = "\n".join(f"subtest {p}: fail" for p in failing)
    if final in (Outcome.FAIL, Outcome.TIMEOUT):
        el = ET.SubElement(case, "failure", message=final.value, type=final.value)
        el.text = detail or None
    elif final is Outcome.CRASH:
        el = ET.SubElement(case, "error", message="kernel crash", type="crash")
        el.text = "\n\n".join(c.excerpt or c.title for c in t.real_crashes) or None
    elif final is Outcome.ERROR:
        ET.SubElement(case, "error", message="infrastructure error (not the code under test)",
                      type="infrastructure")  # fmt: skip
    elif final is Outcome.SKIP:
        ET.SubElement(case, "skipped", message="skip")
    notes = []
    if t.is_flake:
        notes.append(f"flaky: the first attempt was {t.outcome.value}, the retry passed")
    if t.log_path:
        notes.append(f"log: {t.retry_log_path or t.log_path}")
    if notes:
        ET.SubElement(case, "system-out").text = "\n".join(notes)


def junit_xml(branch: str, runs: Sequence[RunResult]) -> str:
    """The runs of *branch* as one JUnit XML document."""
    root = ET.Element("testsuites", name=branch)
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for run in runs:
        counts = {
            "tests": len(run.tests),
            "failures": sum(1 for t in run.tests if not t.crashed
                            and t.final in (Outcome.FAIL, Outcome.TIMEOUT)),
            "errors": sum(1 for t in run.tests if t.crashed or t.final is Outcome.ERROR)
                      + (1 if run.status == RUN_ERROR else 0),
            "skipped": sum(1 for t in run.tests if not t.crashed and t.final is Outcome.SKIP),
        }  # fmt: skip
        attrs = {"name": run.executor, "hostname": "patchci", "time": f"{_secs(run):.3f}",
                 "timestamp": run.started.isoformat(timespec="seconds"),
                 **{k: str(v) for k, v in counts.items()}}  # fmt: skip
        suite = ET.SubElement(root, "testsuite", attrs)
        if run.status == RUN_ERROR:  # the run itself failed: ours, one error case says why
            case = ET.SubElement(suite, "testcase", classname="patchci", name="run", time="0")
            el = ET.SubElement(case, "error", message=run.error[:200] or "run failed",
                               type="infrastructure")  # fmt: skip
            el.text = run.error or None
            counts["tests"] += 1
            suite.set("tests", str(counts["tests"]))
        for t in run.tests:
            _testcase(suite, t)
        for k in totals:
            totals[k] += counts[k]
    for k, v in totals.items():
        root.set(k, str(v))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def _path(*parts: str) -> str:
    return ".".join(p for p in (_PATH_PART.sub("_", x).strip("_") for x in parts) if p)


def _ts(when: datetime) -> str:
    return when.isoformat(timespec="seconds")


def patchset_hash(patches: Sequence[bytes]) -> str:
    """KCIDB's patchset hash: sha256 of the patches' sha256 hex digests, one per line."""
    if not patches:
        return ""
    lines = "".join(hashlib.sha256(p).hexdigest() + "\n" for p in patches)
    return hashlib.sha256(lines.encode()).hexdigest()


def kcidb(
    *, origin: str, branch: str, stream: str, tree: str, date: datetime, head: str,
    repo_url: str | None, patches: Sequence[bytes], message_ids: Sequence[str],
    runs: Sequence[RunResult], log_url: Mapping[str, str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The branch as a KCIDB v5 report. *patches* are the raw mails of the series it
    carries, in order; *message_ids* those series' first Message-IDs."""
    checkout_id = f"{origin}:{branch}"
    checkout: dict[str, Any] = {
        "id": checkout_id, "origin": origin, "tree_name": tree, "git_commit_hash": head,
        "git_repository_branch": branch, "start_time": _ts(date), "valid": True,
        "misc": {"stream": stream, "series_message_ids": list(message_ids)},
    }  # fmt: skip
    if repo_url:
        checkout["git_repository_url"] = repo_url
    if patches:
        checkout["patchset_hash"] = patchset_hash(patches)
    if message_ids:
        checkout["message_id"] = message_ids[0].strip("<>")
    builds: list[dict[str, Any]] = []
    tests: list[dict[str, Any]] = []
    issues: dict[str, dict[str, Any]] = {}
    incidents: list[dict[str, Any]] = []
    for run in runs:
        build_id = f"{origin}:{branch}:{run.executor}"
        build: dict[str, Any] = {
            "id": build_id, "checkout_id": checkout_id, "origin": origin,
            "start_time": _ts(run.started), "duration": _secs(run),
            "status": "MISS" if run.status == RUN_ERROR else "PASS",
            "misc": {"executor": run.executor, **({"error": run.error} if run.error else {})},
        }  # fmt: skip
        if run.config:
            build["config_name"] = run.config.rsplit("/", 1)[-1]
        builds.append(build)
        for t in run.tests:
            test_id = f"{build_id}:{t.group}:{t.name}"
            final = Outcome.CRASH if t.crashed else t.final
            entry: dict[str, Any] = {
                "id": test_id, "build_id": build_id, "origin": origin,
                "path": _path(t.group, t.name), "start_time": _ts(run.started),
                "misc": {"outcome": final.value, "first_attempt": t.outcome.value},
            }  # fmt: skip
            if final in KCIDB_STATUS:
                entry["status"] = KCIDB_STATUS[final]
            if t.duration is not None:
                entry["duration"] = t.retry_duration or t.duration
            if log_url and (t.retry_log_path or t.log_path):
                url = log_url.get(t.retry_log_path or t.log_path or "")
                if url:
                    entry["log_url"] = url
            tests.append(entry)
            for s in t.subtests:
                sub: dict[str, Any] = {
                    "id": f"{test_id}:{s.path}", "build_id": build_id, "origin": origin,
                    "path": _path(t.group, t.name, *s.path.split("/")),
                }  # fmt: skip
                outcome = s.retry_outcome or s.outcome
                if outcome in KCIDB_STATUS:
                    sub["status"] = KCIDB_STATUS[outcome]
                if s.duration is not None:
                    sub["duration"] = s.duration
                tests.append(sub)
            for c in t.real_crashes:
                issue_id = f"{origin}:{hashlib.sha256(c.fingerprint.encode()).hexdigest()[:16]}"
                issues.setdefault(issue_id, {
                    "id": issue_id, "version": 1, "origin": origin,
                    "comment": (c.title or c.kind)[:400],
                    "misc": {"fingerprint": c.fingerprint, "kind": c.kind},
                })  # fmt: skip
                incidents.append({
                    "id": f"{test_id}:{issue_id}", "origin": origin, "issue_id": issue_id,
                    "issue_version": 1, "test_id": test_id, "present": True,
                })  # fmt: skip
    return {"version": dict(KCIDB_VERSION), "checkouts": [checkout], "builds": builds,
            "tests": tests, "issues": list(issues.values()), "incidents": incidents}  # fmt: skip
