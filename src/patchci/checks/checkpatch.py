"""checkpatch: the tree's `scripts/checkpatch.pl` on each patch.

Options:

- `args` (list, default `["--strict", "--max-line-length=80"]`, netdev's choice).
- `ignore` (list of message types, default netdev's list below): passed as `--ignore=A,B`.
- `script` (str, default "scripts/checkpatch.pl"), relative to the tree.

`--show-types` is always added so the description can list the distinct types. PASS on
0 errors/0 warnings/0 checks, WARN on warnings or checks, FAIL on any error. An exit status
other than 0/1, or output without checkpatch's `total:` line, is an ERROR of the tool.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from patchci import checkpatch_output
from patchci.checks.base import Check, CheckContext, CheckOptions, Verdict
from patchci.git import Git
from patchci.model import Outcome, Scope

DEFAULT_ARGS = ("--strict", "--max-line-length=80")
# What netdev's NIPA ignores (tests/patch/checkpatch/checkpatch.sh).
DEFAULT_IGNORE = (
    "COMMIT_LOG_LONG_LINE", "MACRO_ARG_REUSE", "ALLOC_SIZEOF_STRUCT", "NO_AUTHOR_SIGN_OFF",
    "GIT_COMMIT_ID", "CAMELCASE", "FILE_PATH_CHANGES", "BAD_REPORTED_BY_LINK",
)  # fmt: skip
SCRIPT = "scripts/checkpatch.pl"


class CheckpatchOptions(CheckOptions):
    args: tuple[str, ...] = DEFAULT_ARGS
    ignore: tuple[str, ...] = DEFAULT_IGNORE
    script: str = SCRIPT


class Checkpatch(Check):
    Options = CheckpatchOptions
    opts: CheckpatchOptions
    name = "checkpatch"
    scope = Scope.PATCH
    tools = ("perl",)
    default_timeout = 300.0
    description = "scripts/checkpatch.pl finds no style problem"

    def __init__(self, options: Mapping[str, Any] | None = None, timeout: float | None = None):
        super().__init__(options, timeout)
        self.args = list(self.opts.args)
        self.ignore = list(self.opts.ignore)
        self.script = self.opts.script

    def applies(self, ctx: CheckContext) -> str | None:
        if not (ctx.worktree / self.script).is_file():
            return f"skipped: the tree has no {self.script}"
        return None

    def argv(self) -> list[str]:
        argv = ["perl", self.script, *self.args, "--show-types"]
        if self.ignore:
            argv.append("--ignore=" + ",".join(self.ignore))
        return [*argv, "-"]

    def run(self, ctx: CheckContext) -> Verdict:
        git = Git(ctx.worktree, deadline=ctx.deadline)
        patch = git.run("format-patch", "-1", "--stdout", "--no-signature", ctx.commit).stdout
        patch_file = ctx.log_dir / f"{(ctx.patch_index or 0) + 1}-checkpatch.patch"
        patch_file.parent.mkdir(parents=True, exist_ok=True)
        patch_file.write_text(patch, encoding="utf-8")
        res = ctx.run(self.argv(), input=patch.encode("utf-8"))
        parsed = checkpatch_output.parse_checkpatch(res.stdout.splitlines())
        outcome, desc = checkpatch_output.verdict(parsed)
        repro = ctx.reproducer([*self.argv()[:-1], str(patch_file)])
        if res.returncode not in (0, 1) or (res.returncode == 1 and not parsed.has_total):
            return Verdict(
                Outcome.ERROR, f"checkpatch.pl failed (exit {res.returncode})", res.output, repro
            )
        if res.returncode == 1 and outcome is Outcome.PASS:
            # checkpatch says "problems" but printed none we can read: do not pass it.
            return Verdict(Outcome.WARN, f"checkpatch.pl exit 1; {desc}", res.output, repro)
        return Verdict(outcome, desc, res.output, repro)
