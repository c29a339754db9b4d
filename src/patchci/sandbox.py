"""How untrusted code runs: the patch's build, the patched tree's own scripts, its tests.

Two layers, both allow-lists:

* the environment: only PATH, HOME, TMPDIR, LC_ALL/LANG, TERM, USER/LOGNAME, the variables
  the caller sets for the command (CC, ARCH, CCACHE_DIR…) and those the configuration names
  in `[sandbox] pass_env`. Never the daemon's environment, which holds tokens.
* with bubblewrap (`bwrap`): a private view of the filesystem and of processes. The hidden
  paths (the data directory with the database, the configuration file, `[sandbox] hide`)
  are replaced by empty ones; what the command must see inside them (its worktree, its
  log and build directories, the git objects) is bound back; /proc shows only the
  sandbox's own processes, so /proc/<daemon pid>/environ is out of reach; the network is
  a private one with only loopback unless `[sandbox] network = true`.

Without bwrap only the first layer applies; the daemon says so once at start-up.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

BASE_VARS = ("PATH", "TERM", "USER", "LOGNAME")


@dataclass(frozen=True)
class Sandbox:
    hide: tuple[Path, ...] = ()
    pass_env: tuple[str, ...] = ()
    bwrap: str | None = None
    network: bool = False
    home: Path | None = None  # a scratch HOME; default the command's cwd

    @property
    def isolated(self) -> bool:
        return self.bwrap is not None

    def environment(self, extra: Mapping[str, str] | None, cwd: Path | None) -> dict[str, str]:
        """The whole environment of a sandboxed command (not added to ours)."""
        env = {k: os.environ[k] for k in (*BASE_VARS, *self.pass_env) if k in os.environ}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        home = self.home or cwd or Path("/nonexistent")
        env.update(HOME=str(home), TMPDIR=os.environ.get("TMPDIR", "/tmp"), TERM="dumb")
        env.update(LC_ALL="C", LANG="C")
        env.update(extra or {})
        return env

    def argv(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        cwd: Path | None,
        writable: Sequence[Path] = (),
        readable: Sequence[Path] = (),
        read_only: Sequence[Path] = (),
    ) -> list[str]:
        """*argv* wrapped in bwrap (unchanged without it). *writable* and *readable* are
        bound back where a hidden path covers them; the cwd is writable unless it is in
        *read_only*, which are bound read-only wherever they are."""
        if self.bwrap is None:
            return list(argv)
        hidden = [p for p in self.hide if p.exists()]
        out = [self.bwrap, "--dev-bind", "/", "/"]
        for p in hidden:
            out += ["--tmpfs", str(p)] if p.is_dir() else ["--ro-bind", "/dev/null", str(p)]

        def covered(p: Path) -> bool:
            return any(p == h or h in p.parents for h in hidden if h.is_dir())

        ro = [p for p in dict.fromkeys(read_only) if p.exists()]
        rw = [p for p in dict.fromkeys([*([cwd] if cwd else []), *writable])
              if p.exists() and p not in ro]  # fmt: skip
        for p in [r for r in dict.fromkeys(readable) if r.exists() and r not in rw]:
            if covered(p) and p not in ro:
                out += ["--ro-bind", str(p), str(p)]
        for p in rw:
            if covered(p):
                out += ["--bind", str(p), str(p)]
        for p in ro:
            out += ["--ro-bind", str(p), str(p)]
        out += ["--unshare-pid", "--proc", "/proc", "--die-with-parent", "--clearenv"]
        if not self.network:
            out.append("--unshare-net")
        for k, v in env.items():
            out += ["--setenv", k, v]
        if cwd is not None:
            out += ["--chdir", str(cwd)]
        return [*out, "--", *argv]


def find_bwrap() -> str | None:
    path = shutil.which("bwrap")
    if path is None:
        return None
    return path


def describe(sb: Sandbox) -> str:
    """One line for the start-up log and `config check`."""
    if sb.isolated:
        net = "shared network" if sb.network else "no network"
        shown = ", ".join(str(p) for p in sb.hide) or "nothing"
        return f"patch code runs in bwrap ({net}; hidden: {shown}) with a minimal environment"
    return (
        "patch code runs with a minimal environment only: bubblewrap (bwrap) not found, so "
        "the database, the configuration and /proc stay readable to it "
        "(apt-get install bubblewrap)"
    )
