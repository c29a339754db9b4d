"""Command line: subcommand → handler. The only module that exits the process.

Exit codes: 0 success, 1 the patch/tests failed, 2 infrastructure or usage error.
Handlers import what they need lazily so that `--help` works without a configuration, a
database or any optional tool.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from patchci import __version__
from patchci.errors import ConfigError, InfraError, NotFound, PatchciError

if TYPE_CHECKING:
    from patchci.config import Settings

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAIL, EXIT_INFRA = 0, 1, 2

Handler = Callable[[argparse.Namespace], int]

DESCRIPTION = """\
patchci: patch CI for projects that take patches by mail.

Ingests series (Patchwork, mbox, maildir, git format-patch directories), routes each to its
tree, applies it in a scratch worktree, runs checks and reports the results to Patchwork.
"""

EPILOG = """\
examples:
  patchci demo                               run the bundled demo end to end
  patchci check series.mbox --tree ~/net     check local patches against a local tree
  patchci -c netdev.toml ingest --once       one Patchwork poll: ingest, check, report
  patchci -c netdev.toml ingest              the same as a daemon
  patchci config check netdev.toml           validate a configuration file
  patchci ktap parse results.tap             print a KTAP result tree
"""


def _settings(args: argparse.Namespace, **extra: object) -> Settings:
    from patchci.config import load_settings

    overrides = {"data_dir": args.data_dir, "database_url": args.database_url, **extra}
    return load_settings(args.config, overrides=overrides)


# ---------------------------------------------------------------- handlers


def cmd_config_check(args: argparse.Namespace) -> int:
    from patchci.config import load_settings, path_problems

    s = load_settings(args.file)
    problems = path_problems(s)
    for line in problems:
        print(f"patchci: configuration error: {args.file}: {line}", file=sys.stderr)
    if problems:
        return EXIT_INFRA
    print(
        f"{args.file}: ok — {len(s.sources)} source(s), {len(s.trees)} tree(s), "
        f"database {s.db_url.split('://', 1)[0]}"
    )
    for t in s.trees:
        where = f"mirror of {t.url}" if t.url else str(s.tree_path(t))
        print(f"  tree {t.name}: {where}, base {t.base_ref}; tags {', '.join(t.tags) or t.name};"
              f" checks {', '.join(t.checks)}")  # fmt: skip
    for st in s.streams:
        execs = ", ".join(st.executors) or f"local run of {st.tests_dir}"
        print(f"  stream {st.name}: tree {st.tree}, every {st.every_hours} h; executors {execs}")
    for line in executor_notes(s):
        print(f"  {line}")
    from patchci.daemon import token_problems
    from patchci.sandbox import describe

    print(f"  sandbox: {describe(s.untrusted())}")
    for line in token_problems(s):
        print(f"  warning: {line}")
    return EXIT_OK


def executor_notes(s: Settings) -> list[str]:
    """What `config check` says about the vm executors: KVM or TCG, missing tools."""
    vms = [e for e in s.executors if e.kind == "vm"]
    if not vms:
        return []
    from patchci.executor.guesttools import absent_tools, install_hint
    from patchci.executor.kernel import build_problems
    from patchci.executor.kvm import kvm_status
    from patchci.executor.vm import missing_prerequisites

    kvm = kvm_status()
    out = [f"vm executors {', '.join(e.name for e in vms)}: "
           f"{'KVM' if kvm.usable else 'TCG (slower)'}: {kvm.reason}"]  # fmt: skip
    problems = [p for p in missing_prerequisites() if "kernel image" not in p]
    if any(e.kernel == "build" for e in vms):
        problems += build_problems()
    out += [f"warning: vm executors: {p}" for p in problems]
    absent = absent_tools()
    if absent:  # the guest runs on the host's root file system
        out.append(f"warning: vm executors: not on this host, so not in the VMs (tests that "
                   f"need them are ERROR): {install_hint(absent)}")  # fmt: skip
    return out


def cmd_expectations_check(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from patchci.analysis.expectations import load

    x = load(args.file)
    today = datetime.now(UTC).date()
    live, expired = x.live(today), x.expired(today)
    print(f"{args.file}: ok — {len(x.entries)} entries, {len(live)} in force, "
          f"{len(expired)} expired")  # fmt: skip
    for m in live:
        e = m.entry
        scope = ", ".join(f"{k} {v}" for k, v in (("tree", e.tree), ("stream", e.stream),
                          ("executor", e.executor), ("kernel", e.kernel)) if v)  # fmt: skip
        sub = f" [{e.subtest}]" if e.subtest else ""
        until = f" until {e.until}" if e.until else ""
        print(f"  {m.index}: {e.test}{sub}: {e.outcome}{' (' + scope + ')' if scope else ''}"
              f"{until}: {e.reason}")  # fmt: skip
    for m in expired:
        print(f"  warning: entry {m.index} ({m.entry.test}) expired on {m.entry.until}: it "
              f"no longer applies; renew its `until` or delete it")  # fmt: skip
    return EXIT_OK


def cmd_checks_list(args: argparse.Namespace) -> int:
    """Every check: kind, scope, what it does, its options, its tools found or missing."""
    import shutil
    from pathlib import Path

    from patchci.checks.registry import BUILTIN, STAGE_CHECKS, check_class

    tree = Path(args.tree).expanduser() if args.tree else None
    for name in STAGE_CHECKS:
        print(f"{name}: series, a pipeline stage (always run)")
    code = EXIT_OK
    for name in sorted(BUILTIN):
        cls = check_class(name)
        opts = ", ".join(sorted(cls.Options.model_fields)) or "-"
        tools = []
        for t in cls.tools:
            if "/" in t:
                state = ("found" if (tree / t).exists() else "MISSING") if tree else "in the tree"
            else:
                state = "found" if shutil.which(t) else "MISSING"
            tools.append(f"{t} ({state})")
            code = EXIT_INFRA if "MISSING" in state and args.strict else code
        print(f"{name}: {cls.scope.value}, {cls.description or '-'}; options: {opts}; "
              f"tools: {', '.join(tools) or 'none'}")  # fmt: skip
    return code


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from patchci.db.migrate import current, upgrade

    s = _settings(args)
    s.data_path.mkdir(parents=True, exist_ok=True)
    upgrade(s.db_url)
    print(f"database at revision {current(s.db_url)}")
    return EXIT_OK


def cmd_ktap_parse(args: argparse.Namespace) -> int:
    from patchci import ktap

    argv = [args.file] + (["--json"] if args.json else [])
    return ktap.cli(argv, sys.stdout)


def cmd_check(args: argparse.Namespace) -> int:
    from patchci.localcheck import run_local_check

    return run_local_check(args)


def cmd_ingest(args: argparse.Namespace) -> int:
    from patchci.daemon import run_ingest

    return run_ingest(_settings(args, progress=True), once=args.once, source=args.source)


def cmd_process(args: argparse.Namespace) -> int:
    from patchci.daemon import run_process

    return run_process(_settings(args, progress=True))


def cmd_requeue(args: argparse.Namespace) -> int:
    from patchci.daemon import requeue

    return requeue(_settings(args), args.ids)


def cmd_mail(args: argparse.Namespace) -> int:
    from patchci.service.mail import show_mail

    return show_mail(_settings(args), args.id)


def cmd_export(args: argparse.Namespace) -> int:
    from patchci.service.exports import cmd_export as run

    return run(_settings(args), args.format, args.branch, args.output, args.origin)


def cmd_series(args: argparse.Namespace) -> int:
    from patchci.daemon import show_series

    return show_series(_settings(args), args.id)


def cmd_branch(args: argparse.Namespace) -> int:
    from patchci.service.contest import cmd_branch_due, cmd_branch_now

    if args.now:
        return cmd_branch_now(_settings(args), args.stream)
    return cmd_branch_due(_settings(args), args.stream)


def cmd_contest(args: argparse.Namespace) -> int:
    from patchci.service.contest import cmd_contest_show

    return cmd_contest_show(_settings(args), args.branch)


def cmd_serve(args: argparse.Namespace) -> int:
    from patchci.web.serve import serve

    return serve(_settings(args), host=args.host, port=args.port)


def cmd_remotes_import(args: argparse.Namespace) -> int:
    from patchci.db.results import ResultsStore
    from patchci.service.remotes import import_remotes

    settings = _settings(args)
    if not settings.remotes:
        raise ConfigError("no [[remotes]] configured")
    results = ResultsStore.open(settings.db_url)
    try:
        stats = import_remotes(settings, results)
    finally:
        results.close()
    for r in settings.remotes:
        st = stats.get(r.name)
        if st is None:
            print(f"remote {r.name}: not reachable or not a manifest (see the log)")
        else:
            print(f"remote {r.name}: {st.imported} runs imported, {st.known} known, "
                  f"{st.foreign} of branches not cut here, {st.failed} unreadable")  # fmt: skip
    return 0 if len(stats) == len(settings.remotes) and not any(
        s.failed for s in stats.values()) else 2  # fmt: skip


def cmd_worker(args: argparse.Namespace) -> int:
    import os

    from pydantic import ValidationError

    from patchci.config import WorkerSettings, format_validation_error, load_worker_settings
    from patchci.worker.main import cmd_worker as run_worker

    path = args.worker_config or os.environ.get("PATCHCI_WORKER_CONFIG")
    overrides = {
        "name": args.name, "work_dir": args.work_dir, "server_url": args.server_url,
        "concurrency": args.concurrency,
        "queues": tuple(q for q in args.queues.split(",") if q) if args.queues else None,
    }  # fmt: skip
    if path:
        ws = load_worker_settings(path, overrides)
    else:
        try:
            ws = WorkerSettings.model_validate({k: v for k, v in overrides.items() if v})
        except ValidationError as e:
            raise ConfigError(f"worker: {format_validation_error(e)} (or give --worker-config)") from e
    level = "DEBUG" if args.verbose > 1 else "INFO"
    return run_worker(ws, Path(path) if path else None, loglevel=level)


def cmd_demo(args: argparse.Namespace) -> int:
    from patchci.demo.run import run_demo

    rc = run_demo(Path(args.dir), fresh=not args.keep)
    if args.serve:
        from patchci.config import load_settings
        from patchci.web.serve import serve

        settings = load_settings(None, overrides={"data_dir": str(Path(args.dir).resolve())})
        print(f"web UI: http://127.0.0.1:{args.port}/  (Ctrl-C to stop)", flush=True)
        serve(settings, host="127.0.0.1", port=args.port)
    else:
        print(f"web UI: patchci --data-dir {args.dir} serve  (then http://127.0.0.1:{args.port}/)")
    return rc


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="patchci",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"patchci {__version__}")
    p.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="deployment configuration (TOML); default: embedded defaults",
    )
    p.add_argument("--data-dir", metavar="DIR", help="override data_dir (env PATCHCI_DATA_DIR)")
    p.add_argument(
        "--database-url", metavar="URL", help="override database_url (env PATCHCI_DATABASE_URL)"
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="run the whole pipeline on the bundled demo and show results")
    d.add_argument(
        "--dir", default="demo-data", help="where the demo writes (default: %(default)s)"
    )
    d.add_argument("--keep", action="store_true", help="reuse an existing demo directory")
    d.add_argument("--serve", action="store_true", help="serve the web UI afterwards")
    d.add_argument("--port", type=int, default=8080, help="web UI port (default: %(default)s)")
    d.set_defaults(func=cmd_demo)

    i = sub.add_parser("ingest", help="poll sources, check new series, report (daemon by default)")
    i.add_argument("--once", action="store_true", help="one poll of every source, then exit")
    i.add_argument("--source", metavar="NAME", help="only this source")
    i.set_defaults(func=cmd_ingest)

    pr = sub.add_parser("process", help="check and report stored series that are not done yet")
    pr.set_defaults(func=cmd_process)

    c = sub.add_parser(
        "check",
        help="check local patches against a local tree and print a table",
        description="Apply PATH (an mbox, maildir, patch file or directory of git format-patch "
        "files) to TREE in a scratch worktree, run the checks and print a table. TREE itself "
        "is never modified. Exit 1 when a check fails, 2 on infrastructure errors.",
    )
    c.add_argument("path", help="mbox / maildir / .patch file / directory of patches")
    c.add_argument("--tree", required=True, help="local git tree to apply to")
    c.add_argument("--base", default="HEAD", help="commit to apply on (default: %(default)s)")
    c.add_argument("--name", help="tree name for routing/series_format (default: dir name)")
    c.add_argument(
        "--checks", help="comma-separated checks (default: the tree's in --config, else every check that "
        "applies to the tree: build with a Makefile, checkpatch/kdoc with the kernel's "
        "scripts, the MAINTAINERS checks with a MAINTAINERS file; the rest is listed as "
        "left out, with why)"
    )
    c.add_argument("--logs", metavar="DIR", help="keep check logs here (default: a temp dir)")
    c.set_defaults(func=cmd_check)

    b = sub.add_parser(
        "branch",
        help="cut the test branches that are due (or one now) and test them",
        description="For each stream whose branch is due (every_hours after its last one, on "
        "an hour divisible by every_hours, UTC), cut <prefix>YYYY-MM-DD--HH-MM from the "
        "stream's freshly fetched base plus every series whose gate checks passed (newer "
        "revisions and Patchwork states considered), run the stream's executors on it (a vm "
        "executor builds the branch's kernel and runs its selftests in VMs), store the "
        "results, post contest checks to Patchwork and delete the stream's "
        "branches older than keep_days. Meant for cron (e.g. every hour at minute 1); the "
        "ingest daemon does the same on its own. Prints 'no stream due' and exits 0 when "
        "there is nothing to do. With --now, cut and test a branch of each stream at once, "
        "due or not (no contest checks are posted). Exit 1 when a branch has regressions, "
        "2 when a stream could not be cut or tested.",
    )
    b.add_argument(
        "--now", action="store_true", help="cut a branch now even if none is due (no posting)"
    )
    b.add_argument("stream", nargs="?", help="stream name (default: every configured stream)")
    b.set_defaults(func=cmd_branch)

    ct = sub.add_parser("contest", help="show a test branch: series, results, verdict")
    ct.add_argument("branch", nargs="?", help="branch name (default: the newest)")
    ct.set_defaults(func=cmd_contest)

    sv = sub.add_parser("serve", help="serve the read-only web UI and JSON API")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    sv.add_argument("--port", type=int, default=8080, help="port (default: %(default)s)")
    sv.set_defaults(func=cmd_serve)

    wk = sub.add_parser(
        "worker",
        help="run executor jobs from the broker on this host (a Celery worker)",
        description="Take jobs from the broker's queues, run each job's executor on the "
        "branch it names and upload the logs and result to the server's API. Needs only "
        "the [worker] file, the broker URL and the upload token (environment): no database, "
        "no Patchwork token. See README.md, 'Executors on other machines'.",
    )
    wk.add_argument("--worker-config", metavar="FILE",
                    help="the host's [worker] TOML (env PATCHCI_WORKER_CONFIG)")  # fmt: skip
    wk.add_argument("--name", help="worker name, as in the server's [[broker.workers]]")
    wk.add_argument("--queues", metavar="Q1,Q2", help="queues to take jobs from (capabilities)")
    wk.add_argument("--work-dir", metavar="DIR", help="git cache, worktrees, builds, run logs")
    wk.add_argument("--server-url", metavar="URL", help="the patchci server's web address")
    wk.add_argument("--concurrency", type=int, metavar="N", help="jobs run at once")
    wk.set_defaults(func=cmd_worker)

    rm = sub.add_parser("remotes", help="results of NIPA-style executors elsewhere ([[remotes]])")
    rms = rm.add_subparsers(dest="remotes_command", metavar="ACTION")
    ri = rms.add_parser(
        "import", help="read every remote's results.json once (the daemon does it each cycle)",
        description="Fetch each [[remotes]] manifest and store the finished runs of branches "
        "cut here that are not stored yet; exit 2 when a remote or a run file failed.",
    )
    ri.set_defaults(func=cmd_remotes_import)

    rq = sub.add_parser(
        "requeue", help="check stored series again (after fixing a tree, a check, a tool)",
        description="Each series goes back to `new`: the next `patchci ingest` or `patchci "
        "process` checks it again and posts only what changed. A series a worker holds now, "
        "or one that cannot be checked (malformed, incomplete), is left as it is (exit 2).",
    )  # fmt: skip
    rq.add_argument(
        "ids", type=int, nargs="+", metavar="ID", help="our series id (`patchci series`)"
    )
    rq.set_defaults(func=cmd_requeue)

    ml = sub.add_parser(
        "mail", help="show the report mail a series gets ([report.email]) and if it was sent",
        description="Prints the reply patchci sends (or sent) for the series' findings, "
        "headers and body as the author receives them, and the ledger's status. Exit 1 when "
        "no check found a problem that [report.email] mails.",
    )  # fmt: skip
    ml.add_argument("id", type=int, metavar="ID", help="our series id (`patchci series`)")
    ml.set_defaults(func=cmd_mail)

    ex = sub.add_parser(
        "export", help="a test branch's results as JUnit XML or KCIDB v5 JSON",
        description="JUnit XML: a testsuite per executor run, a testcase per test (fail and "
        "timeout are failures, a kernel crash or our own error an error). KCIDB v5: the "
        "branch as a checkout (head, patchset hash and Message-IDs of its series), a build "
        "per run, a test per test and subtest, an issue per distinct crash.",
    )  # fmt: skip
    ex.add_argument("format", choices=["junit", "kcidb"])
    ex.add_argument("branch", help="the test branch (`patchci contest` names them)")
    ex.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    ex.add_argument("--origin", default="patchci",
                    help="KCIDB origin, [a-z0-9_]+ (default: %(default)s)")  # fmt: skip
    ex.set_defaults(func=cmd_export)

    sr = sub.add_parser("series", help="list stored series, or show one with its check results")
    sr.add_argument("id", nargs="?", type=int, help="series id (omit to list)")
    sr.set_defaults(func=cmd_series)

    db = sub.add_parser("db", help="database maintenance")
    dbs = db.add_subparsers(dest="db_command", metavar="ACTION")
    up = dbs.add_parser("upgrade", help="create or migrate the database to the newest schema")
    up.set_defaults(func=cmd_db_upgrade)

    cf = sub.add_parser("config", help="configuration helpers")
    cfs = cf.add_subparsers(dest="config_command", metavar="ACTION")
    cc = cfs.add_parser("check", help="validate a configuration file; exit 2 with the bad key")
    cc.add_argument("file")
    cc.set_defaults(func=cmd_config_check)

    ck = sub.add_parser("checks", help="the checks patchci has")
    cks = ck.add_subparsers(dest="checks_command", metavar="ACTION")
    cl = cks.add_parser(
        "list", help="every check: scope, what it does, options, tools found or missing",
        description="Tools named by a path (scripts/checkpatch.pl) are looked up in --tree; "
        "the others on PATH. With --strict, a missing tool exits 2.",
    )  # fmt: skip
    cl.add_argument("--tree", help="a kernel tree to look for the tree's own tools in")
    cl.add_argument("--strict", action="store_true", help="exit 2 when a tool is missing")
    cl.set_defaults(func=cmd_checks_list)

    ex = sub.add_parser("expectations", help="known-failure lists ([verdicts] expectations)")
    exs = ex.add_subparsers(dest="expectations_command", metavar="ACTION")
    ec = exs.add_parser(
        "check",
        help="validate an expectations file; exit 2 naming the bad entry and key",
        description="Each [[expect]] entry: test (group/name glob), optional subtest, tree, "
        "stream, executor (globs) and kernel (a version range such as '>=6.1, <6.7'), outcome "
        "(fail, skip, flaky), reason, optional link and until (a date). Lists the entries in "
        "force and warns about expired ones.",
    )
    ec.add_argument("file")
    ec.set_defaults(func=cmd_expectations_check)

    k = sub.add_parser("ktap", help="KTAP/TAP tools")
    ks = k.add_subparsers(dest="ktap_command", metavar="ACTION")
    kp = ks.add_parser(
        "parse",
        help="parse KTAP output and print the result tree",
        description="Exit 0 when everything passed/skipped, 1 on failures or crashes, 2 when "
        "the input holds no KTAP at all.",
    )
    kp.add_argument("file", help="a file, or - for standard input")
    kp.add_argument("--json", action="store_true", help="print JSON instead of a tree")
    kp.set_defaults(func=cmd_ktap_parse)
    return p


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Handler | None = getattr(args, "func", None)
    if func is None:
        # `patchci`, `patchci db`, `patchci config`...: show the relevant help.
        target = parser
        for action in parser._subparsers._group_actions if parser._subparsers else []:
            if isinstance(action, argparse._SubParsersAction) and args.command:
                target = action.choices[args.command]
        target.print_help()
        return EXIT_INFRA
    _setup_logging(args.verbose)
    try:
        return func(args)
    except ConfigError as e:
        print(f"patchci: configuration error: {e}", file=sys.stderr)
        return EXIT_INFRA
    except InfraError as e:
        print(f"patchci: infrastructure error: {e}", file=sys.stderr)
        return EXIT_INFRA
    except NotFound as e:
        print(f"patchci: {e}", file=sys.stderr)
        return EXIT_INFRA
    except PatchciError as e:
        print(f"patchci: {e}", file=sys.stderr)
        return EXIT_FAIL
    except OSError as e:  # a path the user gave does not exist or cannot be read
        print(f"patchci: {e}", file=sys.stderr)
        return EXIT_INFRA
    except KeyboardInterrupt:
        print("patchci: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if type(e).__module__.startswith("sqlalchemy"):  # a database fault: ours, one line
            orig = getattr(e, "orig", None) or e
            first = (str(orig).splitlines() or [type(orig).__name__])[0]
            print(f"patchci: database error: {first} (check the database URL or file, its "
                  "permissions and free space)", file=sys.stderr)  # fmt: skip
            return EXIT_INFRA
        raise


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
