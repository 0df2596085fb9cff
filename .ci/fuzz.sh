#!/usr/bin/env bash
# `make fuzz`: every cargo-fuzz target in fuzz/ for FUZZ_SECS seconds each (default 60),
# on the corpus kept in fuzz/corpus/<target> (new inputs are added to it). Not part of
# `make test`: the proptest twins of the same harnesses run there on stable.
#
# Nightly only (libFuzzer's coverage instrumentation). Uses `cargo fuzz` when it is
# installed (`cargo install cargo-fuzz`), else builds the same way by hand: the
# sanitizer-coverage flags cargo-fuzz passes, `--cfg fuzzing`, release with debug
# assertions, no sanitizer (std is not rebuilt here: no rust-src). A finding stops that
# target, leaves its input in fuzz/artifacts/<target>/ and fails the run; replay it
# with `fuzz/target/x86_64-unknown-linux-gnu/release/<target> <file>`.
#
#   .ci/fuzz.sh [TARGET]...
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
CARGO=${CARGO:-cargo}
secs=${FUZZ_SECS:-60}
if ! $CARGO +nightly --version >/dev/null 2>&1; then
    echo "fuzz: needs the nightly toolchain (libFuzzer's instrumentation is nightly-only): rustup toolchain install nightly" >&2
    exit 1
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=($(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^keel-fuzz$'))
triple=x86_64-unknown-linux-gnu
# keel_fuzz: keel-core and keel-linux expose the harnesses that need their private
# structures (ring_slots, run_queue, stack_pool, pbuf_ring).
export RUSTFLAGS="${RUSTFLAGS:-} --cfg keel_fuzz"
if $CARGO fuzz --version >/dev/null 2>&1; then
    build() { $CARGO +nightly fuzz build --sanitizer none --debug-assertions "$1" >&2; }
    bin=target/$triple/release
else
    export RUSTFLAGS="$RUSTFLAGS -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
    build() { $CARGO +nightly build --release --target $triple --bin "$1" >&2; }
    bin=target/$triple/release
fi
failed=()
for t in "${targets[@]}"; do
    build "$t"
    mkdir -p "corpus/$t" "artifacts/$t"
    log=$(mktemp)
    if "$bin/$t" "corpus/$t" -max_total_time="$secs" -max_len=1024 -artifact_prefix="artifacts/$t/" \
        -print_final_stats=1 >"$log" 2>&1; then
        stats=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 | tr -s '[:space:]' ' ' || true)
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        echo "fuzz: $t clean for ${secs} s: $execs executions; $stats"
    else
        echo "fuzz: $t FOUND something (input in fuzz/artifacts/$t/):"
        grep -vE '^(#|INFO|stat::)' "$log" | tail -n 30
        failed+=("$t")
    fi
    rm -f "$log"
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: findings in: ${failed[*]}" >&2
    exit 1
fi
