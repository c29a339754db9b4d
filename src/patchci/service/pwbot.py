"""The pw-bot job: replies in the mail sources that say `pw-bot: <state>` change the state
of the series they answer on its Patchwork, when the sender may (`[pwbot] maintainers`,
or the series' own author for `author_states`).

Once per reply, by the deliveries ledger (target `pwbot:<source>`, fingerprint the
reply's Message-ID): applied (`sent`), refused (`refused`, never retried: it says who
asked and why not), or failed on Patchwork's side (`failed`, ours, retried next cycle up
to MAX_ATTEMPTS times).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from patchci.config import LoreSource, MailSource, PwBotConfig, Settings
from patchci.db.store import Store
from patchci.errors import FetchError
from patchci.model import Patch
from patchci.report.pwbot import command
from patchci.sources.mail import MalformedMail, body_text, parse_mail
from patchci.sources.mbox import read_messages
from patchci.sources.patchwork import PatchworkClient

log = logging.getLogger(__name__)

TARGET = "pwbot:"
CONTEXT = "pw-bot"
MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class BotStats:
    applied: int = 0
    refused: int = 0
    failed: int = 0


def pwbot_cycle(store: Store, settings: Settings, clients: dict[str, PatchworkClient]) -> BotStats:
    """Read the configured mail sources for pw-bot replies and act on each once."""
    cfg = settings.pwbot
    if not cfg.enabled:
        return BotStats()
    paths = [Path(s.path).expanduser() for s in settings.sources if isinstance(s, MailSource)
             and (not cfg.sources or s.name in cfg.sources)]  # fmt: skip
    # lore sources keep their pw-bot replies in an mbox of their own (service.ingest)
    paths += [p for s in settings.sources if isinstance(s, LoreSource)
              if (p := settings.pwbot_replies(s.name)) is not None and p.exists()]  # fmt: skip
    counts = {"sent": 0, "refused": 0, "failed": 0}
    for path in paths:
        for loc, raw in read_messages(path):
            try:
                mail = parse_mail(raw)
            except MalformedMail:
                continue  # the mail source itself reports it
            state, bad = command(body_text(raw))
            if state is None and bad is None:
                continue
            done = _act(store, cfg, clients, mail, state, bad, loc)
            if done:
                counts[done] += 1
    return BotStats(counts["sent"], counts["refused"], counts["failed"])


def _refusal(cfg: PwBotConfig, sender: str, authors: set[str], state: str | None,
             bad: str | None) -> str | None:  # fmt: skip
    if bad is not None or state is None:
        return f"{bad!r} is no state pw-bot knows"
    if sender in {m.lower() for m in cfg.maintainers}:
        return None
    if sender in authors and state in cfg.author_states:
        return None
    hint = f" (authors may set: {', '.join(cfg.author_states)})" if sender in authors else ""
    return f"{sender} may not set {state}: not in [pwbot] maintainers{hint}"


def _act(
    store: Store, cfg: PwBotConfig, clients: dict[str, PatchworkClient], mail: Patch,
    state: str | None, bad: str | None, loc: str,
) -> str | None:  # fmt: skip
    """Apply one reply's command once; the ledger status it ended with, None if skipped."""
    refs = [m for m in (mail.in_reply_to, *reversed(mail.references)) if m]
    found = store.series_of_msgid(refs)
    if not found:
        log.info("pw-bot: %s (%s) answers no series we have", mail.msgid, loc)
        return None
    # the copy that came from a Patchwork source, when the list is read twice
    sid = next((i for i in found if store.series_row(i).source in clients), found[0])
    row = store.series_row(sid)
    ledger = [d for d in store.series_deliveries(sid, TARGET) if d.fingerprint == mail.msgid]
    if any(d.status in ("sent", "refused") for d in ledger):
        return None
    if sum(d.status == "failed" for d in ledger) >= MAX_ATTEMPTS:
        return None
    series = store.load_series(sid)
    authors = {p.author.email.lower() for p in series.patches}
    if series.submitter is not None:
        authors.add(series.submitter.email.lower())
    sender = mail.author.email.lower()
    why = _refusal(cfg, sender, authors, state, bad)
    client = clients.get(row.source)
    if why is None and client is None:
        why = f"series {sid} is not from a Patchwork source"

    def record(status: str, error: str = "") -> str:
        store.record_delivery(TARGET + row.source, sid, None, CONTEXT, state or str(bad),
                              mail.msgid, mail.msgid, status=status, error=error)  # fmt: skip
        return status

    if why is not None or state is None or client is None:
        log.warning("pw-bot: %s on series %s refused: %s", mail.msgid, sid, why)
        return record("refused", why or "")
    try:
        for pid in store.patch_pw_ids(sid):
            client.set_patch_state(pid, state)
    except FetchError as e:
        log.error("pw-bot: %s on series %s: Patchwork refused or failed (ours, retried next "
                  "cycle): %s", mail.msgid, sid, e)  # fmt: skip
        return record("failed", str(e))
    log.info("pw-bot: series %s set to %s by %s (%s)", sid, state, sender, mail.msgid)
    return record("sent")
