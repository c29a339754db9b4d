"""`patchci demo`: the whole pipeline on a bundled sample, with expected vs actual.

The sample series are posted to a local Patchwork emulator (same REST behaviour as a real
Patchwork 3.2 server); patchci ingests them from there exactly as it would from
patchwork.kernel.org, checks them, stores everything in SQLite and posts the checks back.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from patchci.config import Settings, build_settings
from patchci.daemon import make_client, open_store, run_cycle
from patchci.db.store import Store
from patchci.demo.check_samples import build_check_samples
from patchci.demo.series import Sample, build_samples, write_inbox
from patchci.demo.tree import build_tree
from patchci.devtools.pwemu import PatchworkEmulator
from patchci.errors import ConfigError
from patchci.model import CheckResult, Outcome, worst
from patchci.report.console import outcome_text, plain

TOKEN_ENV = "PATCHCI_DEMO_PW_TOKEN"
SOURCE = "demo-pw"
CHECKS = (
    "tree_selection", "apply", "signed_off_by", "fixes_tag", "series_format", "build",
    "cc_maintainers", "kdoc",
)  # fmt: skip
SHORT = {
    "tree_selection": "tree sel.",
    "signed_off_by": "SoB",
    "series_format": "format",
    "fixes_tag": "Fixes",
    "cc_maintainers": "Cc maint.",
}


def demo_settings(root: Path, pw_url: str) -> Settings:
    tree = str(root / "trees" / "demo")
    return build_settings(
        {
            "data_dir": str(root),
            "sources": [
                {
                    "name": SOURCE,
                    "type": "patchwork",
                    "url": pw_url,
                    "project": "demo",
                    "token_env": TOKEN_ENV,
                    "retries": 2,
                    "timeout": 10,
                }
            ],
            "trees": [
                {
                    "name": "net",
                    "path": tree,
                    "branch": "net",
                    "tags": ["net"],
                    "checks": list(CHECKS[2:]),
                },
                {
                    "name": "net-next",
                    "path": tree,
                    "branch": "main",
                    "tags": ["net-next"],
                    "paths": ["drivers/", "net/", "include/", "tools/testing/selftests/"],
                    "checks": list(CHECKS[2:]),
                },
            ],
            "checks": {
                "series_format": {"options": {"max_patches": 15}},
                # The demo tree has a plain Makefile: build in place, no O=, -Wall -Wextra.
                "build": {
                    "timeout": 300,
                    "options": {"build_dir": str(root / "build-cache"), "jobs": 2},
                },
            },
        },
        env={},
        origin="demo defaults",
    )


def _verdicts(results: Sequence[CheckResult]) -> dict[str, Outcome]:
    by: dict[str, list[Outcome]] = {}
    for r in results:
        by.setdefault(r.check, []).append(r.outcome)
    return {k: worst(v) for k, v in by.items()}


def _as_expected(
    sample: Sample, state: str, verdicts: dict[str, Outcome], defaults: dict[str, str]
) -> bool:
    if sample.expect_state != "checked":
        return state == sample.expect_state
    if state not in ("checked", "reported", "done"):
        return False
    for check in CHECKS:
        want = sample.expect.get(check, defaults.get(check, "pass"))
        got = verdicts.get(check)
        if check not in sample.expect and got is None:
            continue  # e.g. no per-patch checks after a failed apply
        if got is None or got.value != want:
            return False
    return True


COMPACT = {"tree_selection": "route", "signed_off_by": "SoB", "fixes_tag": "Fixes",
           "series_format": "format", "cc_maintainers": "Cc"}  # fmt: skip
# Below this many columns the one-column-per-check grid does not fit: rich shrank the
# sample column to nothing at <= 110. The checks then share one folded column.
WIDE = 132


def _series_table(
    store: Store,
    samples: Sequence[Sample],
    pw_ids: Sequence[int],
    defaults: dict[str, str],
    width: int = WIDE,
) -> tuple[Table, int]:
    wide = width >= WIDE
    t = Table(title="Sample series through the pipeline", title_justify="left")
    t.add_column("sample", overflow="fold", min_width=22 if wide else 16, ratio=None if wide else 2)
    t.add_column("state", no_wrap=wide, overflow="fold")
    t.add_column("tree", no_wrap=True)
    if wide:
        for c in CHECKS:
            t.add_column(SHORT.get(c, c), no_wrap=True)
    else:
        t.add_column("checks", overflow="fold", ratio=3)
    t.add_column("as expected" if wide else "ok?", no_wrap=True)
    bad = 0
    for sample, pw_id in zip(samples, pw_ids, strict=True):
        sid = store.find_series(SOURCE, str(pw_id))
        if sid is None:
            state, tree, verdicts = "not ingested", "-", {}
        else:
            row = store.series_row(sid)
            state, tree = row.state, row.tree or "-"
            verdicts = _verdicts(store.latest_results(sid))
        ok = _as_expected(sample, state, verdicts, defaults)
        bad += not ok
        cells = [
            outcome_text(verdicts[c]) if c in verdicts else Text("-", style="dim") for c in CHECKS
        ]
        if not wide:
            joined = Text()
            for c, cell in zip(CHECKS, cells, strict=True):
                joined.append(f"{COMPACT.get(c, c)}:")
                joined.append_text(cell)
                joined.append(" ")
            cells = [joined]
        t.add_row(
            plain(sample.label),
            plain(state),
            plain(tree),
            *cells,
            Text("yes", style="green") if ok else Text("NO", style="bold red"),
        )
    return t, bad


def _patchwork_table(emu: PatchworkEmulator, pw_ids: Sequence[int]) -> Table:
    t = Table(
        title="What Patchwork shows (checks per patch, newest per context)", title_justify="left"
    )
    t.add_column("patch", overflow="fold", max_width=52)
    t.add_column("checks", overflow="fold")
    for sid in pw_ids:
        for pid, name in emu.series_patches(sid):
            latest: dict[str, str] = {}
            for chk in emu.checks_for(pid):
                latest[chk.context] = chk.state
            cells = ", ".join(f"{k}={v}" for k, v in latest.items()) or "(none yet)"
            t.add_row(plain(name), plain(cells))
    return t


MARKER = ".patchci-demo"  # written into every directory the demo made


def _prepare_dir(root: Path, *, fresh: bool) -> None:
    """Start from an empty *root*, deleting a previous demo's only: `demo --dir DIR` once
    deleted a user's directory and everything in it."""
    if root.exists() and any(root.iterdir()):
        if not (root / MARKER).is_file():
            raise ConfigError(
                f"--dir {root}: exists and was not made by `patchci demo`; not deleting it "
                "(choose another --dir, or empty it yourself)"
            )
        if fresh:
            shutil.rmtree(root)
        else:  # --keep: the database and logs stay; the sample tree and the state of the
            # demo's flaky test are made anew
            for sub in ("trees/demo", "contest/state"):
                shutil.rmtree(root / sub, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("made by patchci demo; `patchci demo` may delete this directory\n")


def run_demo(root: Path, *, fresh: bool = True) -> int:
    # Wide enough for the grid even when piped (make demo | less).
    console = Console(width=None if sys.stdout.isatty() else 132)
    root = root.resolve()
    _prepare_dir(root, fresh=fresh)
    console.rule("[bold]patchci demo")
    with console.status("building the sample tree (C sources, MAINTAINERS, KTAP selftests)"):
        git = build_tree(root / "trees" / "demo")
        samples = build_samples(git) + build_check_samples(git)
        has_kdoc = (Path(git.repo) / "scripts" / "kernel-doc").exists()
        write_inbox(root / "mail" / "inbox.mbox", samples)
    console.print(f"sample tree: {git.repo}  (branches: net, main = net-next)")
    console.print(f"{len(samples)} sample series written to {root / 'mail' / 'inbox.mbox'}")
    with PatchworkEmulator(
        project="demo", project_name="Demo", list_id="netdev.vger.example.org"
    ) as emu:
        pw_ids = [emu.add_series_from_mbox(s.mbox) for s in samples]
        console.print(f"posted to a local Patchwork emulator at {emu.url} (project demo)")
        os.environ[TOKEN_ENV] = emu.token
        settings = demo_settings(root, emu.url)
        store = open_store(settings)
        clients = {SOURCE: make_client(settings.sources[0])}  # type: ignore[arg-type]
        with console.status("ingest → route → apply → checks → store → report"):
            first = run_cycle(store, settings, clients)
            second = run_cycle(store, settings, clients)
        console.print(
            f"first ingest: {first['new']} series stored, {first['checked']} checked, "
            f"{first['posted']} checks posted to Patchwork"
        )
        console.print(
            f"second ingest: {second['new']} new, {second['posted']} posted "
            "(nothing changed, nothing posted twice)"
        )
        if not has_kdoc:
            console.print(
                "kernel-doc: no kernel source tarball installed, kdoc skips "
                "(apt-get install linux-source-6.1)"
            )
        defaults = {"kdoc": "pass" if has_kdoc else "skip"}
        table, bad = _series_table(store, samples, pw_ids, defaults, console.width)
        console.print(table)
        console.print(_patchwork_table(emu, pw_ids))
        from patchci.demo.contest_demo import run_contest_demo

        contest_ok = run_contest_demo(root, store, settings, emu, console)
    console.print(f"database: {settings.db_url}")
    console.print(f"check logs: {settings.data_path / 'logs'}")
    console.print(f"show one series: patchci --data-dir {root} series <id>")
    if not bad and not contest_ok and not fresh:
        # The contest's expectations are those of a first branch: with --keep the earlier
        # runs are history, and a regression of the first run is a known failure now.
        console.print("[yellow]every sample series ended as expected; the contest verdicts "
                      "differ from a fresh run's because --keep kept the earlier runs[/]")  # fmt: skip
        return 0
    if bad or not contest_ok:
        console.print(
            f"[bold red]{bad} sample(s) did not end as expected; "
            f"contest as expected: {contest_ok}[/]"
        )
        return 1
    console.print("[green]every sample series ended as expected[/]")
    return 0
