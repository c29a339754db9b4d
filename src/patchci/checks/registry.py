"""Check registry: name → implementing class, imported lazily on first use.

Adding a check means adding one line here; a name whose module is missing or broken
gives a clear error naming it, never an import-time crash of the whole program.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from patchci.checks.base import Check
from patchci.errors import ConfigError

# name -> "module:Class"
BUILTIN: dict[str, str] = {
    "signed_off_by": "patchci.checks.signed_off_by:SignedOffBy",
    "fixes_tag": "patchci.checks.fixes_tag:FixesTag",
    "fixes_present": "patchci.checks.fixes_present:FixesPresent",
    "series_format": "patchci.checks.series_format:SeriesFormat",
    "checkpatch": "patchci.checks.checkpatch:Checkpatch",
    "build": "patchci.checks.build:Build",
    "build_tools": "patchci.checks.build_tools:BuildTools",
    "cc_maintainers": "patchci.checks.maintainers:CcMaintainers",
    "maintainers_entry": "patchci.checks.maintainers:MaintainersEntry",
    "kdoc": "patchci.checks.kdoc:KernelDoc",
    "source_inline": "patchci.checks.code:SourceInline",
    "header_inline": "patchci.checks.code:HeaderInline",
    "deprecated_api": "patchci.checks.code:DeprecatedApi",
    "check_selftest": "patchci.checks.code:CheckSelftest",
    "external": "patchci.checks.external:External",
    "shellcheck": "patchci.checks.lint:Shellcheck",
    "pylint": "patchci.checks.lint:Pylint",
    "ruff": "patchci.checks.lint:Ruff",
    "yamllint": "patchci.checks.lint:Yamllint",
}

# Results produced by the pipeline stages themselves, not by a Check class.
STAGE_CHECKS = ("tree_selection", "apply")


def available() -> list[str]:
    return sorted([*STAGE_CHECKS, *BUILTIN])


def check_class(kind: str) -> type[Check]:
    target = BUILTIN.get(kind)
    if target is None:
        raise ConfigError(f"unknown check {kind!r}; known: {', '.join(sorted(BUILTIN))}")
    mod_name, _, cls_name = target.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(f"check {kind!r} is not available in this build: {e}") from e
    cls = getattr(mod, cls_name)
    if not (isinstance(cls, type) and issubclass(cls, Check)):
        raise ConfigError(f"check {kind!r}: {target} is not a Check")
    return cls


def make_check(
    kind: str,
    *,
    name: str | None = None,
    options: Mapping[str, Any] | None = None,
    timeout: float | None = None,
) -> Check:
    """Instantiate check *kind*; *name* renames it (e.g. two build flavours)."""
    cls = check_class(kind)
    chk = cls(options, timeout)
    if name and name != cls.name:
        chk.name = name  # type: ignore[misc]
    return chk
