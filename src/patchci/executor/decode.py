"""Kernel splats decoded with the branch's own `scripts/decode_stacktrace.sh` and the
vmlinux it built (NIPA's vmksft does the same): `foo+0x12/0x40` becomes
`foo (net/core/dev.c:123)`, which crash.py reads too. The script is the branch's code, so
it runs in the sandbox; a failure or a timeout keeps the raw splat (never an error)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from patchci import proc
from patchci.errors import CommandTimeout, InfraError
from patchci.sandbox import Sandbox

log = logging.getLogger(__name__)

SCRIPT = "scripts/decode_stacktrace.sh"
TOOLS = ("addr2line", "nm", "readelf")  # what the script runs (binutils)


@dataclass(frozen=True)
class Decoder:
    script: Path
    vmlinux: Path
    src: Path
    sandbox: Sandbox | None = None
    timeout: float = 120.0

    @classmethod
    def find(cls, worktree: Path, build_dir: Path, sandbox: Sandbox | None) -> Decoder | None:
        """The branch's script and vmlinux when both exist and binutils is installed."""
        script, vmlinux = worktree / SCRIPT, build_dir / "vmlinux"
        if not script.is_file() or not vmlinux.is_file():
            return None
        missing = [t for t in TOOLS if shutil.which(t) is None]
        if missing:
            log.warning("splats not decoded: %s not installed (binutils)", ", ".join(missing))
            return None
        return cls(script, vmlinux, worktree, sandbox)

    def decode(self, lines: Sequence[str]) -> list[str] | None:
        """*lines* decoded, or None when the script failed or printed nothing."""
        text = "\n".join(lines) + "\n"
        try:
            res = proc.run(["bash", str(self.script), str(self.vmlinux), str(self.src)],
                           cwd=self.src, input=text.encode(), timeout=self.timeout,
                           sandbox=self.sandbox, readable=[self.vmlinux.parent, self.src])  # fmt: skip
        except (CommandTimeout, InfraError, OSError) as e:
            log.warning("decode_stacktrace.sh failed: %s", e)
            return None
        out = res.stdout.splitlines()
        if not res.ok or not any(ln.strip() for ln in out):
            log.warning("decode_stacktrace.sh: exit %d, %d lines", res.returncode, len(out))
            return None
        return out
