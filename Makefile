# The README's two commands: `make demo` and `make test`. Both install what they need first.
CARGO ?= cargo

.PHONY: setup build demo test bench

setup:
	./scripts/setup.sh

build: setup
	$(CARGO) build --release

# The seed article end to end: build the Fibonacci service, trace it, send requests, peek.
demo: build
	./target/release/gotrace demo

# Everything CI checks: formatting, lints, unit tests and the end-to-end tests (as root).
test: setup
	./scripts/test.sh

# Per-call cost of gotrace against the uprobe floor (an empty BPF program on the same sites)
# and the seed's bpftrace one-liner, events delivered, throughput, attach/detach of 1,000 and
# 10,000 sites: one report. Needs root; a few minutes. Not part of `make test`.
bench: setup
	$(CARGO) build --release -p gotrace -p gotrace-bench
	./target/release/gotrace-bench
