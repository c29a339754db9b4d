"""The contest data as paginated API lists: every run, and the regressions of the test
branches with who their culprit search blamed. Read-only; the pages are `page` and
`per_page` with `total` and `pages`, as /api/v1/series."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from patchci.config import Settings
from patchci.db import tables as t
from patchci.db.culprits import CulpritStore
from patchci.db.results import ResultsStore
from patchci.report.contest import REGRESSION
from patchci.service.runs import contest_summary


@dataclass(frozen=True)
class RunItem:
    id: int
    branch: str
    stream: str
    executor: str
    status: str  # running | done | error (ours)
    error: str
    started_at: datetime
    finished_at: datetime | None
    tests: int
    failed: int  # tests whose final outcome is fail, crash or timeout


@dataclass(frozen=True)
class RunsPage:
    items: list[RunItem]
    page: int
    pages: int
    total: int
    per_page: int


@dataclass(frozen=True)
class RegressionItem:
    branch: str
    stream: str
    executor: str
    group: str
    name: str
    outcome: str
    subtests: list[str]
    note: str  # the evidence the verdict gives
    search: str | None  # the culprit search's status, None when none was opened
    culprit_series_id: int | None


@dataclass(frozen=True)
class RegressionsPage:
    items: list[RegressionItem]
    page: int  # a page of branches, newest first: each with all its regressions
    pages: int
    total: int  # branches
    per_page: int


FAILED = ("fail", "crash", "timeout")


def list_runs(
    conn: Connection, *, branch: str | None, stream: str | None, executor: str | None,
    status: str | None, page: int, per_page: int,
) -> RunsPage:  # fmt: skip
    rc, bc, tc = t.runs.c, t.branches.c, t.tests.c
    where = []
    if branch:
        where.append(bc.name == branch)
    if stream:
        where.append(bc.stream == stream)
    if executor:
        where.append(rc.executor == executor)
    if status:
        where.append(rc.status == status)
    base = select(rc.id).join(t.branches, bc.id == rc.branch_id).where(*where)
    total = int(conn.execute(select(func.count()).select_from(base.subquery())).scalar_one())
    final = func.coalesce(tc.retry_outcome, tc.outcome)
    counts = (select(tc.run_id, func.count().label("n"),
                     func.count().filter(final.in_(FAILED)).label("f"))
              .group_by(tc.run_id).subquery())  # fmt: skip
    q = (select(rc.id, bc.name, bc.stream, rc.executor, rc.status, rc.error, rc.started_at,
                rc.finished_at, func.coalesce(counts.c.n, 0), func.coalesce(counts.c.f, 0))
         .join(t.branches, bc.id == rc.branch_id)
         .outerjoin(counts, counts.c.run_id == rc.id).where(*where)
         .order_by(bc.date.desc(), rc.id.desc())
         .offset((page - 1) * per_page).limit(per_page))  # fmt: skip
    items = [RunItem(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], int(r[8]), int(r[9]))
             for r in conn.execute(q)]  # fmt: skip
    return RunsPage(items, page, max(1, math.ceil(total / per_page)), total, per_page)


def list_regressions(
    conn: Connection, engine: Engine, settings: Settings | None, *, stream: str | None,
    page: int, per_page: int,
) -> RegressionsPage:  # fmt: skip
    """The regressions of one page of branches (newest first), as the contest verdict
    finds them, each with its culprit search."""
    bc = t.branches.c
    q = select(bc.name, bc.stream).order_by(bc.date.desc(), bc.id.desc())
    if stream:
        q = q.where(bc.stream == stream)
    total = int(conn.execute(select(func.count()).select_from(q.subquery())).scalar_one())
    rows = conn.execute(q.offset((page - 1) * per_page).limit(per_page)).all()
    results, culprits = ResultsStore(engine), CulpritStore(engine)
    items = []
    for name, branch_stream in rows:
        summary = contest_summary(results, name, settings)
        searches = {s.key: s for s in culprits.searches(name)}
        for f in summary.of_kind(REGRESSION):
            s = searches.get((f.executor, f.group, f.name))
            items.append(RegressionItem(
                name, branch_stream, f.executor, f.group, f.name, f.outcome.value,
                list(f.subtests), f.note, s.status if s else None,
                s.culprit_series_id if s else None,
            ))  # fmt: skip
    return RegressionsPage(items, page, max(1, math.ceil(total / per_page)), total, per_page)
