"""Dependencies shared by the routes: a read connection, the options, validated filters.

Every query parameter is declared here with a pattern, an enum or a range, so a bad value
is a 400 before any SQL runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from sqlalchemy.engine import Connection

from patchci.model import Outcome
from patchci.web.queries import SeriesFilter
from patchci.web.settings import WebSettings

# Names as config.py allows them; the empty string is what an untouched form field sends.
NAME_OR_EMPTY = r"^$|^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
STATE_OR_EMPTY = r"^$|^[a-z][a-z_\-]{0,31}$"
OUTCOME_OR_EMPTY = "^$|^(" + "|".join(o.value for o in Outcome) + ")$"
TEXT = r"^[^\x00-\x1f\x7f]*$"  # printable: no control characters
MAX_ID = 2**31 - 1


def connection(request: Request) -> Iterator[Connection]:
    with request.app.state.engine.connect() as conn, conn.begin():
        yield conn


def web_settings(request: Request) -> WebSettings:
    web: WebSettings = request.app.state.web
    return web


def now(request: Request) -> datetime:
    clock = request.app.state.clock
    value: datetime = clock()
    return value


def series_filter(
    tree: Annotated[str | None, Query(max_length=64, pattern=NAME_OR_EMPTY)] = None,
    state: Annotated[str | None, Query(max_length=32, pattern=STATE_OR_EMPTY)] = None,
    outcome: Annotated[str | None, Query(max_length=16, pattern=OUTCOME_OR_EMPTY)] = None,
    submitter: Annotated[str | None, Query(max_length=100, pattern=TEXT)] = None,
    q: Annotated[str | None, Query(max_length=200, pattern=TEXT)] = None,
) -> SeriesFilter:
    return SeriesFilter(
        tree=tree or None,
        state=state or None,
        outcome=outcome or None,
        submitter=(submitter or "").strip() or None,
        q=(q or "").strip() or None,
    )


PageNo = Annotated[int, Query(alias="page", ge=1, le=100_000)]
PerPage = Annotated[int | None, Query(ge=1, le=200)]
SeriesId = Annotated[int, Path(ge=1, le=MAX_ID)]
Conn = Annotated[Connection, Depends(connection)]
Web = Annotated[WebSettings, Depends(web_settings)]
Now = Annotated[datetime, Depends(now)]
Filter = Annotated[SeriesFilter, Depends(series_filter)]
