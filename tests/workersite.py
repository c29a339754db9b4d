"""A patchci site for the worker tests and `bench workers`: a real redis-server, a
server (`patchci serve`, a config with a [broker]) and worker hosts (`patchci worker`),
each host with its own directory and no database in reach."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import select

from patchci.db import tables as t
from patchci.db.migrate import make_engine
from patchci.git import Git
from tests.gitrepo import write

TESTS = "tools/testing/selftests/net"
SLOW_TEST = """#!/bin/sh
echo "TAP version 13"
echo "1..2"
sleep {sleep}
echo "ok 1 first"
echo "# a log line from $(hostname)"
echo "ok 2 second"
"""
TOKENS = {"w1": "token-of-w1", "w2": "token-of-w2"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(cond: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Redis:
    port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.dir), "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=(self.dir / "redis.log").open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(self.ping, "redis-server")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            self.proc = None


@dataclass
class Site:
    """A server (data dir, config, `patchci serve`) and its worker hosts."""

    root: Path
    redis: Redis
    port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def cfg(self) -> Path:
        return self.root / "patchci.toml"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db(self) -> Path:
        return self.root / "data" / "patchci.db"

    def env(self, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("PATCHCI_")}
        return {**base, **extra}

    def write_config(self, sleep: float, executors: int = 2, **broker: object) -> None:
        tree = self.root / "tree"
        git = Git.init(tree)
        write(tree, "drivers/net/foo.c", "int foo;\n")
        write(tree, f"{TESTS}/slow.sh", SLOW_TEST.format(sleep=sleep))
        (tree / TESTS / "slow.sh").chmod(0o755)
        git.add_all()
        git.commit("net: import\n\nSigned-off-by: A <a@example.com>")
        names = [f"ex-{i}" for i in range(executors)]
        execs = "".join(f'\n[[executors]]\nname = "{n}"\nkind = "local"\ndeadline = 50\n'
                        for n in names)  # fmt: skip
        settings = {"heartbeat_timeout": 4, "visibility_timeout": 60, **broker}
        extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
        workers = "".join(f'\n[[broker.workers]]\nname = "{w}"\ntoken_env = "TOK_{w.upper()}"\n'
                          for w in TOKENS)  # fmt: skip
        self.cfg.write_text(f"""data_dir = "data"
[[trees]]
name = "net-next"
path = "{tree}"
branch = "main"
tags = ["net-next"]
checks = ["signed_off_by"]
[[streams]]
name = "nn"
tree = "net-next"
tests_dir = "{TESTS}"
executors = {json.dumps(names)}
[report.patchwork]
enabled = false
[sandbox]
isolate = "env"
{execs}
[broker]
url = "{self.redis.url}"
{extra}{workers}""")

    def serve(self) -> None:
        env = self.env(**{f"TOK_{w.upper()}": tok for w, tok in TOKENS.items()})
        self.procs["serve"] = subprocess.Popen(
            [sys.executable, "-m", "patchci", "-c", str(self.cfg), "serve", "--port",
             str(self.port)], env=env, cwd=self.root,
            stdout=(self.root / "serve.log").open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(lambda: up(self.url), "patchci serve")

    def worker(self, name: str, token: str | None = None) -> None:
        """A worker host: its own directory, its [worker] file, no database anywhere."""
        home = self.root / f"host-{name}"
        home.mkdir(exist_ok=True)
        (home / "worker.toml").write_text(f"""[worker]
name = "{name}"
queues = ["local"]
work_dir = "work"
server_url = "{self.url}"
heartbeat = 1
http_timeout = 10
upload_patience = 60
visibility_timeout = 60
[worker.sandbox]
isolate = "env"
""")
        env = self.env(PATCHCI_WORKER_TOKEN=token or TOKENS[name],
                       PATCHCI_BROKER_URL=self.redis.url)  # fmt: skip
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "patchci", "-v", "worker", "--worker-config",
             str(home / "worker.toml")], env=env, cwd=home, start_new_session=True,
            stdout=(self.root / f"{name}.log").open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip

    def kill(self, name: str) -> None:
        """kill -9 of the worker host's whole process group (pool, tests and all)."""
        os.killpg(self.procs[name].pid, signal.SIGKILL)
        self.procs.pop(name).wait(timeout=10)

    def branch_now(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "patchci", "-c", str(self.cfg), "branch", "--now"],
            env=self.env(), cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def jobs(self) -> list[dict[str, object]]:
        if not self.db.exists():
            return []
        engine = make_engine(f"sqlite:///{self.db}")
        try:
            with engine.connect() as conn:
                rows = conn.execute(select(t.executor_jobs)).mappings().all()
                return [{**r, "attempts": json.loads(r["attempts"])} for r in rows]
        finally:
            engine.dispose()

    def runs(self) -> list[dict[str, object]]:
        engine = make_engine(f"sqlite:///{self.db}")
        try:
            with engine.connect() as conn:
                return [dict(r) for r in conn.execute(select(t.runs)).mappings().all()]
        finally:
            engine.dispose()

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def close(self) -> None:
        for name, p in self.procs.items():
            if name == "serve":
                p.terminate()
            else:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=20)


def up(url: str) -> bool:
    try:
        return httpx.get(url + "/api/v1/openapi.json", timeout=2).status_code < 500
    except httpx.HTTPError:
        return False
