"""Without a `[broker]`, a branch's executors run at once in the daemon's own worker pool
(`executor_pool`), as issue 11's embedded default asks; with 1, one after the other."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from patchci.cli import main
from patchci.db import tables as t
from patchci.db.migrate import make_engine
from tests.workersite import Redis, Site


def _runs(site: Site) -> list[tuple[str, str, float, float]]:
    engine = make_engine(f"sqlite:///{site.db}")
    with engine.connect() as conn:
        rows = conn.execute(select(t.runs.c.executor, t.runs.c.status, t.runs.c.started_at,
                                   t.runs.c.finished_at).order_by(t.runs.c.executor)).all()  # fmt: skip
    engine.dispose()
    return [(r[0], r[1], r[2].timestamp(), r[3].timestamp()) for r in rows]


@pytest.mark.parametrize("pool", [1, 2])
def test_a_branchs_executors_share_the_local_pool(tmp_path: Path, pool: int) -> None:
    site = Site(tmp_path, Redis(0, tmp_path))
    site.write_config(sleep=2, executors=2)
    text = site.cfg.read_text()
    site.cfg.write_text(f"executor_pool = {pool}\n" + text[: text.index("[broker]")])
    assert main(["-c", str(site.cfg), "branch", "--now"]) == 0
    (a, sa, a0, a1), (b, sb, b0, b1) = _runs(site)
    assert (a, b, sa, sb) == ("ex-0", "ex-1", "done", "done")
    overlap = a0 < b1 and b0 < a1
    assert overlap is (pool == 2), (a0, a1, b0, b1)
