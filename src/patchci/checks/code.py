"""Small diff-based code checks (cheap, no build): source_inline, header_inline,
deprecated_api, check_selftest. Each reads `git show` of the patch's commit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field

from patchci.checks.base import Check, CheckContext, CheckOptions, Verdict
from patchci.git import Git
from patchci.model import Outcome, Scope

_DIFF_GIT = re.compile(r"^diff --git a/(?P<a>.+?) b/(?P<b>.+)$")


@dataclass
class FileDiff:
    """The added and removed lines of one file (without the +/- marker)."""

    path: str
    new_file: bool = False
    deleted: bool = False
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def parse_diff(text: str) -> list[FileDiff]:
    """Split a `git show`/`git diff` into per-file added and removed lines. Never raises."""
    files: list[FileDiff] = []
    cur: FileDiff | None = None
    in_hunk = False
    for line in text.splitlines():
        m = _DIFF_GIT.match(line)
        if m:
            cur = FileDiff(m.group("b"))
            files.append(cur)
            in_hunk = False
            continue
        if cur is None:
            continue
        if not in_hunk:
            if line.startswith("new file mode"):
                cur.new_file = True
            elif line.startswith("deleted file mode"):
                cur.deleted = True
            elif line.startswith("+++ b/"):
                cur.path = line[6:]
            elif line.startswith("@@"):
                in_hunk = True
            continue
        if line.startswith("+"):
            cur.added.append(line[1:])
        elif line.startswith("-"):
            cur.removed.append(line[1:])
    return files


def _show(ctx: CheckContext) -> list[FileDiff]:
    git = Git(ctx.worktree, deadline=ctx.deadline)
    text = git.run("show", "--format=", "--no-renames", "--no-color", "--no-ext-diff",
                   ctx.commit).stdout  # fmt: skip
    return parse_diff(text)


class _DiffCheck(Check):
    scope = Scope.PATCH
    tools = ("git",)
    default_timeout = 60.0


_INLINE = re.compile(r"\binline\b")


class SourceInline(_DiffCheck):
    """`inline` in .c files: let the compiler decide. None added: PASS; no more than the
    patch removes (code moved): WARN; more: FAIL."""

    name = "source_inline"
    description = "No new inline keyword in .c files"

    def run(self, ctx: CheckContext) -> Verdict:
        added: list[str] = []
        removed = 0
        for f in _show(ctx):
            if f.path.endswith(".c"):
                added += [f"{f.path}: {ln.strip()}" for ln in f.added if _INLINE.search(ln)]
                removed += sum(1 for ln in f.removed if _INLINE.search(ln))
        body = "\n".join(added) + "\n"
        if not added:
            return Verdict(Outcome.PASS, "no inline keyword added in .c files")
        desc = f"inline keyword in .c files: added {len(added)}, removed {removed}"
        return Verdict(Outcome.WARN if len(added) <= removed else Outcome.FAIL, desc, body)


# "static int foo(" but not "static inline", "static __always_inline", a prototype or data.
_STATIC_FN = re.compile(r"^static\s+(?!.*inline)[^;=]*\w\s*\(")


class HeaderInline(_DiffCheck):
    """A `static` function defined in a header without `inline` is duplicated (and warns as
    unused) in every file that includes it: FAIL."""

    name = "header_inline"
    description = "Static functions in headers are inline"

    def run(self, ctx: CheckContext) -> Verdict:
        hits = [
            f"{f.path}: {ln.strip()}"
            for f in _show(ctx)
            if f.path.endswith(".h")
            for ln in f.added
            if _STATIC_FN.match(ln) and not ln.rstrip().endswith(";")
        ]
        if hits:
            return Verdict(Outcome.FAIL, f"static functions without inline in headers: "
                           f"{len(hits)}", "\n".join(hits) + "\n")  # fmt: skip
        return Verdict(Outcome.PASS, "no static non-inline function added to a header")


DEFAULT_FAIL = ("module_param",)
DEFAULT_WARN = ("dev_hold(", "dev_put(", "put_net(", "get_net(", "init_dummy_netdev(", "__free(")
DEFAULT_PATHS: dict[str, tuple[str, ...]] = {"__free(": ("drivers/net/",)}


class DeprecatedApiOptions(CheckOptions):
    fail: tuple[str, ...] = DEFAULT_FAIL
    warn: tuple[str, ...] = DEFAULT_WARN
    paths: dict[str, tuple[str, ...]] = Field(default_factory=lambda: dict(DEFAULT_PATHS))


class DeprecatedApi(_DiffCheck):
    """APIs whose use may not grow. Options: `fail` (list of substrings; more uses added
    than removed is FAIL, default `["module_param"]`), `warn` (same, WARN; default netdev's
    dev_hold/dev_put/put_net/get_net/init_dummy_netdev/__free), `paths` (table: API →
    path prefixes it is restricted to; default `{"__free(" = ["drivers/net/"]}`)."""

    Options = DeprecatedApiOptions
    opts: DeprecatedApiOptions
    name = "deprecated_api"
    description = "No new use of deprecated APIs"

    def run(self, ctx: CheckContext) -> Verdict:
        fail, warn, paths = self.opts.fail, self.opts.warn, self.opts.paths
        diffs = _show(ctx)
        grew: dict[str, int] = {}
        for api in dict.fromkeys([*fail, *warn]):
            prefixes = tuple(paths.get(api, ()))
            files = [f for f in diffs if not prefixes or f.path.startswith(prefixes)]
            delta = sum(ln.count(api) for f in files for ln in f.added) - sum(
                ln.count(api) for f in files for ln in f.removed
            )
            if delta > 0:
                grew[api] = delta
        if not grew:
            return Verdict(Outcome.PASS, "no new use of deprecated APIs")
        desc = "more uses of: " + ", ".join(f"{a} (+{n})" for a, n in grew.items())
        outcome = Outcome.FAIL if any(a in fail for a in grew) else Outcome.WARN
        return Verdict(outcome, desc[:250], desc + "\n")


SELFTESTS = "tools/testing/selftests/"


def _mentions(path: Path, word: str) -> bool:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return re.search(rf"(?<![\w.-]){re.escape(word)}(?![\w.-])", text) is not None


def _makefile_for(root: Path, rel: str) -> Path | None:
    """The Makefile of *rel*'s directory, or of the nearest parent below selftests/."""
    d = Path(rel).parent
    while str(d).startswith(SELFTESTS.rstrip("/")) and str(d) != SELFTESTS.rstrip("/"):
        if (root / d / "Makefile").is_file():
            return root / d / "Makefile"
        d = d.parent
    return None


