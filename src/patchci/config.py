"""One typed Settings object for a deployment, built from TOML < environment < flags.

Validated at start-up: a mistake is one readable line naming the key and what was expected
(ConfigError), which the CLI turns into exit code 2. Secrets never live in the file: a
Patchwork source names the environment variable that holds its token.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from patchci.errors import ConfigError
from patchci.model import Tree, base_ref

if TYPE_CHECKING:
    from patchci.brancher import StreamConfig
    from patchci.crash import CrashConfig
    from patchci.sandbox import Sandbox

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
DEFAULT_CHECKS = ("signed_off_by", "fixes_tag", "series_format")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PatchworkSource(_Model):
    name: Annotated[str, Field(pattern=NAME_RE)]
    type: Literal["patchwork"]
    url: Annotated[str, Field(pattern=r"^https?://")]
    project: str
    token_env: str = "PATCHWORK_TOKEN"
    api_version: Literal["1.1", "1.2", "1.3"] = "1.3"
    poll_interval: Annotated[float, Field(gt=0)] = 120.0
    timeout: Annotated[float, Field(gt=0)] = 30.0
    retries: Annotated[int, Field(ge=0, le=20)] = 5
    per_page: Annotated[int, Field(ge=1, le=250)] = 100
    # A series that has not completed after this long is recorded as incomplete.
    incomplete_after: Annotated[float, Field(gt=0)] = 86400.0

    def token(self) -> str | None:
        return os.environ.get(self.token_env) or None


class MailSource(_Model):
    name: Annotated[str, Field(pattern=NAME_RE)]
    type: Literal["mbox", "maildir", "patches"]
    path: str


class GitSource(_Model):
    """A git remote whose refs are series: forks' branches, Patchew-style tags."""

    name: Annotated[str, Field(pattern=NAME_RE)]
    type: Literal["git"]
    url: Annotated[str, Field(min_length=1)]  # a git URL or a local repository
    tree: str  # the tree whose branch the refs are based on (the series go to it)
    refs: tuple[str, ...] = ("refs/heads/*",)  # fnmatch patterns of the refs to test
    max_commits: Annotated[int, Field(ge=1, le=1000)] = 50


class LoreSource(_Model):
    """A public-inbox list (lore.kernel.org/<list>/ or a local public-inbox-httpd)."""

    name: Annotated[str, Field(pattern=NAME_RE)]
    type: Literal["lore"]
    url: Annotated[str, Field(pattern=r"^https?://")]  # the inbox: https://lore.kernel.org/netdev/
    timeout: Annotated[float, Field(gt=0)] = 30.0
    b4: bool = True  # when b4 is installed, the replies' trailers go into the patches


Source = Annotated[PatchworkSource | MailSource | GitSource | LoreSource,
                   Field(discriminator="type")]  # fmt: skip


class TreeConfig(_Model):
    name: Annotated[str, Field(pattern=NAME_RE)]
    path: str | None = None
    url: str | None = None
    # A `path` tree: the remote to fetch; its `branch` is then the base (the checkout and
    # the local branches are never touched).
    remote: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")] | None = None
    branch: str = "main"
    # A tree is fetched before a series is applied when its last fetch is older than this.
    fetch_interval: Annotated[float, Field(ge=0)] = 60.0
    tags: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    checks: tuple[str, ...] = DEFAULT_CHECKS
    # The checks whose failure is mailed to the author ([report.email]); None: its `checks`.
    email_checks: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _need_location(self) -> TreeConfig:
        if not self.path and not self.url:
            raise ValueError("needs 'path' (a local git tree) or 'url' (cloned into data_dir)")
        if self.path and self.url:
            raise ValueError(
                "has both 'path' and 'url': a 'url' tree is cloned into "
                "data_dir; a 'path' tree fetches the remote named by 'remote'"
            )
        if self.remote and not self.path:
            raise ValueError("'remote' is for a 'path' tree (a 'url' tree is its own remote)")
        return self

    @property
    def base_ref(self) -> str:
        """The ref its series are applied to and its test branches are cut from."""
        return base_ref(self.url, self.remote, self.branch)


