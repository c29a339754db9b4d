"""Demo series for the kernel-grade checks: build warnings, Cc of maintainers, kernel-doc.

Each Sample's `expect` names the outcome of the checks "build", "cc_maintainers" and "kdoc".
The demo tree's mails go `--to` the netdev list and `--cc` Fiona Foo only; the samples that
should pass cc_maintainers rewrite the Cc to everyone MAINTAINERS names for the file.
kdoc needs the tree's `scripts/kernel-doc`; without it the check skips, and so expects.
"""

from __future__ import annotations

import re
from pathlib import Path

from patchci.demo.series import SOB, Edit, Sample, _append, _format, _replace
from patchci.git import Git

DEMO_CC = b"Cc: Fiona Foo <fiona@foo.example.org>"
# Everyone MAINTAINERS names for drivers/net/foo.c and include/net/foo.h.
FULL_CC = (b"Cc: Fiona Foo <fiona@foo.example.org>, Nora Net <nora@net.example.org>,\n"
           b" Ray Reviewer <ray@example.org>")  # fmt: skip
# The demo tree's one warning (see demo/tree.py): `mtu` is unused in dev_mtu().
BASE_WARNING = "int dev_mtu(struct foo_dev *dev, int mtu)"


_CC_HEADER = re.compile(rb"^Cc: .*\n(?:[ \t].*\n)*", re.MULTILINE)


def _set_cc(mbox: bytes, cc: bytes) -> bytes:
    """Every mail's Cc header replaced by *cc* (whatever demo/series.py puts there)."""
    return _CC_HEADER.sub(lambda _m: cc + b"\n", mbox)


def _cc_all(mbox: bytes) -> bytes:
    return _set_cc(mbox, FULL_CC)


def _both(*edits: Edit) -> Edit:
    def edit(root: Path) -> None:
        for e in edits:
            e(root)

    return edit


def _swapped(git: Git) -> bytes:
    """Fix the base's unused-parameter warning and add an unused variable in one patch.
    Without that warning in the base (an older demo tree), patch 1 adds one and patch 2
    swaps it, which is the same comparison one patch later."""
    unused = _replace("net/core/dev.c", "\tif (len <= 0", "\tint spare;\n\n\tif (len <= 0")
    dev = git.run("show", "main:net/core/dev.c").stdout
    if BASE_WARNING in dev:
        fix = _replace(
            "net/core/dev.c", "return dev->queues * 1500;", "return dev->queues ? mtu : 0;"
        )
        return _cc_all(_format(git, "main", [
            (f"net: core: honour the mtu argument\n\nAnd prepare a spare slot.\n\n{SOB}",
             _both(fix, unused)),
        ], "PATCH net-next", None))  # fmt: skip
    add = _append("net/core/dev.c", "\nint dev_mtu(struct foo_dev *dev, int mtu)\n{\n"
                  "\treturn dev->queues * 1500;\n}\n")  # fmt: skip
    fix = _replace("net/core/dev.c", "return dev->queues * 1500;", "return dev->queues ? mtu : 0;")
    return _cc_all(
        _format(
            git,
            "main",
            [
                (f"net: core: add dev_mtu()\n\n{SOB}", add),
                (f"net: core: honour the mtu argument\n\n{SOB}", _both(fix, unused)),
            ],
            "PATCH net-next",
            "net: core: mtu helper\n\nThe second patch swaps a warning.",
        )
    )


def build_check_samples(git: Git) -> list[Sample]:
    """The samples for build, cc_maintainers and kdoc on the demo tree in *git*."""
    has_kdoc = git.run("cat-file", "-e", "main:scripts/kernel-doc", check=False).ok
    kdoc_ok = "pass" if has_kdoc else "skip"
    s: list[Sample] = []
    s.append(
        Sample(
            "new compiler warning",
            _cc_all(
                _format(
                    git,
                    "main",
                    [
                        (
                            f"foo: keep a scratch counter\n\nFor later use.\n\n{SOB}",
                            _replace(
                                "drivers/net/foo.c",
                                "\tdev->running = 0;\n",
                                "\tint scratch;\n\n\tdev->running = 0;\n",
                            ),
                        ),
                    ],
                    "PATCH net-next",
                    None,
                )
            ),
            {"build": "fail", "cc_maintainers": "pass", "kdoc": kdoc_ok},
        )
    )
    s.append(
        Sample(
            "swapped compiler warning",
            _swapped(git),
            {"build": "fail", "cc_maintainers": "pass", "kdoc": kdoc_ok},
        )
    )
    s.append(
        Sample(
            "maintainer missing from Cc",
            # net/core/ is Nora's; the mail only Ccs Fiona.
            _set_cc(
                _format(
                    git,
                    "main",
                    [
                        (
                            f"net: core: comment the hand-over\n\n{SOB}",
                            _replace(
                                "net/core/dev.c",
                                "\treturn foo_xmit(dev, len);",
                                "\treturn foo_xmit(dev, len); /* hand over */",
                            ),
                        ),
                    ],
                    "PATCH net-next",
                    None,
                ),
                DEMO_CC,
            ),
            {"build": "pass", "cc_maintainers": "fail", "kdoc": kdoc_ok},
        )
    )
    s.append(
        Sample(
            "kernel-doc regression",
            _cc_all(
                _format(
                    git,
                    "main",
                    [
                        (
                            f"foo: document foo_open() briefly\n\n{SOB}",
                            _replace("include/net/foo.h", " * @dev: the device\n", ""),
                        ),
                    ],
                    "PATCH net-next",
                    None,
                )
            ),
            {"build": "pass", "cc_maintainers": "pass", "kdoc": "fail" if has_kdoc else "skip"},
        )
    )
    return s


__all__ = ["BASE_WARNING", "build_check_samples"]
