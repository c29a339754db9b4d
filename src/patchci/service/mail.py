"""The mail job: reply to each reported series whose checks found problems, once.

At most once, by a ledger in `deliveries` (target `email:<recipients>`, keyed by the mail's
fingerprint): `intent` before the SMTP transaction, `sent` or `failed` after it. A mail
whose last row is `intent` was being sent when the process died: the server may have taken
it, so it is never sent again (a list gets no duplicate); that is recorded as `unknown`. A
refusal or an unreachable server is `failed`, ours, and tried again next cycle, at most
MAX_ATTEMPTS times. `max_per_hour` mails at most: the rest wait for the next cycle.
"""

from __future__ import annotations

import logging
import os
import re
import smtplib
import ssl
from dataclasses import astuple, dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parseaddr
from pathlib import Path

from patchci.config import EmailReport, Settings
from patchci.db.results import ResultsStore
from patchci.db.store import SeriesRow, Store
from patchci.model import DONE, REPORTED, CheckResult, Outcome
from patchci.report.contest import ContestSummary
from patchci.report.email import ReportMail, compose, findings
from patchci.service.report import log_url

log = logging.getLogger(__name__)

TARGET = "email:"
CONTEXT = "report-mail"
MAX_ATTEMPTS = 5


class MailError(Exception):
    """The mail could not be handed to the SMTP server (ours, never the patch's)."""


@dataclass(frozen=True)
class MailStats:
    sent: int = 0
    failed: int = 0
    deferred: int = 0  # over max_per_hour: next cycle
    unknown: int = 0  # killed while sending: not sent again

    def __add__(self, other: MailStats) -> MailStats:
        return MailStats(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


def smtp_send(mail: ReportMail, cfg: EmailReport) -> str:
    """Hand *mail* to the configured SMTP server; the server's reply. Raises MailError."""
    try:
        with smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=cfg.timeout) as s:
            s.ehlo()
            if cfg.starttls != "never" and s.has_extn("starttls"):
                s.starttls(context=ssl.create_default_context())
                s.ehlo()
            elif cfg.starttls == "always":
                raise MailError(f"{cfg.smtp_host}:{cfg.smtp_port} does not offer STARTTLS "
                                "(starttls = \"always\")")  # fmt: skip
            user = os.environ.get(cfg.user_env)
            if user:
                s.login(user, os.environ.get(cfg.password_env, ""))
            refused = s.send_message(mail.message, from_addr=parseaddr(cfg.from_)[1],
                                     to_addrs=list(mail.recipients))  # fmt: skip
    except smtplib.SMTPRecipientsRefused as e:
        raise MailError(f"every recipient refused: {_codes(e.recipients)}") from e
    except smtplib.SMTPResponseException as e:
        text = e.smtp_error.decode(errors="replace") if isinstance(e.smtp_error, bytes) else e
        raise MailError(f"SMTP {e.smtp_code}: {text}") from e
    except (smtplib.SMTPException, OSError) as e:
        raise MailError(f"{cfg.smtp_host}:{cfg.smtp_port}: {e}") from e
    return f"refused: {_codes(refused)}" if refused else "accepted"


def _codes(refused: dict[str, tuple[int, bytes]]) -> str:
    return ", ".join(f"{a} ({c})" for a, (c, _) in refused.items())


def write_outbox(mail: ReportMail, outbox: Path) -> Path:
    """Dry run: the mail as `<outbox>/<Message-ID>.eml`."""
    outbox.mkdir(parents=True, exist_ok=True)
    path = outbox / (re.sub(r"[^A-Za-z0-9.@_-]+", "_", mail.msgid.strip("<>")) + ".eml")
    path.write_bytes(mail.message.as_bytes())
    return path


def contest_result(
    store: Store, settings: Settings, series_id: int,
    cache: dict[str, ContestSummary] | None = None,
) -> CheckResult | None:  # fmt: skip
    """The series' contest verdict as a result a mail can report: only a `fail`, which is
    a regression its test branch's culprit search put on this series (the evidence is in
    the description), with the failing test's reproduce command."""
    from patchci.report.contest import FAIL, REGRESSION, describe
    from patchci.service.contest import series_verdict

    results = ResultsStore(store.engine)
    branches = results.branches_of_series(series_id)
    if not branches:
        return None
    # *cache*: one summary per branch for the whole mail cycle (a branch has many series)
    summary = series_verdict(results, series_id, branches[-1], {} if cache is None else cache,
                             settings)  # fmt: skip
    if summary.state != FAIL:
        return None
    repro = ""
    wanted = {(f.executor, f.group, f.name) for f in summary.of_kind(REGRESSION)}
    for run in results.branch_results(summary.branch):
        for t in run.tests:
            if (run.executor, t.group, t.name) in wanted and (t.reproduce or run.reproduce):
                repro = (t.reproduce or run.reproduce).strip().splitlines()[-1]
                break
        if repro:
            break
    return CheckResult("contest", Outcome.FAIL, describe(summary), reproducer=repro or None,
                       details=(("branch", summary.branch),))  # fmt: skip


