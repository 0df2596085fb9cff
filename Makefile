# `make test` runs every test in the workspace: unit, simulated-driver, real-clock,
# doctests (nextest does not run them), lints, the tour, and a smoke pass of the bench.
CARGO ?= cargo

.PHONY: test lint unit doc tour bench-smoke bench

test: lint unit doc tour bench-smoke

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) nextest run --workspace --no-fail-fast

doc:
	$(CARGO) test --workspace --doc

tour:
	$(CARGO) run --release --example tour

bench-smoke:
	$(CARGO) run --release -p keel-bench -- --quick

bench:
	$(CARGO) run --release -p keel-bench
