"""Brancher: batch series that passed their gate checks into periodic test branches.

A re-implementation of NIPA's `pw_brancher` from its description. Planning is pure
(`is_due`, `plan_branch`, `branches_to_reap`); `cut_branch` then builds the branch in a
scratch worktree: base branch, merges of other trees, then each included series with
`git am -3`, a series that does not apply being left out with a reason. The results are
written in NIPA's `branches.json` / `branches-info.json` formats so NIPA-style executors
can poll them.

Due rule (NIPA's): with `h` the number of whole UTC hours since the epoch, a branch is due
when `h % every_hours == 0` and at least `every_hours` whole hours have passed since the
last branch. With 3 hours, branches are cut at 00, 03, 06 ... UTC; a brancher that was
down at 03:00 and comes back at 04:10 waits for 06:00, so branch times stay on the grid.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from patchci.errors import CommandFailed, InfraError
from patchci.git import Git
from patchci.model import CheckResult, Outcome, worst

log = logging.getLogger(__name__)

DATE_FORMAT = "%Y-%m-%d--%H-%M"
# 17 characters: NIPA's UI strips the last 18 ("-" + date) to get the stream back.
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}--\d{2}-\d{2}")

# base-pulls statuses; "error" (the ref or remote could not be read) is ours, not NIPA's.
MERGE_OKAY, MERGE_RESOLVED, MERGE_FAIL, MERGE_ERROR = "okay", "resolved", "fail", "error"

# Series states a branch takes series from (patchwork's New/Under Review plus our own
# pipeline states once checks ran). Accepted, rejected, superseded series are left out.
DEFAULT_STATES = ("new", "under-review", "checked", "reported", "done")


@dataclass(frozen=True)
class StreamConfig:
    """One stream of branches (NIPA runs one brancher per prefix).

    *merges* are refs of the tree's repository, or `"<url-or-remote> [<branch>]"` to fetch.
    With *accept_warn* false, a gate check that only warned keeps the series out.
    An empty *states* accepts series in any state.
    """

    name: str
    prefix: str
    base_branch: str
    merges: tuple[str, ...] = ()
    every_hours: int = 3
    gate_checks: tuple[str, ...] = ("apply", "signed_off_by")
    keep_days: int = 5
    push_remote: str | None = None
    accept_warn: bool = True
    states: tuple[str, ...] = DEFAULT_STATES


@dataclass(frozen=True)
class Candidate:
    """A series that may go into a branch; *check_outcomes* holds the worst outcome of each
    check over all the series' patches (see `series_outcomes`)."""

    series_id: int
    name: str
    date: datetime
    check_outcomes: Mapping[str, Outcome] = field(hash=False)
    state: str = "checked"
    # Why review keeps it out (superseded by a newer revision, a Patchwork state), or None.
    review: str | None = None


@dataclass(frozen=True)
class Plan:
    name: str
    due: bool
    include: tuple[Candidate, ...]
    excluded: tuple[tuple[Candidate, str], ...]
    date: datetime


@dataclass(frozen=True)
class Manifest:
    """What a branch holds. *base* is the base branch after the merges; *head* the tip."""

    name: str
    stream: str
    date: datetime
    base: str
    merges: dict[str, str] = field(hash=False)
    series: tuple[int, ...]
    left_out: tuple[tuple[int, str], ...]
    head: str
    new_changes: bool


# -- pure planning -------------------------------------------------------------------------


