"""Parser cost against input size: CPU time per MB at 1, 2, 4 and 8 MB of each parser's
real input (repeated) and of one long hostile line, with the ratio to the 1 MB time per MB
measured in the same run (1.0 is linear; a quadratic parser doubles at each step).

    python -m bench scaling
"""

from __future__ import annotations

import lzma
import time
from collections.abc import Callable
from pathlib import Path

from patchci import buildlog, checkpatch_output, crash, kdoc_output, ktap, maintainers
from patchci.sources import mail, mbox

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
SIZES_MB = (1, 2, 4, 8)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _mail(raw: bytes) -> object:
    try:
        return mail.parse_mail(raw)
    except mail.MalformedMail:
        return None


PARSERS: dict[str, tuple[Callable[[bytes], object], str, bytes]] = {
    # name: (parser, real input, one long line of the shape that once made it quadratic)
    "ktap": (lambda r: ktap.parse_text(_text(r)), "ktap/mptcp-diag-host-6.18.tap",
             b"# Totals: "),
    "crash": (lambda r: crash.detect(_text(r).split("\n")), "console/vm-panic-console.log",
              b"[ 1.0] "),
    "buildlog": (lambda r: buildlog.parse_diagnostics(_text(r).split("\n")),
                 "checks/gcc-12-build.log", b"a.c:1:2: warning: #warning x1"),
    "checkpatch": (lambda r: checkpatch_output.parse_checkpatch(_text(r).split("\n")),
                   "checks/checkpatch-default.txt", b"WARNING: x"),
    "kdoc": (lambda r: kdoc_output.parse_kdoc(_text(r).split("\n")),
             "checks/kernel-doc-warnings.txt", b"a.c:1: warning: x"),
    "mail": (_mail, "mail/encoded-qp.eml", b"Subject: [a]"),
    "mbox": (lambda r: list(mbox._split_mbox(r, "bench")), "mail-corpus/base-no-references.mbox",
             b"From 12:00"),
    "maintainers": (lambda r: maintainers.parse_maintainers(_text(r)), "checks/MAINTAINERS-6.1.xz",
                    b"F:\t"),
}  # fmt: skip


def _read(rel: str) -> bytes:
    raw = (DATA / rel).read_bytes()
    return lzma.decompress(raw) if rel.endswith(".xz") else raw


def _cpu(fn: Callable[[bytes], object], data: bytes) -> float:
    t0 = time.process_time()
    fn(data)
    return time.process_time() - t0


def _row(
    label: str,
    fn: Callable[[bytes], object],
    make: Callable[[int], bytes],
    sizes: tuple[float, ...],
) -> None:
    per_mb = [_cpu(fn, make(int(mb * (1 << 20)))) / mb for mb in sizes]
    base = max(per_mb[0], 1e-6)
    cells = "  ".join(f"{mb:g} MB {t * 1000:7.1f} ms/MB ({t / base:4.2f}x)"
                      for mb, t in zip(sizes, per_mb, strict=True))  # fmt: skip
    print(f"{label:<24} {cells}")


def main(sizes: tuple[float, ...] = SIZES_MB) -> None:
    print(f"CPU time per MB, ratio to the {sizes[0]:g} MB run (1.00x: linear)")
    for name, (fn, rel, head) in PARSERS.items():
        real = _read(rel)
        _row(f"{name} (real)", fn, lambda n, real=real: (real * (n // len(real) + 1))[:n], sizes)
        # mixed spaces, digits and letters, no newline: the backtracking shapes
        filler = b"1 a(" * 4
        _row(
            f"{name} (one line)",
            fn,
            lambda n, head=head, filler=filler: head + (filler * (n // len(filler)))[:n] + b"\n",
            sizes,
        )
