#!/usr/bin/env bash
# Everything CI checks: formatting, lints, then every test (unit and end-to-end, as root) in
# release mode. Ends with one line totalling the tests of every test binary (skipped: ignored).
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
# Every test runs here: a test that needs root and was skipped ("ignored (needs root)") fails
# the run, however it came to be skipped.
skipped_root=$(grep -c '^test .* \.\.\. ignored (needs root)$' "$log" || true)
if [ "$skipped_root" -gt 0 ]; then
  echo "error: $skipped_root tests that need root did not run" >&2
  status=1
fi
awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
