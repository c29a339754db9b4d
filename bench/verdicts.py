"""How far the contest verdicts can be trusted: a simulated history of test branches run
through the real daemon (Patchwork emulator → ingest → checks → brancher → local
executor → results store → flake rule → culprit search → checks posted).

Each round two series arrive; some are culprits (they plant a marker that makes one
subtest, or a whole test, fail), the rest are innocent. Three tests are flaky at 5, 15
and 30 % per attempt; the stream's build step fails now and then (an infrastructure
fault, on branch runs and probes alike). A simulated maintainer then acts on the posted
verdicts: a series read `fail` is sent back (changes requested), the others are accepted
and merged into the base, so a culprit patchci missed breaks the base until a fix
series (also simulated) undoes it. Ground truth comes from the markers: series X broke
test T on a branch when it is the first of the branch's series to make a subtest of T
fail that did not fail on the previous branch, and the base does not fail it.

Figures: precision and recall of "series X broke test T", the false-fail rate on innocent
series, infrastructure faults blamed (must be 0), probes per culprit found; and, from the
same runs, the same figures for the old rule (every series of a branch with a regression
reads `fail`) as the baseline.

    python -m bench verdicts [--branches 500] [--seed 1]
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from patchci.config import PatchworkSource, Settings, build_settings
from patchci.daemon import make_client, open_store, run_cycle
from patchci.db.culprits import CulpritStore
from patchci.db.results import ResultsStore
from patchci.db.store import Store
from patchci.devtools.pwemu import FakePatchwork
from patchci.executor.base import RUN_ERROR
from patchci.git import Git
from patchci.report.contest import FAIL, REGRESSION, ContestSummary, attribute
from patchci.report.contest import summarise as summarise_runs
from patchci.service.culprits import attributions
from patchci.service.runs import contest_summary
from patchci.sources.patchwork import PatchworkClient

SOB = "Signed-off-by: Bench <bench@example.com>"
TESTS = "tools/testing/selftests/net"
SUBTESTS = 3
BREAKABLE = ("alpha", "beta", "gamma", "delta", "eps", "zeta")
FLAKY = {"flaky5": 0.05, "flaky15": 0.15, "flaky30": 0.30}
T0 = datetime(2027, 1, 4, 0, 0, tzinfo=UTC)  # on the 3-hour grid
# the build step (the executor's own, before any test) fails 3 % of the time: ours
BUILD = ("sh", "-c", 'test "$(od -An -N1 -tu1 /dev/urandom | tr -d " ")" -ge 8')


def _script(name: str, flake: float) -> str:
    noise = int(flake * 256)
    lines = ["#!/bin/sh", 'echo "TAP version 13"', f'echo "1..{SUBTESTS}"']
    for s in range(1, SUBTESTS + 1):
        flaky = (f' || [ "$(od -An -N1 -tu1 /dev/urandom | tr -d " ")" -lt {noise} ]'
                 if flake and s == 1 else "")  # fmt: skip
        lines.append(
            f"if grep -qsE 'BREAK-{name}-(s{s}|all)( |$)' ../../../../drivers/net/*.c{flaky}; "
            f'then echo "not ok {s} s{s}"; else echo "ok {s} s{s}"; fi'
        )
    return "\n".join(lines) + "\n"


@dataclass
class Sim:
    root: Path
    git: Git
    emu: FakePatchwork
    client: PatchworkClient
    store: Store
    settings: Settings
    rng: random.Random
    n: int = 0
    markers: dict[int, set[str]] = field(default_factory=dict)  # pw series → markers
    files: dict[int, str] = field(default_factory=dict)  # pw series → its file
    mboxes: dict[int, bytes] = field(default_factory=dict)
    broken_base: dict[str, int] = field(default_factory=dict)  # marker → pw series merged

    def series(self, markers: set[str], fix: str | None = None) -> int:
        """A one-patch series: a new file (with *markers* in it), or the fix that removes
        the marker *fix* from the merged file that has it."""
        self.n += 1
        if fix is not None:
            path = self.files[self.broken_base[fix]]
            text = (self.git.repo / path).read_text().replace(fix, "fixed")
            subject = f"net: fix what {Path(path).stem} broke"
        else:
            path = f"drivers/net/s{self.n}.c"
            text = f"int s{self.n}; /* {' '.join(sorted(markers))} */\n"
            subject = f"net: add s{self.n}"
        (self.git.repo / path).parent.mkdir(parents=True, exist_ok=True)
        (self.git.repo / path).write_text(text)
        self.git.add_all()
        self.git.commit(f"{subject}\n\n{SOB}")
        mbox = self.git.run("format-patch", "--stdout", "-1", "HEAD",
                            "--subject-prefix=PATCH net-next").stdout.encode()  # fmt: skip
        self.git.run("reset", "--quiet", "--hard", "HEAD~1")
        pw = self.emu.add_series_from_mbox([mbox])
        self.markers[pw] = set() if fix else markers
        self.files[pw] = path
        self.mboxes[pw] = mbox
        return pw

    def merge(self, pw: int) -> None:
        """The maintainer applies the series to the base."""
        for pid, _ in self.emu.series_patches(pw):
            self.emu.set_patch_state(pid, "accepted")
        res = self.git.run("am", "--quiet", "-3", check=False, input=self.mboxes[pw])
        if not res.ok:
            self.git.run("am", "--abort", check=False)
            return
        for m in self.markers.get(pw, ()):
            self.broken_base[m] = pw
        fixed = [m for m, s in self.broken_base.items()
                 if m not in (self.git.repo / self.files[s]).read_text()]  # fmt: skip
        for m in fixed:
            del self.broken_base[m]

    def send_back(self, pw: int) -> None:
        for pid, _ in self.emu.series_patches(pw):
            self.emu.set_patch_state(pid, "changes-requested")


def _failing(markers: set[str]) -> set[tuple[str, str]]:
    """(test, subtest) pairs the markers make fail."""
    out = set()
    for m in markers:
        _, test, sub = m.split("-")
        subs = [f"s{i}" for i in range(1, SUBTESTS + 1)] if sub == "all" else [sub]
        out |= {(test, s) for s in subs}
    return out


@dataclass
class Tally:
    truth: int = 0
    found: int = 0
    blamed: int = 0
    naive_blamed: int = 0
    naive_right: int = 0
    innocent: int = 0
    innocent_failed: int = 0
    infra_branches: int = 0
    infra_blamed: int = 0
    probes: list[int] = field(default_factory=list)
    upstream: int = 0
    wrong: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)


def _evaluate(sim: Sim, branch: str, prev_failing: set[tuple[str, str]], t: Tally) -> set[tuple[str, str]]:
    results = ResultsStore(sim.store.engine)
    row = results.branch(branch)
    runs = results.branch_results(branch)
    pw_of = {sid: int(sim.store.series_row(sid).key) for sid in row.series}
    base_failing = _failing(set(sim.broken_base))
    # ground truth: the first series to make a subtest fail that the previous branch did not
    failing, truth = set(base_failing), set()
    for sid in row.series:
        new = _failing(sim.markers.get(pw_of[sid], set())) - failing
        for test, _sub in new - prev_failing:
            truth.add((sid, test))
        failing |= new
    infra = any(r.status == RUN_ERROR for r in runs)
    t.infra_branches += infra
    if infra:
        truth = set()  # nothing could be seen: not counted against recall
        failing = prev_failing
    summary = contest_summary(results, branch, sim.settings)
    searches = attributions(CulpritStore(sim.store.engine), branch)
    blamed = set()
    for sid in row.series:
        mine = attribute(summary, sid, searches)
        for f in mine.findings:
            if f.kind == REGRESSION:
                blamed.add((sid, f.name.removesuffix("-sh")))
        culprit = any(s == sid for s, _ in truth)
        if not culprit:
            t.innocent += 1
            if mine.state == FAIL:
                t.innocent_failed += 1
                t.infra_blamed += infra
    for s in CulpritStore(sim.store.engine).searches(branch):
        if s.status == "culprit":
            t.probes.append(len(s.steps))
        t.upstream += s.status == "base"
    t.truth += len(truth)
    t.blamed += len(blamed)
    t.found += len(blamed & truth)
    t.wrong += [f"{branch}: series {s} blamed for {x}" for s, x in sorted(blamed - truth)]
    why = {(s.group, s.name): f"{s.status}: {s.reason}" for s in
           CulpritStore(sim.store.engine).searches(branch)}  # fmt: skip
    t.missed += [f"{branch}: series {s} broke {x}; "
                 f"{why.get(('net', x + '-sh'), 'no search: ' + _kind_of(summary, x))}"
                 for s, x in sorted(truth - blamed)]  # fmt: skip
    # the old rule: every series of the branch fails for every regression
    prev = results.previous_branch(branch)
    old = summarise_runs(branch, runs, results.branch_results(prev.name) if prev else None)
    regressed = {f.name.removesuffix("-sh") for f in old.findings if f.kind == REGRESSION}
    naive = {(sid, x) for sid in row.series for x in regressed}
    t.naive_blamed += len(naive)
    t.naive_right += len(naive & truth)
    # the maintainer acts on the posted verdicts
    for sid in row.series:
        verdict = attribute(summary, sid, searches)
        if verdict.state == FAIL:
            sim.send_back(pw_of[sid])
        elif sim.rng.random() < 0.7:
            sim.merge(pw_of[sid])
    return failing


def _kind_of(summary: ContestSummary, test: str) -> str:
    kinds = [f"{f.kind} ({f.note})" if f.note else f.kind
             for f in summary.findings if f.name == f"{test}-sh"]  # fmt: skip
    return ", ".join(kinds) or "not failing"


def _settings(root: Path, emu: FakePatchwork, tree: Path) -> Settings:
    return build_settings({
        "data_dir": str(root / "data"),
        "sources": [{"name": "pw", "type": "patchwork", "url": emu.url, "project": "bench",
                     "token_env": "BENCH_PW_TOKEN"}],
        "trees": [{"name": "net-next", "path": str(tree), "branch": "main",
                   "tags": ["net-next"], "checks": ["signed_off_by"]}],
        "streams": [{"name": "nn", "tree": "net-next", "tests_dir": TESTS, "retries": 1,
                     "build_command": list(BUILD), "test_timeout": 30, "keep_days": 1}],
    }, env={})  # fmt: skip


def _tree(root: Path) -> Git:
    git = Git.init(root)
    (root / "drivers/net").mkdir(parents=True)
    (root / "drivers/net/core.c").write_text("int core;\n")
    for name in (*BREAKABLE, *FLAKY):
        p = root / TESTS / f"{name}.sh"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(_script(name, FLAKY.get(name, 0.0)))
        p.chmod(0o755)
    git.add_all()
    git.commit("net: import\n\n" + SOB)
    return git


def simulate(branches: int, seed: int, work: Path, culprit_rate: float = 0.12) -> Tally:
    rng = random.Random(seed)
    for var in ("AUTHOR", "COMMITTER"):  # the Signed-off-by of every series is the author's
        os.environ[f"GIT_{var}_NAME"], os.environ[f"GIT_{var}_EMAIL"] = "Bench", "bench@example.com"
    with FakePatchwork(project="bench", project_name="Bench") as emu:
        os.environ["BENCH_PW_TOKEN"] = emu.token
        git = _tree(work / "tree")
        settings = _settings(work, emu, git.repo)
        store = open_store(settings)
        src = settings.sources[0]
        assert isinstance(src, PatchworkSource)
        client = make_client(src)
        sim = Sim(work, git, emu, client, store, settings, rng)
        t = Tally()
        failing: set[tuple[str, str]] = set()
        for k in range(branches):
            when = T0 + timedelta(hours=3 * k)
            for _ in range(2):
                if rng.random() < culprit_rate:
                    test = rng.choice(BREAKABLE)
                    sub = "all" if rng.random() < 0.5 else f"s{rng.randint(1, SUBTESTS)}"
                    sim.series({f"BREAK-{test}-{sub}"})
                else:
                    sim.series(set())
            for m in list(sim.broken_base):
                if rng.random() < 0.5:
                    sim.series(set(), fix=m)
            run_cycle(store, settings, {"pw": client}, now=when - timedelta(hours=1))
            run_cycle(store, settings, {"pw": client}, now=when)
            newest = ResultsStore(store.engine).stream_branches("nn", 1)
            if newest and newest[-1].date == when:
                failing = _evaluate(sim, newest[-1].name, failing, t)
        client.close()
        store.close()
    return t


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:.1f} %" if b else "n/a"


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench verdicts")
    ap.add_argument("--branches", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    args, _ = ap.parse_known_args(argv)
    logging.disable(logging.WARNING)  # thousands of expected warnings; restored after
    start = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="patchci-bench-verdicts-") as tmp:
            t = simulate(args.branches, args.seed, Path(tmp))
    finally:
        logging.disable(logging.NOTSET)
    took = time.monotonic() - start
    precision = t.found / t.blamed if t.blamed else 1.0
    recall = t.found / t.truth if t.truth else 1.0
    naive_p = t.naive_right / t.naive_blamed if t.naive_blamed else 1.0
    print(f"verdicts: {args.branches} branches in {took:.0f} s (seed {args.seed})")
    print(f"  culprits (series, test) to find: {t.truth}; blamed: {t.blamed}, right: {t.found}")
    print(f"  precision {precision:.1%} (target >= 95 %), recall {recall:.1%} (target >= 90 %)")
    print(f"  false fail on innocent series: {_pct(t.innocent_failed, t.innocent)} "
          f"({t.innocent_failed} of {t.innocent})")  # fmt: skip
    print(f"  infrastructure faults: {t.infra_branches} branch runs; series blamed for them: "
          f"{t.infra_blamed} (must be 0)")  # fmt: skip
    mean = sum(t.probes) / len(t.probes) if t.probes else 0.0
    print(f"  probes per culprit found: mean {mean:.2f}, max {max(t.probes, default=0)}; "
          f"bisected to the base: {t.upstream}")  # fmt: skip
    ratio = precision / naive_p if naive_p else float("inf")
    print(f"  baseline (every series of a failing branch fails): precision {naive_p:.1%}, "
          f"{t.naive_blamed} blames; patchci/baseline precision ratio {ratio:.2f}x")  # fmt: skip
    for line in t.wrong[:10]:
        print(f"  wrong: {line}")
    for line in t.missed[:10]:
        print(f"  missed: {line}")
