"""The only module that starts subprocesses.

argv lists only, no shell, stdin from /dev/null unless input is given, LC_ALL=C, each child
in its own process group, and the whole group killed on timeout (a hung `make -j` leaves
grandchildren otherwise).
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from patchci.errors import CommandFailed, CommandIdle, CommandTimeout, InfraError, ToolMissing
from patchci.sandbox import Sandbox

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def output(self) -> str:
        """stdout and stderr together, as a human reads a log."""
        if self.stdout and self.stderr:
            return self.stdout.rstrip("\n") + "\n" + self.stderr
        return self.stdout or self.stderr


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    env.setdefault("GIT_TERMINAL_PROMPT", "0")
    if extra:
        env.update(extra)
    return env


def _prepare(
    args: list[str],
    cwd: str | Path | None,
    env: Mapping[str, str] | None,
    sandbox: Sandbox | None,
    writable: Sequence[Path],
    readable: Sequence[Path],
    read_only: Sequence[Path] = (),
) -> tuple[dict[str, str], list[str]]:
    """The environment and argv to start: ours, or the sandbox's for untrusted code."""
    if sandbox is None:
        return base_env(env), args
    where = Path(cwd) if cwd is not None else None
    if where is not None and not where.is_dir():
        raise InfraError(f"working directory does not exist: {cwd}")
    sb_env = sandbox.environment(env, where)
    # bwrap only says "execvp: No such file" with exit 1: find the program first.
    prog = args[0]
    found = (
        (where / prog if where is not None else Path(prog)).exists()
        if "/" in prog
        else shutil.which(prog, path=sb_env.get("PATH")) is not None
    )
    if not found:
        raise ToolMissing(prog)
    wrapped = sandbox.argv(args, sb_env, cwd=where, writable=writable, readable=readable,
                           read_only=read_only)  # fmt: skip
    return sb_env, wrapped


def which(tool: str) -> str | None:
    return shutil.which(tool)


# Every child still running (its own process group): what kill_all() stops when the daemon
# has to exit in the middle of a branch run.
_LIVE: set[subprocess.Popen[bytes]] = set()
_LIVE_LOCK = threading.Lock()


def _track(p: subprocess.Popen[bytes]) -> None:
    with _LIVE_LOCK:
        _LIVE.add(p)


def _untrack(p: subprocess.Popen[bytes]) -> None:
    with _LIVE_LOCK:
        _LIVE.discard(p)


