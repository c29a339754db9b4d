"""Shared fixtures: every test runs isolated from the user's home and git config."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(autouse=True)
def isolate(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
        monkeypatch.setenv(var, str(home / var.lower()))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Test Author")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "author@example.com")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Test Committer")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "committer@example.com")
    cfg = {
        "commit.gpgsign": "false",
        "init.defaultBranch": "main",
        "user.name": "Test Committer",
        "user.email": "committer@example.com",
        "advice.detachedHead": "false",
    }
    monkeypatch.setenv("GIT_CONFIG_COUNT", str(len(cfg)))
    for i, (k, v) in enumerate(cfg.items()):
        monkeypatch.setenv(f"GIT_CONFIG_KEY_{i}", k)
        monkeypatch.setenv(f"GIT_CONFIG_VALUE_{i}", v)
    for var in ("PATCHCI_CONFIG", "PATCHWORK_TOKEN", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def data_dir() -> Path:
    return DATA


# Shared database fixtures (a real PostgreSQL started once per session).
from tests.pg import db_url as db_url  # noqa: E402,F401
from tests.pg import pg_server as pg_server  # noqa: E402,F401
from tests.pg import pg_url as pg_url  # noqa: E402,F401
