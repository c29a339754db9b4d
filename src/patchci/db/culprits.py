"""Culprit searches of test branches (the `bisections` table): which series broke which
test, with the probes that show it. Same pattern as `results.ResultsStore`."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from patchci.analysis.bisect import ENDED, RUNNING
from patchci.db import tables as t
from patchci.db.base import Database
from patchci.db.tables import as_utc, utcnow


@dataclass(frozen=True)
class Step:
    """One probe: the test run at *point* (0 the base, i the tip of the branch's i-th
    series) on *commit*; *outcome* pass | fail | unknown, *detail* what decided it."""

    point: int
    series_id: int | None
    commit: str
    outcome: str
    detail: str = ""
    log_dir: str = ""


@dataclass(frozen=True)
class SearchRow:
    id: int
    branch: str
    executor: str
    group: str
    name: str
    status: str
    culprit_series_id: int | None
    steps: tuple[Step, ...]
    reason: str
    started: datetime
    finished: datetime | None
    worker: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.executor, self.group, self.name)

    @property
    def ended(self) -> bool:
        return self.status in ENDED


def _steps(raw: str) -> tuple[Step, ...]:
    return tuple(Step(**s) for s in json.loads(raw))


class CulpritStore(Database):
    """Culprit searches in the patchci database (the engine may be shared with Store)."""

    def open_searches(self, branch_id: int, keys: Sequence[tuple[str, str, str]]) -> None:
        """A running search for each (executor, group, name) of the branch that has none."""
        bc = t.bisections.c
        now = utcnow()
        with self._write() as conn:
            have = {
                (r.executor, r.grp, r.name)
                for r in conn.execute(
                    select(bc.executor, bc.grp, bc.name).where(bc.branch_id == branch_id)
                )  # fmt: skip
            }
            rows = [
                {
                    "branch_id": branch_id,
                    "executor": e,
                    "grp": g,
                    "name": n,
                    "status": RUNNING,
                    "steps": "[]",
                    "reason": "",
                    "started_at": now,
                }  # fmt: skip
                for e, g, n in dict.fromkeys(keys)
                if (e, g, n) not in have
            ]
            if rows:
                conn.execute(t.bisections.insert(), rows)

    def searches(self, branch: str) -> list[SearchRow]:
        """Every search of *branch*, in the order they were opened."""
        bc, brc = t.bisections.c, t.branches.c
        q = (
            select(t.bisections, brc.name.label("branch"))
            .join(t.branches, brc.id == bc.branch_id)
            .where(brc.name == branch)
            .order_by(bc.id)
        )
        with self._read() as conn:
            return [self._row(r) for r in conn.execute(q)]

    def claimable(self, dead: Callable[[str], bool], now: datetime | None = None) -> list[str]:
        """Branches with a running search nobody holds (never held, lease ended, or held by
        a worker known *dead*), oldest first."""
        now = now or utcnow()
        bc, brc = t.bisections.c, t.branches.c
        q = (
            select(brc.name, bc.worker, bc.lease_until)
            .join(t.branches, brc.id == bc.branch_id)
            .where(bc.status == RUNNING)
            .order_by(bc.id)
        )
        with self._read() as conn:
            rows = conn.execute(q).all()
        out: dict[str, None] = {}
        for r in rows:
            until = as_utc(r.lease_until) if r.lease_until is not None else None
            if r.worker and until is not None and until > now and not dead(r.worker):
                continue
            out[r.name] = None
        return list(out)

    def hold(self, branch: str, worker: str, lease: float, *, take_over: bool = False) -> bool:
        """Take or extend the lease on *branch*'s running searches; False when another
        worker holds one. *take_over* takes them from a holder claimable() found gone."""
        bc, brc = t.bisections.c, t.branches.c
        until = utcnow() + timedelta(seconds=lease)
        with self._write() as conn:
            bid = conn.execute(select(brc.id).where(brc.name == branch)).scalar_one()
            mine = (bc.branch_id == bid) & (bc.status == RUNNING)
            if not take_over:
                others = conn.execute(
                    select(bc.id).where(mine, bc.worker != "", bc.worker != worker)
                ).first()
                if others is not None:
                    return False
            conn.execute(t.bisections.update().where(mine)
                         .values(worker=worker, lease_until=until))  # fmt: skip
            return True

    def add_step(self, search_id: int, step: Step) -> None:
        """Record one more probe of a running search."""
        bc = t.bisections.c
        with self._write() as conn:
            raw = conn.execute(select(bc.steps).where(bc.id == search_id)).scalar_one()
            steps = [*json.loads(raw), step.__dict__]
            conn.execute(t.bisections.update().where(bc.id == search_id)
                         .values(steps=json.dumps(steps)))  # fmt: skip

    def end(
        self, search_id: int, status: str, culprit: int | None = None, reason: str = ""
    ) -> None:
        """A search is over: *status* one of analysis.bisect.ENDED."""
        if status not in ENDED:
            raise ValueError(f"search status {status!r} is not one of {ENDED}")
        bc = t.bisections.c
        with self._write() as conn:
            conn.execute(
                t.bisections.update()
                .where(bc.id == search_id)
                .values(
                    status=status,
                    culprit_series_id=culprit,
                    reason=reason,
                    finished_at=utcnow(),
                    lease_until=None,
                )  # fmt: skip
            )

    @staticmethod
    def _row(r: object) -> SearchRow:
        g = r._mapping  # type: ignore[attr-defined]
        started = as_utc(g["started_at"])
        assert started is not None
        return SearchRow(
            id=g["id"], branch=g["branch"], executor=g["executor"], group=g["grp"],
            name=g["name"], status=g["status"], culprit_series_id=g["culprit_series_id"],
            steps=_steps(g["steps"]), reason=g["reason"], started=started,
            finished=as_utc(g["finished_at"]) if g["finished_at"] is not None else None,
            worker=g["worker"],
        )  # fmt: skip
