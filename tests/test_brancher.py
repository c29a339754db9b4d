"""Brancher: gate planning, due times, naming, reaping, cutting branches in git, JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from patchci.brancher import (
    Candidate,
    Manifest,
    Plan,
    StreamConfig,
    branch_name,
    branches_info_json,
    branches_json,
    branches_to_reap,
    cut_branch,
    date_from_name,
    first_conflict_line,
    is_due,
    list_branches,
    manifest_from_dict,
    manifest_to_dict,
    plan_branch,
    reap,
    series_outcomes,
    write_json_atomic,
)
from patchci.errors import InfraError
from patchci.git import Git
from patchci.model import CheckResult, Outcome
from patchci.sources.mail import parse_mail
from tests.gitrepo import commit_file, format_patches, make_repo

P, W, F, E = Outcome.PASS, Outcome.WARN, Outcome.FAIL, Outcome.ERROR
T0 = datetime(2026, 8, 20, 3, 0, tzinfo=UTC)
GATES = ("apply", "build")
STREAM = StreamConfig(name="net-next", prefix="net-next-", base_branch="main", gate_checks=GATES)


def cand(
    sid: int, outcomes: dict[str, Outcome], *, hours: int = 0, state: str = "checked"
) -> Candidate:
    return Candidate(sid, f"series {sid}", T0 - timedelta(hours=hours), outcomes, state)


# -- naming and due times --------------------------------------------------------------------


def test_branch_name_is_prefix_plus_utc_minute() -> None:
    assert branch_name("net-next-", T0) == "net-next-2026-08-20--03-00"
    # 05:30 at +02:30 is 03:00 UTC; a naive datetime is taken as UTC
    east = datetime(2026, 8, 20, 5, 30, 59, tzinfo=timezone(timedelta(hours=2, minutes=30)))
    assert branch_name("net-next-", east) == "net-next-2026-08-20--03-00"
    assert branch_name("hw-", datetime(2026, 1, 2, 13, 7)) == "hw-2026-01-02--13-07"
    assert branch_name("net-next-", T0)[:-18] == "net-next"  # NIPA's UI strips 18 characters


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("net-next-2026-08-20--03-00", T0),
        ("net-next-2026-08-20--03-00-extra", None),
        ("net-2026-08-20--03-00", None),
        ("net-next-2026-13-20--03-00", None),  # month 13
        ("net-next-hotfix", None),
    ],
)
def test_date_from_name(name: str, expected: datetime | None) -> None:
    assert date_from_name("net-next-", name) == expected


def h(hour: int, minute: int = 0, day: int = 20) -> datetime:
    return datetime(2026, 8, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "last", "every", "due"),
    [
        (h(3), None, 3, True),  # never cut: first slot on the grid
        (h(4), None, 3, False),  # off the grid
        (h(3, 59), None, 3, True),  # the whole hour is the slot
        (h(3), h(0), 3, True),
        (h(3, 20), h(3), 3, False),  # already cut this slot
        (h(6), h(3, 0), 3, True),
        (h(6), h(4), 3, False),  # only 2 hours since a late cut
        (h(9), h(4), 3, True),
        (h(0, day=21), h(21), 3, True),  # across midnight
        (h(5), h(4), 1, True),
        (h(5), h(5), 1, False),
        (h(12), h(0), 12, True),
        (h(6), h(0), 12, False),
        (h(7), None, 0, True),  # nonsense frequency counts as hourly
    ],
)
def test_is_due(now: datetime, last: datetime | None, every: int, due: bool) -> None:
    assert is_due(now, last, every) is due


# -- gate -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcomes", "accept_warn", "reason"),
    [
        ({"apply": P, "build": P}, True, None),
        ({"apply": P, "build": W}, True, None),
        ({"apply": P, "build": W}, False, "check build warned (gate accepts pass only)"),
        ({"apply": P, "build": F}, True, "check build failed"),
        ({"apply": P}, True, "missing check build"),
        ({}, True, "missing check apply"),
        ({"apply": P, "build": E}, True, "check build errored (infrastructure)"),
        ({"apply": P, "build": Outcome.CRASH}, True, "check build failed (crash)"),
        ({"apply": P, "build": Outcome.TIMEOUT}, True, "check build failed (timeout)"),
        ({"apply": P, "build": Outcome.PENDING}, True, "check build still pending"),
        ({"apply": P, "build": Outcome.SKIP}, True, "check build did not run (skip)"),
        ({"apply": F, "build": E}, True, "check apply failed"),  # first gate in order
        ({"apply": P, "build": P, "other": F}, True, None),  # non-gate checks do not matter
    ],
)
def test_gate(outcomes: dict[str, Outcome], accept_warn: bool, reason: str | None) -> None:
    stream = StreamConfig("s", "s-", "main", gate_checks=GATES, accept_warn=accept_warn)
    plan = plan_branch(stream, T0, [cand(1, outcomes)], None)
    if reason is None:
        assert [c.series_id for c in plan.include] == [1] and plan.excluded == ()
    else:
        assert plan.include == ()
        assert [(c.series_id, r) for c, r in plan.excluded] == [(1, reason)]


def test_plan_orders_by_date_then_id_and_filters_state() -> None:
    ok = {"apply": P, "build": P}
    cands = [
        cand(30, ok, hours=1),
        cand(10, ok, hours=1),
        cand(20, ok, hours=5),
        cand(40, ok, hours=9, state="accepted"),
        cand(50, {"apply": P}, hours=2),
        cand(10, ok, hours=1),  # duplicate id
    ]
    plan = plan_branch(STREAM, h(3, 0), cands, h(0))
    assert plan == Plan(
        name="net-next-2026-08-20--03-00",
        due=True,
        include=(cands[2], cands[1], cands[0]),
        excluded=((cands[3], "series state is accepted"), (cands[4], "missing check build")),
        date=T0,
    )
    assert plan_branch(STREAM, h(4, 0), cands, h(3)).due is False
    anystate = StreamConfig("s", "s-", "main", gate_checks=GATES, states=())
    assert [c.series_id for c in plan_branch(anystate, T0, cands, None).include] == [40, 20, 10, 30]


def test_series_outcomes_takes_worst_per_check() -> None:
    results = [
        CheckResult("build", P, "ok", 0),
        CheckResult("build", W, "warn", 1),
        CheckResult("apply", P, "ok"),
        CheckResult("sob", P, "ok", 0),
        CheckResult("sob", F, "missing", 1),
        CheckResult("sob", E, "tool broke", 2),
    ]
    assert series_outcomes(results) == {"build": W, "apply": P, "sob": F}


def test_branches_to_reap_by_age_and_prefix() -> None:
    now = h(12)
    existing = [
        ("net-next-2026-08-14--09-00", h(9, day=14)),
        ("net-next-2026-08-15--06-00", h(6, day=15)),  # 5 days 6 hours old
        ("net-next-2026-08-15--12-00", h(12, day=15)),  # exactly 5 days: kept
        ("net-next-2026-08-19--12-00", h(12, day=19)),
        ("net-next-hw-2026-08-01--00-00", h(0, day=1)),  # another stream
        ("net-next-hotfix", h(0, day=1)),  # not ours
        ("net-2026-08-01--00-00", h(0, day=1)),
    ]
    assert branches_to_reap(existing, "net-next-", now, 5) == [
        "net-next-2026-08-14--09-00",
        "net-next-2026-08-15--06-00",
    ]
    assert branches_to_reap(existing, "net-next-", now, 30) == []
    assert branches_to_reap(existing, "net-next-hw-", now, 5) == ["net-next-hw-2026-08-01--00-00"]


# -- git ----------------------------------------------------------------------------------------

FILES = {"README": "hello\n", "a.c": "a1\na2\na3\n", "b.c": "b1\nb2\nb3\n", "c.c": "c1\nc2\nc3\n"}


def series_mbox(git: Git, branch: str, changes: list[tuple[str, str]], base: str = "main") -> bytes:
    """Commit *changes* (file, new content) on a new side branch and format them as a
    series mbox; the repository is left on main."""
    git.run("checkout", "-q", "-b", branch, base)
    for i, (name, content) in enumerate(changes):
        commit_file(
            git, name, content, f"{branch}: change {name} ({i})\n\nSigned-off-by: J <j@x.org>"
        )
    mails = format_patches(git, f"{base}..{branch}", prefix="PATCH net-next")
    git.run("checkout", "-q", "main")
    assert all(parse_mail(m).has_diff for m in mails)
    return b"".join(mails)


def state(git: Git) -> tuple[str, ...]:
    return (
        git.run("symbolic-ref", "HEAD").stdout,
        git.run("rev-parse", "HEAD").stdout,
        git.run("status", "--porcelain", "--untracked-files=all").stdout,
        *(p.read_text() for p in sorted(git.repo.glob("*.c"))),
    )


@pytest.fixture
def repo(tmp_path: Path) -> Git:
    return make_repo(tmp_path / "net-next", FILES)


def plan_for(ids: list[int], when: datetime = T0) -> Plan:
    ok = {"apply": P, "build": P}
    return plan_branch(STREAM, when, [cand(i, ok, hours=10 - i) for i in ids], None)


def show(git: Git, rev: str, path: str) -> str:
    return git.run("show", f"{rev}:{path}").stdout


def test_two_series_apply(repo: Git, tmp_path: Path) -> None:
    m1 = series_mbox(repo, "s1", [("a.c", "a1\nA2\na3\n"), ("c.c", "c1\nc2\nC3\n")])
    m2 = series_mbox(repo, "s2", [("b.c", "b1\nB2\nb3\n")])
    main = repo.rev_parse("main")
    before = state(repo)
    m = cut_branch(repo, plan_for([1, 2]), STREAM, {1: m1, 2: m2}, tmp_path / "work")
    assert (m.name, m.stream, m.date) == ("net-next-2026-08-20--03-00", "net-next", T0)
    assert m.series == (1, 2) and m.left_out == () and m.merges == {}
    assert m.base == main and m.new_changes is True
    assert repo.rev_parse(f"refs/heads/{m.name}") == m.head
    assert repo.run("rev-list", "--count", f"{main}..{m.head}").stdout.strip() == "3"
    assert show(repo, m.name, "a.c") == "a1\nA2\na3\n"
    assert show(repo, m.name, "b.c") == "b1\nB2\nb3\n"
    assert show(repo, m.name, "c.c") == "c1\nc2\nC3\n"
    # the user's checkout (branch, HEAD, files) is as it was and the worktree is gone
    assert state(repo) == before
    assert repo.worktrees() == [repo.repo]
    assert not (tmp_path / "work" / m.name).exists()


def test_conflicting_series_left_out_with_reason(repo: Git, tmp_path: Path) -> None:
    m1 = series_mbox(repo, "s1", [("a.c", "a1\nX\na3\n")])
    m2 = series_mbox(repo, "s2", [("a.c", "a1\nY\na3\n")])
    m3 = series_mbox(repo, "s3", [("b.c", "b1\nB2\nb3\n")])
    before = state(repo)
    m = cut_branch(repo, plan_for([1, 2, 3]), STREAM, {1: m1, 2: m2, 3: m3}, tmp_path / "w")
    assert m.series == (1, 3)
    assert m.left_out == (
        (2, "does not apply on top of net-next-2026-08-20--03-00: "
            "CONFLICT (content): Merge conflict in a.c"),
    )  # fmt: skip
    assert show(repo, m.name, "a.c") == "a1\nX\na3\n"
    assert show(repo, m.name, "b.c") == "b1\nB2\nb3\n"
    assert state(repo) == before


def test_missing_mbox_and_garbage_are_left_out(repo: Git, tmp_path: Path) -> None:
    m1 = series_mbox(repo, "s1", [("a.c", "a1\nX\na3\n")])
    m = cut_branch(repo, plan_for([1, 2, 3]), STREAM, {1: m1, 3: b"not a patch\n"}, tmp_path)
    assert m.series == (1,)
    assert m.left_out[0] == (2, "no mbox available for the series")
    assert m.left_out[1][0] == 3
    assert m.left_out[1][1].startswith("does not apply on top of net-next-2026-08-20--03-00: ")


def test_merges_okay_and_fail(repo: Git, tmp_path: Path) -> None:
    # "net" touches c.c (merges cleanly); "net-bad" and main both change a.c line 2
    repo.run("checkout", "-q", "-b", "net")
    net = commit_file(repo, "c.c", "c1\nNET\nc3\n", "net fix")
    repo.run("checkout", "-q", "-b", "net-bad", "main")
    commit_file(repo, "a.c", "a1\nBAD\na3\n", "net conflicting fix")
    repo.run("checkout", "-q", "main")
    main = commit_file(repo, "a.c", "a1\nMAIN\na3\n", "next change")
    m1 = series_mbox(repo, "s1", [("b.c", "b1\nB2\nb3\n")])
    stream = StreamConfig(
        "net-next", "net-next-", "main", merges=("net", "net-bad", "no-such-ref"), gate_checks=GATES
    )
    before = state(repo)
    m = cut_branch(repo, plan_for([1]), stream, {1: m1}, tmp_path / "w")
    assert m.merges == {"net": "okay", "net-bad": "fail", "no-such-ref": "error"}
    parents = repo.run("log", "-1", "--format=%P", m.base).stdout.split()
    assert parents == [main, net]
    assert m.series == (1,)
    assert show(repo, m.name, "c.c") == "c1\nNET\nc3\n"
    assert show(repo, m.name, "a.c") == "a1\nMAIN\na3\n"
    assert repo.rev_parse(f"{m.name}~1") == m.base
    assert state(repo) == before


def test_rerere_resolution_is_used(repo: Git, tmp_path: Path) -> None:
    repo.run("config", "rerere.enabled", "true")
    repo.run("checkout", "-q", "-b", "net")
    commit_file(repo, "a.c", "a1\nNET\na3\n", "net fix")
    repo.run("checkout", "-q", "main")
    commit_file(repo, "a.c", "a1\nMAIN\na3\n", "next change")
    # resolve the conflict once by hand, as a maintainer would, and throw the merge away
    repo.run("checkout", "-q", "-b", "resolve")
    assert not repo.run("merge", "--no-edit", "net", check=False).ok
    (repo.repo / "a.c").write_text("a1\nBOTH\na3\n")
    repo.run("add", "a.c")
    repo.run("commit", "-q", "--no-edit")
    repo.run("checkout", "-q", "main")
    stream = StreamConfig("net-next", "net-next-", "main", merges=("net",), gate_checks=GATES)
    m = cut_branch(repo, plan_for([]), stream, {}, tmp_path / "w")
    assert m.merges == {"net": "resolved"}
    assert show(repo, m.name, "a.c") == "a1\nBOTH\na3\n"
    assert len(repo.run("log", "-1", "--format=%P", m.base).stdout.split()) == 2


def test_new_changes_against_previous_branch(repo: Git, tmp_path: Path) -> None:
    m1 = series_mbox(repo, "s1", [("a.c", "a1\nX\na3\n")])
    m2 = series_mbox(repo, "s2", [("b.c", "b1\nB2\nb3\n")])
    first = cut_branch(repo, plan_for([1], T0), STREAM, {1: m1}, tmp_path)
    same = cut_branch(repo, plan_for([1], T0 + timedelta(hours=3)), STREAM, {1: m1}, tmp_path)
    assert first.new_changes is True and same.new_changes is False
    more = cut_branch(
        repo, plan_for([1, 2], T0 + timedelta(hours=6)), STREAM, {1: m1, 2: m2}, tmp_path
    )
    assert more.new_changes is True
    assert [n for n, _ in list_branches(repo, "net-next-")] == [first.name, same.name, more.name]


def test_existing_branch_and_bad_base_are_infra_errors(repo: Git, tmp_path: Path) -> None:
    cut_branch(repo, plan_for([]), STREAM, {}, tmp_path)
    with pytest.raises(InfraError, match="already exists"):
        cut_branch(repo, plan_for([]), STREAM, {}, tmp_path)
    bad = StreamConfig("x", "x-", "no-such-branch")
    with pytest.raises(InfraError, match="base branch 'no-such-branch' not found"):
        cut_branch(repo, plan_for([]), bad, {}, tmp_path)
    assert repo.worktrees() == [repo.repo]


def test_push_and_reap(repo: Git, tmp_path: Path) -> None:
    remote = Git(tmp_path / "remote.git")
    remote.repo.mkdir()
    remote.run("init", "-q", "--bare")
    repo.run("remote", "add", "pub", str(remote.repo))
    stream = StreamConfig("net-next", "net-next-", "main", gate_checks=GATES, push_remote="pub")
    old = cut_branch(repo, plan_for([], T0 - timedelta(days=6)), stream, {}, tmp_path)
    new = cut_branch(repo, plan_for([], T0), stream, {}, tmp_path)
    assert remote.rev_parse(f"refs/heads/{old.name}") == old.head
    assert remote.rev_parse(f"refs/heads/{new.name}") == new.head
    doomed = branches_to_reap(list_branches(repo, "net-next-"), "net-next-", T0, 5)
    assert doomed == [old.name]
    assert reap(repo, doomed, remote="pub") == [old.name]
    assert repo.rev_parse(f"refs/heads/{old.name}") is None
    assert remote.rev_parse(f"refs/heads/{old.name}") is None
    assert remote.rev_parse(f"refs/heads/{new.name}") == new.head


def test_a_failed_push_keeps_the_cut_branch(
    repo: Git, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo.run("remote", "add", "gone", str(tmp_path / "no-such-remote.git"))
    stream = StreamConfig("net-next", "net-next-", "main", gate_checks=GATES, push_remote="gone")
    m = cut_branch(repo, plan_for([]), stream, {}, tmp_path)
    assert repo.rev_parse(f"refs/heads/{m.name}") == m.head  # cut; tested and stored next
    assert "push to gone failed" in caplog.text


def test_reap_refuses_checked_out_branch(repo: Git) -> None:
    name = "net-next-2026-01-01--00-00"
    repo.run("branch", name)
    repo.run("checkout", "-q", name)
    assert reap(repo, [name, "net-next-2026-01-02--00-00"]) == []
    assert repo.rev_parse(f"refs/heads/{name}") is not None


def test_first_conflict_line() -> None:
    out = "Applying: x\nerror: patch failed: a.c:1\nerror: a.c: patch does not apply\nPatch failed at 0001 x\n"
    assert first_conflict_line(out) == "error: patch failed: a.c:1"
    assert first_conflict_line("Applying: x\nPatch failed at 0001 x\n") == "Patch failed at 0001 x"
    assert first_conflict_line("  \n") == "no output from git"


# -- JSON -------------------------------------------------------------------------------------


def manifest(name: str = "net-next-2026-08-20--03-00", when: datetime = T0) -> Manifest:
    return Manifest(
        name=name,
        stream="net-next",
        date=when,
        base="a" * 40,
        merges={"https://git.example/net.git main": "okay"},
        series=(101, 102),
        left_out=((103, "does not apply on top of x: CONFLICT (content): Merge conflict in a.c"),),
        head="b" * 40,
        new_changes=True,
    )


def test_manifest_round_trip() -> None:
    m = manifest()
    d = manifest_to_dict(m)
    assert manifest_from_dict(json.loads(json.dumps(d))) == m
    assert d["date"] == "2026-08-20T03:00:00+00:00"
    with pytest.raises(ValueError, match="lacks key 'head'"):
        manifest_from_dict({k: v for k, v in d.items() if k != "head"})
    with pytest.raises(ValueError, match="malformed"):
        manifest_from_dict({**d, "date": "yesterday"})


def test_nipa_json_formats(tmp_path: Path) -> None:
    later = manifest("net-next-2026-08-20--06-00", T0 + timedelta(hours=3))
    ms = [later, manifest()]
    branches = branches_json(ms, "https://git.example/net-next-ci.git")
    assert branches == [
        {
            "branch": "net-next-2026-08-20--03-00",
            "date": "2026-08-20T03:00:00+00:00",
            "base": "a" * 40,
            "url": "https://git.example/net-next-ci.git net-next-2026-08-20--03-00",
        },
        {
            "branch": "net-next-2026-08-20--06-00",
            "date": "2026-08-20T06:00:00+00:00",
            "base": "a" * 40,
            "url": "https://git.example/net-next-ci.git net-next-2026-08-20--06-00",
        },
    ]
    info = branches_info_json(ms)
    assert info["net-next-2026-08-20--03-00"] == {
        "base-pulls": {"https://git.example/net.git main": "okay"},
        "series": [101, 102],
        "prs": [],
        "extras": [],
        "new-changes": True,
    }
    out = tmp_path / "out" / "branches.json"
    write_json_atomic(out, branches)
    assert json.loads(out.read_text()) == branches
    assert not (tmp_path / "out" / "branches.json.new").exists()
    write_json_atomic(out, info)
    assert json.loads(out.read_text()) == info


def test_merge_fetches_another_repository(repo: Git, tmp_path: Path) -> None:
    """A `merges` entry that is not a local ref is fetched: "<url> <branch>" as NIPA's pull."""
    other = tmp_path / "net"
    repo.run("clone", "-q", str(repo.repo), str(other))
    net = Git(other)
    net.run("checkout", "-q", "-b", "fixes")
    fix = commit_file(net, "c.c", "c1\nFIX\nc3\n", "net: fix c")
    spec = f"{other} fixes"
    stream = StreamConfig("net-next", "net-next-", "main", merges=(spec,), gate_checks=GATES)
    m = cut_branch(repo, plan_for([]), stream, {}, tmp_path / "w")
    assert m.merges == {spec: "okay"}
    assert repo.is_ancestor(fix, m.head)
    assert show(repo, m.name, "c.c") == "c1\nFIX\nc3\n"
    assert branches_info_json([m])[m.name]["base-pulls"] == {spec: "okay"}


def test_a_series_whose_change_is_already_there_is_left_out(repo: Git, tmp_path: Path) -> None:
    """Two fixes for the same bug, the same change: `git am -3` applies the second as "No
    changes -- Patch already applied", adding no commit. The branch listed it anyway, so
    its series tips were off by one and the culprit search gave up ("fewer commits than
    series patches")."""
    m1 = series_mbox(repo, "s1", [("a.c", "a1\nFIX\na3\n")])
    m2 = series_mbox(repo, "s2", [("a.c", "a1\nFIX\na3\n")])
    m3 = series_mbox(repo, "s3", [("b.c", "b1\nB2\nb3\n")])
    m = cut_branch(repo, plan_for([1, 2, 3]), STREAM, {1: m1, 2: m2, 3: m3}, tmp_path / "w")
    assert m.series == (1, 3)
    (left,) = m.left_out
    assert left[0] == 2 and "already in the base or an earlier series" in left[1]
    assert repo.run("rev-list", "--count", f"{m.base}..{m.head}").stdout.strip() == "2"