def selftest_problems(root: Path, new_files: Sequence[str]) -> list[str]:
    """What a new selftest misses: scripts in the Makefile, C programs in the Makefile
    and in .gitignore (the built binary must not show as untracked)."""
    problems: list[str] = []
    for rel in new_files:
        name = Path(rel).name
        if name.endswith((".sh", ".py")):
            mk = _makefile_for(root, rel)
            if mk is None or not _mentions(mk, name):
                problems.append(f"{rel}: not listed in the Makefile (TEST_PROGS etc.)")
        elif name.endswith(".c") and not name.endswith(".bpf.c"):
            stem = name[:-2]
            mk = _makefile_for(root, rel)
            if mk is None or not (_mentions(mk, stem) or _mentions(mk, name)):
                problems.append(f"{rel}: program {stem} not listed in the Makefile")
            ignore = (mk.parent if mk else root / Path(rel).parent) / ".gitignore"
            if not (_mentions(ignore, stem) or _mentions(ignore, "/" + stem)):
                problems.append(f"{rel}: program {stem} not in {ignore.relative_to(root)}")
    return problems


def unsorted(root: Path, rel: str) -> str | None:
    """A selftest `config` or `.gitignore` the patch touched must stay sorted (NIPA's
    validate_config_format: comments and blank lines skipped, underscores ignored); the
    first pair out of order, or None."""
    try:
        text = (root / rel).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None  # deleted by the patch
    items = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    for a, b in zip(items, items[1:], strict=False):
        if a.replace("_", "") > b.replace("_", ""):
            return f"{rel}: not sorted: {b!r} should come before {a!r}"
    return None


_ASSIGN_RE = re.compile(r"^([A-Z_][A-Z0-9_]*)\s*(?::?=|\+=)(.*)$")
_LINE_NO_RE = re.compile(r"^Lines? [0-9-]+: ")


def _blocks(text: str) -> dict[str, list[tuple[int, str]]]:
    """Multi-line variable assignments: variable -> its (line number, item line) entries.
    A value starting with `$`, a short name and *FLAGS/*LIBS are left alone (NIPA's
    exemptions: computed lists and compiler flags are not lists of tests)."""
    out: dict[str, list[tuple[int, str]]] = {}
    var: str | None = None
    for n, line in enumerate(text.split("\n"), 1):
        m = _ASSIGN_RE.match(line)
        if m:
            var, value = m.group(1), m.group(2).strip()
            if value.startswith("$") or len(var) < 3 or "FLAGS" in var or "LIBS" in var:
                var = None
            elif value != "\\":
                out.setdefault(var, []).append((n, "\t" + value))
        elif var is not None:
            out.setdefault(var, []).append((n, line))
        if var is not None and not line.endswith("\\"):
            var = None
    return out


