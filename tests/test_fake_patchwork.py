"""The fake Patchwork reproduces the documented behaviour of Patchwork v3.2.1.

Each test names the quirk of the steering repository's shared/reference/patchwork-api.md it pins down.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from patchci.devtools.pwemu import SLUG_MSG, FakePatchwork, split_mbox

DATA = Path(__file__).parent / "data" / "patchwork"
T0 = datetime(2026, 11, 21, 14, 29, 42, 935608, tzinfo=UTC)


def mbox(name: str) -> bytes:
    return (DATA / name).read_bytes()


@pytest.fixture
def pw() -> Iterator[FakePatchwork]:
    with FakePatchwork(clock=lambda: T0) as fake:
        yield fake


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


def links(resp: httpx.Response) -> dict[str, str]:
    return {str(rel): v["url"] for rel, v in resp.links.items()}


# ---------------------------------------------------------------- versions


def test_root_has_no_version_and_prefixes_select_versions(
    pw: FakePatchwork, http: httpx.Client
) -> None:
    root = http.get(f"{pw.url}/api/")
    assert root.status_code == 200
    assert root.json()["series"] == f"{pw.url}/api/series/"
    assert "version" not in root.text
    for v in ("1.0", "1.1", "1.2", "1.3"):
        assert http.get(f"{pw.url}/api/{v}/").status_code == 200
    r = http.get(f"{pw.url}/api/1.4/")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")


def test_fields_follow_the_version(pw: FakePatchwork, http: httpx.Client) -> None:
    pw.add_series_from_mbox(mbox("net-foo-v1.mbox"))
    s10 = http.get(f"{pw.url}/api/1.0/series/1/").json()
    assert "web_url" not in s10
    assert "list_archive_url" not in s10["patches"][0]
    s13 = http.get(f"{pw.url}/api/1.3/series/1/").json()
    assert s13["web_url"].endswith("/project/netdev/list/?series=1")
    p13 = http.get(f"{pw.url}/api/1.3/patches/1/").json()
    assert p13["url"] == f"{pw.url}/api/1.3/patches/1/"
    # quirk: checks/comments URLs are unversioned even under /api/1.3/
    assert p13["checks"] == f"{pw.url}/api/patches/1/checks/"
    assert p13["comments"] == f"{pw.url}/api/patches/1/comments/"
    assert "related" in p13 and "related" not in http.get(f"{pw.url}/api/1.1/patches/1/").json()


def test_projects_use_api_names(pw: FakePatchwork, http: httpx.Client) -> None:
    [proj] = http.get(f"{pw.url}/api/1.3/projects/").json()
    assert proj["link_name"] == "netdev" and proj["list_id"] == "netdev.vger.kernel.org"
    assert [m["username"] for m in proj["maintainers"]] == ["ci-bot"]
    assert http.get(f"{pw.url}/api/1.3/projects/netdev/").json()["id"] == 1


# ---------------------------------------------------------------- series and patches


def test_incomplete_series_then_completed_later(pw: FakePatchwork, http: httpx.Client) -> None:
    sid = pw.add_series_from_mbox(mbox("net-foo-v1.mbox"), complete=False)
    s = http.get(f"{pw.url}/api/1.3/series/{sid}/").json()
    assert (s["total"], s["received_total"], s["received_all"]) == (3, 2, False)
    assert s["name"] == "net: foo: queue handling fixes"
    assert s["date"] == "2026-11-21T14:29:18"  # the mail's Date:, in UTC
    assert s["cover_letter"]["name"] == "[net-next,0/3] net: foo: queue handling fixes"
    assert s["cover_letter"]["msgid"] == "<cover.1795271358.git.ci.tester@example.com>"
    assert [p["name"] for p in s["patches"]] == [
        "[net-next,1/3] net: foo: start queue on open",
        "[net-next,2/3] net: foo: add ndo_stop",
    ]
    assert s["mbox"] == f"{pw.url}/series/{sid}/mbox/"
    assert s["submitter"]["email"] == "ci.tester@example.com"
    # served although incomplete
    assert http.get(s["mbox"]).text.count("From patchwork ") == 2
    done = f"{pw.url}/api/1.3/events/?category=series-completed"
    assert http.get(done).json() == []

    pw.advance(600)  # the third patch arrives 10 minutes late
    pw.add_patch_to_series(sid)
    s = http.get(f"{pw.url}/api/1.3/series/{sid}/").json()
    assert (s["received_total"], s["received_all"]) == (3, True)
    assert s["date"] == "2026-11-21T14:29:18"  # unchanged by later patches
    [event] = http.get(done).json()
    assert event["payload"]["series"]["id"] == sid
    assert event["date"] == "2026-11-22T01:39:42.935608"  # server-local (+11h), naive


def test_series_without_cover_is_named_after_first_patch(
    pw: FakePatchwork, http: httpx.Client
) -> None:
    sid = pw.add_series_from_mbox(mbox("base-no-references.mbox"))
    s = http.get(f"{pw.url}/api/1.3/series/{sid}/").json()
    assert s["cover_letter"] is None
    assert s["name"] == "[net,v2,1/2] net: ieee802154: remove explicit set skb->sk"
    assert (s["version"], s["total"], s["received_all"]) == (2, 2, True)
    cats = [e["category"] for e in http.get(f"{pw.url}/api/1.3/events/?order=date").json()]
    assert cats[:3] == ["patch-created", "series-created", "patch-completed"]
    assert cats[-1] == "series-completed"


def test_version_comes_from_cover(pw: FakePatchwork, http: httpx.Client) -> None:
    sid = pw.add_series_from_mbox(mbox("base-different-versions.mbox"))
    s = http.get(f"{pw.url}/api/1.3/series/{sid}/").json()
    assert (s["version"], s["total"], len(s["patches"])) == (3, 4, 4)
    assert s["name"] == "net: dsa: Multi-CPU ground work (v3)"


def test_series_mbox_is_patches_only_in_order(pw: FakePatchwork, http: httpx.Client) -> None:
    sid = pw.add_series_from_mbox(mbox("net-foo-v1.mbox"))
    r = http.get(f"{pw.url}/series/{sid}/mbox/")
    assert r.headers["content-type"] == "text/plain"
    assert "filename=net-foo-queue-handling-fixes.patch" in r.headers["content-disposition"]
    msgs = split_mbox(r.content)
    assert len(msgs) == 3
    assert "0/3" not in r.text
    subjects = re.findall(r"(?m)^Subject: (.*)$", r.text)
    assert subjects == [
        "[PATCH net-next 1/3] net: foo: start queue on open",
        "[PATCH net-next 2/3] net: foo: add ndo_stop",
        "[PATCH net-next 3/3] net: foo: make driver optional",
    ]
    assert all(line.startswith("From patchwork ") for line in re.findall(r"(?m)^From .*$", r.text))
    assert "\n\nFrom patchwork " in r.text  # joined with "\n"


def test_patch_mbox_headers_and_redirect(pw: FakePatchwork, http: httpx.Client) -> None:
    pw.add_series_from_mbox(mbox("net-foo-v1.mbox"))
    p = http.get(f"{pw.url}/api/1.3/patches/1/").json()
    r = http.get(p["mbox"])
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.text.startswith("From patchwork Sat Nov 21 14:29:18 2026\n")
    assert "\nX-Patchwork-Id: 1\n" in r.text
    assert "\nX-Patchwork-Submitter: Ci Tester <ci.tester@example.com>\n" in r.text
    assert "\nMessage-Id: \n <3c01c049" in r.text  # folded like the real server
    redirect = http.get(f"{pw.url}/patch/1/mbox/")
    assert redirect.status_code == 302 and redirect.headers["location"] == p["mbox"]
    assert p["headers"]["Subject"] == "[PATCH net-next 1/3] net: foo: start queue on open"
    assert p["prefixes"] == ["net-next", "1/3"]
    assert "diff --git" in p["diff"] and "diff --git" not in p["content"]
    with_deps = http.get(http.get(f"{pw.url}/api/1.3/patches/2/").json()["mbox"] + "?series=*")
    assert with_deps.text.count("From patchwork ") == 2


def test_reply_tags_are_added_to_the_patch_mbox(pw: FakePatchwork, http: httpx.Client) -> None:
    pw.add_series_from_mbox(mbox("bugs-multiple-content-types.mbox"))
    p = http.get(f"{pw.url}/api/1.3/patches/1/").json()
    assert p["name"] == "[-next] bpf: Use PTR_ERR_OR_ZERO in xsk_map_inc()"
    text = http.get(p["mbox"]).text
    signed = text.index("Signed-off-by: YueHaibing")
    acked = text.index("Acked-by: Björn Töpel <bjorn.topel@intel.com>")
    assert signed < acked < text.index("\n---\n")


def test_same_diff_same_hash_across_versions(pw: FakePatchwork, http: httpx.Client) -> None:
    pw.add_series_from_mbox(mbox("net-foo-v1.mbox"))
    pw.add_series_from_mbox(mbox("net-foo-v2.mbox"))
    v2 = http.get(f"{pw.url}/api/1.3/series/2/").json()
    assert v2["version"] == 2
    h = http.get(f"{pw.url}/api/1.3/patches/1/").json()["hash"]
    assert [p["id"] for p in http.get(f"{pw.url}/api/1.3/patches/?hash={h}").json()] == [1, 4]


# ---------------------------------------------------------------- events and dates


def test_events_order_since_before(pw: FakePatchwork, http: httpx.Client) -> None:
    pw.add_series_from_mbox(mbox("net-foo-v1.mbox"))
    pw.advance(1)
    pw.add_series_from_mbox(mbox("base-no-references.mbox"))
    url = f"{pw.url}/api/1.3/events/?category=series-completed"
    newest_first = http.get(url).json()
    assert [e["payload"]["series"]["id"] for e in newest_first] == [2, 1]
    oldest_first = http.get(url + "&order=date").json()
    assert [e["id"] for e in oldest_first] == [e["id"] for e in reversed(newest_first)]
    first, second = oldest_first
    assert first["date"] == "2026-11-22T01:29:42.935608"
    assert second["date"] == "2026-11-22T01:29:43.935608"
    # since is inclusive (>=), before is exclusive (<)
    cat = {"category": "series-completed"}
    since = http.get(url, params={**cat, "order": "date", "since": second["date"]}).json()
    assert [e["id"] for e in since] == [second["id"]]
    before = http.get(url, params={**cat, "before": second["date"]}).json()
    assert [e["id"] for e in before] == [first["id"]]
    for fmt, n in (("2026-11-22T01:29:43", 1), ("2026-11-22 01:29:43", 1), ("2026-11-22", 2)):
        assert len(http.get(url, params={**cat, "since": fmt}).json()) == n


@pytest.mark.parametrize("value", ["2026-11-21T14:00:00Z", "2026-11-21T14:00:00+00:00"])
def test_timezone_suffix_is_a_server_error(
    pw: FakePatchwork, http: httpx.Client, value: str
) -> None:
    for path in ("events/", "series/", "patches/"):
        r = http.get(f"{pw.url}/api/1.3/{path}", params={"since": value})
        assert r.status_code == 500 and r.headers["content-type"].startswith("text/html")


def test_series_since_uses_mail_date_not_arrival(pw: FakePatchwork, http: httpx.Client) -> None:
    pw.add_series_from_mbox(mbox("base-different-versions.mbox"))  # mailed in 2017
    url = f"{pw.url}/api/1.3/series/?project=netdev"
    assert http.get(url, params={"since": "2026-11-21T13:29:42"}).json() == []
    assert len(http.get(url, params={"since": "2016-01-01"}).json()) == 1


@pytest.mark.parametrize(
    "query",
    [
        "events/?since=garbage",
        "events/?project=nope",
        "series/?project=nope",
        "events/?category=bogus",
    ],
)
def test_invalid_filter_values_give_empty_list(
    pw: FakePatchwork, http: httpx.Client, query: str
) -> None:
    pw.add_series_from_mbox(mbox("net-foo-v1.mbox"))
    r = http.get(f"{pw.url}/api/1.3/{query}")
    assert r.status_code == 200 and r.json() == []
    assert 'rel="first"' in r.headers["link"]


def test_broken_filters_of_3_2_1(pw: FakePatchwork, http: httpx.Client) -> None:
    pw.add_series_from_mbox(mbox("net-foo-v1.mbox"))
    assert http.get(f"{pw.url}/api/1.3/series/?order=received_all").status_code == 500
    assert http.get(f"{pw.url}/api/1.3/covers/?series=1").status_code == 500
    assert http.get(f"{pw.url}/api/1.3/series/?order=bogus").status_code == 200


def test_events_by_series_skip_created_events(pw: FakePatchwork, http: httpx.Client) -> None:
    pw.add_series_from_mbox(mbox("net-foo-v1.mbox"))
    cats = {e["category"] for e in http.get(f"{pw.url}/api/1.3/events/?series=1").json()}
    assert cats == {"series-created", "patch-completed", "series-completed"}


# ---------------------------------------------------------------- pagination


def test_link_header_pagination(pw: FakePatchwork, http: httpx.Client) -> None:
    for _ in range(4):
        pw.add_series_from_mbox(mbox("base-no-references.mbox"))
    url = f"{pw.url}/api/1.3/series/?project=netdev&per_page=1"
    one = http.get(url)
    assert links(one) == {
        "next": f"{pw.url}/api/1.3/series/?page=2&per_page=1&project=netdev",
        "first": f"{pw.url}/api/1.3/series/?page=1&per_page=1&project=netdev",
        "last": f"{pw.url}/api/1.3/series/?page=4&per_page=1&project=netdev",
    }
    two = http.get(links(one)["next"])
    assert links(two)["prev"] == f"{pw.url}/api/1.3/series/?per_page=1&project=netdev"
    three = http.get(links(two)["next"])
    assert links(three)["prev"].endswith("page=2&per_page=1&project=netdev")
    assert [r.json()[0]["id"] for r in (one, two, three)] == [1, 2, 3]
    past = http.get(url + "&page=5")
    assert past.status_code == 404 and past.json() == {"detail": "Invalid page."}
    single = http.get(f"{pw.url}/api/1.3/series/")
    assert set(links(single)) == {"first", "last"}


def test_per_page_default_30_and_cap_250(pw: FakePatchwork, http: httpx.Client) -> None:
    pw.add_series_from_mbox(mbox("net-foo-v1.mbox"))
    for i in range(260):
        pw.add_check(1, "success", f"c{i}")
    assert len(http.get(f"{pw.url}/api/1.3/patches/1/checks/").json()) == 30
    r = http.get(f"{pw.url}/api/1.3/patches/1/checks/?per_page=1000")
    assert len(r.json()) == 250 and "page=2" in links(r)["next"]


# ---------------------------------------------------------------- checks


def test_post_check_json_and_form(pw: FakePatchwork, http: httpx.Client) -> None:
    pw.add_series_from_mbox(mbox("net-foo-v1.mbox"))
    url = f"{pw.url}/api/1.3/patches/1/checks/"
    body = {"state": "success", "target_url": "https://ci.example.com/runs/1",
            "context": "build_allmodconfig", "description": "Built clean"}  # fmt: skip
    r = http.post(url, json=body, headers=auth(pw.token))
    assert r.status_code == 201
    check = r.json()
    assert r.headers["location"] == check["url"] == f"{url}1/"
    assert check["date"] == "2026-11-22T01:29:42.935608"
    assert check["user"]["username"] == "ci-bot" and "patch" not in check
    r = http.post(url, data={"state": "warning", "context": "checkpatch"}, headers=auth(pw.token))
    assert r.status_code == 201 and r.json()["description"] is None
    r = http.post(url, files={"state": (None, "fail")}, headers=auth(pw.token))
    assert r.status_code == 201 and r.json()["context"] == "default"
    assert r.json()["target_url"] is None
    assert [c.context for c in pw.checks_for(1)] == ["build_allmodconfig", "checkpatch", "default"]
    assert http.get(f"{url}2/").json()["state"] == "warning"


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"state": "passed", "context": "x"}, {"state": ['"passed" is not a valid choice.']}),
        ({"context": "x"}, {"state": ["A check must have a state."]}),
        (
            {"state": "success", "context": "netdev/build"},
            {
                "context": [
                    'Enter a valid "slug" consisting of letters, numbers, underscores or hyphens.'
                ]
            },
        ),
        ({"state": "success", "context": "a.b"}, {"context": [SLUG_MSG]}),
        ({"state": "success", "target_url": "not a url"}, {"target_url": ["Enter a valid URL."]}),
    ],
)
def test_post_check_validation(
    pw: FakePatchwork, http: httpx.Client, body: dict[str, str], errors: object
) -> None:
    pw.add_series_from_mbox(mbox("net-foo-v1.mbox"))
    r = http.post(f"{pw.url}/api/1.3/patches/1/checks/", json=body, headers=auth(pw.token))
    assert r.status_code == 400
    assert r.json() == errors
    assert pw.checks_for(1) == []


def test_post_check_auth(pw: FakePatchwork, http: httpx.Client) -> None:
    pw.add_series_from_mbox(mbox("net-foo-v1.mbox"))
    other = pw.add_user("someone")
    url = f"{pw.url}/api/1.3/patches/1/checks/"
    body = {"state": "success", "context": "x"}
    no_perm = {"detail": "You do not have permission to perform this action."}
    cases = [
        ({}, no_perm),
        ({"Authorization": "Token " + "0" * 40}, {"detail": "Invalid token."}),
        ({"Authorization": f"Bearer {pw.token}"}, no_perm),
        (auth(other), no_perm),
    ]
    for headers, detail in cases:
        r = http.post(url, json=body, headers=headers)
        assert (r.status_code, r.json()) == (403, detail), headers
    assert http.post(url, json=body, auth=("ci-bot", "ci-bot")).status_code == 201
    r = http.post(f"{pw.url}/api/1.3/patches/999/checks/", json=body, headers=auth(pw.token))
    assert (r.status_code, r.json()) == (404, {"detail": "No Patch matches the given query."})
    assert http.get(f"{pw.url}/api/1.3/users/").status_code == 403
    assert http.put(f"{url}1/", json=body, headers=auth(pw.token)).status_code == 405


def test_check_list_filters_and_aggregate(pw: FakePatchwork, http: httpx.Client) -> None:
    pw.add_series_from_mbox(mbox("net-foo-v1.mbox"))
    url = f"{pw.url}/api/1.3/patches/1/checks/"
    patch = f"{pw.url}/api/1.3/patches/1/"
    assert http.get(patch).json()["check"] == "pending"
    for state, ctx in [("success", "build"), ("warning", "checkpatch"), ("fail", "default")]:
        http.post(url, json={"state": state, "context": ctx}, headers=auth(pw.token))
    assert http.get(patch).json()["check"] == "fail"
    http.post(url, json={"state": "success", "context": "default"}, headers=auth(pw.token))
    assert http.get(patch).json()["check"] == "warning"
    http.post(url, json={"state": "success", "context": "checkpatch"}, headers=auth(pw.token))
    assert http.get(patch).json()["check"] == "success"
    assert [c["id"] for c in http.get(url).json()] == [1, 2, 3, 4, 5]
    assert [c["id"] for c in http.get(url + "?context=checkpatch").json()] == [2, 5]
    assert http.get(url + "?state=success").json() == []  # the filter wants an integer
    assert [c["id"] for c in http.get(url + "?state=1").json()] == [1, 4, 5]
    ev = http.get(f"{pw.url}/api/1.3/events/?category=check-created").json()[0]
    assert ev["payload"]["check"]["id"] == 5 and ev["actor"]["username"] == "ci-bot"
    assert ev["payload"]["patch"]["id"] == 1


# ---------------------------------------------------------------- test controls


def test_fail_next_and_request_log(pw: FakePatchwork, http: httpx.Client) -> None:
    pw.fail_next(2, status=502)
    assert http.get(f"{pw.url}/api/1.3/").status_code == 502
    assert http.get(f"{pw.url}/api/1.3/").status_code == 502
    assert http.get(f"{pw.url}/api/1.3/").status_code == 200
    assert [r.status for r in pw.requests] == [502, 502, 200]
    pw.clear_log()
    http.get(f"{pw.url}/api/1.3/events/", params={"since": "2026-11-22T01:00:00"})
    [req] = pw.requests
    assert (req.method, req.path, req.params["since"]) == (
        "GET",
        "/api/1.3/events/",
        ["2026-11-22T01:00:00"],
    )


def test_fail_after_processing_keeps_side_effects(pw: FakePatchwork, http: httpx.Client) -> None:
    pw.add_series_from_mbox(mbox("net-foo-v1.mbox"))
    pw.fail_next(1, status=500, method="POST", after=True)
    r = http.post(
        f"{pw.url}/api/1.3/patches/1/checks/", json={"state": "success"}, headers=auth(pw.token)
    )
    assert r.status_code == 500
    assert len(pw.checks_for(1)) == 1


def test_delay_next(pw: FakePatchwork, http: httpx.Client) -> None:
    pw.delay_next(1, 0.3)
    start = time.monotonic()
    assert http.get(f"{pw.url}/api/").status_code == 200
    assert time.monotonic() - start >= 0.3
    with pytest.raises(httpx.ReadTimeout):
        pw.delay_next(1, 2.0)
        http.get(f"{pw.url}/api/", timeout=0.2)


def test_real_clock_gives_local_naive_microseconds() -> None:
    with FakePatchwork() as fake, httpx.Client() as http:
        fake.add_series_from_mbox(mbox("net-foo-v1.mbox"))
        date = http.get(f"{fake.url}/api/events/?per_page=1").json()[0]["date"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?", date)
        local = datetime.fromisoformat(date)
        expected = datetime.now(UTC).replace(tzinfo=None) + fake.tz_offset
        assert abs((expected - local).total_seconds()) < 60
