"""Build the demo's sample tree: C sources with a Makefile, a MAINTAINERS file and
selftests that print KTAP, with two branches (net and net-next)."""

from __future__ import annotations

from pathlib import Path

from patchci import proc
from patchci.git import Git

MAKEFILE = """\
# Demo tree: builds the foo driver and the net core into one program.
CC ?= gcc
CFLAGS ?= -O2 -Wall -Wextra
OBJS = drivers/net/foo.o net/core/dev.o main.o

demo: $(OBJS)
\t$(CC) $(CFLAGS) -o $@ $(OBJS)

%.o: %.c include/net/foo.h
\t$(CC) $(CFLAGS) -Iinclude -c -o $@ $<

clean:
\trm -f $(OBJS) demo

.PHONY: clean
"""

FOO_H = """\
/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _NET_FOO_H
#define _NET_FOO_H

struct foo_dev {
\tint queues;
\tint running;
\tint tx_packets;
};

/**
 * foo_open() - bring a foo device up
 * @dev: the device
 *
 * Return: 0 on success.
 */
int foo_open(struct foo_dev *dev);
int foo_stop(struct foo_dev *dev);
int foo_xmit(struct foo_dev *dev, int len);
int dev_queue(struct foo_dev *dev, int len);

#endif
"""

FOO_C = """\
// SPDX-License-Identifier: GPL-2.0
#include <net/foo.h>

#define FOO_MAX_QUEUES 8

int foo_open(struct foo_dev *dev)
{
\tif (dev->queues > FOO_MAX_QUEUES)
\t\treturn -1;
\tdev->running = 1;
\treturn 0;
}

int foo_stop(struct foo_dev *dev)
{
\tdev->running = 0;
\treturn 0;
}

int foo_xmit(struct foo_dev *dev, int len)
{
\tif (!dev->running)
\t\treturn -1;
\tdev->tx_packets++;
\treturn len;
}
"""

DEV_C = """\
// SPDX-License-Identifier: GPL-2.0
#include <net/foo.h>

int dev_queue(struct foo_dev *dev, int len)
{
\tif (len <= 0)
\t\treturn -1;
\treturn foo_xmit(dev, len);
}

int dev_mtu(struct foo_dev *dev, int mtu)
{
\treturn dev->queues * 1500;
}
"""

MAIN_C = """\
// SPDX-License-Identifier: GPL-2.0
#include <stdio.h>
#include <net/foo.h>

int main(void)
{
\tstruct foo_dev dev = { .queues = 4 };

\tif (foo_open(&dev))
\t\treturn 1;
\tprintf("sent %d\\n", dev_queue(&dev, 64));
\treturn foo_stop(&dev);
}
"""

MAINTAINERS = """\
List of maintainers (demo tree)

FOO NETWORK DRIVER
M:\tFiona Foo <fiona@foo.example.org>
R:\tRay Reviewer <ray@example.org>
L:\tnetdev@vger.example.org
S:\tMaintained
F:\tdrivers/net/foo.c
F:\tinclude/net/foo.h
F:\ttools/testing/selftests/net/foo*

NETWORKING [GENERAL]
M:\tNora Net <nora@net.example.org>
L:\tnetdev@vger.example.org
S:\tMaintained
F:\tnet/
F:\tdrivers/net/
F:\tinclude/net/
F:\ttools/testing/selftests/net/
"""

SELFTEST_MAKEFILE = """\
# SPDX-License-Identifier: GPL-2.0
TEST_PROGS := foo_basic.sh foo_queues.sh foo_link.sh foo_stress.sh
"""

SELFTEST_BASIC = """\
#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Basic foo checks, reported as KTAP.
echo "TAP version 13"
echo "1..2"
echo "ok 1 foo_open_close"
echo "ok 2 foo_xmit # time=3ms"
"""

SELFTEST_QUEUES = """\
#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# The driver must accept 4, 8 and 16 queues: reads FOO_MAX_QUEUES from the source.
src="$(dirname "$0")/../../../../drivers/net/foo.c"
max=$(sed -n 's/^#define FOO_MAX_QUEUES \\([0-9]*\\).*/\\1/p' "$src")
echo "TAP version 13"
echo "1..1"
echo "    # Subtest: foo_queues"
echo "    1..3"
n=0
fail=0
for q in 4 8 16; do
\tn=$((n + 1))
\tif [ "${max:-0}" -ge "$q" ]; then
\t\techo "    ok $n queues_$q"
\telse
\t\techo "    # FOO_MAX_QUEUES is ${max:-unset}, cannot open $q queues"
\t\techo "    not ok $n queues_$q"
\t\tfail=1
\tfi
done
if [ "$fail" = 0 ]; then echo "ok 1 foo_queues"; else echo "not ok 1 foo_queues"; fi
"""

