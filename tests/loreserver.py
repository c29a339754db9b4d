"""A real public-inbox server for tests: Debian's public-inbox (`make test` installs it),
an inbox made with public-inbox-init, mails delivered with public-inbox-mda, served by
public-inbox-httpd on loopback, at the same URLs as lore.kernel.org (`<inbox>/new.atom`,
`<inbox>/<Message-ID>/t.mbox.gz`)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx

from tests.prereq import unavailable

LIST = "test@list.example"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PublicInbox:
    def __init__(self, root: Path, name: str = "test") -> None:
        for tool in ("public-inbox-init", "public-inbox-mda", "public-inbox-httpd"):
            if shutil.which(tool) is None:
                unavailable(f"{tool} is not installed (apt-get install public-inbox)")
        self.root, self.name = root, name
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/{name}/"
        root.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "HOME": str(root), "PI_CONFIG": str(root / "config"),
                    "PI_EMERGENCY": str(root / "emergency")}  # fmt: skip
        self._run(["public-inbox-init", "-V2", name, str(root / "inbox"), self.url.rstrip("/"),
                   LIST])  # fmt: skip
        self._run(["git", "config", "-f", str(root / "config"), "publicinboxmda.spamcheck",
                   "none"])  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def _run(self, argv: list[str], data: bytes | None = None) -> None:
        env = {**self.env, "ORIGINAL_RECIPIENT": LIST}
        res = subprocess.run(argv, input=data, env=env, capture_output=True, timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({res.returncode}): {res.stderr.decode()}")

    def deliver(self, *mails: bytes) -> None:
        for m in mails:
            self._run(["public-inbox-mda", "--no-precheck"], m)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["public-inbox-httpd", "-l", f"http://127.0.0.1:{self.port}"], env=self.env,
            stdout=(self.root / "httpd.log").open("wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                # an empty inbox has no feed yet (404): any answer means it serves
                if httpx.get(self.url, timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("public-inbox-httpd did not start; see " + str(self.root / "httpd.log"))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
