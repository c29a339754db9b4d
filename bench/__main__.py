"""Run every benchmark: python -m bench [NAME...]."""

from __future__ import annotations

import sys
from itertools import takewhile

from bench import (
    faults,
    kbuild,
    ktap,
    latency,
    parsers,
    scaling,
    verdicts,
    vms,
    web,
    workers,
    worktrees,
)  # fmt: skip


def main(argv: list[str]) -> int:
    benches = {"parsers": parsers.main, "ktap": ktap.main, "scaling": scaling.main, "web": web.main,
               "worktrees": worktrees.main, "latency": latency.main,
               "vms": vms.main, "verdicts": verdicts.main,
               "faults": faults.main, "kbuild": kbuild.main, "workers": workers.main}  # fmt: skip
    # Names come first; any flags after them are the benchmark's own (web reads them).
    # vms needs a built kernel (--kernel, --kselftest), verdicts takes ~45 min, faults
    # (kill campaign) ~10 min, kbuild (a cold kernel build) ~15 min: by name
    names = list(takewhile(lambda a: not a.startswith("-"), argv)) or [
        n for n in benches if n not in ("vms", "verdicts", "faults", "kbuild")
    ]
    for name in names:
        if name not in benches:
            print(f"unknown benchmark {name!r}; known: {', '.join(benches)}", file=sys.stderr)
            return 2
        benches[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