def kill_all() -> int:
    """SIGKILL the process group of every child still running; returns how many."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for p in live:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(live)


def _kill_group(p: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _decode(b: bytes | None) -> str:
    return (b or b"").decode("utf-8", errors="replace")


def run(
    argv: Sequence[str],
    *,
    cwd: str | Path | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    check: bool = False,
    log_path: str | Path | None = None,
    pass_fds: Sequence[int] = (),
    sandbox: Sandbox | None = None,
    writable: Sequence[Path] = (),
    readable: Sequence[Path] = (),
    read_only: Sequence[Path] = (),
) -> Completed:
    """Run *argv* and return its output; raise CommandTimeout when it outlives *timeout*.

    *env* is added to a C-locale copy of our environment, or with a *sandbox* (untrusted
    code) to a minimal one, *writable*/*readable*/*read_only* naming what the command may
    see (Sandbox.argv). With
    *log_path*, the command line and its whole output are written there too.
    """
    args = [str(a) for a in argv]
    if not args:
        raise ValueError("empty argv")
    log.debug("$ %s%s", shlex.join(args), f"  (cwd={cwd})" if cwd else "")
    full_env, popen_args = _prepare(args, cwd, env, sandbox, writable, readable, read_only)
    start = time.monotonic()
    try:
        p = subprocess.Popen(
            popen_args,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
        )
    except FileNotFoundError as e:
        if cwd is not None and not Path(cwd).is_dir():
            raise InfraError(f"working directory does not exist: {cwd}") from e
        raise ToolMissing(args[0]) from e
    except PermissionError as e:
        raise ToolMissing(args[0], "not executable") from e
    _track(p)
    try:
        out, err = p.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        _kill_group(p)
        out_b, err_b = p.communicate()
        so = _decode(out_b or (e.stdout if isinstance(e.stdout, bytes) else None))
        se = _decode(err_b or (e.stderr if isinstance(e.stderr, bytes) else None))
        if log_path is not None:
            _write_log(log_path, args, cwd, so, se, None, time.monotonic() - start)
        raise CommandTimeout(args, timeout or 0.0, so, se) from e
    except BaseException:
        _kill_group(p)
        raise
    finally:
        _untrack(p)
    res = Completed(tuple(args), p.returncode, _decode(out), _decode(err), time.monotonic() - start)
    if log_path is not None:
        _write_log(log_path, args, cwd, res.stdout, res.stderr, res.returncode, res.duration)
    if check and not res.ok:
        raise CommandFailed(args, res.returncode, res.stdout, res.stderr)
    return res


def stream(
    argv: Sequence[str],
    on_line: Callable[[str], None],
    *,
    cwd: str | Path | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    env: Mapping[str, str] | None = None,
    log_path: str | Path | None = None,
    sandbox: Sandbox | None = None,
    writable: Sequence[Path] = (),
    readable: Sequence[Path] = (),
    on_start: Callable[[int], None] | None = None,
    idle_timeout: float | None = None,
) -> int:
    """Run *argv* with stderr merged into stdout, feeding each line to *on_line* as it comes
    and teeing it to *log_path*. Returns the exit code; raises CommandTimeout, or
    CommandIdle when nothing came for *idle_timeout* seconds. *sandbox*,
    *writable* and *readable* as for run(). *on_start* gets the child's pid, which is also
    its process group (a watchdog may kill the group)."""
    import selectors

    args = [str(a) for a in argv]
    log.debug("$ %s", shlex.join(args))
    full_env, popen_args = _prepare(args, cwd, env, sandbox, writable, readable)
    try:
        p = subprocess.Popen(
            popen_args,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except FileNotFoundError as e:
        raise ToolMissing(args[0]) from e
    _track(p)
    if on_start is not None:
        on_start(p.pid)
    assert p.stdout is not None
    deadline = None if timeout is None else time.monotonic() + timeout
    sink = Path(log_path).open("ab") if log_path is not None else None  # noqa: SIM115
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    buf = b""
    heard = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            left = None if deadline is None else deadline - now
            if left is not None and left <= 0:
                _kill_group(p)
                raise CommandTimeout(args, timeout or 0.0)
            if idle_timeout is not None and now - heard > idle_timeout:
                _kill_group(p)
                raise CommandIdle(args, idle_timeout)
            wait = 1.0 if idle_timeout is None else min(1.0, max(idle_timeout / 4, 0.05))
            if not sel.select(timeout=min(left, wait) if left is not None else wait):
                continue
            heard = time.monotonic()
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                break
            if sink is not None:
                sink.write(chunk)
                sink.flush()
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                on_line(_decode(line))
        if buf:
            on_line(_decode(buf))
        left = None if deadline is None else max(deadline - time.monotonic(), 0.1)
        try:
            return p.wait(timeout=left)
        except subprocess.TimeoutExpired as e:
            _kill_group(p)
            raise CommandTimeout(args, timeout or 0.0) from e
    except BaseException:
        _kill_group(p)
        raise
    finally:
        _untrack(p)
        sel.close()
        p.stdout.close()
        if sink is not None:
            sink.close()


def _write_log(
    path: str | Path,
    argv: list[str],
    cwd: str | Path | None,
    stdout: str,
    stderr: str,
    rc: int | None,
    duration: float,
) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    status = "timed out" if rc is None else f"exit {rc}"
    with p.open("a", encoding="utf-8") as f:
        f.write(f"$ {shlex.join(argv)}\n")
        if cwd:
            f.write(f"# cwd: {cwd}\n")
        if stdout:
            f.write(stdout if stdout.endswith("\n") else stdout + "\n")
        if stderr:
            f.write(stderr if stderr.endswith("\n") else stderr + "\n")
        f.write(f"# {status} after {duration:.2f}s\n")
