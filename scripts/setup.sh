#!/usr/bin/env bash
# Installs everything gotrace needs to build, demo and test on a fresh Debian 12 (bookworm)
# machine: clang for the BPF programs, libelf/zlib for libbpf, the Go toolchains the fixtures
# are built with, gin for the seed service, and objdump/bpftrace for cross-checks.
# Idempotent: it installs only what is missing.
set -euo pipefail

packages=(
  clang llvm libelf-dev zlib1g-dev pkg-config make linux-libc-dev binutils binutils-aarch64-linux-gnu curl
  golang-go golang-1.21-go golang-1.22-go golang-1.23-go
  golang-github-gin-gonic-gin-dev bpftrace
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: missing packages (${missing[*]}); run this script as root to install them" >&2
  exit 1
fi

# The Go 1.21–1.23 toolchains come from bookworm-backports.
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo 'deb http://deb.debian.org/debian bookworm-backports main' \
    > /etc/apt/sources.list.d/gotrace-backports.list
fi
echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