def _utc(when: datetime) -> datetime:
    """*when* in UTC; a naive datetime is taken to be UTC already."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _hours(when: datetime) -> int:
    return int(_utc(when).timestamp() // 3600)


def branch_name(prefix: str, when: datetime) -> str:
    """`prefix` + UTC `%Y-%m-%d--%H-%M`, e.g. `net-next-2026-08-20--03-00`."""
    return prefix + _utc(when).strftime(DATE_FORMAT)


def date_from_name(prefix: str, name: str) -> datetime | None:
    """The UTC date a branch name of this stream carries, or None if *name* is not one
    (another stream whose prefix merely starts like ours, or a hand-made branch)."""
    if not name.startswith(prefix):
        return None
    rest = name[len(prefix) :]
    if not _DATE_RE.fullmatch(rest):
        return None
    try:
        return datetime.strptime(rest, DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def is_due(now: datetime, last: datetime | None, every_hours: int) -> bool:
    """NIPA's rule: on an hour divisible by *every_hours*, and that many hours after *last*."""
    freq = max(every_hours, 1)
    now_h = _hours(now)
    if now_h % freq:
        return False
    return last is None or now_h - _hours(last) >= freq


def series_outcomes(results: Iterable[CheckResult]) -> dict[str, Outcome]:
    """Worst outcome per check name over all the results of a series (for Candidate)."""
    by_check: dict[str, list[Outcome]] = {}
    for r in results:
        by_check.setdefault(r.check, []).append(r.outcome)
    return {name: worst(outs) for name, outs in by_check.items()}


def gate_reason(stream: StreamConfig, cand: Candidate) -> str | None:
    """Why *cand* may not go into a branch of *stream*, or None if it may."""
    if cand.review:
        return cand.review
    if stream.states and cand.state not in stream.states:
        return f"series state is {cand.state}"
    for check in stream.gate_checks:
        out = cand.check_outcomes.get(check)
        if out is None:
            return f"missing check {check}"
        if out is Outcome.PASS or (out is Outcome.WARN and stream.accept_warn):
            continue
        if out is Outcome.WARN:
            return f"check {check} warned (gate accepts pass only)"
        if out is Outcome.ERROR:
            # Not the series' fault: it stays a candidate and is retried next branch.
            return f"check {check} errored (infrastructure)"
        if out is Outcome.PENDING:
            return f"check {check} still pending"
        if out is Outcome.FAIL:
            return f"check {check} failed"
        if out.is_patch_failure:
            return f"check {check} failed ({out.value})"
        # SKIP/XFAIL: the gate did not actually vouch for the series.
        return f"check {check} did not run ({out.value})"
    return None


def _order(c: Candidate) -> tuple[datetime, int]:
    return (_utc(c.date), c.series_id)


def plan_branch(
    stream: StreamConfig,
    now: datetime,
    candidates: Iterable[Candidate],
    last_branch_time: datetime | None,
) -> Plan:
    """Which candidates the branch cut at *now* takes, in (date, id) order, and why the
    others stay out. A series id seen twice is taken once."""
    include: list[Candidate] = []
    excluded: list[tuple[Candidate, str]] = []
    seen: set[int] = set()
    for cand in sorted(candidates, key=_order):
        if cand.series_id in seen:
            continue
        seen.add(cand.series_id)
        reason = gate_reason(stream, cand)
        if reason is None:
            include.append(cand)
        else:
            excluded.append((cand, reason))
    return Plan(
        name=branch_name(stream.prefix, now),
        due=is_due(now, last_branch_time, stream.every_hours),
        include=tuple(include),
        excluded=tuple(excluded),
        date=_utc(now).replace(second=0, microsecond=0),
    )


def branches_to_reap(
    existing: Sequence[tuple[str, datetime]], prefix: str, now: datetime, keep_days: int
) -> list[str]:
    """Branches of this stream (prefix + date) older than *keep_days*, oldest first.

    Names that do not parse as prefix + date belong to someone else and are never reaped.
    """
    cutoff = _utc(now) - timedelta(days=keep_days)
    old = [
        (_utc(when), name)
        for name, when in existing
        if date_from_name(prefix, name) is not None and _utc(when) < cutoff
    ]
    return [name for _, name in sorted(old)]


# -- git -----------------------------------------------------------------------------------


def list_branches(git: Git, prefix: str) -> list[tuple[str, datetime]]:
    """Local branches of this stream with the date their name carries, oldest first."""
    res = git.run("for-each-ref", "--format=%(refname:strip=2)", f"refs/heads/{prefix}*")
    found = [(name, date_from_name(prefix, name)) for name in res.stdout.splitlines()]
    return sorted(((n, d) for n, d in found if d is not None), key=lambda nd: (nd[1], nd[0]))


