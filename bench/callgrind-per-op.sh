#!/usr/bin/env bash
# Instructions per operation of keel's impl of each CASE, counted by callgrind (repeatable
# on a noisy machine, unlike time): the release keel-bench runs the case twice, with
# --iters N and --iters 2N (3 quick rounds each), and the difference of the two totals
# over 3N operations cancels set-up, calibration-free start and teardown.
#
#   bench/callgrind-per-op.sh [-n N] [--impl NAME] [--cache] CASE...
#
# Prints `callgrind <case> <impl> <instructions per op>`. Needs valgrind. With --cache,
# callgrind simulates the caches (`--cache-sim=yes`; the last-level cache is the CPU's L3
# as /sys describes it, since valgrind's own probe misreads AMD's, the first-level caches
# valgrind's; all three printed once) and the line goes on with the simulated misses
# per op, differenced the same way: `D1 <first-level data misses> LL <last-level data
# misses> I1 <first-level instruction misses>` (reads and writes together).
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
cache=0
cases=()
while [ $# -gt 0 ]; do
    case "$1" in
        -n) n="$2"; shift 2 ;;
        --impl) impl="$2"; shift 2 ;;
        --cache) cache=1; shift ;;
        -h|--help) sed -n 2,20p "$0"; exit 0 ;;
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
sim=()
if [ "$cache" = 1 ]; then
    sim=(--cache-sim=yes)
    l3=/sys/devices/system/cpu/cpu0/cache/index3
    if [ -r "$l3/size" ]; then
        kib=$(tr -dc 0-9 <"$l3/size")
        sim+=("--LL=$((kib * 1024)),$(cat "$l3/ways_of_associativity"),$(cat "$l3/coherency_line_size")")
    fi
fi
total() { # case iters -> "Ir D1 LL I1" totals (the misses 0 without --cache)
    valgrind --tool=callgrind "${sim[@]}" --callgrind-out-file="$out/cg" "$bin" "$1" --only "$impl" --quick --iters "$2" >/dev/null 2>"$out/err" \
        || { cat "$out/err" >&2; exit 1; }
    [ "$cache" = 1 ] && [ ! -e "$out/said" ] && { grep -E '^desc: (I1|D1|LL) cache' "$out/cg" >&2; touch "$out/said"; }
    # The events line names the summary's columns (Ir, then with the cache simulation
    # Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw).
    awk '/^events:/ { for (i = 2; i <= NF; i++) col[$i] = i - 1 }
         /^(summary|totals):/ && !done { for (i = 2; i <= NF; i++) v[i - 1] = $i; done = 1 }
         END { printf "%s %d %d %d\n", v[col["Ir"]], v[col["D1mr"]] + v[col["D1mw"]], v[col["DLmr"]] + v[col["DLmw"]], v[col["I1mr"]] }' "$out/cg"
}
for c in "${cases[@]}"; do
    read -r a ad al ai <<<"$(total "$c" "$n")"
    read -r b bd bl bi <<<"$(total "$c" $((2 * n)))"
    per() { awk -v a="$1" -v b="$2" -v n="$n" 'BEGIN { printf "%.1f", (b - a) / (3 * n) }'; }
    if [ "$cache" = 1 ]; then
        echo "callgrind $c $impl $(per "$a" "$b") D1 $(per "$ad" "$bd") LL $(per "$al" "$bl") I1 $(per "$ai" "$bi")"
    else
        echo "callgrind $c $impl $(per "$a" "$b")"
    fi
done
