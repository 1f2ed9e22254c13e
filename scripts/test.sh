#!/usr/bin/env bash
# Everything CI checks: formatting, lints, then every test (unit and end-to-end, as root) in
# release mode. Ends with one line totalling the tests of every test binary.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
# In release mode: the build scripts (the BPF skeleton) and proc-macros it builds serve the tests too.
cargo clippy --release --workspace --all-targets -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# The end-to-end tests need root; GOTRACE_REQUIRE_ROOT turns a skip into a failure.
status=0
GOTRACE_REQUIRE_ROOT=1 cargo test --workspace --release --lib --bins --tests --no-fail-fast 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