def _ignore_entries(v: tuple[str, ...]) -> tuple[str, ...]:
    import re

    for entry in v:
        if entry.startswith("re:"):
            try:
                re.compile(entry[3:])
            except re.error as e:
                raise ValueError(f"{entry!r} is not a valid regex: {e}") from e
    return v


class CrashSettings(_Model):
    """`[crash]`: how kernel splats found in a run are fingerprinted and which are known
    issues (reported, marked ignored, never counted against a branch). The same keys as
    crash.CrashConfig.from_mapping; an executor's `crash_ignore` adds to `ignore`."""

    top_frames: Annotated[int, Field(ge=1, le=64)] = 5
    skip_prefixes: tuple[str, ...] | None = None  # None: crash.DEFAULT_SKIP
    extra_skip_prefixes: tuple[str, ...] = ()
    # fingerprints ("warning:foo" ignores every WARNING whose top frame is foo) or "re:..."
    # regexes searched in the fingerprint and the title
    ignore: tuple[str, ...] = ()

    @field_validator("ignore")
    @classmethod
    def _regexes_compile(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _ignore_entries(v)

    def to_config(self, extra_ignore: tuple[str, ...] = ()) -> CrashConfig:
        from patchci.crash import DEFAULT_SKIP, CrashConfig

        skip = (DEFAULT_SKIP if self.skip_prefixes is None else self.skip_prefixes)
        return CrashConfig(top_frames=self.top_frames, skip_prefixes=skip + self.extra_skip_prefixes,
                           ignore=self.ignore + extra_ignore)  # fmt: skip


class ExecutorSettings(_Model):
    """One `[[executors]]` entry. `kind = "vm"` builds the branch's kernel and runs its
    selftests of `targets` in virtme-ng VMs; `kind = "local"` runs the executables of
    `tests_dir` on the host (the stream's own when unset), as streams do without executors."""

    name: Annotated[str, Field(pattern=NAME_RE)]
    kind: Literal["vm", "local"] = "vm"
    # vm
    kernel: str = "build"  # "build": the branch's own kernel; else an image to boot as is
    config: tuple[str, ...] = ()  # fragments of the tree, merged on patchci's minimal config
    debug: bool = False  # + kernel/configs/debug.config, kmemleak, lockdep, KASAN
    targets: tuple[str, ...] = ()  # kselftest TARGETS, built from the branch's tree
    tests: tuple[str, ...] = ()  # only these collection:program (default: all of targets)
    ignore: tuple[str, ...] = ()  # collection:program never run
    # KUnit tests built into the kernel (they run at boot; their KTAP is read from dmesg):
    # Kconfig symbols ("MPTCP_KUNIT_TEST") or .kunitconfig files/directories of the tree
    kunit: tuple[str, ...] = ()
    workers: Annotated[int, Field(ge=1, le=16)] = 1  # VMs (or local jobs) in parallel
    cpus: Annotated[int, Field(ge=1, le=64)] = 2
    memory: Annotated[str, Field(pattern=r"^[0-9]+[MG]$")] = "2G"
    # Default: each selftest directory's `settings` timeout (kselftest's 45 s without one).
    test_timeout: Annotated[float, Field(gt=0)] | None = None
    boot_timeout: Annotated[float, Field(gt=0)] = 300.0
    # A test that prints nothing for this long is killed as hung (TIMEOUT), besides its
    # own timeout. None: only the timeout.
    idle_timeout: Annotated[float, Field(gt=0)] | None = None
    retries: Annotated[int, Field(ge=0, le=5)] = 1
    kvm: Literal["auto", "on", "off"] = "auto"  # auto: KVM when it works here, else TCG
    deadline: Annotated[float, Field(gt=0)] = 4 * 3600.0  # the whole run
    kmemleak: bool = True  # scan after each test when the kernel has kmemleak
    kmemleak_wait: Annotated[float, Field(ge=0, le=600)] = 5.0  # between its two scans
    env_check: bool = True  # a passing test that leaves network state behind: warn
    tests_per_boot: Annotated[int, Field(ge=0)] = 0  # 0: until one crashes/hangs/taints
    jobs: Annotated[int, Field(ge=0, le=256)] = 0  # make -j; 0: one per CPU
    # local
    tests_dir: str | None = None
    build_command: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    # With a [broker]: the Celery queue its jobs go to, i.e. the capability a worker host
    # must have ("vm-x86_64", "kvm", a lab's label). Default: the kind ("vm", "local").
    queue: Annotated[str, Field(pattern=NAME_RE)] | None = None
    # Known splats of this executor only, added to [crash] ignore (a debug kernel's own).
    crash_ignore: tuple[str, ...] = ()
    # Replaces [crash] for this executor; the server fills it in a job it sends.
    crash: CrashSettings | None = None

    @property
    def job_queue(self) -> str:
        return self.queue or self.kind

    @field_validator("crash_ignore")
    @classmethod
    def _crash_ignore_compiles(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _ignore_entries(v)

    @model_validator(mode="after")
    def _kind_keys(self) -> ExecutorSettings:
        if self.kind == "vm":
            if not self.targets:
                raise ValueError("targets: a vm executor needs kselftest targets (e.g. "
                                 "[\"net/mptcp\"])")  # fmt: skip
            if self.tests_dir or self.build_command:
                raise ValueError('tests_dir/build_command are for kind = "local"')
        elif self.targets or self.config or self.kunit or self.kernel != "build":
            raise ValueError('targets/config/kunit/kernel are for kind = "vm"')
        return self


class StreamSettings(_Model):
    """One `[[streams]]` entry: a branch stream of a tree and the tests run on it."""

    name: Annotated[str, Field(pattern=NAME_RE)]
    tree: str  # a [[trees]] name: its series go into the branches
    prefix: str | None = None  # default "<name>-"
    base_branch: str | None = None  # default the tree's branch
    merges: tuple[str, ...] = ()
    every_hours: Annotated[int, Field(ge=1)] = 3
    gate_checks: tuple[str, ...] = ("apply", "signed_off_by")
    keep_days: Annotated[int, Field(ge=1)] = 5
    push_remote: str | None = None
    accept_warn: bool = True
    tests_dir: str = "tools/testing/selftests/net"  # executables in it, relative to the tree
    test_timeout: Annotated[float, Field(gt=0)] = 300.0
    idle_timeout: Annotated[float, Field(gt=0)] | None = None  # as [[executors]]'
    retries: Annotated[int, Field(ge=0, le=5)] = 1
    jobs: Annotated[int, Field(ge=1, le=64)] = 1
    build_command: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    # [[executors]] names; none: the local run of tests_dir above
    executors: tuple[str, ...] = ()
    # culprit search of a regression (service/culprits.py): probes per test, hours in all
    bisect_steps: Annotated[int, Field(ge=0, le=64)] = 8
    bisect_hours: Annotated[float, Field(gt=0)] = 12.0

    def stream_config(self, tree: TreeConfig) -> StreamConfig:
        from patchci.brancher import StreamConfig

        return StreamConfig(
            name=self.name,
            prefix=self.prefix if self.prefix is not None else f"{self.name}-",
            base_branch=self.base_branch or tree.base_ref,
            merges=self.merges,
            every_hours=self.every_hours,
            gate_checks=self.gate_checks,
            keep_days=self.keep_days,
            push_remote=self.push_remote,
            accept_warn=self.accept_warn,
        )


class CheckConfig(_Model):
    kind: str | None = None
    timeout: Annotated[float, Field(gt=0)] | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    # Run only when the patch (series, for a series check) touches one of these: globs
    # ("*.rs"; `*` crosses "/") or directory prefixes ending in "/" ("rust/").
    when_paths: tuple[str, ...] = ()


class PatchworkReport(_Model):
    enabled: bool = True
    context_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_\-]*$")] = ""
    # Where check logs are published; the target_url of a check is <log_url>/<relative log path>.
    log_url: Annotated[str, Field(pattern=r"^https?://")] | None = None
    # Where `patchci serve` is reachable: a contest check links to its series page there.
    web_url: Annotated[str, Field(pattern=r"^https?://")] | None = None


class EmailReport(_Model):
    """Replies to a series' thread when checks fail (off unless `enabled`)."""

    enabled: bool = False
    from_: Annotated[str, Field(alias="from", min_length=3)] = "patchci <patchci@localhost>"
    to_author: bool = True
    cc: tuple[str, ...] = ()  # e.g. the list: ["netdev@vger.kernel.org"]
    # Outcomes that make a check worth a mail, and which checks ([] : every check); a tree's
    # `email_checks` replaces `checks` for its series.
    outcomes: tuple[Literal["fail", "warn", "crash", "timeout"], ...] = ("fail",)
    checks: tuple[str, ...] = ()
    smtp_host: str = "localhost"
    smtp_port: Annotated[int, Field(ge=1, le=65535)] = 25
    # "auto": STARTTLS when the server offers it; "always": refuse to send without it.
    starttls: Literal["auto", "always", "never"] = "auto"
    user_env: str = "PATCHCI_SMTP_USER"
    password_env: str = "PATCHCI_SMTP_PASSWORD"
    timeout: Annotated[float, Field(gt=0)] = 30.0
    max_per_hour: Annotated[int, Field(ge=1)] = 30
    # Write each mail as <outbox>/<Message-ID>.eml instead of sending it (the ledger is kept).
    dry_run: bool = False
    outbox: str = "outbox"  # relative to data_dir
    # Only series checked within this long are mailed (a new config does not mail history).
    max_age: Annotated[float, Field(gt=0)] = 86400.0

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class PwBotConfig(_Model):
    """`pw-bot: <state>` replies set the series' Patchwork state (netdev's mailbot)."""

    enabled: bool = False
    sources: tuple[str, ...] = ()  # the mail sources read for replies (default: all)
    maintainers: tuple[str, ...] = ()  # addresses that may ask for any state
    # what a series' own author may ask for (netdev: withdrawing it)
    author_states: tuple[str, ...] = ("changes-requested", "superseded")


class ReportConfig(_Model):
    patchwork: PatchworkReport = PatchworkReport()
    email: EmailReport = EmailReport()


class WebConfig(_Model):
    # A source whose cursor has not moved for this long is shown as an alarm.
    cursor_alarm_after: Annotated[float, Field(gt=0)] = 21600.0
    recent_window: Annotated[float, Field(gt=0)] = 86400.0
    page_size: Annotated[int, Field(ge=1, le=500)] = 50


class FeedConfig(_Model):
    """`[feed]`: the NIPA-format feed (branches.json, branches-info.json, each executor's
    results manifest and run files), written every cycle and served by `patchci serve` at
    /feed/, so NIPA-style executors and collectors can use patchci's branches."""

    enabled: bool = True
    dir: str | None = None  # default data_dir/feed
    # Where /feed/ is reachable from outside (the URLs inside the manifests).
    public_url: Annotated[str, Field(pattern=r"^https?://")] = "http://127.0.0.1:8080/feed"
    # The git URL executors fetch the branches from (default: the tree's url or path).
    git_url: str | None = None


class RemoteConfig(_Model):
    """One `[[remotes]]` entry: an executor elsewhere that publishes its results the way
    NIPA's executors do (a `results.json` manifest of run files, e.g. a hardware lab running
    NIPA's executor), read each cycle into the branches cut here."""

    name: Annotated[str, Field(pattern=NAME_RE)]
    url: Annotated[str, Field(pattern=r"^https?://")]  # the manifest, results.json
    # Its executors' names here: "<prefix><their name>" (default "<remote name>:").
    executor_prefix: str | None = None
    timeout: Annotated[float, Field(gt=0)] = 30.0
    max_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024  # per file fetched
    limit: Annotated[int, Field(ge=1, le=10_000)] = 200  # newest manifest entries read

    @property
    def prefix(self) -> str:
        return f"{self.name}:" if self.executor_prefix is None else self.executor_prefix


class WorkerAccess(_Model):
    """One `[[broker.workers]]` entry: an executor host allowed to report results. Its
    token lives in the server's environment (*token_env*) and in the worker's, never in a
    file."""

    name: Annotated[str, Field(pattern=NAME_RE)]
    token_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]

    def token(self) -> str | None:
        return os.environ.get(self.token_env) or None


