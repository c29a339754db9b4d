"""Post a series' results to Patchwork exactly once per change.

Idempotency rests on the deliveries table: before a POST we record an `intent` row, after
it a `sent` row. A check whose newest `sent` row has the same fingerprint is not posted
again. If we died between the two (an `intent` newer than the last `sent`), or the POST
failed, we ask Patchwork whether that check already landed before posting it again.

A POST is therefore tried once per cycle: a proxy's 502/504 may come after Patchwork
stored the check, and repeating the POST at once would leave two copies of it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass
from datetime import timedelta

from patchci.db.store import Store
from patchci.db.tables import utcnow
from patchci.errors import FetchError
from patchci.model import CheckResult
from patchci.report.patchwork import CheckPost, render_checks
from patchci.sources.patchwork import PatchworkClient

log = logging.getLogger(__name__)

# Beyond the client's timeout, the time a POST may take to land after the client gave up.
IN_FLIGHT_MARGIN = 10.0


@dataclass(frozen=True)
class DeliveryStats:
    posted: int = 0
    unchanged: int = 0
    reconciled: int = 0
    failed: int = 0
    deferred: int = 0  # a POST of ours may still be in flight: asked again next cycle

    def __add__(self, other: DeliveryStats) -> DeliveryStats:
        return DeliveryStats(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


def _already_on_server(client: PatchworkClient, post: CheckPost) -> bool:
    for chk in reversed(client.list_checks(post.patch_id, context=post.context)):
        return (
            chk.state == post.state
            and (chk.description or "") == post.description
            and (chk.target_url or None) == post.target_url
        )
    return False


def deliver_checks(
    store: Store,
    client: PatchworkClient,
    *,
    target: str,
    series_id: int,
    results: Sequence[CheckResult],
    patch_ids: Sequence[int],
    log_url: Callable[[CheckResult], str | None],
    context_prefix: str = "",
) -> DeliveryStats:
    posts = render_checks(results, patch_ids, log_url, context_prefix)
    return deliver_posts(store, client, target, series_id, posts)


def deliver_posts(
    store: Store,
    client: PatchworkClient,
    target: str,
    series_id: int,
    posts: Sequence[CheckPost],
) -> DeliveryStats:
    """Post already rendered checks (e.g. contest verdicts) through the same ledger.

    An unconfirmed `intent` younger than the client's timeout (+ a margin) is a POST that
    may still be in flight (a process killed a moment ago, a client that gave up on a slow
    server): asking the server now finds nothing and posting again gave a duplicate, so
    such a check waits for a later cycle, then is reconciled."""
    posted = unchanged = reconciled = failed = deferred = 0
    grace = timedelta(seconds=client.timeout + IN_FLIGHT_MARGIN)
    for post in posts:
        fp = post.fingerprint()

        def record(
            status: str,
            remote: str | None = None,
            error: str = "",
            post: CheckPost = post,
            fp: str = fp,
        ) -> None:
            store.record_delivery(
                target,
                series_id,
                post.patch_id,
                post.context,
                post.state,
                fp,
                remote,
                status=status,
                error=error,
            )

        last = store.last_delivery(target, post.patch_id, post.context)
        if last is not None and last.fingerprint == fp:
            unchanged += 1
            continue
        intent = store.last_delivery(target, post.patch_id, post.context, status="intent")
        newer_intent = (
            intent is not None
            and intent.fingerprint == fp
            and (last is None or intent.id > last.id)
        )
        if newer_intent and intent is not None and intent.created_at > utcnow() - grace:
            # Killed mid-POST, or the client gave up (timeout, 5xx) while the server may
            # still store it: asking now finds nothing, and posting again duplicated it.
            log.info("series %s patch %s check %s: a POST may be in flight since %s; "
                     "asked again next cycle", series_id, post.patch_id, post.context,
                     intent.created_at)  # fmt: skip
            deferred += 1
            continue
        try:
            if newer_intent and _already_on_server(client, post):
                record("sent")
                reconciled += 1
                continue
            record("intent")
            # The client never repeats a POST that may have landed; we retry next cycle.
            remote = client.post_check(
                post.patch_id, post.state, post.context, post.description, post.target_url
            )
        except FetchError as e:
            log.error(
                "series %s patch %s check %s: post failed: %s",
                series_id,
                post.patch_id,
                post.context,
                e,
            )
            record("failed", error=str(e))
            failed += 1
            continue
        record("sent", remote=str(remote))
        log.info(
            "series %s patch %s: posted %s=%s", series_id, post.patch_id, post.context, post.state
        )
        posted += 1
    return DeliveryStats(posted, unchanged, reconciled, failed, deferred)
