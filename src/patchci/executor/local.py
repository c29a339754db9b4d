"""Local executor: tests run as host processes, a few at a time, failures retried.

For each test the output is streamed through `proc.stream` (a pipe, teed to the test's own
log) into the KTAP parser and the crash detector as it comes. The verdict comes from the
parsed KTAP, not from the exit code, because the kselftest runner exits 0 whatever happened;
only output without any KTAP falls back to the kselftest exit codes (0 pass, 4 skip, else
fail). A test that outlives its timeout is killed (its whole process group) and recorded as
TIMEOUT; the run goes on. A kernel splat in the output makes the test a CRASH.

Before anything runs, `reproduce.sh` is written to the output directory: the branch, the
build command and every test command with its timeout, so a failed run can be replayed by
hand even if the executor dies half-way.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from patchci import ktap, proc
from patchci.crash import DEFAULT_CONFIG, CrashConfig, CrashDetector
from patchci.errors import CommandIdle, CommandTimeout, ToolMissing
from patchci.executor.base import (
    RETRY_ON,
    RUN_DONE,
    RUN_ERROR,
    CrashRef,
    RunResult,
    Subtest,
    SubtestCollector,
    TestResult,
    TestSpec,
    merge_retry,
    namify,
)
from patchci.model import Outcome, worst
from patchci.sandbox import Sandbox

log = logging.getLogger(__name__)

REPRODUCE = "reproduce.sh"
BUILD_LOG = "build.log"
KSFT_SKIP = 4  # kselftest's exit code for "skipped"
KSELFTEST_LIST = "kselftest-list.txt"
KSELFTEST_RUNNER = "run_kselftest.sh"


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Attempt:
    outcome: Outcome
    duration: float
    subtests: tuple[Subtest, ...]
    crashes: tuple[CrashRef, ...]
    log_path: Path
    note: str


def order_tests(
    tests: Sequence[TestSpec], durations: Mapping[tuple[str, str], float] | None
) -> list[TestSpec]:
    """Longest first by previous duration, so the slow ones do not end the run alone;
    tests never timed go first (they may be slow), otherwise the given order is kept."""
    if not durations:
        return list(tests)
    return sorted(tests, key=lambda s: -durations.get(s.key, float("inf")))


def verdict(parsed: ktap.Parsed, exit_code: int | None, crashed: bool) -> Outcome:
    """A test's outcome from its KTAP, its exit code (None: killed on timeout) and whether a
    (not ignored) kernel splat showed up in its output."""
    if exit_code is None:
        base = Outcome.TIMEOUT
    elif not parsed.top_level and (parsed.version is None or exit_code != 0):
        # No results (no KTAP, or a header and nothing else): the exit status tells. A
        # program killed by SIGSEGV after its header (139) failed; it did not skip.
        base = {0: Outcome.PASS, KSFT_SKIP: Outcome.SKIP}.get(exit_code, Outcome.FAIL)
    else:
        base = parsed.outcome
        if exit_code > 128 and base in (Outcome.PASS, Outcome.SKIP, Outcome.XFAIL):
            base = Outcome.FAIL  # killed by a signal after reporting what it had
    return worst((base, Outcome.CRASH)) if crashed else base


class LocalExecutor:
    """Runs tests on the host. *timeout*, when set, caps every test's own timeout;
    *previous_durations* ((group, name) → seconds) orders the tests longest first."""

    def __init__(
        self,
        name: str,
        build_command: Sequence[str] | None = None,
        *,
        retries: int = 1,
        jobs: int = 1,
        timeout: float | None = None,
        build_timeout: float = 3600.0,
        previous_durations: Mapping[tuple[str, str], float] | None = None,
        env: Mapping[str, str] | None = None,
        crash_config: CrashConfig = DEFAULT_CONFIG,
        clock: Callable[[], datetime] = now,
        sandbox: Sandbox | None = None,
        writable: Sequence[Path] = (),
        idle_timeout: float | None = None,
    ) -> None:
        self.name = name
        self.build_command = tuple(build_command) if build_command else None
        self.retries = max(retries, 0)
        self.jobs = max(jobs, 1)
        self.timeout = timeout
        self.build_timeout = build_timeout
        self.previous_durations = dict(previous_durations or {})
        self.env = dict(env) if env else None
        self.crash_config = crash_config
        self.clock = clock
        self.sandbox = sandbox  # the branch's build and tests are patch code
        self.writable = tuple(writable)  # besides the worktree and logs, for the tests
        self.idle_timeout = idle_timeout  # a test silent this long is killed as hung

    # -- the run ----------------------------------------------------------------------------

    def run(
        self, branch_name: str, worktree: Path, tests: Sequence[TestSpec], out_dir: Path
    ) -> RunResult:
        out_dir.mkdir(parents=True, exist_ok=True)
        started = self.clock()
        ordered = order_tests(tests, self.previous_durations)
        reproduce = self.reproduce_script(branch_name, worktree, ordered)
        (out_dir / REPRODUCE).write_text(reproduce, encoding="utf-8")
        log.info(
            "executor %s: branch %s: %d tests, %d jobs, logs in %s",
            self.name, branch_name, len(ordered), self.jobs, out_dir,
        )  # fmt: skip
        run = RunResult(
            self.name, branch_name, started, None, RUN_DONE, reproduce=reproduce,
            log_dir=str(out_dir),
        )  # fmt: skip
        if self.build_command is not None:
            error = self._build(branch_name, worktree, out_dir)
            if error is not None:
                build = TestResult(
                    "build", "build", Outcome.FAIL, log_path=str(out_dir / BUILD_LOG)
                )
                return replace(
                    run, finished=self.clock(), status=RUN_ERROR, error=error, tests=(build,)
                )
        done = self._run_all(ordered, worktree, out_dir)
        position = {id(spec): i for i, spec in enumerate(tests)}
        done.sort(key=lambda pair: position[id(pair[0])])
        log.info("executor %s: branch %s: done", self.name, branch_name)
        return replace(run, finished=self.clock(), tests=tuple(r for _, r in done))

    def _build(self, branch: str, worktree: Path, out_dir: Path) -> str | None:
        """Build the branch; the reason it failed, or None. Not blamed on anything here: a
        broken base or a broken series both leave the run without results."""
        assert self.build_command is not None
        tail: deque[str] = deque(maxlen=1)

        def keep(line: str) -> None:
            if line.strip():
                tail.append(line.strip())

        argv = self.build_command
        try:
            rc = proc.stream(
                argv, keep, cwd=worktree, timeout=self.build_timeout, env=self.env,
                log_path=out_dir / BUILD_LOG, sandbox=self.sandbox, writable=(worktree, out_dir),
            )  # fmt: skip
        except CommandTimeout:
            return f"build of {branch} timed out after {self.build_timeout:g}s"
        except (ToolMissing, OSError) as e:
            return f"build of {branch} failed: {e}"
        if rc != 0:
            last = f": {tail[0]}" if tail else ""
            log.warning("executor %s: build of %s failed (exit %d)", self.name, branch, rc)
            return f"build of {branch} failed (exit {rc}){last}"
        return None

    def _run_all(
        self, ordered: Sequence[TestSpec], worktree: Path, out_dir: Path
    ) -> list[tuple[TestSpec, TestResult]]:
        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix=self.name) as pool:
            futures = [
                pool.submit(self._run_test, i, spec, worktree, out_dir)
                for i, spec in enumerate(ordered)
            ]
            return [(spec, f.result()) for spec, f in zip(ordered, futures, strict=True)]

    def _run_test(self, idx: int, spec: TestSpec, worktree: Path, out_dir: Path) -> TestResult:
        base = f"{idx:03d}-{namify(spec.group)}-{namify(spec.name)}"
        try:
            attempts = [self._attempt(spec, worktree, out_dir / base / "stdout")]
            for n in range(1, self.retries + 1):
                if attempts[-1].outcome not in RETRY_ON:
                    break
                retry_dir = out_dir / f"{base}-retry{n if n > 1 else ''}"
                attempts.append(self._attempt(spec, worktree, retry_dir / "stdout"))
        except Exception:  # one broken test must not lose the whole run
            log.exception("executor %s: test %s/%s crashed the runner", self.name, *spec.key)
            return TestResult(spec.group, spec.name, Outcome.ERROR, reproduce=self._cmd(spec))
        return attempts_result(self.name, spec, attempts, self._cmd(spec))

    def _attempt(self, spec: TestSpec, worktree: Path, log_path: Path) -> Attempt:
        collector = SubtestCollector()
        parser = ktap.KtapParser(collector)  # streaming: the log itself is in log_path
        detector = CrashDetector(self.crash_config)

        def on_line(line: str) -> None:
            parser.feed(line)
            detector.feed(line)

        log_path.parent.mkdir(parents=True, exist_ok=True)
        timeout = self._timeout(spec)
        start = time.monotonic()
        rc: int | None
        note = ""
        try:
            rc = proc.stream(
                spec.argv, on_line, cwd=self._cwd(spec, worktree), timeout=timeout,
                env=self.env, log_path=log_path, sandbox=self.sandbox,
                writable=(worktree, log_path.parent, *self.writable),
                idle_timeout=self.idle_timeout,
            )  # fmt: skip
        except CommandIdle as e:
            rc, note = None, f"killed: no output for {e.idle:g}s (hung?)"
        except CommandTimeout:
            rc, note = None, f"killed after {timeout:g}s"
        except (ToolMissing, OSError) as e:
            with log_path.open("a", encoding="utf-8") as f:
                f.write(f"patchci: cannot run the test: {e}\n")
            return Attempt(Outcome.ERROR, time.monotonic() - start, (), (), log_path, str(e))
        duration = time.monotonic() - start
        parsed = parser.finish()
        crashes = tuple(CrashRef.from_crash(c) for c in detector.finish())
        crashed = any(not c.ignored for c in crashes)
        outcome = verdict(parsed, rc, crashed)
        return Attempt(outcome, duration, collector.subtests(), crashes, log_path, note)

    # -- helpers ----------------------------------------------------------------------------

    def _timeout(self, spec: TestSpec) -> float:
        return spec.timeout if self.timeout is None else min(spec.timeout, self.timeout)

    @staticmethod
    def _cwd(spec: TestSpec, worktree: Path) -> Path:
        return worktree if spec.cwd is None else worktree / spec.cwd

    def _cmd(self, spec: TestSpec) -> str:
        cd = f"cd {shlex.quote(str(spec.cwd))} && " if spec.cwd is not None else ""
        return f"{cd}timeout {self._timeout(spec):g} {shlex.join(spec.argv)}"

    def reproduce_script(self, branch: str, worktree: Path, tests: Sequence[TestSpec]) -> str:
        """A shell script replaying this run by hand (relative test dirs are relative to the
        worktree)."""
        lines = [
            "#!/bin/sh",
            f"# patchci executor {self.name}: reproduce the run of branch {branch}",
            f"cd {shlex.quote(str(worktree))} || exit 2",
            f"git checkout --detach {shlex.quote(branch)} || exit 2",
        ]
        if self.build_command is not None:
            lines.append(f"{shlex.join(self.build_command)} || exit 2")
        lines.append(f"# {len(tests)} tests; retries: {self.retries}")
        for spec in tests:
            lines.append(f"# {spec.group}/{spec.name}")
            lines.append(f"( {self._cmd(spec)} )")
        return "\n".join(lines) + "\n"


def unique_crashes(crashes: Iterable[CrashRef]) -> tuple[CrashRef, ...]:
    """One entry per fingerprint: the same splat on the retry is the same bug."""
    seen: dict[str, CrashRef] = {}
    for c in crashes:
        seen.setdefault(c.fingerprint, c)
    return tuple(seen.values())


# -- test lists ----------------------------------------------------------------------------


def tests_from_kselftest_list(path: Path, timeout: float = 300.0) -> list[TestSpec]:
    """Tests of an installed kselftest tree, from its `kselftest-list.txt` (lines
    `collection:program`), each run through the tree's `run_kselftest.sh -t`. Groups are
    named as NIPA does: `selftests-<namify(collection)>`. Malformed lines are skipped."""
    root = path.parent
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        log.warning("cannot read kselftest list %s: %s", path, e)
        return []
    specs = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        collection, sep, program = line.partition(":")
        if not sep or not collection or not program:
            log.warning("%s:%d: not collection:program: %r", path, n, line)
            continue
        argv = (str(root / KSELFTEST_RUNNER), "-t", f"{collection}:{program}")
        specs.append(
            TestSpec(f"selftests-{namify(collection)}", namify(program), argv, timeout, root)
        )
    return specs


def tests_from_dir(
    directory: Path, group: str | None = None, timeout: float = 300.0
) -> list[TestSpec]:
    """One test per executable regular file in *directory* (not recursive), sorted by
    name; the group defaults to the directory's name."""
    grp = group or namify(directory.name)
    specs = []
    for p in sorted(directory.iterdir()):
        if p.is_file() and p.stat().st_mode & 0o111:
            specs.append(TestSpec(grp, namify(p.name), (str(p.resolve()),), timeout, directory))
    return specs


def attempts_result(
    executor: str, spec: TestSpec, attempts: list[Attempt], reproduce: str
) -> TestResult:
    """The TestResult of a test from its first attempt and its last retry (if any)."""
    first, retry = attempts[0], (attempts[-1] if len(attempts) > 1 else None)
    log.info(
        "executor %s: %s/%s: %s%s%s", executor, spec.group, spec.name, first.outcome.value,
        f", retry {retry.outcome.value}" if retry else "",
        f" ({first.note})" if first.note else "",
    )  # fmt: skip
    return TestResult(
        group=spec.group,
        name=spec.name,
        outcome=first.outcome,
        duration=round(first.duration, 3),
        retry_outcome=retry.outcome if retry else None,
        retry_duration=round(retry.duration, 3) if retry else None,
        subtests=merge_retry(first.subtests, retry.subtests) if retry else first.subtests,
        crashes=unique_crashes(c for a in attempts for c in a.crashes),
        log_path=str(first.log_path),
        retry_log_path=str(retry.log_path) if retry else None,
        reproduce=reproduce,
    )
