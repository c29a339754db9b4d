"""Kernel console-log crash detection with stable fingerprints.

Pure and streaming: feed a live console line by line to a CrashDetector, or a whole log to
detect(). Each splat (WARNING, BUG, Oops, KASAN, lockdep, hung task, ...) becomes one Crash
block, from its title line to its end marker (`---[ end trace ... ]---`, a sanitizer's
closing `====` line), the end of its call trace, or a line budget.

The fingerprint is the kind plus the top N meaningful function names of the stack (the
faulting RIP first), with offsets, compiler suffixes (.isra.0, .cold) and generic frames
(dump_stack, __warn, syscall entry, lockdep internals...) removed, so the same bug matches
across builds, addresses and timestamps. Unlike NIPA, which only looks for `RIP:` /
`Call Trace:` lines, every splat kind is named by an explicit table (KINDS).

The parser never raises on bad input: unknown lines are skipped, truncated splats are
closed by finish().
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from patchci.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kind:
    """One row of the splat table.

    `regex` is searched in a console line with its `[ts]` prefix removed; a `sub` group
    names the variant (KASAN bug type, lockdep report...) and goes into the fingerprint.
    """

    name: str
    regex: re.Pattern[str]
    description: str
    # When two headers fuse (BUG + Oops), the higher rank names the block.
    rank: int = 0
    # Kinds whose header this line may continue instead of starting a new block.
    continues: frozenset[str] = frozenset()
    # A kind-specific closing line (sanitizers end with a `====` rule).
    end: re.Pattern[str] | None = None
    # Lines to wait after the call trace for an end marker before closing.
    tail: int = 5
    # Lines to wait for a call trace before closing a block that has none. Real splats
    # print theirs within ~20 lines (registers, modules, CPU); waiting longer took the
    # stack of whatever the console printed next as the fingerprint of a trace-less one.
    header_limit: int = 32
    # The stack follows the title directly, with no "Call Trace:" line.
    frames_follow: bool = False


_RULE = re.compile(r"^={20,}\s*$")


def _k(name: str, pattern: str, description: str, **kw: Any) -> Kind:
    return Kind(name, re.compile(pattern), description, **kw)


# First match wins: specific kinds before the generic BUG:/WARNING:.
KINDS: tuple[Kind, ...] = (
    _k(
        "kasan",
        r"^(?:BUG: )?KASAN: (?P<sub>[\w-]+) (?:in|on) ",
        "KernelAddressSanitizer report (use-after-free, out-of-bounds, null-ptr-deref...)",
        rank=9,
        continues=frozenset({"oops"}),
        end=_RULE,
        tail=200,
    ),
    _k(
        "kfence",
        r"^BUG: KFENCE: (?P<sub>[\w -]+?) in ",
        "KFENCE sampled memory-safety error",
        rank=9,
        end=_RULE,
        tail=80,
        frames_follow=True,
    ),
    _k(
        "ubsan",
        r"^UBSAN: (?P<sub>[\w-]+)",
        "UndefinedBehaviorSanitizer report (shift, array index, overflow...)",
        rank=8,
        end=_RULE,
        tail=10,
    ),
    _k(
        "lockdep",
        r"^WARNING: (?P<sub>possible circular locking dependency|possible recursive locking"
        r"|inconsistent lock state|suspicious RCU usage|possible irq lock inversion dependency"
        r"|bad unlock balance|held lock freed|lock held when returning to user space"
        r"|[\w-]+-safe -> [\w-]+-unsafe lock order)\b",
        "lockdep report (circular/recursive locking, inconsistent lock state, RCU misuse)",
        rank=8,
        header_limit=400,
    ),
    _k(
        "refcount",
        r"^refcount_t: (?P<sub>[\w ]+?)\s*(?:;|\.|$)",
        "refcount_t overflow/underflow warning (lib/refcount.c), followed by a WARNING",
        rank=7,
    ),
    _k(
        "ref_tracker",
        r"^ref_tracker: ",
        "ref_tracker leak or double release report (lib/ref_tracker.c)",
        rank=7,
        frames_follow=True,
    ),
    _k(
        "kmemleak",
        r"^(?:kmemleak: )?unreferenced object 0x[0-9a-f]+ \(size \d+\)",
        "kmemleak suspected memory leak",
        rank=7,
        tail=0,
    ),
    _k(
        "rcu_stall",
        r"^(?:rcu: )?INFO: \S+ (?:self-)?detected (?:expedited )?stalls?\b",
        "RCU CPU or task stall",
        rank=6,
    ),
    _k(
        "hung_task",
        r"^INFO: task \S.* blocked for more than \d+ seconds",
        "hung task detector: a task stuck in D state",
        rank=6,
    ),
    _k(
        "soft_lockup",
        r"^(?:[\w ]+: )?BUG: soft lockup - CPU#\d+ stuck for",
        "soft lockup watchdog: a CPU did not schedule",
        rank=6,
    ),
    _k(
        "hard_lockup",
        r"Watchdog detected hard LOCKUP on cpu \d+",
        "hard lockup (NMI) watchdog: a CPU did not take interrupts",
        rank=6,
    ),
    _k(
        "oops",
        r"^(?:Oops\b|Internal error: |Unable to handle kernel |general protection fault\b"
        r"|BUG: kernel NULL pointer dereference|BUG: unable to handle "
        r"|[a-z][a-z ]+: [0-9a-f]{4} \[#\d+\])",
        "Oops: fatal kernel fault (NULL dereference, page fault, general protection fault)",
        rank=5,
        continues=frozenset({"oops", "bug"}),
    ),
    _k(
        "irq_nobody_cared",
        r"^irq \d+: nobody cared\b",
        "an interrupt no handler claimed (the line is then disabled: a device stops working)",
        rank=3,
        end=re.compile(r"^Disabling IRQ #\d+"),
        tail=12,
    ),
    _k(
        "panic",
        r"^Kernel panic - not syncing: ",
        "Kernel panic",
        rank=4,
    ),
    _k(
        "bug",
        r"^(?:\w+: )?BUG: |^kernel BUG at |^BUG [\w.-]+ \([^)]*\): ",
        "BUG() assertion or BUG: report (sleeping in atomic, bad page state, SLUB corruption)",
        rank=3,
    ),
    _k(
        "warning",
        r"^WARNING: (?:CPU: \d+ PID: \d+|at \S|\S+:\d+ at \S)",
        "WARN() splat",
        rank=2,
        continues=frozenset({"refcount"}),
    ),
)

# Skipped when choosing fingerprint frames: a prefix, or an exact name when it ends in "$".
DEFAULT_SKIP: tuple[str, ...] = (
    # stack dumping and WARN/BUG/oops plumbing
    "dump_stack", "__dump_stack", "show_stack", "show_regs", "show_trace_log_lvl",
    "__warn", "warn_slowpath", "report_bug", "handle_bug", "exc_invalid_op", "asm_exc_",
    "bug_handler", "die$", "__die", "oops_end", "do_trap", "do_error_trap",
    "exc_general_protection", "exc_page_fault", "page_fault_oops", "kernelmode_fixup_or_oops",
    "__bad_area", "bad_area", "do_user_addr_fault", "do_kern_addr_fault", "handle_page_fault",
    "call_break_hook", "brk_handler", "do_debug_exception",
    "panic", "__panic", "nmi_panic", "vpanic",
    # sanitizers and debug checks
    "print_report", "print_address_description", "kasan_", "__kasan_", "__asan_", "asan_",
    "kmsan_", "__msan_", "ubsan_", "__ubsan_", "kfence_", "__kfence_", "check_memory_region",
    "refcount_warn_saturate", "ref_tracker_", "__ref_tracker", "stack_trace_save",
    "stack_depot_", "save_stack", "kmemleak_", "__might_sleep", "__might_resched",
    "___might_sleep", "__might_fault", "__schedule_bug", "schedule_debug",
    "check_preemption_disabled", "debug_smp_processor_id", "__cant_sleep",
    # lockdep and lock primitives
    "lockdep_", "print_circular_bug", "print_deadlock_bug", "print_usage_bug",
    "check_noncircular", "check_prev_add", "check_prevs_add", "check_deadlock",
    "validate_chain", "valid_state", "mark_lock", "mark_usage", "__lock_acquire",
    "lock_acquire", "lock_release", "lock_is_held", "__mutex_lock", "mutex_lock",
    "_raw_spin_lock", "__raw_spin_lock", "do_raw_spin_lock", "_raw_read_lock",
    "_raw_write_lock", "down_read", "down_write", "rwsem_down_", "__rwsem_", "rt_mutex_",
    # allocators (kmemleak and KASAN allocation stacks)
    "__kmalloc", "kmalloc", "kmem_cache_alloc", "__kmem_cache_alloc", "kzalloc", "kvmalloc",
    "__kvmalloc", "kvzalloc", "krealloc", "slab_", "__slab_", "___slab_", "__alloc_pages",
    "alloc_pages", "__vmalloc", "vmalloc", "vzalloc", "pcpu_alloc", "__alloc_percpu",
    # scheduler and waiting (hung tasks)
    "__schedule", "schedule$", "schedule_timeout", "schedule_preempt_disabled",
    "schedule_hrtimeout", "io_schedule", "__wait_for_common", "wait_for_common",
    "do_wait_for_common", "wait_for_completion",
    # busy-wait loops (soft lockups)
    "delay_tsc", "delay_loop", "delay_halt", "__const_udelay", "__udelay", "__ndelay",
    # interrupt, NMI and timer machinery (stalls, lockups)
    "nmi_cpu_backtrace", "nmi_trigger_cpumask_backtrace", "arch_trigger_cpumask_backtrace",
    "trigger_single_cpu_backtrace", "rcu_dump_cpu_stacks", "rcu_sched_clock_irq",
    "print_cpu_stall", "check_cpu_stall", "rcu_pending", "update_process_times", "tick_",
    "__hrtimer_run_queues", "hrtimer_interrupt", "hrtimer_run_queues", "__sysvec_",
    "sysvec_", "asm_sysvec_", "asm_common_interrupt", "common_interrupt", "irq_exit",
    "__irq_exit_rcu", "__do_softirq", "handle_softirqs", "do_softirq", "run_ksoftirqd",
    "watchdog_timer_fn", "watchdog_overflow_callback", "__perf_event_overflow",
    "perf_event_overflow", "perf_event_nmi_handler", "nmi_handle", "default_do_nmi",
    "exc_nmi", "end_repeat_nmi", "handle_pmi_common", "intel_pmu_handle_irq", "amd_pmu_",
    "x86_pmu_handle_irq", "__x86_indirect_thunk", "__x86_return_thunk", "srso_return_thunk",
    "__report_bad_irq", "note_interrupt", "handle_irq_event", "__handle_irq_event_percpu",
    "handle_fasteoi_irq", "handle_edge_irq", "handle_level_irq", "__common_interrupt",
    # the idle loop (a splat in an interrupt that hit an idle CPU)
    "default_idle", "do_idle", "cpu_startup_entry", "start_secondary", "secondary_startup",
    "arch_cpu_idle", "cpuidle_", "acpi_idle", "rest_init", "arch_call_rest_init",
    "start_kernel",
    # syscall entry, kernel threads, workqueues, KUnit harness
    "do_syscall_64", "do_syscall_x64", "do_int80_syscall_32", "__do_fast_syscall_32",
    "do_fast_syscall_32", "entry_SYSCALL", "entry_SYSENTER", "entry_INT80", "syscall_exit",
    "exit_to_user_mode", "el0_", "el1_", "el0t_", "el1h_", "do_el0_svc", "invoke_syscall",
    "ret_from_fork", "kthread", "worker_thread", "process_one_work",
    "process_scheduled_works", "smpboot_thread_fn", "kunit_try_run_case",
    "kunit_generic_run_threadfn_adapter",
)  # fmt: skip


@dataclass(frozen=True)
class CrashConfig:
    """How fingerprints are built and which crashes are known issues.

    `ignore` entries are fingerprints (an entry also matches longer fingerprints it is a
    `:`-prefix of, so `warning:foo` ignores every WARNING whose top frame is foo) or, with a
    `re:` prefix, regexes searched in the fingerprint and the title.
    """

    top_frames: int = 5
    skip_prefixes: tuple[str, ...] = DEFAULT_SKIP
    ignore: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.top_frames < 1:
            raise ConfigError(f"crash top_frames must be >= 1, got {self.top_frames}")
        for entry in self.ignore:
            if entry.startswith("re:"):
                try:
                    re.compile(entry[3:])
                except re.error as e:
                    raise ConfigError(f"crash ignore regex {entry[3:]!r} is invalid: {e}") from e

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> CrashConfig:
        """Build from a TOML table: top_frames, skip_prefixes (replace the defaults),
        extra_skip_prefixes (added to them), ignore."""
        known = {"top_frames", "skip_prefixes", "extra_skip_prefixes", "ignore"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown crash setting(s): {', '.join(unknown)}")
        top = data.get("top_frames", 5)
        if not isinstance(top, int) or isinstance(top, bool):
            raise ConfigError(f"crash top_frames must be an integer, got {top!r}")
        skip = _str_tuple(data, "skip_prefixes", DEFAULT_SKIP)
        skip += _str_tuple(data, "extra_skip_prefixes", ())
        return cls(top_frames=top, skip_prefixes=skip, ignore=_str_tuple(data, "ignore", ()))

    def ignored_by(self, fingerprint: str, title: str = "") -> str | None:
        """The ignore entry matching this crash, or None."""
        for entry in self.ignore:
            if entry.startswith("re:"):
                rx = _compiled(entry[3:])
                if rx.search(fingerprint) or rx.search(title):
                    return entry
            elif fingerprint == entry or fingerprint.startswith(entry + ":"):
                return entry
        return None


def _str_tuple(data: Mapping[str, object], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = data.get(key, default)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"crash {key} must be a list of strings, got {value!r}")
    return tuple(value)


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


DEFAULT_CONFIG = CrashConfig()


@dataclass(frozen=True)
class Crash:
    """One splat found in a console log.

    `frames` are the function names of the stack in order (the kernel RIP/pc first, '?'
    frames dropped), `frame_modules` the module of each frame ("" for vmlinux).
    `start_line` and `end_line` are 1-based line numbers of the first and last of `lines`.
    """

    kind: str
    title: str
    fingerprint: str
    frames: tuple[str, ...]
    lines: tuple[str, ...]
    start_line: int
    ignored: bool
    sub: str = ""
    frame_modules: tuple[str, ...] = ()
    end_line: int = 0
    ignored_by: str = ""
    # The fingerprint of the splat this one is a consequence of ("Fatal exception" after
    # an Oops), which then names it; "" when it stands alone.
    cause: str = ""
    # Only the title names it (no frame was left): different bugs can share it.
    generic: bool = False


# Panics that only say an earlier splat was fatal: named by that splat, not by their title
# (every Oops in an interrupt ends in the same "Fatal exception in interrupt").
_CONSEQUENCE_RE = re.compile(
    r"^Kernel panic - not syncing: (?:Fatal exception|Aiee, killing interrupt handler"
    r"|Attempted to kill (?:init|the idle task))"
)


def partition(crashes: Iterable[Crash]) -> tuple[list[Crash], list[Crash]]:
    """Split into (crashes to report, crashes matching the ignore list)."""
    real: list[Crash] = []
    known: list[Crash] = []
    for c in crashes:
        (known if c.ignored else real).append(c)
    return real, known


# ---- line-level parsing ------------------------------------------------------------------

# `<4>`, `[   12.345678]`, `[    T123]` / `[  C1]` (CONFIG_PRINTK_CALLER), in that order.
_PREFIX_RE = re.compile(r"^(?:<\d{1,3}>)?(?:\[\s*\d+\.\d+\])?(?:\s?\[\s*[TC]\d+\])?")
_FRAME_RE = re.compile(
    r"^\s*(?:\[<[0-9a-fA-F]+>\]\s*)?(?P<q>\?\s*)?(?P<func>[A-Za-z_.$][\w.$]*)"
    # `+0x` with no digits: the guest's own output landed inside the line
    # ("do_group_exit+0xtrigger-exit=0"); the function name is still right.
    r"\+0x[0-9a-f]*(?:/0x[0-9a-f]+)?(?:\s+\[(?P<mod>[\w-]+)[^\]]*\])?"
)
# decode_stacktrace.sh output: ` foo_bar (net/core/dev.c:123)`.
_DECODED_RE = re.compile(r"^\s*(?P<q>\?\s*)?(?P<func>[A-Za-z_][\w.]*) \([\w./+-]+:\d+")
_RIP_RE = re.compile(
    r"^(?:RIP|EIP|pc|PC is at)\s*:?\s*(?:[0-9a-f]{4}:)?(?:\[<[0-9a-f]+>\]\s*)*"
    r"(?P<func>[A-Za-z_.$][\w.$]*)\+0x[0-9a-f]+(?:/0x[0-9a-f]+)?"
    r"(?:\s+\[(?P<mod>[\w-]+)[^\]]*\])?"
)
_TRACE_START_RE = re.compile(r"^\s*(?:Call [Tt]race|backtrace(?: \(crc [0-9a-f]+\))?)\s*:\s*$")
_STACK_MARK_RE = re.compile(r"^\s*</?(?:TASK|IRQ|NMI|SOFTIRQ|#DF|EOE|EOI)>\s*$")
_TASK_END_RE = re.compile(r"^\s*</TASK>\s*$")
_IRQ_END_RE = re.compile(r"^\s*</(?:IRQ|NMI|SOFTIRQ)>\s*$")
# Printed just before a "cut here" line by the check that fails: part of the splat.
_DIAGNOSIS_RE = re.compile(r"^list_(?:add|del)(?:_valid)? corruption\b")
# The handlers an unclaimed interrupt has ("[<00000000a1b2c3d4>] e1000_intr [e1000]").
_HANDLER_RE = re.compile(r"^\[<[0-9a-f]+>\] ([A-Za-z_][\w.]*)")
_ADDR_ONLY_RE = re.compile(r"^\s*(?:\?\s*)?(?:\[<[0-9a-f]+>\]\s*)?0x[0-9a-f]+\s*$")
_REGS_RE = re.compile(r"^\s*(?:[A-Z][A-Z0-9_]{1,7}:|Code:|pc :|lr :|sp :|x\d+\s*:)")
_END_RE = re.compile(r"^---\[ end (?:trace|Kernel panic)\b")
_CUT_RE = re.compile(r"^-+\[ cut here \]-+\s*$")

_MAX_MATCH = 2048  # regexes see at most this much of a line
_MAX_BLOCK_LINES = 2000
_MAX_FRAMES = 200
_TRACE_MISSES = 3  # unrelated lines tolerated inside a call trace (other CPUs)
_MERGE_WINDOW = 12  # lines after a title in which BUG + Oops fuse into one block


def strip_prefix(line: str) -> str:
    """The console line without its end of line, `<level>`, timestamp and caller id."""
    line = line.rstrip("\r\n")
    m = _PREFIX_RE.match(line)
    if m is None or not m.end():
        return line
    rest = line[m.end() :]
    return rest[1:] if rest.startswith(" ") else rest


@dataclass(frozen=True)
class Frame:
    func: str
    module: str = ""
    unreliable: bool = False  # a `?` frame: a stale return address found on the stack


def parse_frame(msg: str, decoded: bool = False) -> Frame | None:
    """A call-trace line (prefix already stripped) as a Frame, or None."""
    m = _FRAME_RE.match(msg) or (_DECODED_RE.match(msg) if decoded else None)
    if m is None:
        return None
    mod = m.groupdict().get("mod") or ""
    return Frame(m.group("func"), mod, bool(m.group("q")))


def _parse_rip(msg: str) -> Frame | None:
    m = _RIP_RE.match(msg)
    return Frame(m.group("func"), m.group("mod") or "") if m else None


def _slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s.removeprefix("possible-")


def match_kind(msg: str) -> tuple[Kind, str] | None:
    """The table row whose title pattern matches this (prefix-stripped) line, and its sub."""
    for kind in KINDS:
        m = kind.regex.search(msg)
        if m is not None:
            return kind, _slug(m.groupdict().get("sub") or "")
    return None


# ---- fingerprints ------------------------------------------------------------------------


def normalize_function(name: str) -> str:
    """`foo.isra.0` / `foo.cold` / `foo.constprop.0` -> `foo`: compiler clones are one bug."""
    return name.lstrip(".").split(".", 1)[0] or name


def _skipped(name: str, prefixes: Sequence[str]) -> bool:
    for p in prefixes:
        if p.endswith("$"):
            if name == p[:-1]:
                return True
        elif name.startswith(p):
            return True
    return False


def meaningful_frames(frames: Iterable[str], config: CrashConfig = DEFAULT_CONFIG) -> list[str]:
    """The top `config.top_frames` normalised frames that are not generic plumbing."""
    out: list[str] = []
    for f in frames:
        name = normalize_function(f)
        if _skipped(name, config.skip_prefixes) or (out and out[-1] == name):
            continue
        out.append(name)
        if len(out) >= config.top_frames:
            break
    return out


def normalize_title(title: str) -> str:
    """The title without offsets, addresses and numbers (for splats without a stack)."""
    t = re.sub(r"\+0x[0-9a-f]+(?:/0x[0-9a-f]+)?", "", title)
    t = re.sub(r"\b0x[0-9a-fA-F]+\b|\b(?=[0-9a-f]*\d)[0-9a-f]{8,}\b", "X", t)
    t = re.sub(r"\b(?=[0-9a-f]*\d)[0-9a-f]+\b|\d+", "N", t)
    return " ".join(t.split())


def fingerprint(
    kind: str, frames: Iterable[str], title: str = "", config: CrashConfig = DEFAULT_CONFIG
) -> str:
    """`kind[/sub]:f1:f2:...`, or `kind[/sub]:<normalised title>` when no frame is left."""
    top = meaningful_frames(frames, config)
    return f"{kind}:{':'.join(top)}" if top else f"{kind}:{normalize_title(title)}"


# ---- the block state machine -------------------------------------------------------------

_HEADER, _TRACE, _TAIL = "header", "trace", "tail"


@dataclass
class _Block:
    kind: Kind
    sub: str
    title: str
    start_line: int
    lines: list[str]
    phase: str
    frames: list[Frame] = field(default_factory=list)
    rip: Frame | None = None  # printed before the trace: where the splat fired
    seen_frame: bool = False
    # Frames up to the </IRQ> (</NMI>, </SOFTIRQ>) of a splat raised in an interrupt, when
    # that part names functions of its own: the rest is the interrupted context (the idle
    # loop, some user task), which must not change the fingerprint. A stall's IRQ part is
    # only the detector (all skipped): then the interrupted context is the bug.
    irq_frames: int | None = None
    pending: list[str] = field(default_factory=list)  # may or may not belong to the splat
    misses: int = 0


class CrashDetector:
    """Streaming detector for a live console.

    feed() returns the crashes completed by that line (so a runner can react at once);
    `in_crash` tells whether a splat is being printed; finish() closes any open splat and
    returns every crash of the stream, in order.
    """

    def __init__(self, config: CrashConfig = DEFAULT_CONFIG) -> None:
        self._config = config
        self._lineno = 0
        self._open: _Block | None = None
        self._recent: deque[tuple[int, str, str]] = deque(maxlen=4)
        self._done: list[Crash] = []

    @property
    def crashes(self) -> list[Crash]:
        return list(self._done)

    @property
    def in_crash(self) -> bool:
        return self._open is not None

    def feed(self, line: str) -> list[Crash]:
        self._lineno += 1
        raw = line.rstrip("\r\n")
        msg = strip_prefix(raw[:_MAX_MATCH])
        closed: list[Crash] = []
        blk = self._open
        if blk is not None and self._is_end(blk, msg):
            blk.lines.extend(blk.pending)
            blk.pending.clear()
            blk.lines.append(raw)
            closed.append(self._close())
        else:
            hit = match_kind(msg)
            if hit is not None:
                closed.extend(self._on_title(hit[0], hit[1], raw))
            elif blk is not None and self._advance(blk, raw, msg):
                closed.append(self._close())
        self._recent.append((self._lineno, raw, msg))
        self._done.extend(closed)
        return closed

    def finish(self) -> list[Crash]:
        if self._open is not None:
            self._done.append(self._close())
        return list(self._done)

    # -- internals --

    @staticmethod
    def _is_end(blk: _Block, msg: str) -> bool:
        if _END_RE.match(msg):
            return True
        return blk.kind.end is not None and blk.phase != _HEADER and bool(blk.kind.end.match(msg))

    def _on_title(self, kind: Kind, sub: str, raw: str) -> list[Crash]:
        blk = self._open
        if blk is not None and self._merges(blk, kind):
            blk.lines.extend(blk.pending)
            blk.pending.clear()
            blk.lines.append(raw)
            if kind.rank > blk.kind.rank:
                blk.kind, blk.sub = kind, sub or blk.sub
            return []
        new = self._start(kind, sub, raw)
        closed = []
        if blk is not None:
            # The new splat may start before its title (its "cut here" line): the open one
            # ends before that, so two blocks never share a line.
            keep = new.start_line - blk.start_line
            if 0 < keep < len(blk.lines):
                del blk.lines[keep:]
            closed.append(self._close())
        self._open = new
        return closed

    def _merges(self, blk: _Block, kind: Kind) -> bool:
        # "BUG: kernel NULL pointer dereference" + "Oops: 0002 [#1]" is one splat.
        return (
            blk.phase == _HEADER
            and not blk.seen_frame
            and blk.kind.name in kind.continues
            and len(blk.lines) <= _MERGE_WINDOW
        )

    def _start(self, kind: Kind, sub: str, raw: str) -> _Block:
        lines = [raw]
        start = self._lineno
        recent = list(self._recent)
        # Keep the "cut here" marker and the WARN message printed between it and the title.
        for i in range(len(recent) - 1, -1, -1):
            if _CUT_RE.match(recent[i][2]):
                if i > 0 and _DIAGNOSIS_RE.match(recent[i - 1][2]):
                    i -= 1
                lines = [r[1] for r in recent[i:]] + [raw]
                start = recent[i][0]
                break
        phase = _TRACE if kind.frames_follow else _HEADER
        return _Block(kind, sub, strip_prefix(raw).strip(), start, lines, phase)

    def _advance(self, blk: _Block, raw: str, msg: str) -> bool:
        """Feed a non-title line to the open block; True when the block is complete."""
        if len(blk.lines) + len(blk.pending) >= _MAX_BLOCK_LINES:
            return True
        if blk.phase == _HEADER:
            blk.lines.append(raw)
            rip = _parse_rip(msg)
            if rip is not None and blk.rip is None:
                blk.rip = rip
            if _TRACE_START_RE.match(msg):
                blk.phase = _TRACE
                return False
            return len(blk.lines) > blk.kind.header_limit
        if blk.phase == _TRACE:
            self._trace_line(blk, raw, msg, self._config)
            return False
        blk.pending.append(raw)
        return len(blk.pending) > blk.kind.tail

    @staticmethod
    def _trace_line(blk: _Block, raw: str, msg: str, config: CrashConfig) -> None:
        frame = parse_frame(msg, decoded=True)
        rip = None if frame is not None else _parse_rip(msg)
        neutral = bool(
            _STACK_MARK_RE.match(msg)
            or _ADDR_ONLY_RE.match(msg)
            or _TRACE_START_RE.match(msg)
            or _REGS_RE.match(msg)
            or (not msg.strip() and not blk.seen_frame)
        )
        if frame is None and rip is None and not neutral:
            blk.pending.append(raw)
            blk.misses += 1
            # A blank line after frames, or several foreign lines, end the trace.
            if not msg.strip() or blk.misses >= _TRACE_MISSES:
                blk.phase = _TAIL
            return
        blk.lines.extend(blk.pending)
        blk.pending.clear()
        blk.lines.append(raw)
        blk.misses = 0
        if (_IRQ_END_RE.match(msg) and blk.irq_frames is None
                and meaningful_frames([f.func for f in blk.frames], config)):  # fmt: skip
            blk.irq_frames = len(blk.frames)
        if frame is not None:
            blk.seen_frame = True
            if not frame.unreliable:
                blk.frames.append(frame)
        if rip is not None:
            # The interrupted context of an <IRQ>/<NMI> trace: keep it in stack order.
            blk.frames.append(rip)
        if _TASK_END_RE.match(msg) or len(blk.frames) >= _MAX_FRAMES:
            blk.phase = _TAIL

    def _close(self) -> Crash:
        blk = self._open
        assert blk is not None
        self._open = None
        frames = ([blk.rip] if blk.rip is not None else []) + blk.frames
        names = tuple(f.func for f in frames)
        by = names
        if blk.irq_frames is not None:
            by = names[: blk.irq_frames + (blk.rip is not None)]
        if blk.kind.name == "irq_nobody_cared":
            # The handlers that did not claim it name the driver; the stack is IRQ plumbing.
            handlers = [m.group(1) for ln in blk.lines
                        if (m := _HANDLER_RE.match(strip_prefix(ln)))]  # fmt: skip
            by = tuple(handlers) or names
        label = f"{blk.kind.name}/{blk.sub}" if blk.sub else blk.kind.name
        fp = fingerprint(label, by, blk.title, self._config)
        generic = not meaningful_frames(by, self._config)
        cause = ""
        if generic and _CONSEQUENCE_RE.match(blk.title) and self._done:
            cause = self._done[-1].fingerprint
            fp, generic = f"{label}/after:{cause}", False
        rule = self._config.ignored_by(fp, blk.title)
        log.debug("crash %s at line %d: %s", fp, blk.start_line, blk.title)
        return Crash(
            kind=blk.kind.name,
            title=blk.title,
            fingerprint=fp,
            frames=names,
            lines=tuple(blk.lines),
            start_line=blk.start_line,
            ignored=rule is not None,
            sub=blk.sub,
            frame_modules=tuple(f.module for f in frames),
            end_line=blk.start_line + len(blk.lines) - 1,
            ignored_by=rule or "",
            cause=cause,
            generic=generic,
        )


def detect(lines: Iterable[str], config: CrashConfig = DEFAULT_CONFIG) -> list[Crash]:
    """Every crash in a console log (lines with or without their newline)."""
    detector = CrashDetector(config)
    for line in lines:
        detector.feed(line)
    return detector.finish()
