"""Typed errors, split into "the patch's fault" and "ours".

Anything derived from InfraError must never be reported to Patchwork as a patch failure.
"""

from __future__ import annotations


class PatchciError(Exception):
    """Base of every error patchci raises on purpose."""


class PatchError(PatchciError):
    """The patch is at fault: it does not apply, breaks the build, fails a test."""


class InfraError(PatchciError):
    """We are at fault: fetch failed, a tool is missing or hung, the VM did not boot."""


class ConfigError(PatchciError):
    """The configuration is wrong. The message is one readable line naming the key."""


class ToolMissing(InfraError):
    def __init__(self, tool: str, hint: str = "") -> None:
        self.tool = tool
        msg = f"required tool not found: {tool}"
        super().__init__(f"{msg} ({hint})" if hint else msg)


class CommandTimeout(InfraError):
    def __init__(self, argv: list[str], timeout: float, stdout: str = "", stderr: str = "") -> None:
        self.argv = argv
        self.timeout = timeout
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(f"command timed out after {timeout:g}s: {' '.join(argv[:4])}")


class CommandIdle(CommandTimeout):
    """A command that printed nothing for *idle* seconds (a hang, not a slow test)."""

    def __init__(self, argv: list[str], idle: float) -> None:
        super().__init__(argv, idle)
        self.idle = idle

    def __str__(self) -> str:
        return f"no output for {self.idle:g}s: {' '.join(self.argv[:4])}"


class CommandFailed(InfraError):
    def __init__(self, argv: list[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(
            f"command failed ({returncode}): {_shown(argv)}: {_reason(stderr or stdout)}"
        )


def _shown(argv: list[str]) -> str:
    """The command as a reader wants it: `git fetch --prune origin`, not the pinned
    `git --no-pager -c core.abbrev=no` prefix every git command carries."""
    out: list[str] = []
    it = iter(argv)
    for a in it:
        if a == "-c" and out == ["git"]:
            next(it, None)
        elif not (a == "--no-pager" and out == ["git"]):
            out.append(a)
    shown = " ".join(out[:6])
    return shown + (" ..." if len(out) > 6 else "")


def _reason(text: str) -> str:
    """git's own `fatal:`/`error:` line when there is one, else the last line."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith(("fatal:", "error:")):
            return ln
    return lines[-1] if lines else "(no output)"


class FetchError(InfraError):
    """A remote (Patchwork, lore, git remote) could not be read."""


class ApplyFailed(PatchError):
    def __init__(self, patch_index: int, subject: str, output: str) -> None:
        self.patch_index = patch_index
        self.subject = subject
        self.output = output
        super().__init__(f"patch {patch_index + 1} does not apply: {subject}")


class NotFound(PatchciError, LookupError):
    """A row asked for by id or name does not exist (a usage error: exit 2)."""
