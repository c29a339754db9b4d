"""kdoc: the tree's `scripts/kernel-doc` before and after the patch on the touched files.

The warnings are compared as sets of (file, message) without line numbers: FAIL when one is
new (or when kernel-doc prints more lines we cannot read), PASS otherwise. Both sides run
the same script (the patch's version), the parent's files coming from git.

Options:

- `script` (str, default "scripts/kernel-doc"), relative to the tree.
- `args` (list): default `["-none"]`, plus `-Wall` when the script knows it (6.1's Perl
  script does not; later ones do).
- `suffixes` (list, default `[".c", ".h"]`): which touched files are read.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from patchci import buildlog, kdoc_output
from patchci.checks.base import Check, CheckContext, CheckOptions, Verdict
from patchci.git import Git
from patchci.model import Outcome, Scope

SCRIPT = "scripts/kernel-doc"


def default_args(script: Path) -> list[str]:
    try:
        text = script.read_text(errors="replace")
    except OSError:
        text = ""
    return ["-none", "-Wall"] if "Wall" in text else ["-none"]


class KernelDocOptions(CheckOptions):
    script: str = SCRIPT
    args: tuple[str, ...] | None = None  # default: what the script accepts (default_args)
    suffixes: tuple[str, ...] = (".c", ".h")


class KernelDoc(Check):
    Options = KernelDocOptions
    opts: KernelDocOptions
    name = "kdoc"
    scope = Scope.PATCH
    pull_requests = True
    tools = ()
    default_timeout = 300.0
    description = "scripts/kernel-doc finds no new warning in the touched files"

    def applies(self, ctx: CheckContext) -> str | None:
        if not (ctx.worktree / self._script()).is_file():
            return f"skipped: the tree has no {self._script()}"
        return None

    def _script(self) -> str:
        return self.opts.script

    def _run(self, ctx: CheckContext, script: Path, cwd: Path, files: Sequence[str]) -> str:
        if not files:
            return ""
        args = list(self.opts.args or default_args(script))
        argv = [str(script), *args, *files]
        if not os.access(script, os.X_OK):
            argv.insert(0, "perl")
        res = ctx.run(argv, cwd=cwd)
        return res.output

    def run(self, ctx: CheckContext) -> Verdict:
        git = Git(ctx.worktree, deadline=ctx.deadline)
        suffixes = self.opts.suffixes
        touched = [f for f in git.changed_files(ctx.commit) if f.endswith(suffixes)]
        if not touched:
            return Verdict(Outcome.PASS, "no .c or .h file touched")
        script = ctx.worktree / self._script()
        after_files = [f for f in touched if (ctx.worktree / f).is_file()]
        with tempfile.TemporaryDirectory(prefix="patchci-kdoc-") as tmp:
            before_files = _export(git, ctx.parent, touched, Path(tmp))
            out_before = self._run(ctx, script, Path(tmp), before_files)
        out_after = self._run(ctx, script, ctx.worktree, after_files)
        before = kdoc_output.parse_kdoc(out_before.splitlines())
        after = kdoc_output.parse_kdoc(out_after.splitlines())
        delta = kdoc_output.diff(before, after)
        outcome, desc = kdoc_output.verdict(delta)
        lines = [f"files: {' '.join(touched)}", ""]
        for title, ds in (("New", delta.warnings.new), ("Fixed", delta.warnings.fixed)):
            if ds:
                lines.append(f"{title} warnings ({len(ds)}):")
                lines += [buildlog.format_diagnostic(d) for d in ds] + [""]
        if delta.unparsed_after > delta.unparsed_before:
            lines += ["Unparsed output after the patch:", *after.unparsed, ""]
        lines += ["--- kernel-doc after the patch ---", out_after]
        repro = ctx.reproducer([self._script(), "-none", *after_files])
        return Verdict(outcome, desc, "\n".join(lines), repro)


def _export(git: Git, rev: str, files: Sequence[str], dest: Path) -> list[str]:
    """Write the files that exist at *rev* under *dest* (same relative paths)."""
    out = []
    for f in files:
        res = git.run("cat-file", "blob", f"{rev}:{f}", check=False)
        if not res.ok:
            continue  # added by the patch
        p = dest / f
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(res.stdout, encoding="utf-8")
        out.append(f)
    return out
