"""One test branch as its page and the API show it: its series, its runs, its contest
verdict with the findings, and what changed since the stream's previous branch
(analysis.cidiff), each change marked when the expectations file expects it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy.engine import Connection, Engine

from patchci.analysis import cidiff
from patchci.config import Settings
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
    scopes = {}
    views = []
    for c in changes:
        expected = None
        want = {cidiff.NEWLY_FAILING: "fail", cidiff.NEWLY_SKIPPED: "skip"}.get(c.kind)
        if want and expect.entries:
            if c.executor not in scopes:
                scopes[c.executor] = scope_of(settings, results, name, c.executor)
            subs = (c.subtest,) if c.subtest else ()
            m = expect.match(scopes[c.executor], c.group, c.name, want, subs, today=today)
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