def makefile_format(text: str) -> list[str]:
    """A selftest Makefile's lists as NIPA's validate_makefile_format wants them: one item
    per tab-indented line ending in ` \\`, sorted (fewer directories first, then by name),
    closed by a `# ...VARIABLE` comment, each variable assigned in one block."""
    problems: list[str] = []
    for var, entries in _blocks(text).items():
        lines = [ln for _, ln in entries]
        nums = [n for n, _ in entries]
        closed = lines[-1].strip().startswith("#")
        items: list[tuple[int, str]] = []
        for n, ln in entries[: -1 if closed else None]:
            if not ln.startswith("\t"):
                problems.append(f"Line {n}: {var}: an item line must start with a tab")
            item = ln[1:].removesuffix(" \\").strip()
            if " " in item and "$" not in item:
                problems.append(f"Line {n}: {var}: one item per line, not {item!r}")
            items.append((n, item))
        if len(lines) > 1 and not closed:
            problems.append(f"Line {nums[-1]}: {var}: the list must end with a '#' comment line")
        elif len(lines) > 1 and len(lines[-1].strip()) > 5 and var not in lines[-1]:
            problems.append(f"Line {nums[-1]}: {var}: its closing comment should name {var}")
        plain = [(n, i) for n, i in items if not i.startswith("$")]
        for (n1, a), (n2, b) in zip(plain, plain[1:], strict=False):
            if a >= b and (a.count("/"), a.lower()) > (b.count("/"), b.lower()):
                problems.append(f"Lines {n1}-{n2}: {var}: {b!r} should come before {a!r}")
        for prev, n in zip(nums, nums[1:], strict=False):
            if n != prev + 1:
                problems.append(f"Line {n}: {var}: assigned in a second block (the first "
                                f"ends at line {prev})")  # fmt: skip
                break
    return problems


def added_makefile_problems(before: str | None, after: str) -> list[str]:
    """The format problems of *after* the patch added (line numbers move: compared without)."""
    old = {_LINE_NO_RE.sub("", p) for p in makefile_format(before or "")}
    return [p for p in makefile_format(after) if _LINE_NO_RE.sub("", p) not in old]


class CheckSelftest(_DiffCheck):
    """New selftests are wired up: a new .sh/.py under tools/testing/selftests/ is in its
    directory's Makefile; a new .c (not .bpf.c) is in the Makefile and the .gitignore; a
    selftest `config` or `.gitignore` the patch touches stays sorted."""

    name = "check_selftest"
    description = "New selftests are listed in their Makefile and .gitignore"

    def run(self, ctx: CheckContext) -> Verdict:
        diffs = [f for f in _show(ctx) if f.path.startswith(SELFTESTS)]
        new = [f.path for f in diffs if f.new_file]
        listed = [f.path for f in diffs if Path(f.path).name in ("config", ".gitignore")]
        makefiles = [f.path for f in diffs if Path(f.path).name == "Makefile"
                     and (ctx.worktree / f.path).is_file()]  # fmt: skip
        if not new and not listed and not makefiles:
            return Verdict(Outcome.PASS, "no new selftest files")
        problems = selftest_problems(ctx.worktree, new)
        problems += [p for rel in listed if (p := unsorted(ctx.worktree, rel)) is not None]
        git = Git(ctx.worktree, deadline=ctx.deadline)
        for rel in makefiles:
            was = git.run("show", f"{ctx.parent}:{rel}", check=False)
            after = (ctx.worktree / rel).read_text(encoding="utf-8", errors="replace")
            problems += [f"{rel}: {p}" for p in
                         added_makefile_problems(was.stdout if was.ok else None, after)]  # fmt: skip
        if problems:
            return Verdict(Outcome.FAIL, f"selftest not wired up: {problems[0]}"
                           + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""),
                           "\n".join(problems) + "\n")  # fmt: skip
        if not new:
            return Verdict(Outcome.PASS, f"selftest lists sorted: {len(listed) + len(makefiles)}")
        return Verdict(Outcome.PASS, f"new selftest files wired up: {len(new)}")
