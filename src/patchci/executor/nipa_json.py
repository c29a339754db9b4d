"""NIPA's executor result JSON: export our runs in it, import theirs.

Two files per executor (NIPA's contest format, reference nipa.md §5.3):

* the manifest `results.json`: `[{"url": <run file URL> | null, "branch", "executor"}]`,
  the last 500 runs, `url` null while a run is in progress;
* one run file `results-<cookie>.json` per run, cookie = `int(start_ts / 60) % 1000000`:
  `{"executor", "branch", "start", "end", "link"?, "results": [{"test", "group", "result",
  "link", "time"?, "retry"?, "crashes"?, "results"?: [...]}]}`, `start`/`end` written as
  `str(datetime)` ("2026-08-20 03:10:11.123456+00:00").

NIPA's result words are pass/skip/fail/warn; where ours say more (crash, timeout, error,
xfail) the word is NIPA's nearest and an extra `outcome` key keeps ours, so NIPA readers see
what they expect and patchci reads back exactly what it wrote. Other extensions, all
optional and ignored by NIPA: `retry-time`, `retry-link`, `crash-info`, `reproduce`, and at
run level `status`, `error`, `reproduce`, `kernel`, `config`, `log-dir`. Subtests nest to any depth
(NIPA itself writes and reads one level).

Importing never raises on bad input: what cannot be read is skipped and listed in
`NipaImport.problems`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from patchci.brancher import write_json_atomic
from patchci.crash import KINDS
from patchci.executor.base import (
    RUN_DONE,
    RUN_RUNNING,
    RUN_STATUSES,
    CrashRef,
    RunResult,
    Subtest,
    TestResult,
)
from patchci.model import Outcome

log = logging.getLogger(__name__)

MANIFEST = "results.json"
MANIFEST_KEEP = 500
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_TO_NIPA: dict[Outcome, str] = {
    Outcome.PASS: "pass",
    Outcome.XFAIL: "pass",
    Outcome.SKIP: "skip",
    Outcome.WARN: "warn",
    Outcome.FAIL: "fail",
    Outcome.CRASH: "fail",
    Outcome.TIMEOUT: "fail",
    Outcome.ERROR: "fail",
    Outcome.PENDING: "pending",
}
_FROM_NIPA: dict[str, Outcome] = {
    "pass": Outcome.PASS,
    "skip": Outcome.SKIP,
    "warn": Outcome.WARN,
    "fail": Outcome.FAIL,
    "pending": Outcome.PENDING,
}


@dataclass(frozen=True)
class ManifestEntry:
    url: str | None
    branch: str
    executor: str


@dataclass(frozen=True)
class NipaImport:
    run: RunResult | None
    problems: tuple[str, ...]


def nipa_result(outcome: Outcome) -> str:
    return _TO_NIPA[outcome]


def cookie(start: datetime) -> int:
    """NIPA's run cookie: the start minute, modulo a million."""
    return int(start.timestamp() / 60) % 1_000_000


def run_filename(run: RunResult) -> str:
    return f"results-{cookie(run.started)}.json"


# -- export --------------------------------------------------------------------------------


def _outcome_keys(prefix: str, outcome: Outcome) -> dict[str, str]:
    """`result` (or `retry`) in NIPA's words, plus ours when NIPA's word would lose it."""
    word = _TO_NIPA[outcome]
    keys = {prefix: word}
    if _FROM_NIPA.get(word) is not outcome:
        keys["outcome" if prefix == "result" else f"{prefix}-outcome"] = outcome.value
    return keys


def _link(path: str | None, run: RunResult, link_base: str | None) -> str | None:
    """A log path as a URL under *link_base* (relative to the run's log dir)."""
    if path is None or link_base is None:
        return path
    rel = path
    if run.log_dir and path.startswith(run.log_dir.rstrip("/") + "/"):
        rel = path[len(run.log_dir.rstrip("/")) + 1 :]
    return f"{link_base.rstrip('/')}/{rel.lstrip('/')}"


