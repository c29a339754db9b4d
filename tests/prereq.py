"""One rule for tests whose prerequisites (a server, a browser, QEMU, a tarball) are missing:
under `make test` (which installs them first) and CI the test FAILS; only a partial run on
a developer machine (`make unit`, plain pytest) skips it, with the reason."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def prerequisites_required() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("PATCHCI_REQUIRE_PREREQS"))


def unavailable(why: str, *, required: bool | None = None) -> NoReturn:
    if prerequisites_required() if required is None else required:
        pytest.fail(f"{why} (required here: make test installs it)")
    pytest.skip(why)