class BrokerConfig(_Model):
    """`[broker]`: run the executors' jobs on `patchci worker` hosts through Celery (Redis
    by URL; RabbitMQ's amqp:// works the same). Without it they run inside the daemon."""

    url: str | None = None  # e.g. "redis://127.0.0.1:6379/0"
    url_env: str = "PATCHCI_BROKER_URL"  # read when `url` is unset (a password in the URL)
    # Redis hands an unacknowledged job to another worker after this long: it must exceed
    # the longest executor deadline, or a job of hours runs twice. None: that deadline + 1 h.
    visibility_timeout: Annotated[float, Field(gt=0)] | None = None
    # A running job whose worker has not reported for this long is given to another worker
    # (its first attempt counts), as is a queued one no worker started within requeue_after.
    heartbeat_timeout: Annotated[float, Field(gt=0)] = 120.0
    requeue_after: Annotated[float, Field(gt=0)] | None = None  # None: visibility_timeout
    # Results and logs a worker uploads: per file, and in all for one job.
    max_file_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    max_job_bytes: Annotated[int, Field(ge=1024)] = 1024 * 1024 * 1024
    workers: tuple[WorkerAccess, ...] = ()

    def broker_url(self) -> str | None:
        return self.url or os.environ.get(self.url_env) or None


