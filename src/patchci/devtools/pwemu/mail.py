"""Mail parsing: an mbox into mails, a mail into what Patchwork keeps of it."""

from __future__ import annotations

import email
import email.header
import email.message
import email.policy
import email.utils
import hashlib
import re
import secrets
from datetime import UTC, datetime
from typing import Any

from patchci.devtools.pwemu.records import Mail
from patchci.subject import parse_subject, strip_reply

_MBOX_SPLIT_RE = re.compile(rb"(?m)^From [^\n]*\n(?=[!-9;-~]+:)")
_DIFF_START_RE = re.compile(r"(?m)^(?:diff --git |Index: |--- \S)")


def split_mbox(data: bytes) -> list[bytes]:
    """Split an mbox into messages on `From ` lines that are followed by a header."""
    parts = _MBOX_SPLIT_RE.split(data)
    return [p for p in parts if p.strip()]


def _decode_header(value: Any) -> str:
    if value is None:
        return ""
    out = []
    try:
        chunks = email.header.decode_header(value)
    except Exception:
        return re.sub(r"\s+", " ", str(value)).strip()
    for chunk, cs in chunks:
        if isinstance(chunk, bytes):
            try:
                out.append(chunk.decode(cs if cs and cs != "unknown-8bit" else "utf-8", "replace"))
            except LookupError:
                out.append(chunk.decode("utf-8", "replace"))
        else:
            out.append(chunk)
    return re.sub(r"\s+", " ", "".join(out)).strip()


def _body_text(msg: email.message.Message) -> str:
    for part in msg.walk():
        if part.get_content_maintype() == "multipart":
            continue
        if part.get_content_type() == "text/plain" or not part.get_content_type():
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                continue
            charset = part.get_content_charset() or "utf-8"
            try:
                return payload.decode(charset, "replace")
            except LookupError:
                return payload.decode("utf-8", "replace")
    return ""


def parse_mail(raw: bytes, now_utc: datetime) -> Mail:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    subject = _decode_header(msg.get("Subject"))
    name, addr = email.utils.parseaddr(_decode_header(msg.get("From")))
    try:
        date = email.utils.parsedate_to_datetime(_decode_header(msg.get("Date")))
        if date.tzinfo is not None:
            date = date.astimezone(UTC).replace(tzinfo=None)
    except (TypeError, ValueError):
        date = now_utc.replace(tzinfo=None, microsecond=0)
    msgid = _decode_header(msg.get("Message-Id")) or f"<{secrets.token_hex(8)}@fake>"
    irt = _decode_header(msg.get("In-Reply-To")) or None
    _, is_reply = strip_reply(subject)
    return Mail(
        msgid=msgid.split()[0],
        subject=subject,
        info=parse_subject(subject),
        from_name=name,
        from_email=addr,
        date=date,
        headers=[(k, str(v)) for k, v in msg.raw_items()],
        body=_body_text(msg),
        in_reply_to=irt.split()[0] if irt else None,
        is_reply=is_reply,
    )


def _split_diff(body: str) -> tuple[str, str]:
    m = _DIFF_START_RE.search(body)
    if not m:
        return body.rstrip(), ""
    return body[: m.start()].rstrip(), body[m.start() :]


def _diff_hash(diff: str) -> str:
    lines = [ln for ln in diff.splitlines() if not ln.startswith("index ")]
    return hashlib.sha1("\n".join(lines).encode()).hexdigest()
