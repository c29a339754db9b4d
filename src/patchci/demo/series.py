"""Generate the demo's sample series with real `git format-patch`.

Each sample says which outcome the pipeline must reach, so the demo (and its test) can
show expected next to actual.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from patchci.demo.tree import commit, write_files
from patchci.git import Git

AUTHOR = "Ada Author <ada@example.com>"
SOB = "Signed-off-by: Ada Author <ada@example.com>"


@dataclass(frozen=True)
class Sample:
    label: str
    mbox: bytes
    # check name -> expected outcome value ("pass", "warn", "fail"); state for unchecked ones
    expect: dict[str, str] = field(default_factory=dict)
    expect_state: str = "checked"


Edit = Callable[[Path], None]


def _replace(rel: str, old: str, new: str) -> Edit:
    def edit(root: Path) -> None:
        p = root / rel
        text = p.read_text()
        if old not in text:
            raise ValueError(f"demo edit: {old!r} not in {rel}")
        p.write_text(text.replace(old, new, 1))

    return edit


def _append(rel: str, text: str) -> Edit:
    def edit(root: Path) -> None:
        p = root / rel
        p.write_text(p.read_text() + text)

    return edit


def _format(
    git: Git,
    base: str,
    commits: list[tuple[str, Edit]],
    prefix: str,
    cover: str | None,
    keep: int | None = None,
) -> bytes:
    """Commit *commits* on a scratch branch from *base* and format them as one mbox."""
    root = Path(git.repo)
    git.run("checkout", "--quiet", "-B", "demo-scratch", base)
    try:
        for message, edit in commits:
            edit(root)
            commit(git, message, author=AUTHOR)
        args = [
            "format-patch",
            "--stdout",
            "--thread=shallow",
            f"--subject-prefix={prefix}",
            "--to=netdev@vger.example.org",
            "--cc=Fiona Foo <fiona@foo.example.org>",
            "--cc=Nora Net <nora@net.example.org>",
            "--cc=Ray Reviewer <ray@example.org>",
            f"{base}..demo-scratch",
        ]
        if cover is not None:
            args.insert(1, "--cover-letter")
        out = git.run(*args).stdout
    finally:
        git.run("checkout", "--quiet", "main")
        git.run("branch", "--quiet", "-D", "demo-scratch")
    if cover is not None:
        title, _, blurb = cover.partition("\n\n")
        out = out.replace("*** SUBJECT HERE ***", title).replace("*** BLURB HERE ***", blurb)
    mails = _split(out)
    if keep is not None:
        mails = mails[:keep]
    return "".join(mails).encode()


def _split(mbox: str) -> list[str]:
    parts: list[str] = []
    for line in mbox.splitlines(keepends=True):
        if line.startswith("From ") and line.rstrip().endswith("2001"):
            parts.append("")
        if parts:
            parts[-1] += line
    return parts


def build_samples(git: Git) -> list[Sample]:
    fix_target = git.run(
        "log", "-1", "--format=%H", "--grep=allow up to 16 queues", "main"
    ).stdout.strip()
    good_fixes = f'Fixes: {fix_target[:12]} ("foo: allow up to 16 queues")'
    s: list[Sample] = []
    s.append(
        Sample(
            "clean series for net-next",
            _format(
                git,
                "main",
                [
                    (
                        f"foo: add foo_reset()\n\nReset the counters of a foo device.\n\n{SOB}",
                        _append(
                            "drivers/net/foo.c",
                            "\nint foo_reset(struct foo_dev *dev)\n{\n"
                            "\tdev->tx_packets = 0;\n\treturn 0;\n}\n",
                        ),
                    ),
                    (
                        f"foo: declare foo_reset()\n\nSo that the core can call it.\n\n{SOB}",
                        _replace(
                            "include/net/foo.h",
                            "int foo_xmit(",
                            "int foo_reset(struct foo_dev *dev);\nint foo_xmit(",
                        ),
                    ),
                    (
                        f"net: core: reset foo counters on queue errors\n\nKeep stats sane.\n\n{SOB}",
                        _replace(
                            "net/core/dev.c", "\t\treturn -1;\n", "\t\treturn foo_reset(dev) - 1;\n"
                        ),
                    ),
                ],
                "PATCH net-next",
                "foo: device reset\n\nAdd a reset helper and use it in the core.",
            ),
        )
    )
    s.append(
        Sample(
            "fix for net with a good Fixes tag",
            _format(
                git,
                "net",
                [
                    (
                        f"foo: reject a zero queue count\n\nA device with no queue cannot open.\n\n"
                        f"{good_fixes}\n{SOB}",
                        _replace(
                            "drivers/net/foo.c",
                            "if (dev->queues > FOO_MAX_QUEUES)",
                            "if (!dev->queues || dev->queues > FOO_MAX_QUEUES)",
                        ),
                    ),
                ],
                "PATCH net",
                None,
            ),
        )
    )
    s.append(
        Sample(
            "missing Signed-off-by",
            _format(
                git,
                "main",
                [
                    (
                        "foo: count dropped packets\n\nNobody signed this off.",
                        _replace(
                            "drivers/net/foo.c",
                            "\tif (!dev->running)\n\t\treturn -1;\n\tdev->tx",
                            "\tif (!dev->running)\n\t\treturn -2;\n\tdev->tx",
                        ),
                    ),
                ],
                "PATCH net-next",
                None,
            ),
            {"signed_off_by": "fail"},
        )
    )
    s.append(
        Sample(
            "bad Fixes tag",
            _format(
                git,
                "net",
                [
                    (
                        f'foo: stop the queue before closing\n\nFixes: 1234567890ab ("foo: add queues")\n'
                        f"{SOB}",
                        _replace(
                            "drivers/net/foo.c", "dev->running = 0;", "dev->running = 0; /**/"
                        ),
                    ),
                ],
                "PATCH net",
                None,
            ),
            {"fixes_tag": "fail"},
        )
    )
    s.append(Sample("does not apply", _not_applying(git), {"apply": "fail"}))
    s.append(
        Sample(
            "wrong tree tag",
            _format(
                git,
                "main",
                [
                    (
                        f"foo: document foo_stop()\n\n{SOB}",
                        _replace(
                            "include/net/foo.h",
                            "int foo_stop(",
                            "/* foo_stop() - take it down */\nint foo_stop(",
                        ),
                    ),
                ],
                "PATCH wireless-next",
                None,
            ),
            {"tree_selection": "pass", "series_format": "warn"},
        )
    )
    s.append(
        Sample(
            "missing tree tag",
            _format(
                git,
                "main",
                [
                    (
                        f"net: core: name the jumbo limit\n\n{SOB}",
                        _replace("net/core/dev.c", "len > 9000", "len > 9000 /* jumbo */"),
                    ),
                ],
                "PATCH",
                None,
            ),
            {"tree_selection": "pass", "series_format": "warn"},
        )
    )
    s.append(
        Sample(
            "incomplete series (2 of 3 patches)",
            _format(
                git,
                "main",
                [
                    (
                        f"foo: add a tx limit field\n\n{SOB}",
                        _replace(
                            "include/net/foo.h",
                            "\tint tx_packets;",
                            "\tint tx_packets;\n\tint tx_limit;",
                        ),
                    ),
                    (
                        f"foo: honour the tx limit\n\n{SOB}",
                        _replace(
                            "drivers/net/foo.c",
                            "\tdev->tx_packets++;",
                            "\tdev->tx_packets++; /* limit */",
                        ),
                    ),
                    (
                        f"net: core: set a default tx limit\n\n{SOB}",
                        _replace(
                            "net/core/dev.c",
                            "\treturn foo_xmit",
                            "\t/* default limit */\n\treturn foo_xmit",
                        ),
                    ),
                ],
                "PATCH net-next",
                "foo: tx limits\n\nThe third patch never arrives.",
                keep=3,
            ),
            expect_state="incomplete",
        )
    )
    return s


def _not_applying(git: Git) -> bytes:
    """A patch written against an older dev.c: the line it changes is gone on net-next."""
    first = git.run("rev-list", "--max-parents=0", "main").stdout.strip()
    return _format(
        git,
        first,
        [
            (
                f"net: core: reject negative lengths early\n\n{SOB}",
                _replace("net/core/dev.c", "if (len <= 0)", "if (len < 0 || len == 0)"),
            ),
        ],
        "PATCH net-next",
        None,
    )


def contest_samples(git: Git) -> list[Sample]:
    """Series for the contest demo: clean for the gate checks, but the first one lowers
    FOO_MAX_QUEUES so `foo_queues.sh` fails on any branch that includes it."""
    return [
        Sample(
            "clean series that breaks a selftest",
            _format(
                git,
                "main",
                [
                    (
                        f"foo: cap the queue count at 8\n\nFewer queues, less memory.\n\n{SOB}",
                        _replace("drivers/net/foo.c", "FOO_MAX_QUEUES 16", "FOO_MAX_QUEUES 8"),
                    ),
                ],
                "PATCH net-next",
                None,
            ),
        )
    ]


def write_inbox(path: Path, samples: list[Sample]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(s.mbox for s in samples))


__all__ = ["Sample", "build_samples", "contest_samples", "write_files", "write_inbox"]