class SandboxConfig(_Model):
    """`[sandbox]`: how patch code (builds, the patched tree's scripts, tests) runs."""

    # "auto": bubblewrap when installed, else the minimal environment alone (said at start).
    isolate: Literal["auto", "bwrap", "env"] = "auto"
    # Variables of our environment patch code may see besides the minimal set.
    pass_env: tuple[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], ...] = ()
    # More paths hidden from it (the data directory and the config file always are).
    hide: tuple[str, ...] = ()
    network: bool = False


class VerdictConfig(_Model):
    """How a failing test is weighed before it counts against a branch (analysis.flakes,
    analysis.expectations). The flake floor cannot go below TestClutch's: 10 results, 2
    separate failure starts."""

    expectations: str | None = None  # a TOML file of known failures
    flaky_window: Annotated[int, Field(ge=10, le=1000)] = 30
    flaky_min_runs: Annotated[int, Field(ge=10, le=1000)] = 10
    flaky_min_starts: Annotated[int, Field(ge=2, le=100)] = 2
    flaky_stable_runs: Annotated[int, Field(ge=1, le=1000)] = 10
    flaky_alpha: Annotated[float, Field(gt=0, lt=1)] = 0.05

    @model_validator(mode="after")
    def _window_holds_runs(self) -> VerdictConfig:
        if self.flaky_min_runs > self.flaky_window:
            raise ValueError("flaky_min_runs is more than flaky_window: nothing could be flaky")
        return self


