"""external: any executable as a check.

Options:

- `command` (list, required): argv, run in the applied worktree (HEAD = the patch, or the
  last patch for series scope). A relative program path is taken from the worktree.
- `scope`: "patch" (default) or "series".
- `files` (list of glob patterns, e.g. `["*.py", "tools/net/*"]`): run only when the
  patch (series) touches a matching file; otherwise SKIP with the reason.
- `exit_codes`: "patchci" (default) or "nipa", see below.
- `env` (table): extra environment variables.

Exit codes, "patchci" convention: 0 PASS, 1 FAIL, 2 ERROR (the checker itself failed;
never the patch's fault), 3 WARN, 4 SKIP; any other status (127 not found, a signal…) is
ERROR. "nipa" convention (NIPA's tests/): 0 PASS, 250 WARN, 111 PENDING, anything else FAIL.

Environment given to the command:

- `PATCHCI_BASE` the commit the series applies on, `PATCHCI_COMMIT` the commit under test,
  `PATCHCI_PARENT` the commit before it, `PATCHCI_FIRST_IN_SERIES` "1" or "0",
  `PATCHCI_PATCH` a file holding the patch's mail (series scope: the whole series),
  `PATCHCI_SERIES_MBOX` a file holding the series (cover letter first),
  `PATCHCI_RESULT_DIR` an empty directory for the check's artifacts, `PATCHCI_TREE`,
  `PATCHCI_SCOPE`, `PATCHCI_PATCH_INDEX` (1-based, empty for series scope);
- NIPA's names: `BRANCH_BASE`, `RESULTS_DIR`, `FIRST_IN_SERIES`, and `DESC_FD`, an open
  file descriptor: what the command writes there is the one-line description. Writing
  `$PATCHCI_RESULT_DIR/desc` does the same. (The fd number may exceed 9, which dash
  cannot redirect to: use bash, or write to /proc/self/fd/$DESC_FD.) Without either, the description is the last
  line of stdout.
- Variables whose names contain TOKEN, PASSWORD, SECRET, KEY or CREDENTIAL are removed
  (the command must never see our credentials).

stdout and stderr become the log.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from patchci import proc
from patchci.checks.base import Check, CheckContext, CheckOptions, Verdict
from patchci.git import Git, touched
from patchci.model import Outcome, Scope

SECRET = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|KEY|CREDENTIAL", re.IGNORECASE)
PATCHCI_CODES = {0: Outcome.PASS, 1: Outcome.FAIL, 2: Outcome.ERROR, 3: Outcome.WARN,
                 4: Outcome.SKIP}  # fmt: skip
NIPA_CODES = {0: Outcome.PASS, 250: Outcome.WARN, 111: Outcome.PENDING}


def map_exit_code(code: int, convention: str) -> Outcome:
    if convention == "nipa":
        return NIPA_CODES.get(code, Outcome.FAIL)
    return PATCHCI_CODES.get(code, Outcome.ERROR)


_GIT_CONFIG = re.compile(r"^GIT_CONFIG_(?:COUNT|KEY_\d+|VALUE_\d+)$")
_SECRET_GIT_KEY = re.compile(r"token|password|secret|credential|extraheader|sslkey", re.I)


def secret_names(env: Mapping[str, str]) -> list[str]:
    """Names of *env* that may hold credentials. Git's GIT_CONFIG_KEY_<n> list is one
    unit: kept unless one of its keys looks secret, then dropped whole (a partial list
    makes git fail)."""
    names = {n for n in env if SECRET.search(n) and not _GIT_CONFIG.match(n)}
    group = [n for n in env if _GIT_CONFIG.match(n)]
    if any(n.startswith("GIT_CONFIG_KEY_") and _SECRET_GIT_KEY.search(env[n]) for n in group):
        names.update(group)
    return sorted(names)


class ExternalOptions(CheckOptions):
    command: tuple[str, ...] = Field(min_length=1)  # required
    files: tuple[str, ...] = ()
    exit_codes: Literal["patchci", "nipa"] = "patchci"
    scope: Literal["patch", "series"] = "patch"
    env: dict[str, str] = Field(default_factory=dict)


class External(Check):
    Options = ExternalOptions
    opts: ExternalOptions
    name = "external"
    scope = Scope.PATCH
    tools = ()
    default_timeout = 600.0
    description = "An external command"

    def __init__(self, options: Mapping[str, Any] | None = None, timeout: float | None = None):
        super().__init__(options, timeout)
        self.command = list(self.opts.command)
        self.files = list(self.opts.files)
        self.convention = self.opts.exit_codes
        self.scope = Scope(self.opts.scope)  # type: ignore[misc]

    def missing_tools(self, ctx: CheckContext) -> list[str]:
        prog = self.command[0]
        if "/" in prog:
            path = Path(prog) if Path(prog).is_absolute() else ctx.worktree / prog
            return [] if os.access(path, os.X_OK) else [prog]
        return [] if proc.which(prog) else [prog]

    def _touched(self, ctx: CheckContext) -> list[str]:
        git = Git(ctx.worktree, deadline=ctx.deadline)
        if ctx.patch_index is not None:
            return git.changed_files(ctx.commit)
        out = git.run("diff", "--name-only", "-z", "--no-renames", ctx.base, ctx.commit).stdout
        return [f for f in out.split("\x00") if f]

    def applies(self, ctx: CheckContext) -> str | None:
        if not self.files:
            return None
        touched = self._touched(ctx)
        if any(fnmatch.fnmatch(f, pat) for f in touched for pat in self.files):
            return None
        return f"skipped: no touched file matches {', '.join(self.files)}"

    def _inputs(self, ctx: CheckContext, result_dir: Path) -> tuple[Path, Path]:
        """Write the patch and the series mbox for the command to read."""
        series = ctx.series
        mails = [p.raw for p in ((series.cover,) if series.cover else ()) + series.patches]
        if all(mails):
            mbox = b"".join(m if m.endswith(b"\n") else m + b"\n" for m in mails)
        else:
            git = Git(ctx.worktree, deadline=ctx.deadline)
            mbox = git.run("format-patch", "--stdout", f"{ctx.base}..{ctx.commit}").stdout.encode()
        mbox_path = result_dir.parent / f"{result_dir.name}.series.mbox"
        mbox_path.write_bytes(mbox)
        patch = ctx.patch
        if patch is None:
            return mbox_path, mbox_path
        raw = (
            patch.raw
            or Git(ctx.worktree, deadline=ctx.deadline)
            .run("format-patch", "-1", "--stdout", ctx.commit)
            .stdout.encode()
        )
        patch_path = result_dir.parent / f"{result_dir.name}.patch"
        patch_path.write_bytes(raw)
        return patch_path, mbox_path

    def environment(self, ctx: CheckContext, result_dir: Path, patch: Path, mbox: Path,
                    desc_fd: int) -> dict[str, str]:  # fmt: skip
        first = "1" if ctx.patch_index in (0, None) else "0"
        env = {
            "PATCHCI_BASE": ctx.base, "PATCHCI_COMMIT": ctx.commit, "PATCHCI_PARENT": ctx.parent,
            "PATCHCI_FIRST_IN_SERIES": first, "PATCHCI_PATCH": str(patch),
            "PATCHCI_SERIES_MBOX": str(mbox), "PATCHCI_RESULT_DIR": str(result_dir),
            "PATCHCI_TREE": ctx.tree.name, "PATCHCI_SCOPE": self.scope.value,
            "PATCHCI_PATCH_INDEX": "" if ctx.patch_index is None else str(ctx.patch_index + 1),
            "BRANCH_BASE": ctx.base, "RESULTS_DIR": str(result_dir), "FIRST_IN_SERIES": first,
            "DESC_FD": str(desc_fd),
        }  # fmt: skip
        env.update(self.opts.env)
        return env

    def argv(self, ctx: CheckContext, env: Mapping[str, str]) -> list[str]:
        """The command behind `env -u NAME…`: proc.run adds our environment, so the
        credentials are taken out on the way in."""
        cmd = list(self.command)
        if "/" in cmd[0] and not Path(cmd[0]).is_absolute():
            cmd[0] = str(ctx.worktree / cmd[0])
        strip = secret_names({**proc.base_env(), **env})
        unset = [a for n in strip for a in ("-u", n)]
        return ["env", *unset, *cmd] if unset else cmd

    def run(self, ctx: CheckContext) -> Verdict:
        where = "series" if ctx.patch_index is None else str(ctx.patch_index + 1)
        result_dir = ctx.log_dir / f"{where}-{self.name}.d"
        result_dir.mkdir(parents=True, exist_ok=True)
        patch, mbox = self._inputs(ctx, result_dir)
        desc_path = result_dir.parent / f"{result_dir.name}.desc-fd"
        with desc_path.open("w+b") as desc_file:
            fd = desc_file.fileno()
            env = self.environment(ctx, result_dir, patch, mbox, fd)
            argv = self.argv(ctx, env)
            touched(ctx.worktree)  # the maintainer's own command, unsandboxed: may write there
            res = proc.run(argv, cwd=ctx.worktree, env=env, timeout=ctx.remaining(),
                           pass_fds=(fd,))  # fmt: skip
            desc_file.seek(0)
            desc = desc_file.read().decode("utf-8", errors="replace")
        desc = _one_line(desc) or _read_desc(result_dir) or _one_line(res.stdout, last=True)
        outcome = map_exit_code(res.returncode, self.convention)
        desc = desc or f"exit status {res.returncode}"
        body = f"$ {' '.join(self.command)}\n# exit {res.returncode}\n{res.output}"
        return Verdict(outcome, desc[:250], body, reproducer=" ".join(self.command))


def _one_line(text: str, last: bool = False) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return ""
    return lines[-1] if last else lines[0]


def _read_desc(result_dir: Path) -> str:
    try:
        return _one_line((result_dir / "desc").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return ""


__all__: Sequence[str] = ("External", "map_exit_code", "secret_names")
