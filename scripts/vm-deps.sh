#!/usr/bin/env bash
# Installs what the VM executor needs. Idempotent.
#
#   scripts/vm-deps.sh [--no-install]
#
# 1. As root with apt-get (unless --no-install): installs the missing Debian packages
#    (QEMU, busybox for virtme-ng's initramfs, and for the kernel executor, which builds
#    the branch's own kernel and selftests: the kernel build dependencies, ccache, rsync
#    for the kselftest install, linux-source-6.12, the tree its test builds, and the
#    networking selftests' own tools: ping, iptables, ethtool, socat).
# virtme-ng itself (vng) comes from PyPI with the project's Python dependencies.
set -euo pipefail

install=1
if [ "${1:-}" = "--no-install" ]; then install=0; shift; fi

say() { echo "vm-deps: $*" >&2; }

declare -A probe=(
  [qemu-system-x86]="command -v qemu-system-x86_64"
  [busybox-static]="command -v busybox"
  [gcc]="command -v gcc"
  [libc6-dev]="test -e /usr/include/stdio.h"
  [perl]="command -v perl"
  [iproute2]="command -v ss"
  [xz-utils]="command -v xz"
  [make]="command -v make"
  [flex]="command -v flex"
  [bison]="command -v bison"
  [bc]="command -v bc"
  [libelf-dev]="test -e /usr/include/libelf.h"
  [libssl-dev]="test -e /usr/include/openssl/ssl.h"
  [ccache]="command -v ccache"
  [rsync]="command -v rsync"
  [cpio]="command -v cpio"
  # the networking selftests' own tools: the guest runs on this root file system
  [iputils-ping]="command -v ping"
  [iptables]="command -v iptables"
  [ethtool]="command -v ethtool"
  [socat]="command -v socat"
  [linux-source-6.12]="test -e /usr/src/linux-source-6.12.tar.xz"
)

missing=()
for p in "${!probe[@]}"; do
  eval "${probe[$p]}" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ $install -eq 1 ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "missing ${missing[*]}; not installing (not root, no apt-get or --no-install)"
  fi
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v vng >/dev/null && [ ! -x "$repo/.venv/bin/vng" ]; then
  say "note: vng not found (pip install virtme-ng into the venv)"
fi