class Settings(_Model):
    data_dir: str = "~/.local/share/patchci"
    database_url: str | None = None
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    sources: tuple[Source, ...] = ()
    trees: tuple[TreeConfig, ...] = ()
    checks: dict[str, CheckConfig] = Field(default_factory=dict)
    report: ReportConfig = ReportConfig()
    streams: tuple[StreamSettings, ...] = ()
    executors: tuple[ExecutorSettings, ...] = ()
    # Kept between runs: kernel builds are incremental from branch to branch.
    ccache_dir: str | None = None  # default data_dir/ccache
    web: WebConfig = WebConfig()
    feed: FeedConfig = FeedConfig()
    sandbox: SandboxConfig = SandboxConfig()
    verdicts: VerdictConfig = VerdictConfig()
    broker: BrokerConfig | None = None
    # Without a [broker]: a branch's executor runs at once, in a worker pool in the daemon.
    executor_pool: Annotated[int, Field(ge=1, le=64)] = 1
    remotes: tuple[RemoteConfig, ...] = ()
    crash: CrashSettings = CrashSettings()
    pwbot: PwBotConfig = PwBotConfig()
    # Set by load_settings: the file these settings came from (hidden from patch code).
    config_path: str | None = None
    # Set by the CLI: print each series' progress and verdict as it is checked.
    progress: bool = False

    @field_validator("trees")
    @classmethod
    def _unique_trees(cls, v: tuple[TreeConfig, ...]) -> tuple[TreeConfig, ...]:
        _unique([t.name for t in v], "trees")
        return v

    @field_validator("sources")
    @classmethod
    def _unique_sources(cls, v: tuple[Source, ...]) -> tuple[Source, ...]:
        _unique([s.name for s in v], "sources")
        return v

    @model_validator(mode="after")
    def _streams_name_trees(self) -> Settings:
        names = {t.name for t in self.trees}
        _unique([e.name for e in self.executors], "executors")
        _unique([r.name for r in self.remotes], "remotes")
        if self.broker is not None:
            _unique([w.name for w in self.broker.workers], "broker.workers")
            vt = self.broker.visibility_timeout
            long = max(self.executors, key=lambda e: e.deadline, default=None)
            if vt is not None and long is not None and vt <= long.deadline:
                raise ValueError(f"broker.visibility_timeout: {vt:g} s is not above executor "
                                 f"{long.name}'s deadline ({long.deadline:g} s): Redis would "
                                 "hand its running job to a second worker")  # fmt: skip
        execs = {e.name for e in self.executors}
        for s in self.streams:
            if s.tree not in names:
                raise ValueError(f"streams.{s.name}.tree: no [[trees]] entry named {s.tree!r}")
            for e in s.executors:
                if e not in execs:
                    raise ValueError(f"streams.{s.name}.executors: no [[executors]] entry "
                                     f"named {e!r}")  # fmt: skip
        for src in self.sources:
            if isinstance(src, GitSource) and src.tree not in names:
                raise ValueError(f"sources.{src.name}.tree: no [[trees]] entry named {src.tree!r}")
        return self

    def pwbot_replies(self, source: str) -> Path | None:
        """Where a lore source keeps the mails pw-bot reads (None: pw-bot is off)."""
        if not self.pwbot.enabled or (self.pwbot.sources and source not in self.pwbot.sources):
            return None
        return self.data_path / "pwbot" / f"{source}.mbox"

    @property
    def visibility_timeout(self) -> float:
        """The broker's visibility timeout: set, or the longest deadline + 1 h."""
        if self.broker is not None and self.broker.visibility_timeout is not None:
            return self.broker.visibility_timeout
        longest = max((e.deadline for e in self.executors), default=4 * 3600.0)
        return max(longest, max((s.test_timeout for s in self.streams), default=0.0)) + 3600.0

    def executor(self, name: str) -> ExecutorSettings:
        for e in self.executors:
            if e.name == name:
                return e
        raise ConfigError(f"executors: no executor named {name!r}")

    @property
    def feed_path(self) -> Path:
        if self.feed.dir:
            return Path(os.path.expanduser(self.feed.dir)).resolve()
        return self.data_path / "feed"

    @property
    def ccache_path(self) -> Path:
        if self.ccache_dir:
            return Path(os.path.expanduser(self.ccache_dir)).resolve()
        return self.data_path / "ccache"

    @model_validator(mode="after")
    def _known_checks(self) -> Settings:
        from patchci.checks.registry import BUILTIN, STAGE_CHECKS, check_class

        for name, cc in self.checks.items():
            kind = cc.kind or name
            if kind not in BUILTIN:
                raise ValueError(f"checks.{name}: unknown kind {kind!r}")
            try:  # each kind's typed options: a typo or a wrong type is found now
                check_class(kind).Options.model_validate(cc.options)
            except ValidationError as e:
                raise ValueError(f"checks.{name}.options.{format_validation_error(e)}") from e
        for t in self.trees:
            for c in t.checks:
                if c in STAGE_CHECKS:
                    continue
                if c not in self.checks and c not in BUILTIN:
                    raise ValueError(
                        f"trees.{t.name}.checks: {c!r} is neither a built-in check nor "
                        f"defined under [checks.{c}]"
                    )
        return self

    # --- derived values ---
    @property
    def data_path(self) -> Path:
        return Path(os.path.expanduser(self.data_dir)).resolve()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_path / 'patchci.db'}"

    def tree_path(self, tree: TreeConfig) -> Path:
        if tree.path:
            return Path(os.path.expanduser(tree.path)).resolve()
        from patchci.trees import mirror_path

        assert tree.url is not None
        return mirror_path(self.data_path, tree.url)

    def model_trees(self) -> tuple[Tree, ...]:
        return tuple(
            Tree(
                name=t.name,
                path=str(self.tree_path(t)),
                branch=t.branch,
                tags=t.tags,
                paths=t.paths,
                url=t.url,
                remote=t.remote,
                fetch_interval=t.fetch_interval,
            )
            for t in self.trees
        )

    def untrusted(self) -> Sandbox:
        """The sandbox patch code runs in, from `[sandbox]`."""
        from patchci.sandbox import Sandbox, find_bwrap

        cfg = self.sandbox
        bwrap = None if cfg.isolate == "env" else find_bwrap()
        if bwrap is None and cfg.isolate == "bwrap":
            raise ConfigError("sandbox.isolate: 'bwrap' but bubblewrap is not installed "
                              "(apt-get install bubblewrap)")  # fmt: skip
        hide = [self.data_path, *(Path(os.path.expanduser(h)).resolve() for h in cfg.hide)]
        if self.config_path:
            hide.append(Path(self.config_path).resolve())
        if self.db_url.startswith("sqlite:///"):
            db = Path(self.db_url.removeprefix("sqlite:///")).resolve()
            hide += [db, *(db.with_name(db.name + x) for x in ("-wal", "-shm", "-journal"))]
        return Sandbox(
            hide=tuple(dict.fromkeys(hide)), pass_env=cfg.pass_env, bwrap=bwrap,
            network=cfg.network,
        )  # fmt: skip

    def tree(self, name: str) -> TreeConfig:
        for t in self.trees:
            if t.name == name:
                return t
        raise ConfigError(f"trees: no tree named {name!r}")

    def check_spec(self, name: str) -> tuple[str, dict[str, Any], float | None]:
        """(kind, options, timeout) for check *name* as configured."""
        cc = self.checks.get(name)
        if cc is None:
            return name, {}, None
        return cc.kind or name, dict(cc.options), cc.timeout

    def check_paths(self, name: str) -> tuple[str, ...]:
        """The `when_paths` of check *name* (empty: always run)."""
        cc = self.checks.get(name)
        return cc.when_paths if cc is not None else ()


