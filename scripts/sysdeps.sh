#!/usr/bin/env bash
# Installs the Debian packages `make demo` / `make test` need, when they are missing.
# Runs apt-get only as root; otherwise says what is missing and goes on (tests that need a
# missing tool report it rather than pass silently).
set -euo pipefail
what=${1:-test}

pkgs_demo=(git gcc make perl xz-utils linux-source-6.1 bubblewrap)
pkgs_test=("${pkgs_demo[@]}" postgresql chromium redis-server shellcheck yamllint pylint binutils
           iproute2 util-linux public-inbox)

declare -A probe=(
  [git]="command -v git"
  [gcc]="command -v gcc"
  [make]="command -v make"
  [perl]="command -v perl"
  [xz-utils]="command -v xz"
  [chromium]="command -v chromium"
  [postgresql]="ls /usr/lib/postgresql/*/bin/initdb"
  [linux-source-6.1]="ls /usr/src/linux-source-6.1.tar.xz"
  [bubblewrap]="command -v bwrap"
  [redis-server]="command -v redis-server"
  [shellcheck]="command -v shellcheck"
  [yamllint]="command -v yamllint"
  [pylint]="command -v pylint"
  [binutils]="command -v addr2line"
  [iproute2]="command -v ip"
  [util-linux]="command -v unshare"
  [public-inbox]="command -v public-inbox-httpd"
)

case $what in
  demo) want=("${pkgs_demo[@]}") ;;
  test) want=("${pkgs_test[@]}") ;;
  *) echo "usage: $0 demo|test" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  if ! eval "${probe[$p]:-dpkg -s $p}" >/dev/null 2>&1; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "sysdeps: missing ${missing[*]}; not root or no apt-get, install them yourself" >&2
  exit 0
fi
echo "sysdeps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
