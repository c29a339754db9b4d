"""Crash detection on kernel console logs.

vm-panic-console.log and vm-boot-console-6.1-tcg.log are real (Debian 6.1 guest under
virtme-ng); the other fixtures in tests/data/console/ are hand-made from the kernel's own
report formats, as their first line says.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from patchci.crash import (
    DEFAULT_SKIP,
    KINDS,
    Crash,
    CrashConfig,
    CrashDetector,
    detect,
    fingerprint,
    match_kind,
    meaningful_frames,
    normalize_function,
    parse_frame,
    partition,
    strip_prefix,
)
from patchci.errors import ConfigError

CONSOLE = Path(__file__).parent / "data" / "console"
PANIC_LOG = CONSOLE / "vm-panic-console.log"
BOOT_LOG = CONSOLE / "vm-boot-console-6.1-tcg.log"

SPLAT_FP = "warning:kst_splat_init:do_one_initcall:do_init_module:__do_sys_finit_module"
LOCKUP_FP = "soft_lockup:kst_splat_init:do_one_initcall:do_init_module:__do_sys_finit_module"
OOPS_FP = "oops:kst_do_oops:kst_splat_init:do_one_initcall:do_init_module:__do_sys_finit_module"


def read(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines()


@pytest.fixture(scope="module")
def panic_crashes() -> list[Crash]:
    return detect(read(PANIC_LOG))


# ---- the table ---------------------------------------------------------------------------


def test_kinds_table_is_complete_and_unique() -> None:
    names = [k.name for k in KINDS]
    assert len(names) == len(set(names))
    assert set(names) == {
        "bug", "warning", "oops", "kasan", "ubsan", "kfence", "lockdep", "rcu_stall",
        "hung_task", "soft_lockup", "hard_lockup", "refcount", "kmemleak", "ref_tracker",
        "panic", "irq_nobody_cared",
    }  # fmt: skip
    assert all(k.description and k.regex.pattern for k in KINDS)


@pytest.mark.parametrize(
    ("title", "kind", "sub"),
    [
        ("WARNING: CPU: 0 PID: 253 at /build/mod/kst_splat.c:22 kst_splat_init+0x3f/0x1000", "warning", ""),
        ("WARNING: at kernel/foo.c:12 foo+0x1/0x2", "warning", ""),
        ("WARNING: net/core/dev.c:1234 at dev_foo+0x1/0x2, CPU#1: ip/123", "warning", ""),
        ("BUG: sleeping function called from invalid context at kernel/locking/mutex.c:580", "bug", ""),
        ("BUG: scheduling while atomic: swapper/0/0/0x00000100", "bug", ""),
        ("BUG kmalloc-64 (Not tainted): Poison overwritten", "bug", ""),
        ("kernel BUG at net/core/skbuff.c:4523!", "bug", ""),
        ("BUG: kernel NULL pointer dereference, address: 0000000000000000", "oops", ""),
        ("BUG: unable to handle page fault for address: ffffc90000a3c000", "oops", ""),
        ("Oops: 0002 [#1] PREEMPT SMP NOPTI", "oops", ""),
        ("general protection fault, probably for non-canonical address 0xdffffc0000000003: 0000 [#1] PREEMPT SMP KASAN", "oops", ""),
        ("invalid opcode: 0000 [#1] PREEMPT SMP NOPTI", "oops", ""),
        ("Unable to handle kernel NULL pointer dereference at virtual address 0000000000000008", "oops", ""),
        ("Internal error: Oops: 0000000096000005 [#1] PREEMPT SMP", "oops", ""),
        ("BUG: KASAN: slab-use-after-free in mptcp_pm_nl_rm_addr+0x1a4/0x2e0", "kasan", "slab-use-after-free"),
        ("KASAN: null-ptr-deref in range [0x0000000000000018-0x000000000000001f]", "kasan", "null-ptr-deref"),
        ("UBSAN: shift-out-of-bounds in net/ipv4/tcp.c:12:3", "ubsan", "shift-out-of-bounds"),
        ("BUG: KFENCE: out-of-bounds read in test_out_of_bounds_read+0xa6/0x234", "kfence", "out-of-bounds-read"),
        ("WARNING: possible circular locking dependency detected", "lockdep", "circular-locking-dependency"),
        ("WARNING: possible recursive locking detected", "lockdep", "recursive-locking"),
        ("WARNING: inconsistent lock state", "lockdep", "inconsistent-lock-state"),
        ("WARNING: suspicious RCU usage", "lockdep", "suspicious-rcu-usage"),
        ("WARNING: HARDIRQ-safe -> HARDIRQ-unsafe lock order detected", "lockdep", "hardirq-safe-hardirq-unsafe-lock-order"),
        ("rcu: INFO: rcu_preempt self-detected stall on CPU", "rcu_stall", ""),
        ("rcu: INFO: rcu_sched detected stalls on CPUs/tasks:", "rcu_stall", ""),
        ("INFO: rcu_tasks detected stalls on tasks:", "rcu_stall", ""),
        ("INFO: task kworker/0:3:291 blocked for more than 122 seconds.", "hung_task", ""),
        ("watchdog: BUG: soft lockup - CPU#1 stuck for 3s! [insmod:255]", "soft_lockup", ""),
        ("NMI watchdog: Watchdog detected hard LOCKUP on cpu 1", "hard_lockup", ""),
        ("watchdog: CPU1: Watchdog detected hard LOCKUP on cpu 1", "hard_lockup", ""),
        ("refcount_t: underflow; use-after-free.", "refcount", "underflow"),
        ("refcount_t: addition on 0; use-after-free.", "refcount", "addition-on-0"),
        ("unreferenced object 0xffff888005c7e800 (size 128):", "kmemleak", ""),
        ("ref_tracker: netdev@ffff888009a8c5c8 has 1/1 users at", "ref_tracker", ""),
        ("Kernel panic - not syncing: sysrq triggered crash", "panic", ""),
    ],
)  # fmt: skip
def test_title_lines_match_their_kind(title: str, kind: str, sub: str) -> None:
    hit = match_kind(title)
    assert hit is not None
    assert (hit[0].name, hit[1]) == (kind, sub)


@pytest.mark.parametrize(
    "line",
    [
        'PCI: Using host bridge windows from ACPI; if necessary, use "pci=nocrs" and report a bug',
        "AMD-Vi: AMD IOMMUv2 functionality not available on this system - This is not a bug.",
        "Kernel command line: console=ttyS0 panic=-1",
        "rcu: Preemptible hierarchical RCU implementation.",
        "kmemleak: Kernel memory leak detector initialized (mem pool available: 15709)",
        "kasan: KernelAddressSanitizer initialized",
        "# WARNING: test skipped, no ipv6",
        "Call Trace:",
        "---[ end trace 0000000000000000 ]---",
    ],
)
def test_ordinary_lines_match_no_kind(line: str) -> None:
    assert match_kind(line) is None


# ---- the real console log ----------------------------------------------------------------


def test_clean_boot_has_no_crash() -> None:
    assert detect(read(BOOT_LOG)) == []


def test_real_log_finds_every_splat_in_order(panic_crashes: list[Crash]) -> None:
    assert [c.kind for c in panic_crashes] == [
        "warning", "soft_lockup", "soft_lockup", "oops", "panic",
    ]  # fmt: skip
    assert [c.fingerprint for c in panic_crashes[:4]] == [SPLAT_FP, LOCKUP_FP, LOCKUP_FP, OOPS_FP]
    assert not any(c.ignored for c in panic_crashes)


def test_real_warning_block(panic_crashes: list[Crash]) -> None:
    lines = read(PANIC_LOG)
    warn = panic_crashes[0]
    assert warn.title.startswith("WARNING: CPU: 0 PID: 253 at /build/mod/kst_splat.c:22 ")
    # The top frame is the RIP, from the kst_splat module; '?' frames are dropped.
    assert warn.frames[0] == "kst_splat_init"
    assert warn.frame_modules[0] == "kst_splat"
    assert "0xffffffffc04b1000" not in " ".join(warn.frames)
    assert "syscall_exit_to_user_mode" not in warn.frames
    # The block runs from "cut here" (with the WARN message) to the end-trace marker.
    assert "[ cut here ]" in warn.lines[0]
    assert "kst_splat: deliberate warning" in warn.lines[1]
    assert warn.lines[-1].endswith("---[ end trace 0000000000000000 ]---")
    assert lines[warn.start_line - 1] == warn.lines[0]
    assert lines[warn.end_line - 1] == warn.lines[-1]
    assert warn.end_line - warn.start_line + 1 == len(warn.lines)


def test_real_soft_lockups_share_a_fingerprint(panic_crashes: list[Crash]) -> None:
    first, second = panic_crashes[1], panic_crashes[2]
    assert first.title == "watchdog: BUG: soft lockup - CPU#1 stuck for 3s! [insmod:255]"
    assert second.title == "watchdog: BUG: soft lockup - CPU#1 stuck for 6s! [insmod:255]"
    assert first.frames[:2] == ("delay_tsc", "kst_splat_init")  # udelay internals are skipped
    assert first.fingerprint == second.fingerprint
    assert first.lines[-1].strip().endswith("</TASK>")
    assert second.start_line == first.end_line + 1


def test_real_null_deref_and_oops_are_one_block(panic_crashes: list[Crash]) -> None:
    oops = panic_crashes[3]
    assert oops.title == "BUG: kernel NULL pointer dereference, address: 0000000000000000"
    assert any("Oops: 0002 [#1] PREEMPT SMP NOPTI" in line for line in oops.lines)
    assert (oops.frames[0], oops.frame_modules[0]) == ("kst_do_oops", "kst_oops")
    assert oops.frame_modules[1] == "kst_oops"
    assert oops.lines[-1].endswith("---[ end trace 0000000000000000 ]---")


def test_real_panic_without_trace_uses_its_title(panic_crashes: list[Crash]) -> None:
    panic = panic_crashes[4]
    assert panic.title == "Kernel panic - not syncing: sysrq triggered crash"
    assert panic.frames == ()
    assert panic.fingerprint == "panic:Kernel panic - not syncing: sysrq triggered crash"
    assert panic.end_line == len(read(PANIC_LOG))  # closed by the end of the log


# ---- hand-made fixtures, one per kind ----------------------------------------------------

HANDMADE = {
    "kasan-slab-use-after-free.log": [
        ("kasan", "BUG: KASAN: slab-use-after-free in mptcp_pm_nl_rm_addr+0x1a4/0x2e0",
         "kasan/slab-use-after-free:mptcp_pm_nl_rm_addr:mptcp_pm_nl_del_addr_doit:"
         "genl_family_rcv_msg_doit:genl_rcv_msg:netlink_rcv_skb"),
    ],
    "kasan-gpf-null-ptr-deref.log": [
        ("kasan", "general protection fault, probably for non-canonical address "
         "0xdffffc0000000003: 0000 [#1] PREEMPT SMP KASAN NOPTI",
         "kasan/null-ptr-deref:tcp_ao_del_cmd:do_tcp_setsockopt:tcp_setsockopt:"
         "do_sock_setsockopt:__sys_setsockopt"),
        ("panic", "Kernel panic - not syncing: Fatal exception",
         "panic/after:kasan/null-ptr-deref:tcp_ao_del_cmd:do_tcp_setsockopt:tcp_setsockopt:"
         "do_sock_setsockopt:__sys_setsockopt"),
    ],
    "ubsan-array-index-out-of-bounds.log": [
        ("ubsan", "UBSAN: array-index-out-of-bounds in net/mptcp/pm_netlink.c:1207:22",
         "ubsan/array-index-out-of-bounds:mptcp_pm_nl_append_new_local_addr:"
         "mptcp_pm_nl_add_addr_doit:genl_family_rcv_msg_doit:genl_rcv_msg:netlink_rcv_skb"),
    ],
    "kfence-use-after-free.log": [
        ("kfence", "BUG: KFENCE: use-after-free read in mptcp_pm_free_anno_list+0x7e/0x1d0",
         "kfence/use-after-free-read:mptcp_pm_free_anno_list:mptcp_destroy_common:"
         "mptcp_destroy:__mptcp_destroy_sock:mptcp_close"),
    ],
    "lockdep-circular.log": [
        ("lockdep", "WARNING: possible circular locking dependency detected",
         "lockdep/circular-locking-dependency:mptcp_pm_nl_work:mptcp_worker"),
    ],
    "lockdep-recursive.log": [
        ("lockdep", "WARNING: possible recursive locking detected",
         "lockdep/recursive-locking:kst_dev_set_mtu:kst_dev_change_flags:"
         "__dev_change_flags:dev_change_flags:do_setlink"),
    ],
    "lockdep-inconsistent.log": [
        ("lockdep", "WARNING: inconsistent lock state",
         "lockdep/inconsistent-lock-state:kst_rx_stats:kst_poll:__napi_poll:net_rx_action"),
    ],
    "lockdep-suspicious-rcu.log": [
        ("lockdep", "WARNING: suspicious RCU usage",
         "lockdep/suspicious-rcu-usage:__lookup_addr_by_id:mptcp_pm_nl_get_addr:"
         "genl_family_rcv_msg_doit:genl_rcv_msg:netlink_rcv_skb"),
    ],
    "rcu-stall.log": [
        ("rcu_stall", "rcu: INFO: rcu_preempt self-detected stall on CPU",
         "rcu_stall:kst_stall_spin:kst_stall_init:do_one_initcall:do_init_module:"
         "__do_sys_finit_module"),
    ],
    "hung-task.log": [
        ("hung_task", "INFO: task kworker/0:3:291 blocked for more than 122 seconds.",
         "hung_task:rtnl_lock:kst_reset_work"),
    ],
    "hard-lockup.log": [
        ("hard_lockup", "NMI watchdog: Watchdog detected hard LOCKUP on cpu 1",
         "hard_lockup:kst_hard_spin:kst_hardlockup_init:do_one_initcall:do_init_module:"
         "__do_sys_finit_module"),
    ],
    "refcount-underflow.log": [
        ("refcount", "refcount_t: underflow; use-after-free.",
         "refcount/underflow:mptcp_pm_free_anno_list:mptcp_destroy_common:mptcp_destroy:"
         "__mptcp_destroy_sock:mptcp_close"),
    ],
    "kmemleak.log": [
        ("kmemleak", "unreferenced object 0xffff888005c7e800 (size 128):",
         "kmemleak:mptcp_pm_nl_append_new_local_addr:mptcp_pm_nl_add_addr_doit:"
         "genl_family_rcv_msg_doit:genl_rcv_msg:netlink_rcv_skb"),
        ("kmemleak", "unreferenced object 0xffff888005c7e900 (size 128):",
         "kmemleak:mptcp_pm_nl_append_new_local_addr:mptcp_pm_nl_add_addr_doit:"
         "genl_family_rcv_msg_doit:genl_rcv_msg:netlink_rcv_skb"),
    ],
    "ref-tracker.log": [
        ("ref_tracker", "ref_tracker: netdev@ffff888009a8c5c8 has 1/1 users at",
         "ref_tracker:dst_alloc:ip6_dst_alloc:ip6_rt_cache_alloc:ip6_pol_route:"
         "fib6_rule_lookup"),
    ],
    "bug-sleeping-in-atomic.log": [
        ("bug", "BUG: sleeping function called from invalid context at "
         "kernel/locking/mutex.c:580",
         "bug:lock_sock_nested:mptcp_pm_remove_addrs_and_subflows:"
         "mptcp_nl_remove_addrs_list:mptcp_pm_nl_flush_addrs_doit:genl_family_rcv_msg_doit"),
    ],
    "kernel-bug-at.log": [
        ("oops", "kernel BUG at net/core/skbuff.c:4523!",
         "oops:skb_segment:tcp_gso_segment:inet_gso_segment:skb_mac_gso_segment:"
         "__skb_gso_segment"),
        # a consequence: named by the splat that was fatal, not by the title every Oops in
        # an interrupt ends with
        ("panic", "Kernel panic - not syncing: Fatal exception in interrupt",
         "panic/after:oops:skb_segment:tcp_gso_segment:inet_gso_segment:skb_mac_gso_segment:"
         "__skb_gso_segment"),
    ],
    "panic-with-trace.log": [
        ("panic", "Kernel panic - not syncing: kst_panic: deliberate panic from init",
         "panic:kst_panic_init:do_one_initcall:do_init_module:__do_sys_finit_module"),
    ],
    # NIPA catches it; patchci did not know the kind. The handler that did not claim the
    # interrupt names the driver; the stack is IRQ plumbing and the idle task.
    "irq-nobody-cared.log": [
        ("irq_nobody_cared", 'irq 11: nobody cared (try booting with the "irqpoll" option)',
         "irq_nobody_cared:e1000_intr"),
    ],
    # The same WARNING from a timer, interrupting the idle loop or a user task: the
    # interrupted context (after </IRQ>) gave the user-task one a fingerprint of its own.
    "timer-warning-in-irq-idle.log": [
        ("warning", "WARNING: CPU: 1 PID: 0 at net/mptcp/protocol.c:2475 "
         "mptcp_retransmit_timer+0x1c2/0x1d0 [mptcp]",
         "warning:mptcp_retransmit_timer:call_timer_fn:__run_timers:run_timer_softirq"),
    ],
    "timer-warning-in-irq-user.log": [
        ("warning", "WARNING: CPU: 1 PID: 4127 at net/mptcp/protocol.c:2475 "
         "mptcp_retransmit_timer+0x1c2/0x1d0 [mptcp]",
         "warning:mptcp_retransmit_timer:call_timer_fn:__run_timers:run_timer_softirq"),
    ],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(HANDMADE))
def test_handmade_fixture(name: str) -> None:
    text = read(CONSOLE / name)
    assert text[0].startswith("# hand-made from the format of ")
    assert "not captured from a run" in " ".join(line for line in text if line.startswith("#"))
    crashes = detect(text)
    got = [(c.kind, c.title, c.fingerprint) for c in crashes]
    assert got == HANDMADE[name]
    for c in crashes:
        assert text[c.start_line - 1] == c.lines[0]
        assert text[c.end_line - 1] == c.lines[-1]


def test_every_kind_has_a_fixture() -> None:
    covered = {kind for expected in HANDMADE.values() for kind, _, _ in expected}
    covered |= {"warning", "soft_lockup", "oops", "panic"}  # the real log
    # A BUG: kernel NULL pointer dereference and a kernel BUG both become "oops" blocks;
    # the plain "bug" kind is covered by the sleeping-in-atomic fixture.
    assert covered == {k.name for k in KINDS}


def test_sanitizer_block_runs_to_its_closing_rule() -> None:
    text = read(CONSOLE / "kasan-slab-use-after-free.log")
    (kasan,) = detect(text)
    assert kasan.lines[-1].endswith("=" * 66)
    assert any("Freed by task 0:" in line for line in kasan.lines)
    # The allocation and free stacks are in the block but not in the fingerprint.
    assert "kasan_save_stack" not in kasan.frames
    assert "Disabling lock debugging" not in kasan.lines[-1]


def test_lockdep_dependency_chain_frames_are_not_the_stack() -> None:
    (dep,) = detect(read(CONSOLE / "lockdep-circular.log"))
    assert dep.frames[0] == "dump_stack_lvl"
    assert "mptcp_pm_nl_add_addr_doit" not in dep.frames  # from the "-> #1" chain only
    assert dep.lines[-1].endswith(" </TASK>")


def test_hung_task_stops_before_the_lock_dump() -> None:
    (hung,) = detect(read(CONSOLE / "hung-task.log"))
    assert hung.lines[-1].endswith(" </TASK>")
    assert not any("Showing all locks held" in line for line in hung.lines)


def test_irq_trace_keeps_the_interrupted_context_in_order() -> None:
    (dep,) = detect(read(CONSOLE / "lockdep-inconsistent.log"))
    # default_idle is the RIP of the interrupted idle task, after the IRQ frames.
    assert dep.frames.index("kst_rx_stats") < dep.frames.index("default_idle")


def test_kmemleak_without_console_prefix() -> None:
    first, second = detect(read(CONSOLE / "kmemleak.log"))
    assert first.frames[:2] == ("kmemleak_alloc", "kmalloc_trace")
    assert first.fingerprint == second.fingerprint
    assert second.start_line == first.end_line + 1
    assert not any("kmemleak done" in line for line in second.lines)


# ---- fingerprints ------------------------------------------------------------------------


def _rebuild(lines: list[str], seed: int) -> list[str]:
    """The same log from "another build and boot": new timestamps, addresses and offsets,
    `<level>` and printk caller-id prefixes."""
    rng = random.Random(seed)

    def hexnum(m: re.Match[str]) -> str:
        return "0x" + "".join(rng.choice("0123456789abcdef") for _ in m.group(1))

    out = []
    for line in lines:
        line = re.sub(r"0x([0-9a-f]+)", hexnum, line)
        line = re.sub(r"\b[0-9a-f]{16}\b", lambda m: f"{rng.getrandbits(64):016x}", line)
        m = re.match(r"^\[\s*(\d+\.\d+)\] ?(.*)$", line)
        if m:
            ts = float(m.group(1)) * 1.7 + 3
            line = f"<4>[{ts:12.6f}][  T{rng.randint(1, 999)}] {m.group(2)}"
        out.append(line)
    return out


@pytest.mark.parametrize("name", ["vm-panic-console.log", *sorted(HANDMADE)])
def test_fingerprint_survives_other_addresses_timestamps_and_prefixes(name: str) -> None:
    lines = read(CONSOLE / name)
    before = [(c.kind, c.fingerprint) for c in detect(lines)]
    after = [(c.kind, c.fingerprint) for c in detect(_rebuild(lines, seed=len(name)))]
    assert after == before
    assert before


def test_compiler_clones_and_offsets_do_not_change_the_fingerprint() -> None:
    a = fingerprint("warning", ["foo.isra.0", "bar.constprop.0", "baz.cold"])
    b = fingerprint("warning", ["foo", "bar", "baz"])
    assert a == b == "warning:foo:bar:baz"
    assert normalize_function("genl_family_rcv_msg_doit.isra.0") == "genl_family_rcv_msg_doit"


def test_fingerprint_skips_generic_frames_and_repeats() -> None:
    frames = ["dump_stack_lvl", "__warn", "foo", "foo", "do_syscall_64", "bar"]
    assert meaningful_frames(frames) == ["foo", "bar"]


def test_skip_entry_with_dollar_is_exact() -> None:
    # "schedule$" skips schedule() but not schedule_work(), a real caller.
    assert meaningful_frames(["schedule", "schedule_work", "kst_fn"]) == [
        "schedule_work",
        "kst_fn",
    ]


def test_top_frames_and_skip_prefixes_are_configurable() -> None:
    text = read(PANIC_LOG)
    two = detect(text, CrashConfig(top_frames=2))
    assert two[0].fingerprint == "warning:kst_splat_init:do_one_initcall"
    mine = CrashConfig(skip_prefixes=(*DEFAULT_SKIP, "kst_", "do_one_initcall"))
    assert detect(text, mine)[0].fingerprint == "warning:do_init_module:__do_sys_finit_module"


def test_title_fallback_strips_numbers_and_addresses() -> None:
    a = fingerprint("bug", [], "BUG: Bad page state in process ip  pfn:0a2b3 at 0xffff888012345678")
    b = fingerprint("bug", [], "BUG: Bad page state in process ip  pfn:1c2d4 at 0xffff888087654321")
    assert a == b


# ---- console formats, interleaving, several splats ---------------------------------------


@pytest.mark.parametrize(
    ("line", "msg"),
    [
        ("[   12.345678] WARNING: x", "WARNING: x"),
        ("<4>[ 12.3] WARNING: x", "WARNING: x"),
        ("[   12.345678][    T123] WARNING: x", "WARNING: x"),
        ("[   12.345678][  C1] WARNING: x", "WARNING: x"),
        ("<6>[    1.000000] [  T1]  do_one_initcall+0x59/0x220", " do_one_initcall+0x59/0x220"),
        ("<4>WARNING: x\r\n", "WARNING: x"),
        ("[   25.358443]  ? 0xffffffffc04b1000", " ? 0xffffffffc04b1000"),
        ("plain user space line", "plain user space line"),
        ("", ""),
    ],
)
def test_strip_prefix(line: str, msg: str) -> None:
    assert strip_prefix(line) == msg


@pytest.mark.parametrize(
    ("line", "func", "module", "unreliable"),
    [
        ("  foo_bar+0x1a/0x40 [mod]", "foo_bar", "mod", False),
        (" ? baz+0x5/0x10", "baz", "", True),
        ("    [<ffffffff8136e0c5>] kmemleak_alloc+0x4e/0x80", "kmemleak_alloc", "", False),
        (" kst_fn+0x3f/0x1000 [kst_splat 4d2c1a7e9b0f3a6c]", "kst_fn", "kst_splat", False),
        (" lock_acquire.part.0+0xc9/0x2d0", "lock_acquire.part.0", "", False),
    ],
)
def test_parse_frame(line: str, func: str, module: str, unreliable: bool) -> None:
    frame = parse_frame(line)
    assert frame is not None
    assert (frame.func, frame.module, frame.unreliable) == (func, module, unreliable)


@pytest.mark.parametrize(
    "line", ["Call Trace:", " <TASK>", "RIP: 0033:0x7f181e659829", " ? 0xffffffffc04b1000"]
)
def test_parse_frame_rejects_non_frames(line: str) -> None:
    assert parse_frame(line) is None


def test_decoded_stack_frames_are_read_inside_a_trace() -> None:
    log = [
        "[    5.1] WARNING: CPU: 0 PID: 1 at net/core/dev.c:12 foo+0x1/0x2",
        "[    5.1] RIP: 0010:foo (net/core/dev.c:12)",
        "[    5.1] Call Trace:",
        "[    5.1]  <TASK>",
        "[    5.1]  ? __warn (kernel/panic.c:673)",
        "[    5.1]  bar_init (net/core/bar.c:99) bar",
        "[    5.1]  do_one_initcall (init/main.c:1238)",
        "[    5.1]  </TASK>",
        "[    5.1] ---[ end trace 0000000000000000 ]---",
    ]
    (c,) = detect(log)
    assert c.frames == ("bar_init", "do_one_initcall")
    assert c.fingerprint == "warning:bar_init:do_one_initcall"


def test_interleaved_lines_from_other_cpus_are_tolerated(panic_crashes: list[Crash]) -> None:
    lines = read(PANIC_LOG)
    warn = panic_crashes[0]
    at = next(i for i, line in enumerate(lines) if "do_init_module+0x4a" in line)
    noise = [
        "[   25.359500] virtio_net virtio0 eth0: link up",
        "[   25.359501] IPv6: ADDRCONF(NETDEV_CHANGE): eth0: link becomes ready",
    ]
    mixed = lines[:at] + noise + lines[at:]
    got = detect(mixed)
    assert got[0].fingerprint == warn.fingerprint == SPLAT_FP
    assert noise[0] in got[0].lines
    assert [c.fingerprint for c in got] == [c.fingerprint for c in panic_crashes]


def test_several_logs_back_to_back() -> None:
    names = ["refcount-underflow.log", "hung-task.log", "ubsan-array-index-out-of-bounds.log"]
    joined = [line for name in names for line in read(CONSOLE / name)]
    assert [c.kind for c in detect(joined)] == ["refcount", "hung_task", "ubsan"]


def test_arm64_oops() -> None:
    log = """\