def _subtests_to_nipa(subtests: Sequence[Subtest]) -> list[dict[str, Any]]:
    """Nest the pre-order list back into a tree: a node's parent is the last node one
    level up (names may contain "/", so paths are not split)."""
    top: list[dict[str, Any]] = []
    stack: list[tuple[int, list[dict[str, Any]]]] = [(0, top)]
    for s in subtests:
        node: dict[str, Any] = {"test": s.name, **_outcome_keys("result", s.outcome)}
        if s.duration is not None:
            node["time"] = s.duration
        if s.retry_outcome is not None:
            node.update(_outcome_keys("retry", s.retry_outcome))
        while len(stack) > 1 and stack[-1][0] >= s.depth:
            stack.pop()
        stack[-1][1].append(node)
        kids: list[dict[str, Any]] = []
        node["results"] = kids
        stack.append((s.depth, kids))
    _drop_empty(top)
    return top


def _drop_empty(nodes: list[dict[str, Any]]) -> None:
    for n in nodes:
        if n["results"]:
            _drop_empty(n["results"])
        else:
            del n["results"]


def result_to_nipa(t: TestResult, run: RunResult, link_base: str | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"test": t.name, "group": t.group, **_outcome_keys("result", t.outcome)}
    d["link"] = _link(t.log_path, run, link_base)
    if t.duration is not None:
        d["time"] = t.duration
    if t.retry_outcome is not None:
        d.update(_outcome_keys("retry", t.retry_outcome))
    if t.retry_duration is not None:
        d["retry-time"] = t.retry_duration
    if t.retry_log_path is not None:
        d["retry-link"] = _link(t.retry_log_path, run, link_base)
    if t.real_crashes:
        d["crashes"] = [c.fingerprint for c in t.real_crashes]
    if t.crashes:
        d["crash-info"] = [
            {"kind": c.kind, "fingerprint": c.fingerprint, "title": c.title,
             "excerpt": c.excerpt, "ignored": c.ignored}
            for c in t.crashes
        ]  # fmt: skip
    if t.reproduce:
        d["reproduce"] = t.reproduce
    if t.subtests:
        d["results"] = _subtests_to_nipa(t.subtests)
    return d


def run_to_nipa(run: RunResult, link_base: str | None = None) -> dict[str, Any]:
    """The run file body; `results` is null while the run is in progress (as NIPA's
    collector shows pending runs)."""
    d: dict[str, Any] = {
        "executor": run.executor,
        "branch": run.branch,
        "start": str(run.started),
        "end": str(run.finished or run.started),
    }
    if run.link:
        d["link"] = run.link
    if run.status != RUN_DONE:
        d["status"] = run.status
    if run.error:
        d["error"] = run.error
    for key in ("reproduce", "kernel", "config", "log_dir"):
        if getattr(run, key):
            d[key.replace("_", "-")] = getattr(run, key)
    if run.status == RUN_RUNNING:
        d["results"] = None
    else:
        d["results"] = [result_to_nipa(t, run, link_base) for t in run.tests]
    return d


# -- import --------------------------------------------------------------------------------


