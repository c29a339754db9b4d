"""Options only the web application reads, next to the deployment's Settings.

Kept here until config.py grows a `[web]` table; `from_settings` already reads one if it is
there, so nothing changes for callers when it does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from patchci.config import Settings

DEFAULT_ALARM_AFTER_S = 6 * 3600.0


@dataclass(frozen=True)
class WebSettings:
    """What the web UI needs to know beyond the database url.

    `cursor_alarm_after`: a source whose cursor has not moved for this many seconds is shown
    as an ALARM (a quiet list can go hours without mail, hence hours by default).
    """

    logs_dir: Path
    contest_logs_dir: Path | None = None  # the executors' run directories
    cursor_alarm_after: float = DEFAULT_ALARM_AFTER_S
    recent_window: float = 24 * 3600.0
    page_size: int = 50
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.cursor_alarm_after <= 0 or self.recent_window <= 0:
            raise ValueError("cursor_alarm_after and recent_window must be positive")
        if not 1 <= self.page_size <= 500:
            raise ValueError("page_size must be between 1 and 500")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> WebSettings:
        """The web options of *settings* (its `web` table, if config.py has one)."""
        base = cls(
            logs_dir=settings.data_path / "logs",
            contest_logs_dir=settings.data_path / "contest" / "runs",
            sources=tuple(s.name for s in settings.sources),
        )
        web = getattr(settings, "web", None)
        if web is not None:
            for key in ("cursor_alarm_after", "recent_window", "page_size"):
                if hasattr(web, key):
                    overrides.setdefault(key, getattr(web, key))
        return replace(base, **overrides) if overrides else base
