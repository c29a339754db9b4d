"""Security helpers of the web UI: response headers, log path checks, safe links.

Pure functions plus one ASGI middleware; the routes call these instead of doing their own
path or URL handling.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Pages: only our own CSS/JS, no inline script or style, no framing, forms post to us only.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
# Logs are untrusted text: nothing in them may run, even if a browser sniffed HTML.
LOG_CSP = "default-src 'none'; sandbox; frame-ancestors 'none'"

COMMON_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)


class SecurityHeaders:
    """Adds the security headers to every HTTP response that does not set them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                extra = [*COMMON_HEADERS, (b"content-security-policy", PAGE_CSP.encode())]
                headers += [(k, v) for k, v in extra if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class UnsafePath(ValueError):
    """A log path that tries to leave the logs directory or is not a plain relative path."""


def check_relative(path: str) -> PurePosixPath:
    """*path* as a plain relative path, or UnsafePath: no `..`, no root, no NUL, no `\\`."""
    if not path or "\x00" in path or "\\" in path:
        raise UnsafePath("empty path or forbidden character")
    if path.startswith("/") or PurePosixPath(path).is_absolute() or ":" in path.split("/")[0]:
        raise UnsafePath("absolute path")
    parts = PurePosixPath(path).parts
    if any(p in ("..", ".") for p in path.split("/")) or not parts:
        raise UnsafePath("dot segment")
    return PurePosixPath(*parts)


def resolve_log(root: Path, path: str) -> Path | None:
    """The regular file *path* names under *root*, or None if there is none.

    Raises UnsafePath for paths that are not plain relative paths. Symlinks are followed
    and the result must still be inside *root* (a link out of it counts as absent).
    """
    rel = check_relative(path)
    real_root = root.resolve()
    try:
        target = (real_root / rel).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symlink loop
        return None
    if not target.is_relative_to(real_root) or not target.is_file():
        return None
    return target


def log_relpath(log_path: str | None, root: Path) -> str | None:
    """How a stored log path is reached under /logs/, or None if it is not under *root*.

    No I/O: the daemon stores absolute, resolved paths under data_dir/logs.
    """
    if not log_path:
        return None
    p = Path(os.path.normpath(log_path))
    if p.is_absolute():
        try:
            p = p.relative_to(os.path.normpath(root))
        except ValueError:
            return None
    text = p.as_posix()
    try:
        check_relative(text)
    except UnsafePath:
        return None
    return text


def safe_url(url: str | None) -> str | None:
    """*url* if it is an http(s) link (never javascript:, data: ...), else None."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return url.strip()


def lore_url(msgid: str | None) -> str | None:
    """The lore.kernel.org link of a Message-Id, with the angle brackets taken off."""
    if not msgid:
        return None
    bare = msgid.strip().removeprefix("<").removesuffix(">").strip()
    if not bare:
        return None
    return "https://lore.kernel.org/r/" + quote(bare, safe="@!$&()*+,;=:~._-")