class _Reader:
    """Collects problems while reading one run file."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def outcome(self, d: Mapping[str, Any], word_key: str, ours_key: str, where: str) -> Outcome:
        ours = d.get(ours_key)
        if isinstance(ours, str):
            try:
                return Outcome(ours)
            except ValueError:
                self.problems.append(f"{where}: unknown {ours_key} {ours!r}")
        word = d.get(word_key)
        if isinstance(word, str) and word.lower() in _FROM_NIPA:
            return _FROM_NIPA[word.lower()]
        self.problems.append(f"{where}: unknown {word_key} {word!r}, read as error")
        return Outcome.ERROR

    def maybe_outcome(self, d: Mapping[str, Any], key: str, where: str) -> Outcome | None:
        if d.get(key) is None:
            return None
        return self.outcome(d, key, f"{key}-outcome", where)

    def number(self, value: object, where: str) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problems.append(f"{where}: time {value!r} is not a number")
            return None
        return float(value)

    def date(self, value: object, where: str) -> datetime:
        try:
            when = datetime.fromisoformat(str(value))
        except ValueError:
            self.problems.append(f"{where}: bad date {value!r}")
            return _EPOCH
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)

    def text(self, d: Mapping[str, Any], key: str) -> str | None:
        v = d.get(key)
        return v if isinstance(v, str) else None

    def subtests(self, nodes: object, parent: str, depth: int, where: str) -> list[Subtest]:
        out: list[Subtest] = []
        if not isinstance(nodes, list):
            self.problems.append(f"{where}: results is not a list")
            return out
        for i, n in enumerate(nodes):
            if not isinstance(n, dict) or not isinstance(n.get("test"), str):
                self.problems.append(f"{where}[{i}]: subtest without a name, skipped")
                continue
            path = f"{parent}/{n['test']}" if parent else n["test"]
            here = f"{where}/{n['test']}"
            out.append(
                Subtest(path, depth, n["test"], self.outcome(n, "result", "outcome", here),
                        self.number(n.get("time"), here), self.maybe_outcome(n, "retry", here))
            )  # fmt: skip
            if "results" in n:
                out += self.subtests(n["results"], path, depth + 1, here)
        return out

    def crashes(self, d: Mapping[str, Any], where: str) -> tuple[CrashRef, ...]:
        info = d.get("crash-info")
        if isinstance(info, list):
            return tuple(
                CrashRef(str(c.get("kind", "")), str(c.get("fingerprint", "")),
                         str(c.get("title", "")), str(c.get("excerpt", "")),
                         bool(c.get("ignored", False)))
                for c in info if isinstance(c, dict)
            )  # fmt: skip
        fps = d.get("crashes")
        if fps is None:
            return ()
        if not isinstance(fps, list):
            self.problems.append(f"{where}: crashes is not a list")
            return ()
        return tuple(CrashRef(_kind_of(str(fp)), str(fp)) for fp in fps)

    def test(self, d: object, i: int) -> TestResult | None:
        if not isinstance(d, dict) or not isinstance(d.get("test"), str):
            self.problems.append(f"results[{i}]: entry without a test name, skipped")
            return None
        where = f"{d.get('group')}/{d['test']}"
        subs = self.subtests(d["results"], "", 1, where) if "results" in d else []
        return TestResult(
            group=str(d.get("group") or ""),
            name=d["test"],
            outcome=self.outcome(d, "result", "outcome", where),
            duration=self.number(d.get("time"), where),
            retry_outcome=self.maybe_outcome(d, "retry", where),
            retry_duration=self.number(d.get("retry-time"), where),
            subtests=tuple(subs),
            crashes=self.crashes(d, where),
            log_path=self.text(d, "link"),
            retry_log_path=self.text(d, "retry-link"),
            reproduce=self.text(d, "reproduce") or "",
        )


def _kind_of(fingerprint: str) -> str:
    """NIPA fingerprints are bare frame lists; ours start with a kind of crash.KINDS."""
    head = fingerprint.split(":", 1)[0].split("/", 1)[0]
    return head if ":" in fingerprint and head in {k.name for k in KINDS} else "unknown"


def run_from_nipa(data: object) -> NipaImport:
    """Read a run file's parsed JSON."""
    r = _Reader()
    if not isinstance(data, dict):
        return NipaImport(None, ("run file is not a JSON object",))
    executor, branch = r.text(data, "executor"), r.text(data, "branch")
    if not executor or not branch:
        return NipaImport(None, ("run file lacks executor or branch",))
    results = data.get("results")
    tests: list[TestResult] = []
    if isinstance(results, list):
        tests = [t for i, e in enumerate(results) if (t := r.test(e, i)) is not None]
    elif results is not None:
        r.problems.append("results is neither a list nor null")
    status = r.text(data, "status") or (RUN_RUNNING if results is None else RUN_DONE)
    if status not in RUN_STATUSES:
        r.problems.append(f"unknown status {status!r}, read as done")
        status = RUN_DONE
    start = r.date(data.get("start"), "start")
    end = r.date(data["end"], "end") if data.get("end") is not None else None
    run = RunResult(
        executor=executor, branch=branch, started=start,
        finished=None if status == RUN_RUNNING else end, status=status,
        error=r.text(data, "error") or "", tests=tuple(tests),
        reproduce=r.text(data, "reproduce") or "", kernel=r.text(data, "kernel") or "",
        config=r.text(data, "config") or "", log_dir=r.text(data, "log-dir"),
        link=r.text(data, "link"),
    )  # fmt: skip
    for p in r.problems:
        log.warning("nipa import %s/%s: %s", executor, branch, p)
    return NipaImport(run, tuple(r.problems))


