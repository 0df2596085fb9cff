#!/usr/bin/env bash
# `make test-asan`: keel-core's and keel-linux's unit and integration tests (no doctests)
# under AddressSanitizer, with LeakSanitizer on. Nightly only (`-Zsanitizer=address`);
# there is no rust-src here, so std is not rebuilt with the sanitizer: keel's code and
# the tests are instrumented, std's own code is not (ASan still sees every heap
# allocation through its malloc interceptor).
#
# Built apart in target/asan. Every test runs in its own process (nextest), so a report
# names one test. ASAN_OPTIONS: handle_segv=0 leaves SIGSEGV to keel's overflow handler
# (linux/tests/overflow.rs faults on purpose, in child processes, and checks how the
# process dies); detect_stack_use_after_return=0 because a fiber switch would move the
# fake stack out from under ASan (keel's switch does not announce itself to ASan).
# Extra arguments go to nextest (a filter, `--no-fail-fast`, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
if ! $CARGO +nightly --version >/dev/null 2>&1; then
    echo "test-asan: needs the nightly toolchain (-Zsanitizer=address is nightly-only): rustup toolchain install nightly" >&2
    exit 1
fi
export RUSTFLAGS="${RUSTFLAGS:-} -Zsanitizer=address"
export CARGO_TARGET_DIR=target/asan
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:handle_segv=0:detect_stack_use_after_return=0:abort_on_error=0:halt_on_error=1}"
start=$(date +%s)
$CARGO +nightly nextest run --target x86_64-unknown-linux-gnu -p keel-core -p keel-linux --no-fail-fast "$@"
echo "test-asan: clean in $(($(date +%s) - start)) s (ASAN_OPTIONS=$ASAN_OPTIONS)"
