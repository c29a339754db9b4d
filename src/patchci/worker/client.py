"""A worker host's calls to the server's job API (web/routes/jobs.py), over HTTP with the
worker's token. Results and logs go this way, never through the broker or a database.

A call the server could not answer (connection refused, a timeout, a 5xx) is tried
again with a growing pause until *patience* runs out: a server restart must not lose a
run of hours. A 4xx is final (`Refused`): the token is wrong or the job is not ours.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from patchci.errors import InfraError

log = logging.getLogger(__name__)

CHUNK = 256 * 1024


class Refused(InfraError):
    """The server answered 4xx: not retried."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"server refused ({status}): {detail}")
        self.status = status


@dataclass(frozen=True)
class StartAnswer:
    decision: str  # db.jobs RUN | ALREADY_DONE | BUSY | GIVEN_UP
    attempt: int
    reason: str


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            yield block


class JobClient:
    def __init__(
        self, server_url: str, token: str, worker: str, *, timeout: float = 60.0,
        patience: float = 600.0, transport: httpx.BaseTransport | None = None,
    ) -> None:  # fmt: skip
        self.worker = worker
        self.patience = patience
        self._http = httpx.Client(
            base_url=server_url.rstrip("/") + "/api/v1",
            headers={"authorization": f"Bearer {token}", "user-agent": "patchci-worker"},
            timeout=timeout, transport=transport,
        )  # fmt: skip

    def close(self) -> None:
        self._http.close()

    def _call(self, what: str, send: Callable[[], httpx.Response]) -> Any:
        deadline = time.monotonic() + self.patience
        pause = 1.0
        while True:
            try:
                resp = send()
            except httpx.HTTPError as e:
                problem = f"{type(e).__name__}: {e}"
            else:
                if resp.status_code < 400:
                    return resp.json() if resp.content else None
                if resp.status_code < 500:
                    try:
                        detail = str(resp.json().get("detail", resp.text))
                    except ValueError:
                        detail = resp.text[:200]
                    raise Refused(resp.status_code, detail)
                problem = f"HTTP {resp.status_code}"
            if time.monotonic() + pause > deadline:
                raise InfraError(f"{what}: the server did not answer for {self.patience:g} s "
                                 f"({problem})")  # fmt: skip
            log.warning("%s: %s; trying again in %g s", what, problem, pause)
            time.sleep(pause)
            pause = min(pause * 2, 30.0)

    def start(self, job_id: str, host: str) -> StartAnswer:
        body = {"worker": self.worker, "host": host}
        d = self._call(f"start {job_id}",
                       lambda: self._http.post(f"/jobs/{job_id}/start", json=body))  # fmt: skip
        return StartAnswer(str(d["decision"]), int(d.get("attempt", 0)), str(d.get("reason", "")))

    def heartbeat(self, job_id: str) -> bool:
        """False when the server says the job is no longer this worker's."""
        try:
            self._call(f"heartbeat {job_id}",
                       lambda: self._http.post(f"/jobs/{job_id}/heartbeat"))  # fmt: skip
        except Refused as e:
            if e.status == 409:
                return False
            raise
        return True

    def worker_heartbeat(self, host: str, queues: list[str], job_id: str | None) -> None:
        body = {"host": host, "queues": queues, "job_id": job_id}
        self._call("worker heartbeat", lambda: self._http.post(
            f"/workers/{quote(self.worker)}/heartbeat", json=body))  # fmt: skip

    def put_file(self, job_id: str, rel: str, path: Path) -> None:
        url = f"/jobs/{job_id}/files/{quote(rel)}"
        self._call(f"upload {rel}", lambda: self._http.put(url, content=_chunks(path)))

    def result(self, job_id: str, run: dict[str, Any]) -> bool:
        """Post the run (NIPA's executor JSON); False when one was stored before."""
        d = self._call(f"result {job_id}",
                       lambda: self._http.post(f"/jobs/{job_id}/result", json=run))  # fmt: skip
        return bool(d and d.get("stored"))

    def fail(self, job_id: str, reason: str) -> None:
        self._call(f"fail {job_id}", lambda: self._http.post(
            f"/jobs/{job_id}/fail", json={"reason": reason}))  # fmt: skip
