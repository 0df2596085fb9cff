#!/usr/bin/env bash
# `make fuzz-planted`: shows that each cargo-fuzz target in fuzz/ reaches what it is for.
# Every target has a bug planted in the structure it drives, compiled in only under
# `--cfg keel_planted="<target>"` (off in every normal build; grep keel_planted for the
# hooks). For each target this builds it with its bug (in fuzz/target/planted, apart from
# the clean build), fuzzes it from an EMPTY corpus for at most PLANTED_SECS seconds
# (default 60) and passes when libFuzzer stops with the target's own check failing (its
# panic message starts with the target's name); a target that runs clean for the whole
# time, or fails for another reason, fails this script. Prints the time and executions
# to each finding. Not part of `make test` (nightly only, like `make fuzz`).
#
#   .ci/fuzz-planted.sh [TARGET]...
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
CARGO=${CARGO:-cargo}
secs=${PLANTED_SECS:-60}
if ! $CARGO +nightly --version >/dev/null 2>&1; then
    echo "fuzz-planted: needs the nightly toolchain (libFuzzer's instrumentation is nightly-only): rustup toolchain install nightly" >&2
    exit 1
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=($(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^keel-fuzz$'))
triple=x86_64-unknown-linux-gnu
base="--cfg keel_fuzz --cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares"
# Each planted build is a full build with its own flags (about 200 MB each): the
# directory goes at the end unless PLANTED_KEEP=1 (then a re-run reuses it).
export CARGO_TARGET_DIR=target/planted
work=$(mktemp -d)
trap 'rm -rf "$work"; [ "${PLANTED_KEEP:-0}" = 1 ] || rm -rf "$CARGO_TARGET_DIR"' EXIT
failed=()
for t in "${targets[@]}"; do
    RUSTFLAGS="$base --cfg keel_planted=\"$t\"" $CARGO +nightly build --release --target $triple --bin "$t" >&2
    mkdir -p "$work/$t"
    log="$work/$t.log"
    start=$(date +%s.%N)
    if "$CARGO_TARGET_DIR/$triple/release/$t" "$work/$t" -max_total_time="$secs" -max_len=1024 -seed=1 \
        -artifact_prefix="$work/$t-" -print_final_stats=1 >"$log" 2>&1; then
        echo "fuzz-planted: $t did NOT find its planted bug in ${secs} s"
        failed+=("$t")
    elif grep -q "^$t: " "$log"; then
        took=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        printf 'fuzz-planted: %s found its planted bug in %.1f s (%s executions): %s\n' "$t" "$took" "${execs:-?}" \
            "$(grep -m1 "^$t: " "$log" | cut -c1-160)"
    else
        echo "fuzz-planted: $t failed, but not on its own check:"
        grep -vE '^(#|INFO|stat::)' "$log" | tail -n 20
        failed+=("$t")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz-planted: planted bugs not found by: ${failed[*]}" >&2
    exit 1
fi
