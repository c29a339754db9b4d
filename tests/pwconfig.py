"""A patchci TOML configuration for tests that run `patchci ingest` against the Patchwork
emulator: the data directory and the source, then whatever the test adds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from patchci.devtools.pwemu import FakePatchwork

PROJECT = "demo"
SOURCE = "pw"
TOKEN_ENV = "PATCHCI_TEST_PW_TOKEN"


def _strings(items: Sequence[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def tree_toml(
    name: str, path: Path, branch: str, checks: Sequence[str], tags: Sequence[str] = (),
    paths: Sequence[str] = (),
) -> str:  # fmt: skip
    """One [[trees]] entry, tagged with its own name unless *tags* says otherwise."""
    where = f"paths = {_strings(paths)}\n" if paths else ""
    return (f'\n[[trees]]\nname = "{name}"\npath = "{path}"\nbranch = "{branch}"\n'
            f"tags = {_strings(tags or [name])}\n{where}checks = {_strings(checks)}\n")  # fmt: skip


def write_config(tmp_path: Path, emu: FakePatchwork, rest: str, **source: str) -> Path:
    """`tmp_path/patchci.toml`: data_dir "data", the emulator's project as source (with
    *source* keys as raw TOML values), then *rest*."""
    more = "".join(f"{k} = {v}\n" for k, v in source.items())
    cfg = tmp_path / "patchci.toml"
    cfg.write_text(f"""data_dir = "data"

[[sources]]
name = "{SOURCE}"
type = "patchwork"
url = "{emu.url}"
project = "{PROJECT}"
token_env = "{TOKEN_ENV}"
{more}{rest}""")
    return cfg