def _previous_branch(git: Git, prefix: str, before: datetime) -> str | None:
    older = [name for name, when in list_branches(git, prefix) if when < before]
    return older[-1] if older else None


def _check_new_ref(git: Git, name: str) -> None:
    if not git.run("check-ref-format", "--branch", name, check=False).ok:
        raise InfraError(f"{name!r} is not a valid branch name; check the stream prefix")
    if git.rev_parse(f"refs/heads/{name}") is not None:
        raise InfraError(
            f"branch {name} already exists in {git.repo}; delete it or wait for the next slot"
        )


def _resolve_merge(wt: Git, spec: str) -> str | None:
    """The commit a `merges` entry names: a local ref, or `<url-or-remote> [<branch>]`
    fetched into FETCH_HEAD. None if it cannot be read."""
    sha = wt.rev_parse(spec)
    if sha is not None:
        return sha
    res = wt.run("fetch", "--quiet", "--no-tags", *spec.split(), check=False, timeout=600)
    if not res.ok:
        log.error("merge %s: fetch failed: %s", spec, res.output.strip())
        return None
    return wt.rev_parse("FETCH_HEAD")


def _rerere_enabled(wt: Git) -> bool:
    cfg = wt.config_get("rerere.enabled")
    if cfg is not None:
        return cfg.lower() in ("true", "yes", "on", "1")
    return (wt.common_dir() / "rr-cache").is_dir()


def _rerere_commit(wt: Git, ident: Sequence[str]) -> bool:
    """After a conflicted merge: commit it if rerere resolved every conflict (NIPA trusts
    recorded resolutions of known net/net-next conflicts)."""
    if not _rerere_enabled(wt):
        return False
    unmerged = wt.run("diff", "--name-only", "--diff-filter=U", "-z").stdout.split("\x00")
    paths = [p for p in unmerged if p]
    remaining = wt.run("rerere", "remaining", check=False)
    if not paths or not remaining.ok or remaining.stdout.strip():
        return False
    wt.run("add", "--", *paths)
    res = wt.run(*ident, "-c", "core.hooksPath=/dev/null", "commit", "--no-edit", check=False)
    return res.ok


def _merge(wt: Git, spec: str, ident: Sequence[str]) -> str:
    sha = _resolve_merge(wt, spec)
    if sha is None:
        return MERGE_ERROR
    res = wt.run(
        *ident, "-c", "core.hooksPath=/dev/null",
        "merge", "--no-edit", "--no-ff", "--no-gpg-sign", "-m", f"Merge {spec}", sha,
        check=False,
    )  # fmt: skip
    if res.ok:
        return MERGE_OKAY
    if _rerere_commit(wt, ident):
        return MERGE_RESOLVED
    wt.run("merge", "--abort", check=False)
    log.warning("merge %s: conflicts, left out: %s", spec, first_conflict_line(res.output))
    return MERGE_FAIL