# Flaky on purpose: the link "does not come up" on the first run in a state directory
# ($PATCHCI_DEMO_STATE), then passes, so a retry turns the failure into a flake.
SELFTEST_LINK = """\
#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
echo "TAP version 13"
echo "1..1"
state="${PATCHCI_DEMO_STATE:-}"
if [ -z "$state" ]; then
\techo "ok 1 foo_link_up # SKIP PATCHCI_DEMO_STATE is not set"
\texit 0
fi
mkdir -p "$state"
if [ -e "$state/foo_link.ran" ]; then
\techo "ok 1 foo_link_up # time=12ms"
else
\t: > "$state/foo_link.ran"
\techo "# link did not come up within 10ms"
\techo "not ok 1 foo_link_up"
fi
"""

# Its subtests pass, but the "kernel" warns on the way: crash detection must see it.
SELFTEST_STRESS = """\
#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
echo "TAP version 13"
echo "1..1"
echo "    # Subtest: foo_stress"
echo "    1..2"
echo "    ok 1 xmit_burst"
echo "------------[ cut here ]------------"
echo "WARNING: CPU: 0 PID: 1 at drivers/net/foo.c:42 foo_xmit+0x1a/0x40"
echo "Modules linked in: foo"
echo "CPU: 0 PID: 1 Comm: foo_stress.sh Not tainted 6.12.0-demo #1"
echo "RIP: 0010:foo_xmit+0x1a/0x40"
echo "Call Trace:"
echo " <TASK>"
echo " dev_queue+0x2c/0x60"
echo " foo_stress_run+0x51/0x90"
echo " do_syscall_64+0x5d/0x170"
echo " </TASK>"
echo "---[ end trace 0000000000000000 ]---"
echo "    ok 2 xmit_reset"
echo "ok 1 foo_stress"
"""

FILES_BASE = {
    "Makefile": MAKEFILE,
    "MAINTAINERS": MAINTAINERS,
    "include/net/foo.h": FOO_H,
    "drivers/net/foo.c": FOO_C,
    "net/core/dev.c": DEV_C,
    "main.c": MAIN_C,
    "tools/testing/selftests/net/Makefile": SELFTEST_MAKEFILE,
    "tools/testing/selftests/net/foo_basic.sh": SELFTEST_BASIC,
    "tools/testing/selftests/net/foo_queues.sh": SELFTEST_QUEUES,
    "tools/testing/selftests/net/foo_link.sh": SELFTEST_LINK,
    "tools/testing/selftests/net/foo_stress.sh": SELFTEST_STRESS,
    ".gitignore": "*.o\ndemo\n",
}

MAINTAINER = "Nora Net <nora@net.example.org>"


def write_files(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
        if rel.endswith(".sh"):
            p.chmod(0o755)


def commit(git: Git, message: str, author: str = MAINTAINER) -> str:
    git.run("add", "-A")
    git.run("commit", "--quiet", "--no-verify", f"--author={author}", "-m", message)
    sha = git.rev_parse("HEAD")
    assert sha is not None
    return sha


KERNEL_SOURCES = ("/usr/src/linux-source-6.1.tar.xz", "/usr/src/linux-source-6.12.tar.xz")


def add_kernel_doc(root: Path) -> str | None:
    """Copy scripts/kernel-doc from a Debian kernel source tarball when one is installed,
    so the demo's kdoc check runs the kernel's own script. Returns why not, or None."""
    for tarball in KERNEL_SOURCES:
        if not Path(tarball).exists():
            continue
        member = f"{Path(tarball).name.removesuffix('.tar.xz')}/scripts/kernel-doc"
        out = root / "scripts"
        out.mkdir(parents=True, exist_ok=True)
        proc.run(
            ["tar", "-xJf", tarball, "-C", str(out), "--strip-components=2", member],
            timeout=300,
            check=True,
        )
        (out / "kernel-doc").chmod(0o755)
        return None
    return "no kernel source tarball (apt-get install linux-source-6.1): kdoc will skip"


def build_tree(root: Path) -> Git:
    """Create the sample tree with branches `net` (fixes) and `main` (net-next)."""
    root.mkdir(parents=True, exist_ok=True)
    git = Git(root)
    git.run("init", "--quiet", "--initial-branch=main")
    write_files(root, FILES_BASE)
    add_kernel_doc(root)
    commit(git, "net: import the demo tree\n\nSigned-off-by: " + MAINTAINER)
    foo = (root / "drivers/net/foo.c").read_text()
    write_files(root, {"drivers/net/foo.c": foo.replace("FOO_MAX_QUEUES 8", "FOO_MAX_QUEUES 16")})
    commit(git, "foo: allow up to 16 queues\n\nSigned-off-by: " + MAINTAINER)
    git.run("branch", "net")
    dev = (root / "net/core/dev.c").read_text()
    write_files(root, {"net/core/dev.c": dev.replace("len <= 0", "len <= 0 || len > 9000")})
    commit(git, "net: core: reject jumbo lengths in dev_queue\n\nSigned-off-by: " + MAINTAINER)
    return git
