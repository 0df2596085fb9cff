#!/usr/bin/env bash
# `make test-valgrind`: the release test binaries of keel-core and keel-linux (unit and
# integration tests, no doctests) under memcheck, one binary at a time, each failing on
# the first memcheck error (--error-exitcode). Needs valgrind.
#
# Built apart in target/valgrind with
#   --cfg keel_valgrind    fiber stacks are registered with memcheck (VALGRIND_STACK_REGISTER,
#                          core/src/stack/valgrind.rs), so a switch is a change of stack;
#   --cfg rustix_use_libc  rustix's linux_raw backend reads the vDSO's ELF image, which
#                          valgrind does not map, and dies by SIGSEGV (rustix issue 1559).
#
#   .ci/test-valgrind.sh [-p CRATE]... [-- TEST-ARGS]
#
# TEST-ARGS go to every test binary (a name filter, --skip NAME). The overflow tests run
# their faulting cases in child processes, which run natively (no --trace-children).
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
command -v valgrind >/dev/null || { echo "test-valgrind: valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
crates=()
while [ $# -gt 0 ]; do
    case "$1" in
        -p) crates+=("$2"); shift 2 ;;
        --) shift; break ;;
        *) break ;;
    esac
done
[ ${#crates[@]} -gt 0 ] || crates=(keel-core keel-linux)
pkgs=()
for c in "${crates[@]}"; do pkgs+=(-p "$c"); done
export CARGO_TARGET_DIR=target/valgrind
export RUSTFLAGS="${RUSTFLAGS:-} --cfg=keel_valgrind --cfg=rustix_use_libc"
bins=$($CARGO test --release "${pkgs[@]}" --lib --tests --no-run --message-format=json-render-diagnostics \
    | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])')
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
failed=()
total_start=$(date +%s)
for bin in $bins; do
    name=$(basename "$bin")
    start=$(date +%s)
    if valgrind --tool=memcheck --error-exitcode=1 --leak-check=full --show-leak-kinds=definite \
        --errors-for-leak-kinds=definite --track-origins=yes --num-callers=30 -q \
        "$bin" --test-threads=1 -q "$@" >"$log/$name.out" 2>"$log/$name.err"; then
        echo "test-valgrind: $name clean ($(($(date +%s) - start)) s): $(grep -E '^test result' "$log/$name.out" | tail -1)"
    else
        echo "test-valgrind: $name FAILED ($(($(date +%s) - start)) s):"
        tail -n 60 "$log/$name.out" "$log/$name.err"
        failed+=("$name")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "test-valgrind: ${#failed[@]} binaries with errors or failures: ${failed[*]}" >&2
    exit 1
fi
echo "test-valgrind: clean in $(($(date +%s) - total_start)) s"
