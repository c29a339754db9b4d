"""`patchci serve`: run the web UI with uvicorn (127.0.0.1 unless told otherwise)."""

from __future__ import annotations

import logging
import socket

from patchci.config import Settings
from patchci.db.migrate import upgrade
from patchci.errors import ConfigError

log = logging.getLogger(__name__)


def _check_port(host: str, port: int) -> None:
    """uvicorn logs a bind failure and exits 3: say what is wrong, as the CLI's exit 2."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ConfigError(f"--host {host}: cannot resolve: {e}") from e
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as e:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {e.strerror or e} (another patchci serve? "
                "choose another --port)"
            ) from e


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8080) -> int:
    """Serve until interrupted; the exit code for the CLI.

    The schema is brought up to date first (the web engine itself is read-only), so the UI
    also starts on a fresh data directory.
    """
    import uvicorn

    from patchci.web.app import create_app

    settings.data_path.mkdir(parents=True, exist_ok=True)
    _check_port(host, port)
    upgrade(settings.db_url)
    app = create_app(settings)
    if host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("serving on %s: the UI has no authentication, put it behind a proxy", host)
    log.info("serving patchci on http://%s:%d/", host, port)
    uvicorn.run(app, host=host, port=port, log_level="info", proxy_headers=False)
    return 0
