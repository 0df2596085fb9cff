#!/usr/bin/env bash
# Instructions per operation of keel's impl of each CASE, counted by callgrind (repeatable
# on a noisy machine, unlike time): the release keel-bench runs the case twice, with
# --iters N and --iters 2N (3 quick rounds each), and the difference of the two totals
# over 3N operations cancels set-up, calibration-free start and teardown.
#
#   bench/callgrind-per-op.sh [-n N] [--impl NAME] CASE...
#
# Prints `callgrind <case> <impl> <instructions per op>`. Needs valgrind.
#
# The binary is built apart (target/callgrind) with rustix's libc backend
# (`--cfg=rustix_use_libc`): the linux_raw backend checks the vDSO's ELF image when it
# first reads the aux vector (page size, clocks), which valgrind does not map, so any run
# reaching it (the C API's executors, via their mmap stack pool) dies with SIGSEGV. The
# libc backend makes the same calls through glibc; keel's hot paths make no rustix call.
set -euo pipefail
cd "$(dirname "$0")/.."
n=20000
impl=keel
cases=()
while [ $# -gt 0 ]; do
    case "$1" in
        -n) n="$2"; shift 2 ;;
        --impl) impl="$2"; shift 2 ;;
        -h|--help) sed -n 2,15p "$0"; exit 0 ;;
        *) cases+=("$1"); shift ;;
    esac
done
[ ${#cases[@]} -gt 0 ] || { echo "usage: $0 [-n N] [--impl NAME] CASE..." >&2; exit 2; }
command -v valgrind >/dev/null || { echo "valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
CARGO_TARGET_DIR=target/callgrind RUSTFLAGS="${RUSTFLAGS:-} --cfg=rustix_use_libc" \
    ${CARGO:-cargo} build --release -q -p keel-bench
bin=target/callgrind/release/keel-bench
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
total() { # case iters -> total instructions
    valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$bin" "$1" --only "$impl" --quick --iters "$2" >/dev/null 2>"$out/err" \
        || { cat "$out/err" >&2; exit 1; }
    grep -E '^(summary|totals):' "$out/cg" | head -1 | awk '{print $2}'
}
for c in "${cases[@]}"; do
    a=$(total "$c" "$n")
    b=$(total "$c" $((2 * n)))
    echo "callgrind $c $impl $(awk -v a="$a" -v b="$b" -v n="$n" 'BEGIN { printf "%.1f", (b - a) / (3 * n) }')"
done