def path_problems(settings: Settings) -> list[str]:
    """What the file system says is wrong with *settings*, one line per key: a tree `path`
    that is missing or not a git tree, a mail source `path` that is missing. `config check`
    prints them and `ingest` refuses to start on them: a missing tree once stored every
    series as done with an error, never checked again once the path was fixed."""
    out: list[str] = []
    for t in settings.trees:
        if not t.path:
            continue
        p = settings.tree_path(t)
        if not p.is_dir():
            out.append(f"trees.{t.name}.path: {p} does not exist")
        elif not ((p / ".git").exists() or (p / "HEAD").is_file() and (p / "objects").is_dir()):
            out.append(f"trees.{t.name}.path: {p} is not a git tree (no .git)")
    for src in settings.sources:
        if isinstance(src, MailSource) and not Path(src.path).expanduser().exists():
            out.append(f"sources.{src.name}.path: {src.path} does not exist")
    if settings.verdicts.expectations:
        from patchci.analysis.expectations import load

        try:
            load(Path(settings.verdicts.expectations).expanduser())
        except ConfigError as e:
            out.append(f"verdicts.expectations: {e}")
    return out


def _unique(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ValueError(f"{what}: name {n!r} is used twice")
        seen.add(n)


ENV_OVERRIDES = {"PATCHCI_DATA_DIR": "data_dir", "PATCHCI_DATABASE_URL": "database_url"}


def format_validation_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key (typo?)"
    elif err["type"] == "missing":
        msg = "required key is missing"
    inp = err.get("input")
    shown = f" (got {inp!r})" if isinstance(inp, str | int | float | bool) else ""
    more = f" [+{len(e.errors()) - 1} more]" if len(e.errors()) > 1 else ""
    return f"{loc or 'config'}: {msg}{shown}{more}"


def build_settings(
    data: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    origin: str = "config",
) -> Settings:
    """defaults < *data* (the file) < environment < *overrides* (flags)."""
    merged = dict(data)
    for var, key in ENV_OVERRIDES.items():
        val = (os.environ if env is None else env).get(var)
        if val:
            merged[key] = val
    for key, val in (overrides or {}).items():
        if val is not None:
            merged[key] = val
    try:
        return Settings.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(f"{origin}: {format_validation_error(e)}") from e


def read_file(p: Path, what: str) -> str:
    """A file's UTF-8 text; ConfigError in one line naming it when it cannot be had."""
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ConfigError(f"{p}: no such {what}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read: {e}") from e


def load_settings(
    path: str | Path | None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read and validate a TOML file; None means embedded defaults only."""
    if path is None:
        return build_settings({}, env=env, overrides=overrides, origin="defaults")
    p = Path(path)
    text = read_file(p, "configuration file")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from e
    data = {**_resolve_relative(data, p.parent.resolve()), "config_path": str(p.resolve())}
    return build_settings(data, env=env, overrides=overrides, origin=str(p))


def _resolve_relative(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative paths in a file are relative to the file, not to the current directory."""

    def fix(v: Any) -> Any:
        if isinstance(v, str) and v and not v.startswith(("/", "~")):
            return str(base / v)
        return v

    out = dict(data)
    for key in ("data_dir", "ccache_dir"):
        if key in out:
            out[key] = fix(out[key])
    verdicts = out.get("verdicts")
    if isinstance(verdicts, dict) and "expectations" in verdicts:
        out["verdicts"] = {**verdicts, "expectations": fix(verdicts["expectations"])}
    for key in ("sources", "trees"):
        items = out.get(key)
        if isinstance(items, list):
            out[key] = [
                {**it, "path": fix(it["path"])} if isinstance(it, dict) and "path" in it else it
                for it in items
            ]
    return out


# --- an executor host's own configuration (`patchci worker`) ------------------------------


class WorkerSettings(_Model):
    """`[worker]` of a worker host's file. Nothing here reaches the database or Patchwork:
    patch code runs on this host, so it holds only what running executors needs and a
    token that can upload results, nothing more."""

    name: Annotated[str, Field(pattern=NAME_RE)]
    queues: tuple[Annotated[str, Field(pattern=NAME_RE)], ...] = ("local",)
    work_dir: str = "~/.local/share/patchci-worker"
    server_url: Annotated[str, Field(pattern=r"^https?://")] = "http://127.0.0.1:8080"
    token_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = "PATCHCI_WORKER_TOKEN"
    broker_url: str | None = None
    broker_url_env: str = "PATCHCI_BROKER_URL"
    # The executors this host may run (empty: any job arriving on its queues); a job for
    # another is refused, recorded, and handed back.
    executors: tuple[str, ...] = ()
    concurrency: Annotated[int, Field(ge=1, le=64)] = 1
    heartbeat: Annotated[float, Field(gt=0)] = 15.0
    # Upload and API calls: the timeout of one, and how long to keep trying in all.
    http_timeout: Annotated[float, Field(gt=0)] = 60.0
    upload_patience: Annotated[float, Field(gt=0)] = 600.0
    visibility_timeout: Annotated[float, Field(gt=0)] = 5 * 3600.0  # as the server's
    sandbox: SandboxConfig = SandboxConfig()

    @property
    def work_path(self) -> Path:
        return Path(os.path.expanduser(self.work_dir)).resolve()

    def token(self) -> str | None:
        return os.environ.get(self.token_env) or None

    def broker(self) -> str | None:
        return self.broker_url or os.environ.get(self.broker_url_env) or None


class _WorkerFile(_Model):
    worker: WorkerSettings


def load_worker_settings(
    path: str | Path, overrides: Mapping[str, Any] | None = None
) -> WorkerSettings:
    """A worker host's TOML file (`[worker]` only: a server key there is refused)."""
    p = Path(path)
    text = read_file(p, "worker configuration file")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from e
    w = data.get("worker")
    if isinstance(w, dict):
        if (
            "work_dir" in w
            and isinstance(w["work_dir"], str)
            and not w["work_dir"].startswith(("/", "~"))
        ):
            w["work_dir"] = str(p.parent.resolve() / w["work_dir"])
        w.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return _WorkerFile.model_validate(data).worker
    except ValidationError as e:
        raise ConfigError(f"{p}: {format_validation_error(e)}") from e
