"""One rule for tests whose prerequisites (a server, a browser, QEMU, a tarball) are missing:
under CI, where make test installs them, the test FAILS; on a developer machine it is
skipped with the reason, never counted as passed."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(why: str, *, required: bool | None = None) -> NoReturn:
    if required if required is not None else bool(os.environ.get("CI")):
        pytest.fail(f"{why} (required here: make test installs it)")
    pytest.skip(why)
