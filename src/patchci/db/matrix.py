"""The flakes matrix as a derived table: one row per test, one code per branch.

Reading the newest N branches of a history straight from `tests` means a row per test and
branch: 100 000 rows for 1 000 tests over 100 branches, too many to serve a page from.
`test_matrix` keeps, per (stream, executor, group, test), a string whose i-th character
is the test's code (`analysis.flakes.code`) on the stream's branch with seq i+1, "." when
it did not run there; when several runs of one executor tested a branch, the last one
recorded wins. The page then reads one row per test and a substring of it.

It is written in the transaction that writes what it derives from (`ResultsStore`) and
can be rebuilt from the source tables at any time (`rebuild`: the migration that added it,
the benchmark's bulk fill).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, exists, false, func, select
from sqlalchemy.engine import Connection

from patchci.analysis.flakes import NOT_RUN, HistoryEntry, code
from patchci.db import tables as t
from patchci.model import Outcome

Key = tuple[str, str, str]  # executor, grp, name


def result_code(outcome: str, retry: str | None, crashed: bool) -> str:
    """The code of a stored result (an unknown outcome reads as an error, as elsewhere)."""
    return code(HistoryEntry(Outcome.stored(outcome), Outcome.stored_or_none(retry), crashed))


def put(codes: str, seq: int, c: str) -> str:
    """*codes* with position *seq* (1-based) set to *c*; NOT_RUN never lengthens it."""
    i = seq - 1
    if len(codes) <= i:
        return codes if c == NOT_RUN else codes.ljust(i, NOT_RUN) + c
    return codes[:i] + c + codes[i + 1 :]


def _results(conn: Connection, *where: Any) -> Iterable[Any]:
    """(seq, executor, grp, name, outcome, retry, crashed) in recording order (run id)."""
    tc, rc, bc, cc = t.tests.c, t.runs.c, t.branches.c, t.crashes.c
    crashed = exists().where(cc.test_id == tc.id, cc.ignored == false())
    q = (
        select(bc.seq, rc.executor, tc.grp, tc.name, tc.outcome, tc.retry_outcome, crashed)
        .select_from(t.tests.join(t.runs).join(t.branches))
        .where(*where)
        .order_by(rc.id, tc.id)
    )
    return conn.execute(q)


def refresh(conn: Connection, branch_id: int, executor: str) -> None:
    """Recompute the column of one branch for one executor from its runs' tests."""
    bc, mc, rc = t.branches.c, t.test_matrix.c, t.runs.c
    b = conn.execute(select(bc.seq, bc.stream).where(bc.id == branch_id)).one()
    new: dict[Key, str] = {}
    for _seq, ex, grp, name, outcome, retry, crashed in _results(
        conn, rc.branch_id == branch_id, rc.executor == executor
    ):
        new[(ex, grp, name)] = result_code(outcome, retry, bool(crashed))
    rows = conn.execute(
        select(mc.id, mc.grp, mc.name, mc.codes).where(
            mc.stream == b.stream, mc.executor == executor
        )
    )
    updates = []
    for row in rows:
        codes = put(row.codes, b.seq, new.pop((executor, row.grp, row.name), NOT_RUN))
        if codes != row.codes:
            updates.append({"row_id": row.id, "codes": codes})
    if updates:
        _update(conn, updates)
    _insert(conn, b.stream, {k: put("", b.seq, c) for k, c in new.items()})


def renumber(conn: Connection, stream: str) -> None:
    """Number the stream's branches by (date, id) and rebuild its matrix: for a branch that
    arrived out of date order, or changed its date or stream."""
    bc = t.branches.c
    ids = conn.execute(
        select(bc.id, bc.seq).where(bc.stream == stream).order_by(bc.date, bc.id)
    ).all()
    moved = [{"row_id": r.id, "seq": i} for i, r in enumerate(ids, 1) if r.seq != i]
    if moved:
        conn.execute(
            t.branches.update().where(bc.id == bindparam("row_id")).values(seq=bindparam("seq")),
            moved,
        )
    conn.execute(t.test_matrix.delete().where(t.test_matrix.c.stream == stream))
    built: dict[Key, str] = {}
    for seq, ex, grp, name, outcome, retry, crashed in _results(
        conn, t.branches.c.stream == stream
    ):
        key = (ex, grp, name)
        built[key] = put(built.get(key, ""), seq, result_code(outcome, retry, bool(crashed)))
    _insert(conn, stream, built)


def rebuild(conn: Connection) -> None:
    """Every stream's matrix from the source tables."""
    for stream in conn.execute(select(t.branches.c.stream).distinct()).scalars().all():
        renumber(conn, stream)
    known = select(t.branches.c.stream)
    conn.execute(t.test_matrix.delete().where(t.test_matrix.c.stream.not_in(known)))


def next_seq(conn: Connection, stream: str) -> int:
    bc = t.branches.c
    return int(conn.execute(select(func.coalesce(func.max(bc.seq), 0)).where(
        bc.stream == stream)).scalar_one()) + 1  # fmt: skip


def _update(conn: Connection, rows: list[dict[str, Any]]) -> None:
    mc = t.test_matrix.c
    conn.execute(
        t.test_matrix.update().where(mc.id == bindparam("row_id")).values(codes=bindparam("codes")),
        rows,
    )


def _insert(conn: Connection, stream: str, built: dict[Key, str]) -> None:
    rows = [
        {"stream": stream, "executor": ex, "grp": grp, "name": name, "codes": codes}
        for (ex, grp, name), codes in built.items()
    ]
    if rows:
        conn.execute(t.test_matrix.insert(), rows)


@dataclass(frozen=True)
class Window:
    """The newest branches of a stream and each test's codes on them, oldest first."""

    stream: str | None
    branches: list[str]  # newest first
    rows: list[tuple[str, str, str, str]]  # executor, grp, name, codes (oldest first)


def window(
    conn: Connection, stream: str | None, n: int, *,
    executor: str | None = None, grp: str | None = None, name: str | None = None,
) -> Window:  # fmt: skip
    """The newest *n* branches of *stream* (default: the newest branch's) and the codes of
    every test that ran on one of them; *name* matches a substring, case-insensitively."""
    bc, mc = t.branches.c, t.test_matrix.c
    if stream is None:
        newest = select(bc.stream).order_by(bc.date.desc(), bc.id.desc()).limit(1)
        stream = conn.execute(newest).scalar_one_or_none()
        if stream is None:
            return Window(None, [], [])
    named = conn.execute(
        select(bc.name, bc.seq).where(bc.stream == stream).order_by(bc.seq.desc()).limit(n)
    ).all()
    if not named:
        return Window(stream, [], [])
    lo, hi = named[-1].seq, named[0].seq
    width = hi - lo + 1
    q = select(mc.executor, mc.grp, mc.name, func.substr(mc.codes, lo, width)).where(
        mc.stream == stream, func.length(mc.codes) >= lo
    )
    if executor is not None:
        q = q.where(mc.executor == executor)
    if grp is not None:
        q = q.where(mc.grp == grp)
    if name:
        q = q.where(mc.name.icontains(name, autoescape=True))
    rows = []
    for ex, g, nm, codes in conn.execute(q):
        codes = codes.ljust(width, NOT_RUN)
        if codes.count(NOT_RUN) < width:
            rows.append((ex, g, nm, codes))
    return Window(stream, [r.name for r in named], rows)