[   10.100000] Unable to handle kernel NULL pointer dereference at virtual address 0000000000000008
[   10.100001] Mem abort info:
[   10.100002]   ESR = 0x0000000096000005
[   10.100003] Internal error: Oops: 0000000096000005 [#1] PREEMPT SMP
[   10.100004] Modules linked in: kst_oops(O+)
[   10.100005] CPU: 2 PID: 231 Comm: insmod Tainted: G           O       6.6.0 #1
[   10.100006] Hardware name: linux,dummy-virt (DT)
[   10.100007] pc : kst_do_oops+0x1c/0x40 [kst_oops]
[   10.100008] lr : kst_oops_init+0x18/0x1000 [kst_oops]
[   10.100009] sp : ffff80008263bb60
[   10.100010] x29: ffff80008263bb60 x28: 0000000000000000 x27: 0000000000000000
[   10.100011] Call trace:
[   10.100012]  kst_do_oops+0x1c/0x40 [kst_oops]
[   10.100013]  kst_oops_init+0x18/0x1000 [kst_oops]
[   10.100014]  do_one_initcall+0x60/0x1d8
[   10.100015]  do_init_module+0x60/0x1f0
[   10.100016]  el0t_64_sync+0x190/0x198
[   10.100017] Code: d2800001 f9400021 (f9000420) d65f03c0
[   10.100018] ---[ end trace 0000000000000000 ]---
""".splitlines()
    (c,) = detect(log)
    assert c.kind == "oops"
    assert c.title.startswith("Unable to handle kernel NULL pointer dereference")
    assert c.fingerprint == "oops:kst_do_oops:kst_oops_init:do_one_initcall:do_init_module"
    assert c.lines[-1].endswith("---[ end trace 0000000000000000 ]---")


def test_splat_without_trace_is_closed_by_the_line_budget() -> None:
    log = ["[    1.0] BUG: Bad rss-counter state mm:00000000a1b2c3d4 type:MM_ANONPAGES val:1"]
    log += [f"[    1.{i}] unrelated message {i}" for i in range(500)]
    (c,) = detect(log)
    assert c.kind == "bug"
    assert len(c.lines) <= 61
    assert c.fingerprint == "bug:BUG: Bad rss-counter state mm:X type:MM_ANONPAGES val:N"


# ---- ignore list -------------------------------------------------------------------------


def test_ignore_by_fingerprint_prefix_and_regex(panic_crashes: list[Crash]) -> None:
    text = read(PANIC_LOG)
    cfg = CrashConfig(ignore=(SPLAT_FP, "soft_lockup:kst_splat_init", r"re:sysrq triggered"))
    got = detect(text, cfg)
    assert [c.fingerprint for c in got] == [c.fingerprint for c in panic_crashes]
    assert [c.ignored for c in got] == [True, True, True, False, True]
    assert got[0].ignored_by == SPLAT_FP
    assert got[1].ignored_by == "soft_lockup:kst_splat_init"
    assert got[4].ignored_by == "re:sysrq triggered"
    real, known = partition(got)
    assert [c.kind for c in real] == ["oops"]
    assert len(known) == 4


def test_ignore_prefix_matches_whole_frames_only() -> None:
    cfg = CrashConfig(ignore=("warning:kst_splat",))  # not a frame: kst_splat_init is
    assert not any(c.ignored for c in detect(read(PANIC_LOG), cfg))


def test_bad_config_is_rejected() -> None:
    with pytest.raises(ConfigError, match="invalid"):
        CrashConfig(ignore=("re:(unclosed",))
    with pytest.raises(ConfigError, match="top_frames"):
        CrashConfig(top_frames=0)


def test_config_from_mapping() -> None:
    cfg = CrashConfig.from_mapping(
        {"top_frames": 3, "extra_skip_prefixes": ["kst_"], "ignore": ["re:soft lockup"]}
    )
    assert cfg.top_frames == 3
    assert cfg.skip_prefixes[-1] == "kst_"
    assert cfg.skip_prefixes[: len(DEFAULT_SKIP)] == DEFAULT_SKIP
    got = detect(read(PANIC_LOG), cfg)
    assert got[0].fingerprint == "warning:do_one_initcall:do_init_module:__do_sys_finit_module"
    assert [c.ignored for c in got] == [False, True, True, False, False]
    for bad in ({"top_frames": "5"}, {"ignore": "x"}, {"nope": 1}, {"top_frames": True}):
        with pytest.raises(ConfigError):
            CrashConfig.from_mapping(bad)


# ---- streaming and robustness ------------------------------------------------------------


def test_streaming_reports_each_crash_when_it_ends() -> None:
    lines = read(PANIC_LOG)
    det = CrashDetector()
    closed_at: list[tuple[int, str]] = []
    for n, line in enumerate(lines, 1):
        for c in det.feed(line + "\n"):
            closed_at.append((n, c.kind))
        if "kst_splat: deliberate warning" in line:
            assert not det.in_crash  # "cut here" alone opens nothing
        if "WARNING: CPU: 0 PID: 253" in line:
            assert det.in_crash
            assert not det.crashes
    # The WARNING is reported on its end-trace line, the lockup when the next one starts.
    assert closed_at[0] == (526, "warning")
    assert closed_at[1] == (567, "soft_lockup")
    assert det.in_crash  # the panic is still open at the end of the stream
    final = det.finish()
    assert [c.kind for c in final] == [c.kind for c in detect(lines)]
    assert not det.in_crash


def test_truncated_splat_is_closed_by_finish() -> None:
    lines = read(PANIC_LOG)
    cut = next(i for i, line in enumerate(lines) if "do_init_module+0x4a" in line)
    (warn,) = detect(lines[:cut])
    assert warn.kind == "warning"
    assert warn.frames == ("kst_splat_init", "do_one_initcall")


GARBAGE_SEEDS = range(20)


@pytest.mark.parametrize("seed", GARBAGE_SEEDS)
def test_garbage_never_raises(seed: int) -> None:
    rng = random.Random(seed)
    real = read(PANIC_LOG) + read(CONSOLE / "kasan-slab-use-after-free.log")
    pieces = [
        "", " ", "\x00\x1b[0m", "[", "[ 1.0]", "<4>", "]  </TASK>", "Call Trace:", "? +0x/0x",
        "---[ end trace", "=" * 70, "BUG: ", "WARNING: CPU: 0 PID: 1 at", "RIP: 0010:",
        "x" * 5000, "\udcff\ufffd", "refcount_t: ", "ref_tracker: ", "unreferenced object 0x1 (size 1)",
    ]  # fmt: skip
    lines = []
    for _ in range(600):
        roll = rng.random()
        if roll < 0.4:
            line = rng.choice(real)
            cut = rng.randrange(len(line) + 1)
            lines.append(line[:cut] + rng.choice(pieces) + line[cut:])
        elif roll < 0.8:
            lines.append("".join(rng.choice(pieces) for _ in range(rng.randint(0, 4))))
        else:
            lines.append(bytes(rng.getrandbits(8) for _ in range(80)).decode("latin-1"))
    crashes = detect(lines)
    names = {k.name for k in KINDS}
    for c in crashes:
        assert c.kind in names
        assert c.lines and c.start_line >= 1 and c.end_line >= c.start_line
        assert c.fingerprint.split(":", 1)[0].split("/")[0] == c.kind


def test_large_log_is_linear_enough() -> None:
    lines = read(BOOT_LOG) * 60 + read(PANIC_LOG) * 5  # ~32k lines
    crashes = detect(lines)
    assert len(crashes) == 25


def test_two_blocks_never_share_a_line() -> None:
    """Two crash blocks could overlap: a splat without a call trace reads on, took the
    next splat's "cut here" line, and the next block took it too."""
    log = [
        "[    1.000000] BUG: scheduling while atomic: swapper/0/0/0x00000002",
        "[    1.000001] Modules linked in:",
        "[    1.000002] ------------[ cut here ]------------",
        "[    1.000003] WARNING: CPU: 0 PID: 1 at net/core/dev.c:42 dev_thing+0x1a/0x40",
        "[    1.000004] Call Trace:",
        "[    1.000005]  <TASK>",
        "[    1.000006]  dev_do_thing+0x2c/0x80",
        "[    1.000007]  </TASK>",
        "[    1.000008] ---[ end trace 0000000000000000 ]---",
    ]
    first, second = detect(log)
    assert first.end_line < second.start_line
    assert second.start_line == 3 and "cut here" in second.lines[0]
    assert not any("cut here" in ln for ln in first.lines)


# ---- real Debian 6.1 guest logs ------------------------------------------------------------
# tests/data/console/real-6.1 (see its README): every splat's kind, first and last line and
# fingerprint, checked by hand against the log.

REAL_61 = {
    "bug.console.log": [
        ("oops", 499, 542, "oops:fzp_bug:fzp_direct_write:full_proxy_write:vfs_write:ksys_write"),
    ],
    "clean-boot.console.log": [],
    "corrupt-list-add.console.log": [
        ("oops", 499, 553, "oops:__list_add_valid:fzp_corrupt_list_add:fzp_direct_write:"
         "full_proxy_write:vfs_write"),
    ],
    "gpf.console.log": [
        ("oops", 495, 529, "oops:fzp_gpf:fzp_direct_write:full_proxy_write:vfs_write:ksys_write"),
    ],
    "hung-task.console.log": [
        ("hung_task", 500, 537, "hung_task:fzp_direct_write:full_proxy_write:vfs_write:ksys_write"),
        ("hung_task", 538, 575, "hung_task:fzp_direct_write:full_proxy_write:vfs_write:ksys_write"),
        ("hung_task", 576, 613, "hung_task:fzp_direct_write:full_proxy_write:vfs_write:ksys_write"),
    ],
    "multi.console.log": [
        ("warning", 497, 540, "warning:fzp_warning:fzp_direct_write:full_proxy_write:vfs_write:"
         "ksys_write"),
        ("warning", 543, 591, "warning:fzp_warning_message:fzp_direct_write:full_proxy_write:"
         "vfs_write:ksys_write"),
        ("bug", 594, 624, "bug:msleep:fzp_sched_atomic:fzp_direct_write:full_proxy_write:"
         "vfs_write"),
        # "do_group_exit+0xtrigger-exit=0": the guest's output inside a frame, kept
        ("bug", 625, 650, "bug:do_task_dead:do_exit:do_group_exit:__x64_sys_exit_group"),
        ("oops", 652, 692, "oops:fzp_null_read:fzp_direct_write:full_proxy_write:vfs_write:"
         "ksys_write"),
        ("warning", 709, 752, "warning:fzp_warning:fzp_direct_write:full_proxy_write:vfs_write:"
         "ksys_write"),
    ],
    "null-read.console.log": [
        ("oops", 494, 536, "oops:fzp_null_read:fzp_direct_write:full_proxy_write:vfs_write:"
         "ksys_write"),
    ],
    "panic.console.log": [
        ("panic", 497, 526, "panic:fzp_panic:fzp_direct_write:full_proxy_write:vfs_write:"
         "ksys_write"),
    ],
    "rcu-stall.console.log": [
        ("rcu_stall", 496, 535, "rcu_stall:fzp_spin:fzp_direct_write:full_proxy_write:vfs_write:"
         "ksys_write"),
    ],
    "refcount-all.console.log": [
        ("refcount", 495, 541, "refcount/addition-on-0:fzp_refcount_inc_zero:fzp_direct_write:"
         "full_proxy_write:vfs_write:ksys_write"),
        ("refcount", 544, 595, "refcount/decrement-hit-0:fzp_refcount_dec_zero:fzp_direct_write:"
         "full_proxy_write:vfs_write:ksys_write"),
        ("refcount", 600, 642, "refcount/saturated:fzp_refcount_overflow:fzp_direct_write:"
         "full_proxy_write:vfs_write:ksys_write"),
    ],
    "slab-free-double.console.log": [
        ("oops", 499, 551, "oops:__kmem_cache_free:fzp_direct_write:full_proxy_write:vfs_write:"
         "ksys_write"),
    ],
    "softlockup.console.log": [
        ("soft_lockup", 498, 546, "soft_lockup:fzp_spin:fzp_direct_write:full_proxy_write:"
         "vfs_write:ksys_write"),
    ],
    "warning-1.console.log": [
        ("warning", 496, 541, "warning:fzp_warning:fzp_direct_write:full_proxy_write:vfs_write:"
         "ksys_write"),
    ],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(REAL_61))
def test_real_61_guest_logs(name: str) -> None:
    text = (CONSOLE / "real-6.1" / name).read_text(errors="replace").splitlines()
    got = detect(text)
    assert [(c.kind, c.start_line, c.end_line, c.fingerprint) for c in got] == REAL_61[name]
    for c in got:
        assert text[c.start_line - 1] == c.lines[0] and text[c.end_line - 1] == c.lines[-1]
    for a, b in zip(got, got[1:], strict=False):
        assert a.end_line < b.start_line  # two blocks never share a line


def test_the_list_debug_diagnosis_is_part_of_the_splat() -> None:
    """`list_add corruption. next->prev should be prev ...`, printed before `cut here`,
    says what was corrupted: it was left out of the block."""
    text = (CONSOLE / "real-6.1" / "corrupt-list-add.console.log").read_text().splitlines()
    (c,) = detect(text)
    assert "list_add corruption. next->prev should be prev" in c.lines[0]
    assert "cut here" in c.lines[1]


def test_a_real_splat_survives_a_rebuild_and_reboot() -> None:
    for name, want in REAL_61.items():
        text = (CONSOLE / "real-6.1" / name).read_text(errors="replace").splitlines()
        again = detect(_rebuild(text, seed=len(name)))
        assert [c.fingerprint for c in again] == [fp for *_, fp in want], name


def test_a_consequence_panic_is_named_by_its_cause_and_a_title_only_one_says_generic() -> None:
    """"Fatal exception in interrupt" follows every Oops in an interrupt: two different
    bugs shared its title-only fingerprint."""
    oops, panic = detect(read(CONSOLE / "kernel-bug-at.log"))
    assert panic.cause == oops.fingerprint and not panic.generic
    alone = detect(["[ 1.0] Kernel panic - not syncing: Fatal exception in interrupt"])
    (p,) = alone
    assert p.cause == "" and p.generic  # nothing before it: its title is all it has
    assert not oops.generic


def test_a_trace_less_splat_does_not_take_a_later_unrelated_stack() -> None:
    """A stall report without a backtrace waited 60 lines for one and took the stack the
    console printed next (here a sysrq task dump 40 lines later) as its fingerprint."""
    log = ["[   10.000000] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
           "[   10.000001] rcu: \tTasks blocked on level-0 rcu_node (CPUs 0-1): P247",
           "[   10.000002] \t(detected by 1, t=5252 jiffies, g=4517, q=12 ncpus=2)"]
    log += [f"[   11.{i:06d}] e1000: eth0 NIC Link is Up 1000 Mbps" for i in range(40)]
    log += ["[   12.000000] sysrq: Show Blocked State", "[   12.000001] Call Trace:",
            "[   12.000002]  <TASK>", "[   12.000003]  unrelated_waiter+0x10/0x20",
            "[   12.000004]  other_thread_fn+0x30/0x40", "[   12.000005]  </TASK>"]  # fmt: skip
    (stall,) = detect(log)
    assert stall.kind == "rcu_stall" and stall.generic
    assert "unrelated_waiter" not in stall.fingerprint and "unrelated_waiter" not in stall.frames
    assert stall.end_line < 44


def test_two_boots_of_the_same_bug_give_the_same_fingerprint() -> None:
    """warning-1 and multi are two boots (each its own kernel log) with the same WARN."""
    one = detect((CONSOLE / "real-6.1" / "warning-1.console.log").read_text().splitlines())
    other = detect((CONSOLE / "real-6.1" / "multi.console.log").read_text().splitlines())
    assert one[0].fingerprint == other[0].fingerprint == other[-1].fingerprint