def load_run_file(path: Path) -> NipaImport:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return NipaImport(None, (f"{path}: {e}",))
    return run_from_nipa(data)


# -- manifest ------------------------------------------------------------------------------


def parse_manifest(data: object) -> list[ManifestEntry]:
    """Entries of a `results.json`; malformed entries are skipped with a warning."""
    if not isinstance(data, list):
        log.warning("nipa manifest is not a list")
        return []
    out = []
    for e in data:
        if (
            isinstance(e, dict)
            and isinstance(e.get("branch"), str)
            and isinstance(e.get("executor"), str)
            and (e.get("url") is None or isinstance(e.get("url"), str))
        ):
            out.append(ManifestEntry(e.get("url"), e["branch"], e["executor"]))
        else:
            log.warning("nipa manifest: malformed entry %r skipped", e)
    return out


def manifest_to_json(entries: Sequence[ManifestEntry]) -> list[dict[str, str | None]]:
    return [{"url": e.url, "branch": e.branch, "executor": e.executor} for e in entries]


def update_manifest(
    entries: Sequence[ManifestEntry], entry: ManifestEntry, keep: int = MANIFEST_KEEP
) -> list[ManifestEntry]:
    """*entry* added, replacing the same run's in-progress (url null) entry; the newest
    *keep* entries kept."""
    out = [
        e
        for e in entries
        if not (e.url is None and (e.branch, e.executor) == (entry.branch, entry.executor))
    ]
    out.append(entry)
    return out[-keep:]


def _read_manifest(json_dir: Path) -> list[ManifestEntry]:
    path = json_dir / MANIFEST
    if not path.exists():
        return []
    try:
        return parse_manifest(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as e:
        log.warning("nipa manifest %s unreadable (%s): starting a new one", path, e)
        return []


def mark_running(json_dir: Path, branch: str, executor: str) -> None:
    """The in-progress manifest entry NIPA's collector turns into a pending result."""
    entries = update_manifest(_read_manifest(json_dir), ManifestEntry(None, branch, executor))
    write_json_atomic(json_dir / MANIFEST, manifest_to_json(entries))


def publish(run: RunResult, json_dir: Path, url_base: str, link_base: str | None = None) -> Path:
    """Write the run file, then point the manifest at it (both atomically); returns the
    run file's path."""
    os.makedirs(json_dir, exist_ok=True)
    path = json_dir / run_filename(run)
    write_json_atomic(path, run_to_nipa(run, link_base))
    url = f"{url_base.rstrip('/')}/{path.name}"
    entries = update_manifest(
        _read_manifest(json_dir), ManifestEntry(url, run.branch, run.executor)
    )
    write_json_atomic(json_dir / MANIFEST, manifest_to_json(entries))
    log.info("run of %s on %s published as %s", run.executor, run.branch, url)
    return path
