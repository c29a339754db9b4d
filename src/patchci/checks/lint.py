"""shellcheck, pylint, ruff, yamllint on the files a patch touches, reporting only what the
patch adds (NIPA's shellcheck, pylint, ruff and yamllint tests).

Each touched file is linted as it was before the patch and as it is after, both copied
out of the tree into the check's log directory (so the two runs see the same
surroundings); the new findings are the difference of the two (lint_output). A new error
fails, a new warning warns; shellcheck, as NIPA's, also wants a new file or a file that
was clean to stay fully clean (any new finding there warns at least).

Options (each of the four): `tool` (the executable, default its name), `args` (added to
the tool's own; shellcheck's default excludes SC2317/SC2329 as NIPA, and SC1091 because a
copied file cannot follow its `source`s).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from patchci.checks.base import Check, CheckContext, CheckOptions, Verdict
from patchci.git import Git
from patchci.lint_output import (
    ERROR,
    INFO,
    WARNING,
    Finding,
    LintParseError,
    new_findings,
    parse_pylint,
    parse_ruff,
    parse_shellcheck,
    parse_yamllint,
)
from patchci.model import Outcome, Scope


class LintOptions(CheckOptions):
    tool: str = ""
    args: tuple[str, ...] | None = None


class _Lint(Check):
    Options = LintOptions
    opts: LintOptions
    scope = Scope.PATCH
    default_timeout = 300.0
    suffixes: ClassVar[tuple[str, ...]] = ()
    default_args: ClassVar[tuple[str, ...]] = ()
    ok_exit: ClassVar[tuple[int, ...]] = (0, 1)
    strict_clean = False  # a new or clean file must stay fully clean

    def __init__(self, options: Mapping[str, Any] | None = None, timeout: float | None = None):
        super().__init__(options, timeout)
        self.exe = self.opts.tool or type(self).tools[0]

    def missing_tools(self, ctx: CheckContext) -> list[str]:
        return [] if shutil.which(self.exe) else [self.exe]

    def argv(self, rel: str) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def parse(self, text: str, root: Path) -> list[Finding]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def args(self) -> tuple[str, ...]:
        return self.default_args if self.opts.args is None else self.opts.args

    def files(self, ctx: CheckContext) -> list[str]:
        git = Git(ctx.worktree, deadline=ctx.deadline)
        return [f for f in git.changed_files(ctx.commit) if f.endswith(self.suffixes)]

    def applies(self, ctx: CheckContext) -> str | None:
        if not self.files(ctx):
            return f"skipped: the patch touches no {'/'.join(self.suffixes)} file"
        return None

    def _lint(self, ctx: CheckContext, rev: str, rel: str, where: Path) -> list[Finding] | None:
        """Findings of *rel* at *rev* (None: the file does not exist there)."""
        shown = Git(ctx.worktree, deadline=ctx.deadline).run("show", f"{rev}:{rel}", check=False)
        if not shown.ok:
            return None
        copy = where / rel
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(shown.stdout, encoding="utf-8")
        res = ctx.run(self.argv(rel), cwd=where, writable=(where,))
        if res.returncode not in self.ok_exit:
            raise LintParseError(f"{self.exe} exited {res.returncode}: "
                                 f"{(res.stderr or res.stdout).strip()[:300]}")  # fmt: skip
        return self.parse(res.stdout, where)

    def run(self, ctx: CheckContext) -> Verdict:
        work = ctx.log_dir / f"{(ctx.patch_index or 0) + 1}-{self.name}"
        added: list[Finding] = []
        strict: list[Finding] = []
        lines: list[str] = []
        files = self.files(ctx)
        try:
            for rel in files:
                before = self._lint(ctx, ctx.parent, rel, work / "before")
                after = self._lint(ctx, ctx.commit, rel, work / "after")
                if after is None:
                    continue  # deleted by the patch
                new = new_findings(before or [], after)
                added += new
                if self.strict_clean and not before:
                    strict += [f for f in new if f.severity == INFO]
                lines.append(f"{rel}: {len(before or [])} findings before "
                             f"({'new file' if before is None else 'existing'}), {len(after)} "
                             f"after, {len(new)} new")  # fmt: skip
        except LintParseError as e:
            return Verdict(Outcome.ERROR, f"{self.name} failed: {e}"[:250], str(e) + "\n")
        log = "\n".join(lines + ["", *(f"new: {f}" for f in added)]) + "\n"
        repro = ctx.reproducer(self.argv(files[0])) if files else ""
        errors = [f for f in added if f.severity == ERROR]
        warnings = [f for f in added if f.severity == WARNING] + strict
        if not errors and not warnings:
            return Verdict(Outcome.PASS, f"no new {self.name} problems in {len(files)} files"
                           + (f" ({len(added)} notes)" if added else ""), log, repro)  # fmt: skip
        first = (errors or warnings)[0]
        desc = (f"new: {len(errors)} errors, {len(warnings)} warnings: {first.file}: "
                f"{first.code} {first.message}")  # fmt: skip
        outcome = Outcome.FAIL if errors else Outcome.WARN
        return Verdict(outcome, desc if len(desc) <= 250 else desc[:247] + "...", log, repro)


class Shellcheck(_Lint):
    name = "shellcheck"
    tools = ("shellcheck",)
    description = "shellcheck finds nothing new in the touched shell scripts"
    suffixes = (".sh",)
    default_args = ("-e", "SC2317", "-e", "SC2329", "-e", "SC1091")
    strict_clean = True

    def argv(self, rel: str) -> list[str]:
        return [self.exe, "-f", "json1", *self.args, "--", rel]

    def parse(self, text: str, root: Path) -> list[Finding]:
        return parse_shellcheck(text)


class Pylint(_Lint):
    name = "pylint"
    tools = ("pylint",)
    description = "pylint finds nothing new in the touched Python files"
    suffixes = (".py",)
    ok_exit = tuple(range(32))  # a bit mask of what it found; 32 is a usage error

    def argv(self, rel: str) -> list[str]:
        return [self.exe, "--output-format=json", "--persistent=n", "--score=n",
                *self.args, "--", rel]  # fmt: skip

    def parse(self, text: str, root: Path) -> list[Finding]:
        return parse_pylint(text)


class Ruff(_Lint):
    name = "ruff"
    tools = ("ruff",)
    description = "ruff finds nothing new in the touched Python files"
    suffixes = (".py",)
    default_args = ("--isolated",)  # its default rules; the copy is outside any config

    def argv(self, rel: str) -> list[str]:
        return [self.exe, "check", "--output-format", "json", "--no-cache", *self.args,
                "--", rel]  # fmt: skip

    def parse(self, text: str, root: Path) -> list[Finding]:
        return parse_ruff(text, str(root))


class Yamllint(_Lint):
    name = "yamllint"
    tools = ("yamllint",)
    description = "yamllint finds nothing new in the touched YAML files"
    suffixes = (".yaml", ".yml")

    def argv(self, rel: str) -> list[str]:
        return [self.exe, "-f", "parsable", *self.args, "--", rel]

    def parse(self, text: str, root: Path) -> list[Finding]:
        return parse_yamllint(text)
