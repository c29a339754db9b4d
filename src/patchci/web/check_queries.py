"""Check statistics, read-only: per check, its outcomes day by day and its slowest runs.

What a maintainer asks of a check ("is checkpatch failing everything since Tuesday?",
"which series made build take an hour?") is answered from `check_results` alone: every
result stored is counted, reruns included, since each was a run of the check. Days are
UTC days; a day without results is shown as zeros, so a gap is visible.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.engine import Connection

from patchci.db import tables as t
from patchci.model import Outcome

OUTCOMES = tuple(o.value for o in Outcome if o is not Outcome.PENDING)


@dataclass(frozen=True)
class CheckDay:
    day: date
    counts: dict[str, int]  # outcome → results that day (every outcome, zeros included)
    total: int


@dataclass(frozen=True)
class SlowRun:
    series_id: int
    series_name: str
    patch_idx: int | None  # None: the result is about the whole series
    outcome: str
    duration: float
    description: str
    created_at: datetime


@dataclass(frozen=True)
class CheckStat:
    name: str
    total: int
    counts: dict[str, int]  # over the window, every outcome
    # fail + crash + timeout over the results that ran (skip and error excluded): the
    # patches' share; error is ours and is counted apart.
    fail_rate: float | None
    median_duration: float | None
    max_duration: float | None
    last_at: datetime | None
    days: list[CheckDay]  # oldest first, one per day of the window
    slowest: list[SlowRun]  # slowest first


@dataclass(frozen=True)
class CheckStats:
    since: datetime
    until: datetime
    days: int
    checks: list[CheckStat]


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def check_stats(
    conn: Connection, now: datetime, days: int, *, slowest: int = 5, check: str | None = None
) -> CheckStats:
    """The results stored in the *days* UTC days up to *now* (today included), per check
    name (only *check* when given), names sorted."""
    first_day = now.date() - timedelta(days=days - 1)
    since = datetime.combine(first_day, datetime.min.time(), tzinfo=now.tzinfo)
    cr = t.check_results
    where = [cr.c.created_at >= since, cr.c.created_at <= now]
    if check is not None:
        where.append(cr.c.check_name == check)
    rows = conn.execute(
        select(cr.c.check_name, cr.c.outcome, cr.c.duration, cr.c.created_at).where(*where)
    ).all()
    by_check: dict[str, list[tuple[str, float, datetime]]] = defaultdict(list)
    for name, outcome, duration, created in rows:
        by_check[name].append((outcome, float(duration), created))
    stats = []
    for name in sorted(by_check):
        results = by_check[name]
        counts = dict.fromkeys(OUTCOMES, 0)
        per_day: dict[date, dict[str, int]] = defaultdict(lambda: dict.fromkeys(OUTCOMES, 0))
        for outcome, _, created in results:
            counts[outcome] = counts.get(outcome, 0) + 1
            day = per_day[created.date()]
            day[outcome] = day.get(outcome, 0) + 1
        ran = sum(counts[o] for o in ("pass", "warn", "fail", "xfail", "crash", "timeout"))
        failed = counts["fail"] + counts["crash"] + counts["timeout"]
        durations = [d for _, d, _ in results]
        day_rows = []
        for i in range(days):
            d = first_day + timedelta(days=i)
            c = per_day.get(d, dict.fromkeys(OUTCOMES, 0))
            day_rows.append(CheckDay(d, c, sum(c.values())))
        stats.append(CheckStat(
            name=name, total=len(results), counts=counts,
            fail_rate=failed / ran if ran else None,
            median_duration=_median(durations), max_duration=max(durations),
            last_at=max(c for _, _, c in results), days=day_rows,
            slowest=_slowest(conn, name, since, now, slowest),
        ))  # fmt: skip
    return CheckStats(since, now, days, stats)


def _slowest(
    conn: Connection, name: str, since: datetime, until: datetime, n: int
) -> list[SlowRun]:
    cr, s = t.check_results, t.series
    rows = conn.execute(
        select(cr.c.series_id, s.c.name, cr.c.patch_idx, cr.c.outcome, cr.c.duration,
               cr.c.description, cr.c.created_at)
        .join(s, s.c.id == cr.c.series_id)
        .where(cr.c.check_name == name, cr.c.created_at >= since, cr.c.created_at <= until)
        .order_by(cr.c.duration.desc(), cr.c.id.desc())
        .limit(n)
    ).all()  # fmt: skip
    return [SlowRun(*r) for r in rows]


def check_names(conn: Connection) -> list[str]:
    """Every check name ever stored, for the page's menu."""
    cr = t.check_results
    rows = conn.execute(select(cr.c.check_name).group_by(cr.c.check_name)).scalars()
    return sorted(rows)
