"""Render check results as Patchwork checks. Pure: no I/O, nothing is sent here.

Patchwork has no series checks, so a series-level result is copied onto every patch of the
series. Its states are only pending/success/warning/fail, contexts must be slugs, and the
newest check per context wins, so each (patch, context) gets exactly one post.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from patchci.model import OUTCOME_PRIORITY, CheckResult, Outcome

log = logging.getLogger(__name__)

MAX_CONTEXT = 255  # Patchwork's SlugField max_length
MAX_DESCRIPTION = 200  # Patchwork's web UI shows it in a table cell
ERROR_PREFIX = "infrastructure error (not the patch): "

# ERROR is our infrastructure failing: never a patch failure, so it stays pending.
_STATES: dict[Outcome, str | None] = {
    Outcome.PASS: "success",
    Outcome.XFAIL: "success",
    Outcome.WARN: "warning",
    Outcome.FAIL: "fail",
    Outcome.CRASH: "fail",
    Outcome.TIMEOUT: "fail",
    Outcome.ERROR: "pending",
    Outcome.PENDING: "pending",
    Outcome.SKIP: None,
}
_NOT_SLUG = re.compile(r"[^-a-zA-Z0-9_]+")
_URL_RE = re.compile(r"^https?://[^\s/?#]+[^\s]*\Z")


def pw_state(outcome: Outcome) -> str | None:
    """The Patchwork check state for *outcome*; None means "do not post" (SKIP)."""
    return _STATES[outcome]


def slug_context(name: str, prefix: str = "") -> str:
    """A valid Patchwork context (`[-a-zA-Z0-9_]`, at most 255 chars) for a check name.

    `netdev/build.allmodconfig` → `netdev-build-allmodconfig`. A long name is cut and given a
    short hash so that two long names sharing a start stay distinct.
    """
    full = f"{prefix}-{name}" if prefix and not prefix.endswith(("-", "_")) else prefix + name
    slug = _NOT_SLUG.sub("-", full).strip("-") or "check"
    if len(slug) <= MAX_CONTEXT:
        return slug
    digest = hashlib.sha1(full.encode()).hexdigest()[:8]
    return f"{slug[: MAX_CONTEXT - 9].rstrip('-')}-{digest}"


@dataclass(frozen=True)
class CheckPost:
    """One check to post on one patch."""

    patch_id: int
    context: str
    state: str
    description: str
    target_url: str | None

    def fingerprint(self) -> str:
        """Stable hash of what a reader sees; post again only when it changes."""
        blob = json.dumps([self.state, self.description, self.target_url], ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()


def one_line(text: str, limit: int = MAX_DESCRIPTION) -> str:
    """Join the non-blank lines with "; " and cut at a word boundary with an ellipsis."""
    flat = "; ".join(" ".join(ln.split()) for ln in text.splitlines() if ln.strip())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ;,") + "…"


def describe(result: CheckResult) -> str:
    text = result.description.strip() or result.outcome.value
    if result.outcome is Outcome.ERROR:
        # Stages may already say it; never say it twice.
        for said in ("infrastructure error (not the patch):", "infrastructure error:"):
            if text.lower().startswith(said):
                text = text[len(said) :].strip()
        return ERROR_PREFIX + one_line(text, MAX_DESCRIPTION - len(ERROR_PREFIX))
    return one_line(text)


def _valid_url(url: str | None) -> str | None:
    # Patchwork rejects the whole check (400) for a bad target_url: drop it instead.
    return url if url and _URL_RE.match(url) else None


def render_checks(
    results: Sequence[CheckResult],
    patch_ids: Sequence[int],
    log_url: Callable[[CheckResult], str | None],
    context_prefix: str = "",
) -> list[CheckPost]:
    """Turn results into check posts, one per (patch, context).

    Series results (patch_index None) go to every patch. When several results land on the
    same (patch, context) the worst one wins, because Patchwork would only keep the last.
    """
    chosen: dict[tuple[int, str], CheckResult] = {}
    for result in results:
        if pw_state(result.outcome) is None:
            continue
        if result.patch_index is None:
            targets = list(patch_ids)
        elif 0 <= result.patch_index < len(patch_ids):
            targets = [patch_ids[result.patch_index]]
        else:
            log.warning(
                "check %s: patch index %d outside series of %d patches, not posted",
                result.check,
                result.patch_index,
                len(patch_ids),
            )
            continue
        context = slug_context(result.check, context_prefix)
        for pid in targets:
            key = (pid, context)
            if key not in chosen or _rank(result) < _rank(chosen[key]):
                chosen[key] = result
    posts = []
    for (pid, context), result in chosen.items():
        state = pw_state(result.outcome)
        assert state is not None
        posts.append(CheckPost(pid, context, state, describe(result), _valid_url(log_url(result))))
    order = {pid: i for i, pid in enumerate(patch_ids)}
    return sorted(posts, key=lambda p: order[p.patch_id])


def changed_posts(
    posts: Sequence[CheckPost], posted: Mapping[tuple[int, str], str]
) -> list[CheckPost]:
    """The posts whose fingerprint differs from *posted* ((patch_id, context) → fingerprint)."""
    return [p for p in posts if posted.get((p.patch_id, p.context)) != p.fingerprint()]


def _rank(result: CheckResult) -> int:
    return OUTCOME_PRIORITY.index(result.outcome)