def first_conflict_line(output: str) -> str:
    """The line of `git am`/`git merge` output that best says why it stopped."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for marker in ("CONFLICT", "error: patch failed", "error:", "Patch failed at", "fatal:"):
        for ln in lines:
            if ln.startswith(marker):
                return ln
    return lines[0] if lines else "no output from git"


def _am(wt: Git, mbox: bytes, ident: Sequence[str]) -> str | None:
    """Apply a whole series mbox; None on success, else the first conflict line."""
    res = wt.run(
        *ident, "-c", "core.hooksPath=/dev/null",
        "am", "-3", "--keep-cr", "--no-gpg-sign", input=mbox, check=False,
    )  # fmt: skip
    if res.ok:
        return None
    wt.run("am", "--abort", check=False)
    return first_conflict_line(res.output)


def _apply_series(
    wt: Git, plan: Plan, series_mboxes: Mapping[int, bytes], ident: Sequence[str]
) -> tuple[tuple[int, ...], tuple[tuple[int, str], ...]]:
    applied: list[int] = []
    left_out: list[tuple[int, str]] = []
    for cand in plan.include:
        sid = cand.series_id
        mbox = series_mboxes.get(sid)
        if not mbox:
            left_out.append((sid, "no mbox available for the series"))
            log.error("branch %s: series %d has no mbox", plan.name, sid)
            continue
        before = wt.rev_parse("HEAD")
        why = _am(wt, mbox, ident)
        if why is None and wt.rev_parse("HEAD") == before:
            # `git am -3` skips a patch whose change is already there ("No changes -- Patch
            # already applied"): the series adds no commit, and would misalign the tips
            # the culprit search bisects over.
            left_out.append((sid, "adds nothing on top of the branch: its changes are "
                                  "already in the base or an earlier series"))  # fmt: skip
            log.info("branch %s: series %d left out: already applied", plan.name, sid)
        elif why is None:
            applied.append(sid)
            log.info("branch %s: series %d applied", plan.name, sid)
        else:
            left_out.append((sid, f"does not apply on top of {plan.name}: {why}"))
            log.info("branch %s: series %d left out: %s", plan.name, sid, why)
    return tuple(applied), tuple(left_out)


def _differs(git: Git, previous: str | None, head: str) -> bool:
    if previous is None or git.rev_parse(previous) is None:
        return True
    res = git.run("diff", "--quiet", previous, head, "--", check=False)
    if res.returncode not in (0, 1):
        raise CommandFailed(list(res.argv), res.returncode, res.stdout, res.stderr)
    return res.returncode == 1


def cut_branch(
    git: Git,
    plan: Plan,
    stream: StreamConfig,
    series_mboxes: Mapping[int, bytes],
    work: Path,
    *,
    previous: str | None = None,
) -> Manifest:
    """Build branch *plan.name* in a scratch worktree under *work* and create
    `refs/heads/<name>` in *git*'s repository (push it if the stream says so).

    *previous* (default: the newest older branch of the stream) decides `new_changes`.
    The user's checkout is never touched. Raises InfraError when the base is unknown, the
    branch exists, or git itself fails; merge and apply conflicts are recorded instead.
    """
    base_sha = git.rev_parse(stream.base_branch)
    if base_sha is None:
        raise InfraError(f"stream {stream.name}: base branch {stream.base_branch!r} not found")
    _check_new_ref(git, plan.name)
    if previous is None:
        previous = _previous_branch(git, stream.prefix, plan.date)
    work.mkdir(parents=True, exist_ok=True)
    log.info("branch %s: cutting on %s (%s)", plan.name, stream.base_branch, base_sha[:12])
    with git.scratch_worktree(base_sha, work / plan.name) as wt:
        ident = wt.identity_config()
        merges = {spec: _merge(wt, spec, ident) for spec in stream.merges}
        base = _head(wt)
        series, left_out = _apply_series(wt, plan, series_mboxes, ident)
        head = _head(wt)
    git.run("update-ref", f"refs/heads/{plan.name}", head, "")
    manifest = Manifest(
        name=plan.name, stream=stream.name, date=plan.date, base=base, merges=merges,
        series=series, left_out=left_out, head=head, new_changes=_differs(git, previous, head),
    )  # fmt: skip
    log.info(
        "branch %s: %d series, %d left out, head %s", plan.name, len(series), len(left_out), head
    )
    if stream.push_remote:
        push(git, plan.name, stream.push_remote)
    return manifest


def push(git: Git, name: str, remote: str) -> bool:
    """Push a cut branch. A failure is ours and logged, not raised: the branch is cut and
    still gets tested and stored, or its slot would be lost (it exists, so is not due)."""
    try:
        git.run("push", "--quiet", remote, f"refs/heads/{name}", timeout=600)
    except InfraError as e:
        log.error("branch %s: push to %s failed (the branch is tested anyway): %s", name, remote, e)
        return False
    log.info("branch %s: pushed to %s", name, remote)
    return True


def _head(wt: Git) -> str:
    sha = wt.rev_parse("HEAD")
    if sha is None:  # pragma: no cover - a worktree at a commit always has HEAD
        raise InfraError(f"worktree {wt.repo} has no HEAD")
    return sha


def reap(git: Git, names: Collection[str], remote: str | None = None) -> list[str]:
    """Delete the branches *names* locally (and on *remote*); return those deleted somewhere.

    `git branch -D` refuses a branch checked out in some worktree, so a user's own work is
    never deleted from under them.
    """
    gone: list[str] = []
    for name in names:
        deleted = False
        if git.rev_parse(f"refs/heads/{name}") is not None:
            res = git.run("branch", "-D", "--", name, check=False)
            deleted = res.ok
            if not res.ok:
                log.warning("reap %s: %s", name, res.output.strip())
        if remote:
            res = git.run("push", "--quiet", "--delete", remote, name, check=False, timeout=600)
            deleted = deleted or res.ok
            if not res.ok:
                log.warning("reap %s on %s: %s", name, remote, res.output.strip())
        if deleted:
            log.info("reaped branch %s", name)
            gone.append(name)
    return gone


# -- NIPA-compatible JSON ------------------------------------------------------------------


def _iso(when: datetime) -> str:
    return _utc(when).isoformat()


def branches_json(manifests: Iterable[Manifest], public_url: str) -> list[dict[str, str]]:
    """NIPA's `branches.json`, oldest first; `url` is "<public_url> <branch>" (a git URL
    and a branch, as executors pass them to `git fetch`)."""
    return [
        {"branch": m.name, "date": _iso(m.date), "base": m.base, "url": f"{public_url} {m.name}"}
        for m in sorted(manifests, key=lambda m: (_utc(m.date), m.name))
    ]


def branches_info_json(manifests: Iterable[Manifest]) -> dict[str, dict[str, Any]]:
    """NIPA's `branches-info.json`: per branch, merge statuses and the series it holds."""
    return {
        m.name: {
            "base-pulls": dict(m.merges),
            "series": list(m.series),
            "prs": [],
            "extras": [],
            "new-changes": m.new_changes,
        }
        for m in sorted(manifests, key=lambda m: (_utc(m.date), m.name))
    }