def _mail_for(
    store: Store, settings: Settings, row: SeriesRow, when: datetime,
    cache: dict[str, ContestSummary] | None = None,
) -> ReportMail | None:  # fmt: skip
    """The report mail series *row* would get now, if its checks (or its test branch's
    contest verdict) found problems."""
    cfg = settings.report.email
    tree = next((t for t in settings.trees if t.name == row.tree), None)
    results = list(store.latest_results(row.id))
    contest = contest_result(store, settings, row.id, cache) if settings.streams else None
    if contest is not None:
        results.append(contest)
    found = findings(results, cfg, tree.email_checks if tree else None)
    if not found:
        return None
    return compose(store.load_series(row.id), row.id, found, cfg, tree=row.tree, now=when,
                   log_url=log_url(settings), web_url=settings.report.patchwork.web_url)  # fmt: skip


def show_mail(settings: Settings, series_id: int) -> int:
    """`patchci mail ID`: the reply the series gets (or got), and what the ledger says."""
    from patchci.daemon import open_store

    store = open_store(settings)
    try:
        mail = _mail_for(store, settings, store.series_row(series_id), datetime.now(UTC))
        if mail is None:
            print(f"series {series_id}: no check found a problem that [report.email] mails "
                  f"(outcomes {list(settings.report.email.outcomes)})")  # fmt: skip
            return 1
        ledger = [d for d in store.series_deliveries(series_id, TARGET)
                  if d.fingerprint == mail.fingerprint]  # fmt: skip
    finally:
        store.close()
    status = (
        f"{ledger[-1].status} {ledger[-1].created_at:%Y-%m-%d %H:%M} UTC"
        if ledger
        else (
            "not sent yet" if settings.report.email.enabled else "not sent: [report.email] is off"
        )
    )
    print(f"# {status}; envelope to {', '.join(mail.recipients) or 'nobody'}")
    print(mail.message.as_string().replace("\r\n", "\n"), end="")
    return 0


def mail_pending(store: Store, settings: Settings, *, now: datetime | None = None) -> MailStats:
    """Mail each recently reported series whose checks found problems, once."""
    cfg = settings.report.email
    if not cfg.enabled:
        return MailStats()
    when = now or datetime.now(UTC)
    budget = cfg.max_per_hour - store.count_deliveries(TARGET, "sent", when - timedelta(hours=1))
    total = MailStats()
    summaries: dict[str, ContestSummary] = {}
    for row in store.recent_series((REPORTED, DONE), when - timedelta(seconds=cfg.max_age)):
        mail = _mail_for(store, settings, row, when, summaries)
        if mail is None or not mail.recipients:
            continue
        ledger = [d for d in store.series_deliveries(row.id, TARGET)
                  if d.fingerprint == mail.fingerprint]  # fmt: skip
        if ledger and ledger[-1].status in ("sent", "unknown"):
            continue
        if ledger and ledger[-1].status == "intent":
            why = "killed while sending: the server may have it, not sent again (at most once)"
            log.warning("series %s: report mail %s: %s", row.id, mail.msgid, why)
            store.record_delivery(ledger[-1].target, row.id, None, CONTEXT, ledger[-1].state,
                                  mail.fingerprint, mail.msgid, status="unknown", error=why)  # fmt: skip
            total += MailStats(unknown=1)
            continue
        if sum(d.status == "failed" for d in ledger) >= MAX_ATTEMPTS:
            continue
        if budget <= 0:
            total += MailStats(deferred=1)
            continue
        total += _deliver(store, row.id, mail, cfg, settings.data_path / cfg.outbox)
        budget -= 1
    if total.deferred:
        log.warning("mail: %d report(s) wait for the next cycle (max_per_hour = %d)",
                    total.deferred, cfg.max_per_hour)  # fmt: skip
    return total


def _deliver(
    store: Store, series_id: int, mail: ReportMail, cfg: EmailReport, outbox: Path
) -> MailStats:
    target = TARGET + ",".join(mail.recipients)
    state = "dry-run" if cfg.dry_run else "smtp"

    def record(status: str, remote: str | None, error: str = "") -> None:
        store.record_delivery(target, series_id, None, CONTEXT, state, mail.fingerprint,
                              remote, status=status, error=error)  # fmt: skip

    record("intent", mail.msgid)
    try:
        if cfg.dry_run:
            where = str(write_outbox(mail, outbox))
        else:
            where = f"{mail.msgid} {smtp_send(mail, cfg)}"
    except (MailError, OSError) as e:
        log.error("series %s: report mail not sent (ours, retried next cycle): %s", series_id, e)
        record("failed", mail.msgid, str(e))
        return MailStats(failed=1)
    record("sent", where)
    log.info("series %s: report mail %s to %s", series_id, where, ", ".join(mail.recipients))
    return MailStats(sent=1)
