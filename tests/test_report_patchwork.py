"""Rendering check results into Patchwork checks (pure)."""

from __future__ import annotations

import re

import pytest

from patchci.model import CheckResult, Outcome
from patchci.report.patchwork import (
    ERROR_PREFIX,
    CheckPost,
    changed_posts,
    one_line,
    pw_state,
    render_checks,
    slug_context,
)

SLUG = re.compile(r"^[-a-zA-Z0-9_]{1,255}\Z")


@pytest.mark.parametrize(
    ("outcome", "state"),
    [
        (Outcome.PASS, "success"),
        (Outcome.XFAIL, "success"),
        (Outcome.WARN, "warning"),
        (Outcome.FAIL, "fail"),
        (Outcome.CRASH, "fail"),
        (Outcome.TIMEOUT, "fail"),
        (Outcome.ERROR, "pending"),
        (Outcome.PENDING, "pending"),
        (Outcome.SKIP, None),
    ],
)
def test_pw_state_table(outcome: Outcome, state: str | None) -> None:
    assert pw_state(outcome) == state


def test_every_outcome_is_mapped_and_error_is_never_fail() -> None:
    for outcome in Outcome:
        assert pw_state(outcome) in {"success", "warning", "fail", "pending", None}
    assert pw_state(Outcome.ERROR) != "fail"


@pytest.mark.parametrize(
    ("name", "prefix", "expected"),
    [
        ("build_allmodconfig", "", "build_allmodconfig"),
        ("netdev/build", "", "netdev-build"),
        ("build.allmodconfig", "", "build-allmodconfig"),
        ("checkpatch", "patchci", "patchci-checkpatch"),
        ("checkpatch", "patchci-", "patchci-checkpatch"),
        ("checkpatch", "ci_", "ci_checkpatch"),
        ("kunit / net tests", "", "kunit-net-tests"),
        ("bpf-next/net", "", "bpf-next-net"),
        ("émoji✓", "", "moji"),
        ("///", "", "check"),
    ],
)
def test_slug_context_table(name: str, prefix: str, expected: str) -> None:
    assert slug_context(name, prefix) == expected


def test_slug_context_long_names_stay_valid_and_distinct() -> None:
    a = slug_context("x" * 300 + "a")
    b = slug_context("x" * 300 + "b")
    assert SLUG.match(a) and SLUG.match(b)
    assert len(a) <= 255 and a != b


def test_one_line_joins_lines_and_truncates_at_a_word() -> None:
    assert (
        one_line("3 new warnings\n\n  foo.c:12: warning: x  \n")
        == "3 new warnings; foo.c:12: warning: x"
    )
    text = " ".join(["word"] * 100)
    out = one_line(text, 50)
    assert len(out) <= 50 and out.endswith("…") and "\n" not in out
    assert out[:-1].split() == ["word"] * len(out[:-1].split())


def _r(check: str, outcome: Outcome, desc: str = "", idx: int | None = None) -> CheckResult:
    return CheckResult(check=check, outcome=outcome, description=desc, patch_index=idx)


def _url(r: CheckResult) -> str:
    return f"https://ci.example.com/logs/{r.check}/{r.patch_index}"


def test_series_result_is_copied_onto_every_patch() -> None:
    posts = render_checks([_r("build", Outcome.PASS, "Built clean")], [20, 21, 22], _url)
    assert [(p.patch_id, p.context, p.state) for p in posts] == [
        (20, "build", "success"),
        (21, "build", "success"),
        (22, "build", "success"),
    ]
    assert {p.description for p in posts} == {"Built clean"}
    assert {p.target_url for p in posts} == {"https://ci.example.com/logs/build/None"}


def test_patch_results_go_to_their_patch_and_skip_is_not_posted() -> None:
    results = [
        _r("checkpatch", Outcome.WARN, "2 warnings", 0),
        _r("checkpatch", Outcome.PASS, "clean", 1),
        _r("kdoc", Outcome.SKIP, "no docs touched", 0),
        _r("kdoc", Outcome.FAIL, "1 new warning", 1),
    ]
    posts = render_checks(results, [20, 21], _url, context_prefix="ci")
    assert [(p.patch_id, p.context, p.state, p.description) for p in posts] == [
        (20, "ci-checkpatch", "warning", "2 warnings"),
        (21, "ci-checkpatch", "success", "clean"),
        (21, "ci-kdoc", "fail", "1 new warning"),
    ]


def test_error_is_pending_with_infrastructure_prefix() -> None:
    posts = render_checks([_r("build", Outcome.ERROR, "VM did not boot\nlog...")], [7], _url)
    assert len(posts) == 1
    assert posts[0].state == "pending"
    assert posts[0].description == ERROR_PREFIX + "VM did not boot; log..."


def test_long_error_description_keeps_prefix_and_limit() -> None:
    posts = render_checks([_r("build", Outcome.ERROR, "x " * 500)], [7], _url)
    assert posts[0].description.startswith(ERROR_PREFIX)
    assert len(posts[0].description) <= 200


def test_empty_description_falls_back_to_outcome() -> None:
    posts = render_checks([_r("build", Outcome.TIMEOUT)], [7], _url)
    assert posts[0].description == "timeout" and posts[0].state == "fail"


def test_worst_result_wins_per_patch_and_context() -> None:
    """Patchwork keeps only the newest check per context, so we post the worst once."""
    results = [
        _r("build", Outcome.PASS, "series ok"),
        _r("build", Outcome.FAIL, "patch 2 broke", 1),
    ]
    posts = render_checks(results, [1, 2, 3], _url)
    assert [(p.patch_id, p.state, p.description) for p in posts] == [
        (1, "success", "series ok"),
        (2, "fail", "patch 2 broke"),
        (3, "success", "series ok"),
    ]


def test_out_of_range_patch_index_is_dropped() -> None:
    assert render_checks([_r("build", Outcome.FAIL, "x", 5)], [1, 2], _url) == []


def test_invalid_target_url_is_dropped_not_sent() -> None:
    """Patchwork answers 400 for the whole check when target_url is not a URL."""
    posts = render_checks([_r("build", Outcome.PASS, "ok")], [1], lambda r: "/local/path.log")
    assert posts[0].target_url is None
    posts = render_checks([_r("build", Outcome.PASS, "ok")], [1], lambda r: None)
    assert posts[0].target_url is None


def test_fingerprint_is_stable_and_ignores_where_it_goes() -> None:
    a = CheckPost(1, "build", "success", "ok", "https://x.example/1")
    assert (
        a.fingerprint()
        == CheckPost(2, "other", "success", "ok", "https://x.example/1").fingerprint()
    )
    assert (
        a.fingerprint() != CheckPost(1, "build", "fail", "ok", "https://x.example/1").fingerprint()
    )
    assert (
        a.fingerprint()
        != CheckPost(1, "build", "success", "ok!", "https://x.example/1").fingerprint()
    )
    assert a.fingerprint() != CheckPost(1, "build", "success", "ok", None).fingerprint()
    assert re.fullmatch(r"[0-9a-f]{64}", a.fingerprint())


def test_changed_posts_only_returns_new_or_different() -> None:
    a = CheckPost(1, "build", "success", "ok", None)
    b = CheckPost(2, "build", "fail", "broken", None)
    posted = {(1, "build"): a.fingerprint(), (2, "build"): "stale"}
    assert changed_posts([a, b], posted) == [b]
    assert changed_posts([a, b], {}) == [a, b]
