"""The web application: `create_app(settings)` wires the database, templates and routes.

Read-only by construction: the engine refuses writes (SQLite `query_only`, PostgreSQL
read-only transactions), pages are server-rendered with autoescaping, and every response
carries the security headers of security.py. The one exception is the job API of worker
hosts (routes/jobs.py), mounted only with a `[broker]`, on its own engine, behind tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import event
from sqlalchemy.engine import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException

from patchci import __version__
from patchci.config import Settings
from patchci.db.migrate import make_engine
from patchci.db.tables import utcnow
from patchci.web import render
from patchci.web.routes import api, checks, contest, history, jobs, logs, metrics, pages
from patchci.web.security import SecurityHeaders
from patchci.web.settings import WebSettings

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
API_PREFIX = "/api/v1"


def read_only_engine(url: str) -> Engine:
    """An engine on *url* whose connections cannot write (defence in depth)."""
    engine = make_engine(url)

    @event.listens_for(engine, "connect")
    def _read_only(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        if engine.dialect.name == "sqlite":
            cur.execute("PRAGMA query_only=ON")
        else:
            cur.execute("SET default_transaction_read_only = on")
        cur.close()
        if engine.dialect.name != "sqlite":
            dbapi_conn.commit()  # a SET inside a rolled-back transaction would not stick

    return engine


def create_app(
    settings: Settings,
    web: WebSettings | None = None,
    *,
    engine: Engine | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> FastAPI:
    """The ASGI app for *settings*; *clock* and *engine* are for tests and embedding."""
    app = FastAPI(
        title="patchci",
        version=__version__,
        description="Read-only view of patchci's series, check results, jobs and sources.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # the Swagger/ReDoc pages load their assets from a CDN
        redoc_url=None,
    )
    app.state.engine = engine or read_only_engine(settings.db_url)
    app.state.web = web or WebSettings.from_settings(settings)
    app.state.clock = clock
    app.state.settings = settings  # how verdicts are weighed (expectations, flake rule)
    app.state.templates = render.make_templates()
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    if settings.feed.enabled:  # the NIPA feed the daemon writes (service/publish.py)
        app.mount("/feed", StaticFiles(directory=settings.feed_path, check_dir=False), name="feed")
    app.include_router(pages.router)
    app.include_router(contest.pages)
    app.include_router(history.pages)
    app.include_router(checks.pages)
    app.include_router(logs.router)
    app.include_router(metrics.router)
    app.include_router(api.router, prefix=API_PREFIX)
    app.include_router(contest.api, prefix=API_PREFIX)
    app.include_router(history.api, prefix=API_PREFIX)
    app.include_router(checks.api, prefix=API_PREFIX)
    if settings.broker is not None:  # worker hosts report here: the one writing part
        from patchci.db.jobs import JobStore

        app.state.jobs = JobStore(make_engine(settings.db_url))
        app.state.worker_tokens = jobs.worker_tokens(settings)
        app.include_router(jobs.router, prefix=API_PREFIX)
    _add_error_handlers(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return RedirectResponse("/series", status_code=302)

    return app


_PROBLEM = {
    "type": "object",
    "required": ["detail"],
    "properties": {"detail": {"type": "array", "items": {
        "type": "object",
        "properties": {"loc": {"type": "array", "items": {"type": "string"}},
                       "msg": {"type": "string"}},
    }}},
}  # fmt: skip
_NOT_FOUND = {
    "type": "object",
    "required": ["detail"],
    "properties": {"detail": {"type": "string"}},
}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The schema of what the API answers: a bad query is 400 (not FastAPI's 422, see
    bad_request), an unknown id 404."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)  # fmt: skip
    comps = schema.setdefault("components", {}).setdefault("schemas", {})
    comps["Problem"], comps["NotFound"] = _PROBLEM, _NOT_FOUND
    for path, ops in schema.get("paths", {}).items():
        for op in ops.values():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            if op.get("parameters"):
                responses["400"] = {"description": "A malformed query or path parameter",
                                    "content": {"application/json": {"schema": {
                                        "$ref": "#/components/schemas/Problem"}}}}  # fmt: skip
            if "{" in path:
                responses["404"] = {"description": "No such object",
                                    "content": {"application/json": {"schema": {
                                        "$ref": "#/components/schemas/NotFound"}}}}  # fmt: skip
    for name in ("HTTPValidationError", "ValidationError"):
        comps.pop(name, None)
    app.openapi_schema = schema
    return schema


def _is_api(request: Request) -> bool:
    return request.url.path.startswith(API_PREFIX + "/")


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    def bad_request(request: Request, exc: RequestValidationError) -> Response:
        # 400, not FastAPI's 422: a malformed query is the client's mistake, nothing more.
        problems = [
            {"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        if _is_api(request):
            return JSONResponse({"detail": problems}, status_code=400)
        lines = [f"{'.'.join(p['loc'][1:]) or 'request'}: {p['msg']}" for p in problems]
        return render.error_page(request, 400, "Bad request", lines)

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # Keep the exception's headers: a 405 must say what is Allowed.
        headers = dict(exc.headers or {})
        if _is_api(request):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                                headers=headers)  # fmt: skip
        resp = render.error_page(request, exc.status_code, str(exc.detail), [])
        resp.headers.update(headers)
        return resp

    @app.exception_handler(Exception)
    def server_error(request: Request, exc: Exception) -> Response:
        log.exception("%s %s failed", request.method, request.url.path)
        if _is_api(request):
            return JSONResponse({"detail": "internal error"}, status_code=500)
        return render.error_page(request, 500, "Internal error", [])
