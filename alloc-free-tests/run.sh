#!/usr/bin/env bash
# `make alloc-free`: the allocation tests in release, each test in a process of its own
# and one at a time, with every window's counts shown (they are written past the test
# harness's capture), then one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO="${CARGO:-cargo}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

start=$SECONDS
status=0
"$CARGO" test --release -p keel-alloc-free-tests --tests -- --nocapture --test-threads=1 2>&1 | tee "$log" || status=$?

# Window lines: "alloc-free: <what>: <n> cycles, <a> allocs, <d> deallocs, <r> reallocs (...)".
# The detector's own deliberately failing window says "(must fail)" and is left out.
windows="$(grep -E '^alloc-free: .*: [0-9]+ cycles, ' "$log" | grep -v '(must fail)' || true)"
zero="$(grep -cE ' 0 allocs, 0 deallocs, 0 reallocs ' <<<"$windows" || true)"
total="$(grep -c . <<<"$windows" || true)"
skipped="$(grep -cE '^alloc-free: .*: SKIPPED: ' "$log" || true)"
echo "alloc-free summary: $zero of $total windows at zero allocations, $skipped skipped, $((total - zero)) allocating ($((SECONDS - start)) s with the build)"
if [ "$status" -ne 0 ] || [ "$zero" -ne "$total" ]; then
    echo "alloc-free: FAILED" >&2
    exit 1
fi
