"""The report mail for a series: a plain-text reply in its thread (pure, no I/O).

In-Reply-To and References name the cover letter (or the first patch), To is the author,
Cc what `[report.email] cc` says. The Message-ID is derived from the series and from what
the mail says, so the same findings always make the same message (the sent ledger keys on
it) and new findings a new one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr

from patchci.config import EmailReport
from patchci.model import CheckResult, Outcome, Patch, Series

_OUTCOMES = {"fail": Outcome.FAIL, "warn": Outcome.WARN, "crash": Outcome.CRASH,
             "timeout": Outcome.TIMEOUT}  # fmt: skip


# Lines up to RFC 5322's 998: at the default 78, a git-format-patch Message-ID (~100 chars)
# in In-Reply-To became RFC 2047 encoded words, and the reply left its thread.
_POLICY = policy.SMTP.clone(max_line_length=998)


@dataclass(frozen=True)
class ReportMail:
    message: EmailMessage
    msgid: str
    fingerprint: str
    recipients: tuple[str, ...]  # envelope: To + Cc addresses


def findings(
    results: Sequence[CheckResult], cfg: EmailReport, checks: Sequence[str] | None
) -> list[CheckResult]:
    """The results worth a mail: an outcome `cfg.outcomes` names, of a selected check
    (*checks*, a tree's `email_checks`, else `cfg.checks`; empty: every check)."""
    wanted = {_OUTCOMES[o] for o in cfg.outcomes}
    only = set(checks if checks is not None else cfg.checks)
    return [r for r in results if r.outcome in wanted and (not only or r.check in only)]


def _root(series: Series) -> Patch:
    return series.cover or series.patches[0]


def _bracketed(msgid: str) -> str:
    msgid = msgid.strip()
    return msgid if msgid.startswith("<") else f"<{msgid}>"


def fingerprint(series: Series, found: Sequence[CheckResult]) -> str:
    h = hashlib.sha256(f"{series.source}\0{series.key}".encode())
    for r in found:
        h.update(f"\0{r.patch_index}\0{r.check}\0{r.outcome.value}\0{r.description}".encode())
    return h.hexdigest()


def _where(series: Series, r: CheckResult) -> str:
    if r.check == "contest":
        return f"the test branch {dict(r.details).get('branch', '')}".rstrip()
    if r.patch_index is None:
        return "the series"
    p = series.patches[r.patch_index]
    return f'patch {r.patch_index + 1}/{len(series.patches)} "{p.info.title or p.subject}"'


def compose(
    series: Series,
    series_id: int,
    found: Sequence[CheckResult],
    cfg: EmailReport,
    *,
    tree: str | None,
    now: datetime,
    log_url: Callable[[CheckResult], str | None] = lambda r: None,
    web_url: str | None = None,
) -> ReportMail:
    """The reply reporting *found* (non-empty) on *series* (our id *series_id*)."""
    root = _root(series)
    author = series.submitter or root.author
    fp = fingerprint(series, found)
    domain = parseaddr(cfg.from_)[1].rpartition("@")[2] or "patchci.invalid"
    key = re.sub(r"[^A-Za-z0-9.-]+", "-", f"{series.source}.{series.key}").strip("-")[:60]
    msgid = f"<patchci.{key}.{fp[:16]}@{domain}>"

    msg = EmailMessage(policy=_POLICY)
    msg["From"] = cfg.from_
    to = [formataddr((author.name, author.email))] if cfg.to_author and author.email else []
    if to:
        msg["To"] = ", ".join(to)
    if cfg.cc:
        msg["Cc"] = ", ".join(cfg.cc)
    subject = re.sub(r"^(?:re:\s*)+", "", root.subject, flags=re.I)
    msg["Subject"] = f"Re: {subject}"
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = msgid
    parent = _bracketed(root.msgid)
    msg["In-Reply-To"] = parent
    refs = [_bracketed(r) for r in root.references if r.strip()]
    msg["References"] = " ".join(dict.fromkeys([*refs, parent]))
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a bot
    msg["X-Patchci-Series"] = str(series_id)
    msg.set_content(_body(series, series_id, found, tree, author.name, log_url, web_url))
    rcpt = tuple(a for _, a in (parseaddr(x) for x in [*to, *cfg.cc]) if a)
    return ReportMail(msg, msgid, fp, rcpt)


def _body(
    series: Series,
    series_id: int,
    found: Sequence[CheckResult],
    tree: str | None,
    name: str,
    log_url: Callable[[CheckResult], str | None],
    web_url: str | None,
) -> str:
    n = len(series.patches)
    hello = f"Hi {name.split()[0]}," if name.strip() else "Hello,"
    on = f" on {tree}" if tree else ""
    lines = [
        hello,
        "",
        f'patchci checked "{series.name}" (v{series.version}, {n} patch{"es" * (n != 1)})'
        f"{on} and found {len(found)} problem{'s' * (len(found) != 1)}:",
        "",
    ]
    for r in found:
        lines.append(f"* {_where(series, r)}")
        lines.append(f"  {r.check}: {r.outcome.value.upper()} - {r.description}")
        if (url := log_url(r)) is not None:
            lines.append(f"  log: {url}")
        if r.reproducer:
            lines.append(f"  reproduce: {r.reproducer}")
        lines.append("")
    if web_url:
        lines.append(f"All results: {web_url.rstrip('/')}/series/{series_id}")
    if series.web_url:
        lines.append(f"Patchwork: {series.web_url}")
    lines += ["", "--", "This is an automated message from patchci; it is sent once per set of "
              "findings. Reply to the list, not to this address."]  # fmt: skip
    return "\n".join(lines) + "\n"
