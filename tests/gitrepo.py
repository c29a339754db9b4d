"""Build small git repositories and series by code, for the git/apply/check tests.

Patches come from real `git format-patch` output, parsed here with the stdlib email module
so these tests do not depend on patchci's own mail parser.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from patchci.git import Git
from patchci.model import Patch, Person, Series
from patchci.subject import parse_subject

_DIFF_RE = re.compile(r"^diff --git a/(\S+) b/(\S+)$", re.MULTILINE)


def make_repo(path: Path, files: dict[str, str] | None = None) -> Git:
    """A repository on branch main with one commit holding *files* (a README by default)."""
    git = Git.init(path)
    for name, content in (files or {"README": "hello\n"}).items():
        write(path, name, content)
    git.add_all()
    git.commit("Initial commit")
    return git


def write(root: Path, name: str, content: str) -> None:
    p = root / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(content, encoding="utf-8")


def commit_file(git: Git, name: str, content: str, msg: str, author: Person | None = None) -> str:
    """Write *content* to *name* and commit it; return the commit hash."""
    write(git.repo, name, content)
    git.add_all()
    return git.commit(msg, author=author)


def format_patches(
    git: Git,
    rev_range: str,
    *,
    prefix: str = "PATCH",
    cover: bool = False,
    numbered: bool | None = None,
) -> list[bytes]:
    """`git format-patch` the range; returns the mails in order (cover first if any)."""
    out = Path(tempfile.mkdtemp(prefix="fp-", dir=git.repo.parent))
    args = ["format-patch", "-q", "-o", str(out), f"--subject-prefix={prefix}"]
    if cover:
        args.append("--cover-letter")
    if numbered is True:
        args.append("--numbered")
    elif numbered is False:
        args.append("--no-numbered")
    git.run(*args, rev_range)
    return [p.read_bytes() for p in sorted(out.glob("*.patch"))]


def patch_from_mail(raw: bytes, msgid: str | None = None) -> Patch:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    subject = str(msg.get("Subject", ""))
    name, addr = email.utils.parseaddr(str(msg.get("From", "")))
    text = raw.decode("utf-8", errors="replace")
    files = sorted({f for m in _DIFF_RE.finditer(text) for f in m.groups()})
    return Patch(
        msgid=msgid or str(msg.get("Message-Id", "")) or f"<{abs(hash(raw))}@test>",
        subject=subject,
        author=Person(name, addr),
        date=None,
        info=parse_subject(subject),
        raw=raw,
        has_diff=bool(files),
        files=tuple(files),
    )


def series_from_mails(mails: Sequence[bytes], key: str = "test-series") -> Series:
    """A Series from format-patch mails; a mail numbered 0/N becomes the cover letter."""
    patches = [patch_from_mail(m, f"<{key}.{i}@test>") for i, m in enumerate(mails)]
    cover = next((p for p in patches if p.info.is_cover), None)
    body = tuple(p for p in patches if not p.info.is_cover)
    first = cover or body[0]
    return Series(
        source="test",
        key=key,
        name=first.info.title,
        version=first.info.version,
        total=len(body),
        patches=body,
        cover=cover,
        submitter=first.author,
    )


def make_series(
    subjects: Sequence[str], files: Sequence[Sequence[str]] = (), cover: str | None = None
) -> Series:
    """A diff-less Series from bare subjects (for routing and format tests)."""

    def mk(i: int, subj: str, fl: Sequence[str]) -> Patch:
        return Patch(
            msgid=f"<p{i}@test>",
            subject=subj,
            author=Person("Jane Doe", "jane@example.com"),
            date=None,
            info=parse_subject(subj),
            raw=b"",
            has_diff=bool(fl),
            files=tuple(fl),
        )

    patches = tuple(
        mk(i + 1, s, files[i] if i < len(files) else ()) for i, s in enumerate(subjects)
    )
    cov = mk(0, cover, ()) if cover is not None else None
    return Series(
        source="test",
        key="s1",
        name=(cov or patches[0]).info.title,
        version=patches[0].info.version,
        total=len(patches),
        patches=patches,
        cover=cov,
    )
