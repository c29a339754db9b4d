"""Ingest: series from the sources into the database, each with its arrival state.

Patchwork: series-completed and series-created events polled from the cursor, a series
stored with its event in one transaction; a mail that does not parse makes the series
`malformed` (the poll goes on); a 404 for a listed series is retried before "gone".
Mail sources (mbox, maildir, patches): the whole source re-read, stored once per key.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from patchci.config import GitSource, LoreSource, MailSource, PatchworkSource, Settings
from patchci.db.store import Store
from patchci.errors import FetchError
from patchci.model import EXPIRED, INCOMPLETE, CheckResult, Outcome, Patch, Person, Series
from patchci.sources.mail import MalformedMail, parse_mail
from patchci.sources.mbox import group_series, load_series
from patchci.sources.patchwork import PatchworkClient, PatchworkNotFound, PwEvent, PwPatchRef
from patchci.subject import parse_subject

log = logging.getLogger(__name__)

# Each poll re-reads this much of the server's own clock before the cursor: Patchwork dates
# events in naive local time, which repeats an hour when DST ends (Australia/Canberra by
# default), and a slow transaction can commit an event dated before one we already saw.
# Events already stored are skipped by id.
EVENT_LOOKBACK = 3600.0


# A 404 for a series the server has just listed is retried this many times, the waits
# doubling from GONE_FIRST_WAIT seconds (30 s, 1, 2 and 4 min: about 7.5 min in all),
# before the series is recorded as gone.
GONE_ATTEMPTS = 5
GONE_FIRST_WAIT = 30.0


@dataclass(frozen=True)
class Unparsed:
    """A mail of a series that did not parse: the patch's fault (MalformedMail) unless the
    parser itself failed (`ours`)."""

    index: int | None  # position in Series.patches; None for the cover letter
    pw_id: int
    reason: str
    ours: bool = False


@dataclass(frozen=True)
class Fetched:
    series: Series
    unparsed: tuple[Unparsed, ...] = ()


def _unparsed_patch(ref: PwPatchRef, raw: bytes, author: Person) -> Patch:
    """A stand-in for a mail that did not parse, from what Patchwork says of it; the raw
    bytes are kept."""
    return Patch(
        msgid=ref.msgid, subject=ref.name, author=author, date=None,
        info=parse_subject(ref.name), raw=raw, pw_id=ref.id, web_url=ref.web_url,
    )  # fmt: skip


def _pw_patch(
    client: PatchworkClient, ref: PwPatchRef, author: Person
) -> tuple[Patch, str | None, bool]:
    """(patch, why it did not parse or None, whether that is our parser's fault)."""
    raw = client.patch_mbox(ref)
    try:
        p = parse_mail(raw)
    except MalformedMail as e:
        return _unparsed_patch(ref, raw, author), str(e), False
    except Exception as e:  # a parser bug: recorded as ours, and the source goes on
        log.exception("patch %s: mail parser failed", ref.id)
        return _unparsed_patch(ref, raw, author), f"{type(e).__name__}: {e}", True
    return dataclasses.replace(p, pw_id=ref.id, web_url=ref.web_url), None, False


def fetch_pw_series(client: PatchworkClient, source: str, series_id: int) -> Fetched:
    pw = client.get_series(series_id)
    unparsed: list[Unparsed] = []
    patches: list[Patch] = []
    for i, ref in enumerate(pw.patches):
        p, why, ours = _pw_patch(client, ref, pw.submitter)
        patches.append(p)
        if why is not None:
            unparsed.append(Unparsed(i, ref.id, why, ours))
    cover = None
    if pw.cover is not None:
        cover, why, ours = _pw_patch(client, pw.cover, pw.submitter)
        if why is not None:
            unparsed.append(Unparsed(None, pw.cover.id, why, ours))
    problems = (
        ()
        if pw.received_all
        else (f"incomplete: {pw.received_total} of {pw.total} patches received",)
    )
    series = Series(
        source=source,
        key=str(pw.id),
        name=pw.name,
        version=pw.version,
        total=pw.total,
        patches=tuple(patches),
        cover=cover,
        submitter=patches[0].author if patches else None,
        date=patches[0].date if patches else None,
        complete=pw.received_all,
        pw_id=pw.id,
        web_url=pw.web_url,
        problems=problems,
    )
    return Fetched(series, tuple(unparsed))


def check_project(client: PatchworkClient) -> None:
    """Fail loudly if the project does not exist: Patchwork answers an unknown `project=`
    filter with `200 []`, so a typo would otherwise look like a quiet project forever."""
    url = client.api(f"projects/{quote(client.project, safe='')}/")
    try:
        client.fetch_mbox(url)  # a plain GET with the client's retries; body unused
    except PatchworkNotFound as e:
        raise FetchError(
            f"project {client.project!r} not found on {client.url}: check the source's "
            "'project' (Patchwork's link name, e.g. netdev)"
        ) from e


def poll_patchwork(
    store: Store,
    src: PatchworkSource,
    client: PatchworkClient,
    *,
    log_dir: Path | None = None,
    now: datetime | None = None,
) -> int:
    """Store every series completed since our cursor. A fetch failure stops this poll
    without moving the cursor past the series, so the next poll retries it; a series whose
    mail does not parse is stored as `malformed` and the poll goes on."""
    new = retry_listed(store, src.name, client, log_dir=log_dir, now=now)
    since = store.get_cursor(src.name)
    if since is None:
        # No event seen yet: a new source, or a project name that matches nothing.
        check_project(client)
    for ev in client.iter_series_completed(since, lookback=EVENT_LOOKBACK):
        if store.event_seen(src.name, ev.id):
            continue
        fetched = _fetch_or_retry(store, client, src.name, src.name, ev, now)
        if fetched is None:
            continue
        sid = _store_fetched(store, fetched, log_dir, (src.name, ev.id, ev.date))
        log.info("source %s: event %s stored series %s (%s)", src.name, ev.id, sid,
                 fetched.series.name)  # fmt: skip
        new += 1
    return new


def poll_created(
    store: Store,
    src: PatchworkSource,
    client: PatchworkClient,
    *,
    log_dir: Path | None = None,
    now: datetime | None = None,
) -> int:
    """Record series that were created but are not complete yet, so a series whose last
    patch never arrives becomes a visible, explained state instead of silence."""
    cursor_name = f"{src.name}#created"
    n = 0
    since = store.get_cursor(cursor_name)
    for ev in client.iter_events("series-created", since, lookback=EVENT_LOOKBACK):
        if store.event_seen(cursor_name, ev.id):
            continue
        sid = store.find_series(src.name, str(ev.series_id))
        if sid is not None:
            store.record_event(cursor_name, ev.id, ev.date, sid)
            continue
        fetched = _fetch_or_retry(store, client, src.name, cursor_name, ev, now)
        if fetched is None:
            continue
        if fetched.series.complete:
            # its series-completed event will bring it; only move the cursor
            store.record_event(cursor_name, ev.id, ev.date, None)
            continue
        _store_fetched(store, fetched, log_dir, (cursor_name, ev.id, ev.date))
        n += 1
    return n


def _store_fetched(
    store: Store, fetched: Fetched, log_dir: Path | None, event: tuple[str, int, str] | None
) -> int:
    """Store a fetched series, with its *event* (cursor, id, date) in the same transaction
    when given; a series with a mail that does not parse is stored `malformed`."""
    if not fetched.unparsed:
        if event is None:
            return store.save_series(fetched.series)
        return store.save_series_with_event(fetched.series, *event)
    results = [_unparsed_result(fetched.series, u, log_dir) for u in fetched.unparsed]
    first = fetched.unparsed[0]
    where = "cover letter" if first.index is None else f"patch {first.index + 1}"
    reason = f"{where} (Patchwork {first.pw_id}): mail does not parse: {first.reason}"
    if len(fetched.unparsed) > 1:
        reason += f" (and {len(fetched.unparsed) - 1} more)"
    return store.save_malformed_series(fetched.series, reason, results, event)


def _unparsed_result(series: Series, u: Unparsed, log_dir: Path | None) -> CheckResult:
    mail = series.cover if u.index is None else series.patches[u.index]
    log_path = None
    if log_dir is not None and mail is not None:
        # The raw bytes, as served: for the author and for whoever fixes the parser.
        d = log_dir / "malformed" / f"{series.source}-{series.key}"
        try:
            d.mkdir(parents=True, exist_ok=True)
            path = d / f"{u.pw_id}.mbox"
            path.write_bytes(mail.raw)
            log_path = str(path)
        except OSError as e:
            log.error("series %s: cannot keep the unparsed mail %s: %s", series.key, u.pw_id, e)
    if u.ours:
        return CheckResult("mail", Outcome.ERROR,
                           f"infrastructure error (not the patch): mail parser failed: {u.reason}",
                           patch_index=u.index, log_path=log_path)  # fmt: skip
    return CheckResult("mail", Outcome.FAIL, f"the mail does not parse: {u.reason}",
                       patch_index=u.index, log_path=log_path)  # fmt: skip


def _fetch_or_retry(
    store: Store, client: PatchworkClient, source: str, cursor: str, ev: PwEvent,
    now: datetime | None,
) -> Fetched | None:  # fmt: skip
    """The event's series, or None when it answered 404: Patchwork has just listed it, so
    it is queued for GONE_ATTEMPTS retries over minutes (retry_listed) and the event is
    recorded, so one missing series cannot stop the source. Any other failure propagates
    and the cursor stays before the event."""
    if store.retry_queued(source, ev.series_id):  # its other event met the 404 first
        store.record_event(cursor, ev.id, ev.date, None)
        return None
    try:
        return fetch_pw_series(client, source, ev.series_id)
    except PatchworkNotFound as e:
        when = (now or datetime.now(UTC)) + timedelta(seconds=GONE_FIRST_WAIT)
        log.warning("source %s: event %s: series %s answered 404, will retry: %s",
                    source, ev.id, ev.series_id, e)  # fmt: skip
        store.add_retry(cursor, source, ev.id, ev.date, ev.series_id, str(e), when)
        return None


def retry_listed(
    store: Store, source: str, client: PatchworkClient, *, log_dir: Path | None = None,
    now: datetime | None = None,
) -> int:  # fmt: skip
    """Fetch again the series that answered 404 and are due; store those that are back,
    give up (status `gone`, recorded) after GONE_ATTEMPTS. Returns how many were stored.
    Their events were recorded when they were queued."""
    now = now or datetime.now(UTC)
    stored = 0
    for r in store.due_retries(source, now):
        try:
            fetched = fetch_pw_series(client, source, r.remote_id)
        except PatchworkNotFound as e:
            if r.attempts + 1 >= GONE_ATTEMPTS:
                age = (now - r.first_at).total_seconds() / 60
                why = f"{e} ({r.attempts + 1} fetches over {age:.0f} min)"
                log.warning("source %s: series %s is gone: %s", source, r.remote_id, why)
                store.update_retry(r.id, status="gone", error=why)
            else:
                wait = GONE_FIRST_WAIT * 2**r.attempts
                store.update_retry(r.id, status="retrying", error=str(e),
                                   next_at=now + timedelta(seconds=wait))  # fmt: skip
            continue
        sid = _store_fetched(store, fetched, log_dir, None)
        store.update_retry(r.id, status="done", error=f"stored as series {sid}")
        log.info("source %s: series %s is back after %d 404s: stored as series %s",
                 source, r.remote_id, r.attempts, sid)  # fmt: skip
        stored += 1
    return stored


def poll_mail(store: Store, src: MailSource) -> int:
    ingested = load_series(Path(src.path), source=src.name)
    for rej in ingested.rejected:
        log.warning("source %s: skipped %s: %s", src.name, rej.location, rej.reason)
    new = 0
    for series in ingested.series:
        existed = store.find_series(src.name, series.key)
        store.save_series(series)
        new += existed is None
    return new


def expire_incomplete(
    store: Store, max_age: float, now: datetime | None = None, *, source: str | None = None
) -> int:
    """Give up on incomplete series (of *source*, or all) older than *max_age* seconds."""
    now = now or datetime.now(UTC)
    n = 0
    for row in store.list_series(state=INCOMPLETE, limit=100000):
        if source is not None and row.source != source:
            continue
        created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
        age = (now - created).total_seconds()
        if age > max_age:
            have = len(store.load_series(row.id).patches)
            missing = max(row.total - have, 0)
            reason = (
                f"never completed: {missing} of {row.total} patches missing "
                f"after {age / 3600:.1f}h ({row.state_reason})"
            )
            store.set_series_state(row.id, EXPIRED, reason)
            n += 1
    return n


def poll_git(store: Store, settings: Settings, src: GitSource) -> int:
    """New or moved refs of a `type = "git"` source as series (sources.gitrefs); a ref
    that gives no series (nothing on top of the base, too many commits) is recorded as a
    malformed series saying why, once per commit. FetchError when the remote is down."""
    from patchci.sources import gitrefs

    tree = settings.tree(src.tree)
    cache = gitrefs.open_cache(settings.data_path / "sources" / f"{src.name}.git")
    new = 0
    for ref, sha in sorted(gitrefs.list_refs(cache, src.url, src.refs).items()):
        key = gitrefs.series_key(ref, sha)
        if store.find_series(src.name, key) is not None:
            continue
        got = gitrefs.ref_series(cache, source=src.name, url=src.url, ref=ref, sha=sha,
                                 base_url=str(settings.tree_path(tree)), base_branch=tree.branch,
                                 tree=tree.name, max_commits=src.max_commits)  # fmt: skip
        if got.series is not None:
            store.save_series(got.series)
            log.info("source %s: %s at %s: %d patches", src.name, ref, sha[:12],
                     len(got.series.patches))  # fmt: skip
        else:
            why = got.problem or "no series"
            empty = Series(source=src.name, key=key, name=f"{ref} at {sha[:12]}", version=1,
                           total=0, patches=(), problems=(why,))  # fmt: skip
            store.save_malformed_series(empty, why, [CheckResult("series", Outcome.FAIL, why)])
        new += 1
    return new


def poll_lore(
    store: Store, src: LoreSource, replies: Path | None = None, work: Path | None = None
) -> int:
    """The list's new messages (sources.lore): each one not seen before brings its whole
    thread, grouped into series and stored (a bigger view of a series adds its patches).
    With *replies*, mails with a `pw-bot:` line are appended to that mbox once, for the
    pw-bot job. FetchError when the inbox cannot be read (ours: retried next poll)."""
    from patchci.report.pwbot import command
    from patchci.sources import lore
    from patchci.sources.mail import body_text

    client = lore.LoreClient(src.url, src.timeout)
    b4 = lore.find_b4() if src.b4 and work is not None else None
    new = 0
    try:
        for entry in client.feed():
            eid = lore.event_id(entry.msgid)
            if store.event_seen(src.name, eid):
                continue
            mails = []
            thread = client.thread(entry.msgid)
            if b4 is not None and work is not None:
                thread = lore.with_b4_trailers(thread, entry.msgid, b4, work / src.name)
            for raw in thread:
                try:
                    mails.append((f"{src.name}:{entry.msgid}", parse_mail(raw)))
                except MalformedMail as e:
                    log.warning("source %s: a mail of the thread of %s: %s", src.name,
                                entry.msgid, e)  # fmt: skip
                    continue
                if replies is not None and command(body_text(raw)) != (None, None):
                    _keep_reply(replies, mails[-1][1].msgid, raw)
            grouped = group_series(mails, source=src.name)
            sid = None
            for series in grouped.series:
                existed = store.find_series(src.name, series.key)
                saved = store.save_series(series)
                new += existed is None
                mine = [*series.patches, *([series.cover] if series.cover else [])]
                if any(p.msgid.strip("<>") == entry.msgid for p in mine):
                    sid = saved
            store.record_event(src.name, eid, entry.updated, sid)
    finally:
        client.close()
    return new


def _keep_reply(mbox: Path, msgid: str, raw: bytes) -> None:
    """Append *raw* to *mbox* unless a mail with *msgid* is in it already."""
    mbox.parent.mkdir(parents=True, exist_ok=True)
    if mbox.exists() and msgid.encode() in mbox.read_bytes():
        return
    with mbox.open("ab") as fh:
        fh.write(b"From patchci Mon Sep 17 00:00:00 2001\n")
        fh.write(raw if raw.endswith(b"\n") else raw + b"\n")
