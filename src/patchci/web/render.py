"""Jinja2 set-up for the pages: autoescaping always on, strict undefined, small filters."""

from __future__ import annotations

import functools
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape

from patchci.model import strip_bidi

TEMPLATE_DIR = Path(__file__).parent / "templates"

# The navigation bar; a new page adds its entry here.
NAV: tuple[tuple[str, str], ...] = (
    ("Series", "/series"),
    ("Contest", "/contest"),
    ("Branches", "/branches"),
    ("Flakes", "/flakes"),
    ("Checks", "/checks"),
    ("Status", "/status"),
    ("API", "/api/v1/openapi.json"),
    ("Metrics", "/metrics"),
)


def fmt_time(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_age(seconds: float | None) -> str:
    """A duration for humans: 45s, 3m 05s, 2h 01m, 3d 04h."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else fmt_age(seconds)


# Cell glyphs besides the colour, so the matrix reads without colour vision too.
GLYPHS = {"pass": "✓", "fail": "✗", "flake": "~", "crash": "!", "timeout": "T", "skip": "s",
          "error": "e", "warn": "w", "pending": "…"}  # fmt: skip


@functools.cache
def _cell(state: str | None) -> str:
    if state is None:
        return '<td class="cell c-none" title="not run"></td>'
    s = escape(state)
    return f'<td class="cell c-{s}" title="{s}">{escape(GLYPHS.get(state, ""))}</td>'


def matrix_cells(cells: list[str | None]) -> Markup:
    """The <td>s of a flakes-matrix row: built from a few cached fragments, not a template
    loop, as a page has ~10 000 of them."""
    return Markup("".join(map(_cell, cells)))


def _finalize(value: Any) -> Any:
    """Every {{ value }} of a page: user text loses its bidi controls (U+202E in an author
    name reversed the date, the e-mail and the link labels after it)."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return strip_bidi(value)
    return value


def make_templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,  # every template, whatever its name: all of them are HTML
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_finalize,
    )
    env.filters.update(ts=fmt_time, age=fmt_age, dur=fmt_duration, cells=matrix_cells)
    env.globals["nav"] = NAV
    return Jinja2Templates(env=env)


def page(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    templates: Jinja2Templates = request.app.state.templates
    ctx = {"root": request.scope.get("root_path", ""), "path": request.url.path, **context}
    response: HTMLResponse = templates.TemplateResponse(request, name, ctx, status_code=status_code)
    return response


def error_page(request: Request, status: int, title: str, lines: list[str]) -> HTMLResponse:
    return page(request, "error.html", {"status": status, "title": title, "lines": lines}, status)