def write_json_atomic(path: Path, obj: object) -> None:
    """Write *obj* as JSON to `<path>.new`, then rename over *path*, so a reader polling
    the file never sees half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".new")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, sort_keys=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def manifest_to_dict(m: Manifest) -> dict[str, Any]:
    return {
        "name": m.name,
        "stream": m.stream,
        "date": _iso(m.date),
        "base": m.base,
        "merges": dict(m.merges),
        "series": list(m.series),
        "left_out": [[sid, reason] for sid, reason in m.left_out],
        "head": m.head,
        "new_changes": m.new_changes,
    }


def manifest_from_dict(d: Mapping[str, Any]) -> Manifest:
    """Inverse of `manifest_to_dict`. Raises ValueError naming the key on a damaged
    state file (it is ours, so a bad one means a bug or a manual edit to fix)."""
    try:
        return Manifest(
            name=str(d["name"]),
            stream=str(d["stream"]),
            date=_utc(datetime.fromisoformat(str(d["date"]))),
            base=str(d["base"]),
            merges={str(k): str(v) for k, v in dict(d["merges"]).items()},
            series=tuple(int(s) for s in d["series"]),
            left_out=tuple((int(sid), str(reason)) for sid, reason in d["left_out"]),
            head=str(d["head"]),
            new_changes=bool(d["new_changes"]),
        )
    except KeyError as e:
        raise ValueError(f"branch manifest lacks key {e.args[0]!r}") from e
    except (TypeError, ValueError) as e:
        raise ValueError(f"branch manifest {d.get('name')!r} is malformed: {e}") from e
