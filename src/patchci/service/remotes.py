"""`[[remotes]]`: results that NIPA-style executors publish elsewhere, read into the
branches cut here (a hardware lab running NIPA's executor reports into patchci this way).

Each cycle the remote's manifest (`results.json`: `{url, branch, executor}` entries, url
null while a run is in progress) is fetched; each finished run of a branch this server
cut, and not imported before, is fetched, read as NIPA's executor JSON and stored as a run
of executor "<prefix><their executor>". A remote that does not answer, or answers
something that is not a run, is logged and tried again next cycle: its faults are ours,
never a series'.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urljoin

import httpx

from patchci.config import RemoteConfig, Settings
from patchci.db.results import ResultsStore
from patchci.db.store import NotFound
from patchci.errors import InfraError
from patchci.executor.base import RUN_RUNNING
from patchci.executor.nipa_json import parse_manifest, run_from_nipa

log = logging.getLogger(__name__)


@dataclass
class RemoteStats:
    imported: int = 0
    known: int = 0  # imported before
    foreign: int = 0  # branches this server did not cut
    failed: int = 0  # run files unreadable or not runs


def fetch_json(client: httpx.Client, url: str, max_bytes: int) -> Any:
    """The JSON at *url*, at most *max_bytes*; InfraError (ours) otherwise."""
    try:
        with client.stream("GET", url) as resp:
            if resp.status_code != 200:
                raise InfraError(f"{url}: HTTP {resp.status_code}")
            body = bytearray()
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise InfraError(f"{url}: over {max_bytes} bytes")
    except httpx.HTTPError as e:
        raise InfraError(f"{url}: {type(e).__name__}: {e}") from e
    try:
        return json.loads(bytes(body))
    except ValueError as e:
        raise InfraError(f"{url}: not JSON: {e}") from e


def import_remote(remote: RemoteConfig, results: ResultsStore, client: httpx.Client) -> RemoteStats:
    stats = RemoteStats()
    entries = parse_manifest(fetch_json(client, remote.url, remote.max_bytes))[-remote.limit :]
    for e in entries:
        if e.url is None:
            continue  # still running there
        executor = remote.prefix + e.executor
        try:
            branch = results.branch(e.branch)
        except NotFound:
            stats.foreign += 1
            continue
        if any(r.executor == executor for r in results.branch_runs(branch.name)):
            stats.known += 1
            continue
        url = urljoin(remote.url, e.url)
        try:
            imp = run_from_nipa(fetch_json(client, url, remote.max_bytes))
        except InfraError as err:
            log.error("remote %s: %s", remote.name, err)
            stats.failed += 1
            continue
        if imp.run is None or imp.run.status == RUN_RUNNING:
            why = "; ".join(imp.problems) or "a run still in progress"
            log.error("remote %s: %s is not a finished run: %s", remote.name, url, why)
            stats.failed += 1
            continue
        # their log links are URLs on their server, not files here: the run keeps its link
        tests = tuple(replace(t, log_path=None, retry_log_path=None) for t in imp.run.tests)
        run = replace(imp.run, executor=executor, branch=branch.name, tests=tests, log_dir=None,
                      link=imp.run.link or url)  # fmt: skip
        results.save_run(branch.id, run)
        stats.imported += 1
        log.info("remote %s: %s on %s imported (%d tests%s)", remote.name, executor,
                 branch.name, len(tests),
                 f", {len(imp.problems)} problems" if imp.problems else "")  # fmt: skip
    return stats


def import_remotes(settings: Settings, results: ResultsStore) -> dict[str, RemoteStats]:
    """One pass over every `[[remotes]]`; a remote's failure is logged, the others go on."""
    out = {}
    for remote in settings.remotes:
        with httpx.Client(timeout=remote.timeout, follow_redirects=True,
                          headers={"user-agent": "patchci"}) as client:  # fmt: skip
            try:
                out[remote.name] = import_remote(remote, results, client)
            except InfraError as e:
                log.error("remote %s: %s (tried again next cycle)", remote.name, e)
    return out
