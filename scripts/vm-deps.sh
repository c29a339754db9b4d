#!/usr/bin/env bash
# Installs what the VM executor needs and prepares a small kselftest tree. Idempotent.
#
#   scripts/vm-deps.sh [--no-install] [CACHE_DIR]
#
# 1. As root with apt-get (unless --no-install): installs the missing Debian packages
#    (QEMU, Debian's kernel + modules, busybox for virtme-ng's initramfs, gcc/libc for
#    static test binaries; for the kernel executor, which builds the branch's kernel: the
#    kernel build dependencies, ccache, rsync for the kselftest install, and
#    linux-source-6.12, the tree its test builds).
# 2. With CACHE_DIR: builds an installed-style kselftest tree in CACHE_DIR/kselftest that
#    run_kselftest.sh can run: net/af_unix:scm_rights and net/af_unix:diag_uid, compiled
#    statically on the host from the sources pinned in tests/data/kselftest-6.12 (Linux
#    6.12.118, Debian linux-source-6.12 6.12.118-1~deb12u1), so that a new Debian point
#    release cannot change the tests' results.
# virtme-ng itself (vng) comes from PyPI with the project's Python dependencies.
set -euo pipefail

install=1
if [ "${1:-}" = "--no-install" ]; then install=0; shift; fi
cache=${1:-}

say() { echo "vm-deps: $*" >&2; }

has_kernel() {
  local k
  for k in /boot/vmlinuz-*; do
    [ -e "$k" ] && [ -d "/lib/modules/${k#/boot/vmlinuz-}" ] && return 0
  done
  return 1
}

declare -A probe=(
  [qemu-system-x86]="command -v qemu-system-x86_64"
  [linux-image-amd64]="has_kernel"
  [busybox-static]="command -v busybox"
  [gcc]="command -v gcc"
  [libc6-dev]="test -e /usr/lib/x86_64-linux-gnu/libc.a"
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

[ -n "$cache" ] || exit 0

S="$repo/tests/data/kselftest-6.12"
sum=$(cd "$S" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
stamp="$cache/.vm-deps-$sum"
if [ -e "$stamp" ]; then exit 0; fi

mkdir -p "$cache"
out="$cache/kselftest"
rm -rf "$out" "$cache"/.vm-deps-*
mkdir -p "$out/net/af_unix"
cp -r "$S/kselftest" "$S/run_kselftest.sh" "$out/"
: > "$out/kselftest-list.txt"
for t in scm_rights diag_uid; do
  gcc -static -O2 -Wall -I"$S" -o "$out/net/af_unix/$t" "$S/net/af_unix/$t.c" -lpthread
  echo "net/af_unix:$t" >> "$out/kselftest-list.txt"
done
touch "$stamp"
say "kselftest tree ready in $out"
