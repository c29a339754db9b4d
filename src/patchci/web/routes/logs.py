"""Logs served as inert text: /logs/<path> (check logs, data_dir/logs) and
/contest/logs/<path> (executor runs, data_dir/contest/runs). Nothing else is reachable."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from patchci.web.routes.deps import Web
from patchci.web.security import LOG_CSP, UnsafePath, resolve_log

router = APIRouter(include_in_schema=False)

TEXT = "text/plain; charset=utf-8"
MEDIA_TYPES = {".json": "application/json"}  # anything else is shown as plain text


@router.get("/logs/{path:path}")
def log_file(path: str, web: Web) -> FileResponse:
    return _serve(web.logs_dir, path)


@router.get("/contest/logs/{path:path}")
def contest_log_file(path: str, web: Web) -> FileResponse:
    if web.contest_logs_dir is None:
        raise HTTPException(404, "no contest logs here")
    return _serve(web.contest_logs_dir, path)


def _serve(root: Path, path: str) -> FileResponse:
    try:
        target = resolve_log(root, path)
    except UnsafePath as e:
        raise HTTPException(400, f"bad log path: {e}") from None
    if target is None:
        raise HTTPException(404, "no such log")
    return FileResponse(
        target,
        media_type=MEDIA_TYPES.get(target.suffix.lower(), TEXT),
        headers={
            "content-security-policy": LOG_CSP,
            "x-content-type-options": "nosniff",
            "content-disposition": "inline",
        },
    )
