"""Tokenise mail subjects: `[PATCH net-next v2 3/7] foo: bar` → SubjectInfo.

Pure. Follows what Patchwork does with prefixes (split on commas and blanks, every leading
`[...]` group counts, `Re:`/`Fwd:` stripped) so that series grouping and naming agree with
a real Patchwork server.
"""

from __future__ import annotations

import re

from patchci.model import SubjectInfo

_REPLY_RE = re.compile(r"^\s*((re|fwd?|aw|sv)\s*:\s*)+", re.IGNORECASE)
_GROUP_RE = re.compile(r"\s*\[([^\[\]]*)\]")  # used with match(s, pos)
# Counts taken from a mail are bounded: `[PATCH 1/999999999]` made the mbox source build
# a "missing patch" entry per number, and 5 000 digits made int() raise. A longer number
# is not numbering (the token stays a plain tag).
MAX_COUNT_DIGITS = 4
_N = rf"(\d{{1,{MAX_COUNT_DIGITS}}})"
_VERSION_RE = re.compile(rf"^[vV]{_N}$")
# Patchwork also accepts "PATCH1/8" written together.
_NUM_RE = re.compile(rf"^(?:patch)?{_N}/{_N}$", re.IGNORECASE)
_TITLE_VERSION_RE = re.compile(rf"\([vV]{_N}\)")
_PATCH_WORDS = frozenset({"patch", "resend", "patchv", "pull", "git"})


def strip_reply(subject: str) -> tuple[str, bool]:
    """Remove leading `Re:`/`Fwd:`; return the rest and whether anything was removed."""
    m = _REPLY_RE.match(subject)
    if not m:
        return subject, False
    return subject[m.end() :], True


def normalise_space(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


def parse_subject(subject: str) -> SubjectInfo:
    """Split a subject into its prefix tokens and title.

    Never raises: a subject with no prefixes is a title with version 1 and no numbering.
    """
    s = normalise_space(subject)
    s, _ = strip_reply(s)
    prefixes: list[str] = []
    pos = 0
    while m := _GROUP_RE.match(s, pos):  # by position: slicing per group was quadratic
        prefixes.extend(t for t in re.split(r"[,\s]+", m.group(1)) if t)
        pos = m.end()
    title = s[pos:].strip()
    version = 0
    number: int | None = None
    total: int | None = None
    is_rfc = False
    has_patch = False
    tags: list[str] = []
    for tok in prefixes:
        low = tok.lower()
        vm = _VERSION_RE.match(tok)
        nm = _NUM_RE.match(tok)
        if vm:
            version = version or max(1, int(vm.group(1)))
        elif nm:
            number, total = int(nm.group(1)), int(nm.group(2))
        elif low == "rfc":
            is_rfc = True
        elif low in _PATCH_WORDS:
            has_patch = True
        elif low.startswith("patch") and _VERSION_RE.match(low[5:]):
            # "PATCHv2" written together
            has_patch = True
            version = version or max(1, int(low[6:]))
        else:
            tags.append(tok)
    if not version:
        # Patchwork's parse_version(): no vN prefix, then "(vN)" in the title, else 1.
        tm = _TITLE_VERSION_RE.search(title)
        version = max(1, int(tm.group(1))) if tm else 1
    return SubjectInfo(
        title=title,
        prefixes=tuple(prefixes),
        tags=tuple(tags),
        version=version,
        number=number,
        total=total,
        is_rfc=is_rfc,
        has_patch_prefix=has_patch,
    )


def patchwork_name(subject: str) -> str:
    """The name Patchwork gives a patch: prefixes other than PATCH kept, comma-joined.

    `[PATCH net,v2,1/2] foo` → `[net,v2,1/2] foo`; `[PATCH] foo` → `foo`.
    """
    info = parse_subject(subject)
    kept = [p for p in info.prefixes if p.lower() != "patch"]
    if not kept:
        return info.title
    return f"[{','.join(kept)}] {info.title}".rstrip()
