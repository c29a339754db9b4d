"""One test branch as its page and the API show it: its series, its runs, its contest
verdict with the findings, and what changed since the stream's previous branch
(analysis.cidiff), each change marked when the expectations file expects it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from patchci.analysis import cidiff
from patchci.config import Settings
from patchci.db import tables as t
from patchci.db.results import ResultsStore, RunRow
from patchci.model import Outcome
from patchci.report.contest import Finding
from patchci.service.runs import baseline_runs, contest_summary
from patchci.service.verdicts import expectations_of, scope_of
from patchci.web.contest_queries import BranchSeries, branch_series


@dataclass(frozen=True)
class ChangeView:
    executor: str
    group: str
    name: str
    subtest: str
    kind: str  # newly-failing | fixed | newly-skipped | new | removed
    before: Outcome | None
    after: Outcome | None
    expected: str | None = None  # the expectations entry that expects it


@dataclass(frozen=True)
class BranchDiff:
    branch: str
    previous: str | None  # None: the stream's first branch, nothing to compare with
    # (an executor whose run there failed is compared with its run on an earlier branch)
    counts: dict[str, int]
    changes: list[ChangeView]


@dataclass(frozen=True)
class BranchView:
    name: str
    stream: str
    date: datetime
    base: str
    head: str
    previous: str | None
    state: str  # the contest verdict of the branch as a whole
    description: str
    findings: list[Finding]
    series: list[BranchSeries]
    runs: list[RunRow]
    diff: BranchDiff
    infra_errors: list[str] = field(default_factory=list)


def branch_diff(engine: Engine, settings: Settings, name: str, today: date) -> BranchDiff:
    """Raises NotFound for an unknown branch."""
    results = ResultsStore(engine)
    results.branch(name)
    prev = results.previous_branch(name)
    if prev is None:
        return BranchDiff(name, None, cidiff.counts([]), [])
    runs = results.branch_results(name)
    before = baseline_runs(results, name, {r.executor for r in runs}) or []
    changes = cidiff.diff(before, runs)
    expect = expectations_of(settings)
    scope = scope_of(settings, results, name) if expect.entries else None
    views = []
    for c in changes:
        expected = None
        want = {cidiff.NEWLY_FAILING: "fail", cidiff.NEWLY_SKIPPED: "skip"}.get(c.kind)
        if want and scope is not None:
            subs = (c.subtest,) if c.subtest else ()
            m = expect.match(replace(scope, executor=c.executor), c.group, c.name, want, subs,
                             today=today)  # fmt: skip
            expected = m.describe() if m else None
        views.append(ChangeView(c.executor, c.group, c.name, c.subtest, c.kind, c.before,
                                c.after, expected))  # fmt: skip
    return BranchDiff(name, prev.name, cidiff.counts(changes), views)


def branch_view(
    conn: Connection, engine: Engine, settings: Settings, name: str, today: date
) -> BranchView:
    results = ResultsStore(engine)
    row = results.branch(name)
    summary = contest_summary(results, name, settings)
    d = branch_diff(engine, settings, name, today)
    return BranchView(row.name, row.stream, row.date, row.base, row.head, d.previous,
                      summary.state, summary.description, list(summary.findings),
                      branch_series(conn, name), results.branch_runs(name), d,
                      list(summary.infra_errors))  # fmt: skip


@dataclass(frozen=True)
class BranchItem:
    name: str
    stream: str
    date: datetime
    series: int  # in it
    left_out: int
    runs: int
    running: int
    run_errors: int  # ours: not the series' fault


def list_branches(conn: Connection, stream: str | None, limit: int) -> list[BranchItem]:
    """Test branches newest first (of one stream), with their series and run counts."""
    bc, bs, rc = t.branches.c, t.branch_series.c, t.runs.c
    q = select(bc.id, bc.name, bc.stream, bc.date).order_by(bc.date.desc(), bc.id.desc())
    if stream:
        q = q.where(bc.stream == stream)
    rows = conn.execute(q.limit(limit)).all()
    ids = [r.id for r in rows]
    series: dict[int, tuple[int, int]] = {}
    runs: dict[int, tuple[int, int, int]] = {}
    if ids:
        sq = select(bs.branch_id, func.count().filter(bs.included),
                    func.count().filter(~bs.included)).where(bs.branch_id.in_(ids)) \
            .group_by(bs.branch_id)  # fmt: skip
        series = {b: (int(i), int(o)) for b, i, o in conn.execute(sq)}
        rq = select(rc.branch_id, func.count(), func.count().filter(rc.status == "running"),
                    func.count().filter(rc.status == "error")).where(rc.branch_id.in_(ids)) \
            .group_by(rc.branch_id)  # fmt: skip
        runs = {b: (int(n), int(r), int(e)) for b, n, r, e in conn.execute(rq)}
    return [BranchItem(r.name, r.stream, r.date, *series.get(r.id, (0, 0)),
                       *runs.get(r.id, (0, 0, 0))) for r in rows]  # fmt: skip
