"""Executor jobs on worker hosts: each start of a job, its heartbeats, its one stored
result, and the workers seen (db tables executor_jobs, executor_workers).

A job is stored once: `finish` stores the run and marks the job done in one transaction,
and a second result for the same job id (a redelivered message, a retried upload) is
answered "already stored". Each start is kept in `attempts` with how it ended, which is
the evidence when a job that lost its worker twice is recorded as an error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, func, select, update
from sqlalchemy.engine import Connection

from patchci.db import tables as t
from patchci.db.results import ResultsStore
from patchci.db.store import NotFound
from patchci.db.tables import as_utc, utcnow
from patchci.executor.base import RUN_ERROR, RunResult
from patchci.executor.job import DONE, ERROR, FINISHED, MAX_STARTS, QUEUED, RUNNING, JobSpec

log = logging.getLogger(__name__)

# What a worker is told when it asks to start a job.
RUN, ALREADY_DONE, BUSY, GIVEN_UP = "run", "done", "busy", "given-up"


@dataclass(frozen=True)
class JobRow:
    id: str
    run_id: int
    branch: str
    executor: str
    queue: str
    state: str
    enqueued_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None
    deadline: float
    worker: str
    attempts: tuple[dict[str, Any], ...]
    requeues: int

    @property
    def expected_end(self) -> datetime | None:
        if self.state != RUNNING or not self.attempts:
            return None
        return datetime.fromisoformat(self.attempts[-1]["started"]) + timedelta(
            seconds=self.deadline
        )

    @property
    def reruns(self) -> int:
        """Starts after the first: the job ran again after a lost worker."""
        return max(0, len(self.attempts) - 1)


@dataclass(frozen=True)
class WorkerRow:
    name: str
    host: str
    queues: tuple[str, ...]
    first_seen: datetime
    last_seen: datetime
    job_id: str | None


@dataclass(frozen=True)
class Start:
    decision: str  # RUN | ALREADY_DONE | BUSY | GIVEN_UP
    attempt: int = 0
    reason: str = ""


def _row(r: Any) -> JobRow:
    return JobRow(
        r.id, r.run_id, r.branch, r.executor, r.queue, r.state, r.enqueued_at,
        as_utc(r.started_at), as_utc(r.heartbeat_at), as_utc(r.finished_at), r.deadline,
        r.worker, tuple(json.loads(r.attempts)), r.requeues,
    )  # fmt: skip


def _stamp(when: datetime) -> str:
    return when.isoformat(timespec="seconds")


class JobStore(ResultsStore):
    """ResultsStore plus the jobs: a result is stored in the job's own transaction."""

    def _select(self) -> Any:
        jc, rc, bc = t.executor_jobs.c, t.runs.c, t.branches.c
        return (
            select(jc.id, jc.run_id, bc.name.label("branch"), rc.executor, jc.queue, jc.state,
                   jc.enqueued_at, jc.started_at, jc.heartbeat_at, jc.finished_at,
                   jc.deadline, jc.worker, jc.attempts, jc.requeues)
            .join(t.runs, rc.id == jc.run_id)
            .join(t.branches, bc.id == rc.branch_id)
        )  # fmt: skip

    def add_job(self, spec: JobSpec, now: datetime | None = None) -> None:
        with self._write() as conn:
            conn.execute(t.executor_jobs.insert().values(
                id=spec.job_id, run_id=spec.run_id, queue=spec.queue, payload=spec.to_json(),
                state=QUEUED, enqueued_at=now or utcnow(), deadline=spec.deadline,
            ))  # fmt: skip

    def job(self, job_id: str) -> JobRow:
        with self._read() as conn:
            r = conn.execute(self._select().where(t.executor_jobs.c.id == job_id)).first()
        if r is None:
            raise NotFound(f"job {job_id}")
        return _row(r)

    def spec(self, job_id: str) -> JobSpec:
        with self._read() as conn:
            text = conn.execute(
                select(t.executor_jobs.c.payload).where(t.executor_jobs.c.id == job_id)
            ).scalar()
        if text is None:
            raise NotFound(f"job {job_id}")
        return JobSpec.from_json(text)

    def jobs(self, states: Sequence[str] = (), limit: int = 500) -> list[JobRow]:
        q = self._select().order_by(t.executor_jobs.c.enqueued_at.desc()).limit(limit)
        if states:
            q = q.where(t.executor_jobs.c.state.in_(states))
        with self._read() as conn:
            return [_row(r) for r in conn.execute(q)]

    def branch_jobs(self, branch: str) -> list[JobRow]:
        with self._read() as conn:
            return [
                _row(r) for r in conn.execute(self._select().where(t.branches.c.name == branch))
            ]

    # --- what a worker reports -------------------------------------------------------------

    def start(
        self, job_id: str, worker: str, stale_after: float, now: datetime | None = None
    ) -> Start:
        """A worker starts *job_id*: run it, or not (done already, fresh elsewhere, or a
        second lost worker: then the job and its run become an error, ours)."""
        now = now or utcnow()
        jc = t.executor_jobs.c
        with self._write() as conn:
            r = self._row_for_update(conn, job_id)
            if r.state in FINISHED:
                return Start(ALREADY_DONE, reason=f"job is {r.state} already")
            attempts: list[dict[str, Any]] = json.loads(r.attempts)
            beat = as_utc(r.heartbeat_at)
            age = (now - beat).total_seconds() if beat is not None else stale_after
            if r.state == RUNNING and r.worker != worker and age < stale_after:  # a duplicate
                return Start(BUSY, reason=f"running on {r.worker}, heard {beat:%H:%M:%S}")
            if attempts and "ended" not in attempts[-1]:
                last = attempts[-1]
                heard = _stamp(beat) if beat else last["started"]
                last.update(ended=_stamp(now), how=f"lost: {last['worker']} last heard {heard}")
            if len(attempts) >= MAX_STARTS:
                why = self._give_up(conn, r, attempts, now)
                return Start(GIVEN_UP, reason=why)
            attempts.append({"worker": worker, "started": _stamp(now)})
            conn.execute(update(t.executor_jobs).where(jc.id == job_id).values(
                state=RUNNING, worker=worker, heartbeat_at=now, attempts=json.dumps(attempts),
                started_at=func.coalesce(jc.started_at, now),
            ))  # fmt: skip
            return Start(RUN, attempt=len(attempts))

    @staticmethod
    def _row_for_update(conn: Connection, job_id: str) -> Any:
        r = conn.execute(select(t.executor_jobs).where(t.executor_jobs.c.id == job_id)).first()
        if r is None:
            raise NotFound(f"job {job_id}")
        return r

    def _give_up(
        self, conn: Connection, r: Any, attempts: list[dict[str, Any]], now: datetime
    ) -> str:
        lost = "; ".join(f"start {i} on {a['worker']} at {a['started']} ({a.get('how', '?')})"
                         for i, a in enumerate(attempts, 1))  # fmt: skip
        why = (f"its worker was lost {len(attempts)} times ({lost}); not run again: an "
               "infrastructure error, not the series'")  # fmt: skip
        conn.execute(update(t.executor_jobs).where(t.executor_jobs.c.id == r.id).values(
            state=ERROR, finished_at=now, attempts=json.dumps(attempts),
        ))  # fmt: skip
        run = self._load_run_row(conn, r.run_id)
        self._finish(conn, r.run_id, RunResult(run[0], run[1], now, now, RUN_ERROR, why))
        log.error("job %s (run %d): %s", r.id, r.run_id, why)
        return why

    @staticmethod
    def _load_run_row(conn: Connection, run_id: int) -> tuple[str, str]:
        rc, bc = t.runs.c, t.branches.c
        row = conn.execute(
            select(rc.executor, bc.name)
            .join(t.branches, bc.id == rc.branch_id)
            .where(rc.id == run_id)
        ).first()
        if row is None:
            raise NotFound(f"run {run_id}")
        return row[0], row[1]

    def heartbeat(self, job_id: str, worker: str, now: datetime | None = None) -> bool:
        """False when the job is not (or no longer) this worker's to run."""
        jc = t.executor_jobs.c
        with self._write() as conn:
            res = conn.execute(update(t.executor_jobs)
                               .where(jc.id == job_id, jc.worker == worker, jc.state == RUNNING)
                               .values(heartbeat_at=now or utcnow()))  # fmt: skip
            return res.rowcount == 1

    def take_bytes(self, job_id: str, n: int, limit: int) -> bool:
        """Count *n* more uploaded bytes for the job; False (nothing counted) past *limit*."""
        jc = t.executor_jobs.c
        with self._write() as conn:
            res = conn.execute(update(t.executor_jobs)
                               .where(jc.id == job_id, jc.uploaded_bytes + n <= limit)
                               .values(uploaded_bytes=jc.uploaded_bytes + n))  # fmt: skip
            return res.rowcount == 1

    def finish(self, job_id: str, worker: str, run: RunResult, now: datetime | None = None) -> bool:
        """Store the job's result once; False when it was stored before (or given up)."""
        now = now or utcnow()
        jc = t.executor_jobs.c
        with self._write() as conn:
            r = self._row_for_update(conn, job_id)
            if r.state in FINISHED:
                return False
            attempts: list[dict[str, Any]] = json.loads(r.attempts)
            for a in reversed(attempts):
                if a["worker"] == worker and "ended" not in a:
                    a.update(ended=_stamp(now), how=f"result: {run.status}")
                    break
            conn.execute(update(t.executor_jobs).where(jc.id == job_id).values(
                state=DONE, finished_at=now, attempts=json.dumps(attempts), worker=worker,
            ))  # fmt: skip
            self._finish(conn, r.run_id, run)
        log.info("job %s: %s's result stored (run %d, %s, %d tests)",
                 job_id, worker, r.run_id, run.status, len(run.tests))  # fmt: skip
        return True

    def fail_job(self, job_id: str, why: str, now: datetime | None = None) -> bool:
        """Record the job as an error (ours) unless it has a result already."""
        now = now or utcnow()
        jc = t.executor_jobs.c
        with self._write() as conn:
            r = conn.execute(select(t.executor_jobs).where(jc.id == job_id)).first()
            if r is None or r.state in FINISHED:
                return False
            conn.execute(update(t.executor_jobs).where(jc.id == job_id)
                         .values(state=ERROR, finished_at=now))  # fmt: skip
            ex, branch = self._load_run_row(conn, r.run_id)
            self._finish(conn, r.run_id, RunResult(ex, branch, now, now, RUN_ERROR, why))
        return True

    # --- the daemon's side -----------------------------------------------------------------

    def lost(
        self, heartbeat_timeout: float, requeue_after: float, now: datetime | None = None
    ) -> list[JobRow]:
        """Running jobs not heard from in *heartbeat_timeout*, and queued ones no worker
        started within *requeue_after* (a message the broker lost)."""
        now = now or utcnow()
        out = []
        for j in self.jobs((QUEUED, RUNNING), limit=10_000):
            if j.state == RUNNING:
                beat = j.heartbeat_at or j.started_at or j.enqueued_at
                if (now - beat).total_seconds() > heartbeat_timeout:
                    out.append(j)
            elif (now - j.enqueued_at).total_seconds() > requeue_after:
                out.append(j)
        return out

    def sent(self, job_id: str) -> None:
        """The broker took the job's message."""
        with self._write() as conn:
            conn.execute(update(t.executor_jobs).where(t.executor_jobs.c.id == job_id)
                         .values(sent=True))  # fmt: skip

    def unsent(self) -> list[str]:
        """Queued jobs whose message the broker never took (it was down): send again."""
        jc = t.executor_jobs.c
        with self._read() as conn:
            return list(conn.execute(select(jc.id).where(jc.state == QUEUED, ~jc.sent)).scalars())

    def requeued(self, job_id: str, now: datetime | None = None) -> None:
        """Sent again: queued until a worker starts it (its last start, if any, is lost)."""
        jc = t.executor_jobs.c
        with self._write() as conn:
            conn.execute(
                update(t.executor_jobs)
                .where(jc.id == job_id, jc.state.in_((QUEUED, RUNNING)))
                .values(state=QUEUED, enqueued_at=now or utcnow(), requeues=jc.requeues + 1)
            )

    def finished_branches(self) -> list[str]:
        """Branches whose jobs have all ended and whose results are not collected yet."""
        jc, rc, bc = t.executor_jobs.c, t.runs.c, t.branches.c
        q = (
            select(bc.name, func.min(jc.collected.cast(Integer)).label("done"),
                   func.sum((~jc.state.in_(FINISHED)).cast(Integer)).label("open"))
            .select_from(t.executor_jobs).join(t.runs, rc.id == jc.run_id)
            .join(t.branches, bc.id == rc.branch_id).group_by(bc.name)
        )  # fmt: skip
        with self._read() as conn:
            return [r.name for r in conn.execute(q) if not r.open and not r.done]

    def mark_collected(self, branch: str) -> None:
        jc, rc, bc = t.executor_jobs.c, t.runs.c, t.branches.c
        runs = select(rc.id).join(t.branches, bc.id == rc.branch_id).where(bc.name == branch)
        with self._write() as conn:
            conn.execute(update(t.executor_jobs).where(jc.run_id.in_(runs)).values(collected=True))

    # --- workers -----------------------------------------------------------------------------

    def seen(self, name: str, host: str, queues: Sequence[str], job_id: str | None,
             now: datetime | None = None) -> None:  # fmt: skip
        now = now or utcnow()
        wc = t.executor_workers.c
        values = {"host": host, "queues": ",".join(queues), "last_seen": now, "job_id": job_id}
        with self._write() as conn:
            res = conn.execute(update(t.executor_workers).where(wc.name == name).values(**values))
            if res.rowcount == 0:
                conn.execute(
                    t.executor_workers.insert().values(name=name, first_seen=now, **values)
                )

    def workers(self) -> list[WorkerRow]:
        with self._read() as conn:
            rows = conn.execute(select(t.executor_workers).order_by(t.executor_workers.c.name))
            return [WorkerRow(r.name, r.host, tuple(q for q in r.queues.split(",") if q),
                              as_utc(r.first_seen), as_utc(r.last_seen), r.job_id)  # type: ignore[arg-type]
                    for r in rows]  # fmt: skip
