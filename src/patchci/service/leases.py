"""Leases: who holds a piece of work (a check job, a branch run) and until when.

A worker renews its lease while it works; a worker killed with -9 stops renewing, its
lease expires and another worker (or the restarted daemon) takes the work up again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator

from patchci.db.store import Store

log = logging.getLogger(__name__)

# A claimed job's lease, renewed every LEASE / 3 s while it runs: a daemon killed with -9
# leaves jobs whose lease ends, and another (or the restarted one) takes them up again.
LEASE = 90.0


def worker_id(store: Store) -> str:
    """Who holds a lease: host, pid (what an operator greps for) and the store's instance
    tag (a daemon restarted in the same process, as tests do, is another worker)."""
    return f"{socket.gethostname()}:{os.getpid()}:{store.instance}"


def worker_dead(me: str) -> Callable[[str], bool]:
    """Is the worker certainly gone? Only known for this host: an earlier instance in this
    pid, or a pid that no longer exists. Other hosts' workers are gone when their lease
    ends."""
    host, pid, _ = me.split(":", 2)

    def dead(worker: str) -> bool:
        parts = worker.split(":")
        if len(parts) != 3 or parts[0] != host or worker == me:
            return False
        if not parts[1].isdigit():
            return False
        if parts[1] == pid:
            return True
        try:
            os.kill(int(parts[1]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    return dead


@contextlib.contextmanager
def holding(
    renew: Callable[[], bool], what: str, lease: float = LEASE
) -> Iterator[threading.Event]:
    """Call *renew* (extend a lease; False when it is no longer ours) every lease / 3 s
    while the body runs; the event is set when the lease was lost (it expired and the work
    went to another worker)."""
    lost, done = threading.Event(), threading.Event()

    def beat() -> None:
        while not done.wait(lease / 3):
            try:
                if not renew():
                    lost.set()
                    return
            except Exception:  # a database hiccup: try again at the next beat
                log.warning("%s: lease renewal failed, will retry", what, exc_info=True)

    t = threading.Thread(target=beat, name=f"lease-{what}", daemon=True)
    t.start()
    try:
        yield lost
    finally:
        done.set()
        t.join(timeout=5)
