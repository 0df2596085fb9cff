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
# The ring driver also parks differently there (linux/src/ring/enter.rs, `wait_in_poll`):
# valgrind 3.19 runs `io_uring_enter` holding the lock that lets one thread run at a
# time, so an executor waiting in it for a completion another thread must cause (a peer
# thread's send, an unpark) stopped every thread for good: net_multishot and
# cross_thread hung. Under keel_valgrind the wait is a `poll(2)` on the ring descriptor,
# which valgrind lets block.
#
#   .ci/test-valgrind.sh [-p CRATE]... [-- TEST-ARGS]
#
# TEST-ARGS go to every test binary (a name filter, --skip NAME). Each binary gets
# KEEL_VALGRIND_TIMEOUT seconds (default 600): a hang fails it rather than the whole run.
# The overflow tests run their faulting cases in child processes, which run natively
# (children are traced only for the binaries in trace_bins below).
#
# --fair-sched=yes: valgrind runs one thread at a time, and its default lock (a pipe)
# lets the thread that just gave it up take it straight back, so a thread that never
# blocks (an executor kept busy by a task that only yields, as in transfer_threads'
# busy-executor test, or a spinning attacher) can hold it for seconds while the thread
# it waits for (the sender of an arrival, the releaser of a slot) gets no turn on a
# loaded machine. The ticket lock hands it on in arrival order. With it cross_thread's
# two_threads_attach_a_million_tasks_each (two attachers spinning while a slot is still
# owned) ends in about 60 s, against over 150 s, and stale_handle's racing attachers
# both win some of their races, as that test asserts.
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
# Release optimisation without the release profile's LTO and single codegen unit: the
# same code paths, an order of magnitude less build time for the ~90 test binaries.
export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
export RUSTFLAGS="${RUSTFLAGS:-} --cfg=keel_valgrind --cfg=rustix_use_libc"
bins=$($CARGO test --release "${pkgs[@]}" --lib --tests --no-run --message-format=json-render-diagnostics \
    | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])')
# Leak checking is off unless KEEL_VALGRIND_LEAKS=1: the tests leak on purpose
# (`Box::leak`ed task slots, `ManuallyDrop` views of descriptors), so every binary would
# fail on "definitely lost" blocks that are the tests' own.
if [ "${KEEL_VALGRIND_LEAKS:-0}" = 1 ]; then
    leaks="--leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite"
else
    leaks="--leak-check=no"
fi
# Skipped in every binary (libtest --skip), none for a memcheck finding:
# - the floating-point control tests: valgrind's CPU does not keep every mode bit of
#   MXCSR and the x87 control word (it honours the rounding mode, not the exception
#   masks, flush-to-zero or precision control), so a mode set is not read back as set
#   (keel's fiber rules 6 and 7 are about exactly those bits; they pass natively);
# - the two ucontext floating-point tests (fp_control_ucontext): the same MXCSR/x87 bits
#   as the first item, through glibc's swapcontext;
# - stack_rule_3_trimmed_spares_are_decommitted_and_work_when_reused (fibers_mmap): the
#   test reads a trimmed spare stack's pages itself to see them zeroed, memory memcheck
#   holds below a registered stack (an invalid read of the test's, not keel's);
# - the two backtrace tests whose fiber stack lies above the executor inside the
#   executor thread's own stack (fiber_backtrace, fiber_backtrace_ucontext): memcheck
#   does not see a switch to a stack nested in the current thread's registered stack as
#   a change of stack (core/src/stack/valgrind.rs says why) and reports the executor's
#   frames as dead, then undefined. Their twins with the fiber stack below the executor,
#   in static memory, walk the same trampoline CFI under memcheck; the nested ones pass
#   natively.
skips=(--skip set_then_read_gives_the_control_bits_back_and_keeps_the_status_flags
    --skip fiber_rule_6_status_flags_and_a_mode_restored_before_each_suspension_are_not_reported
    --skip fiber_rule_7_with_save_fp_control_a_fiber_keeps_its_modes_across_yields_and_the_others_keep_theirs
    --skip glibc_swapcontext_keeps_each_ucontext_fibers_rounding_mode_and_x87_control_word_and_the_executors
    --skip save_fp_control_on_the_ucontext_switcher_changes_nothing_the_fiber_sees
    --skip stack_rule_3_trimmed_spares_are_decommitted_and_work_when_reused
    --skip a_backtrace_in_a_fiber_above_the_executor_reaches_run
    --skip a_backtrace_in_a_ucontext_fiber_above_the_executor_reaches_run)
# Binaries whose child processes run under memcheck too (--trace-children=yes; a child
# with an error exits non-zero, which fails the test that spawned it):
# - hostile_peers: its keel server runs in a child of the test binary (the parent is the
#   peers' side, std sockets only). Its time and memory bounds are not asserted in a
#   valgrind build (they would measure valgrind), only printed.
trace_bins=(hostile_peers)
echo "test-valgrind: skipped: five floating-point control tests (valgrind's CPU drops MXCSR/x87 mode bits)," \
    "a test's own read of decommitted stack pages, two backtrace tests whose fiber stack nests in the" \
    "thread's stack (memcheck sees no switch there); reasons in .ci/test-valgrind.sh"
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
failed=()
total_start=$(date +%s)
ran=0
passed=0
for bin in $bins; do
    name=$(basename "$bin")
    children=--trace-children=no
    for s in "${trace_bins[@]}"; do [ "${name%-*}" = "$s" ] && children=--trace-children=yes; done
    ran=$((ran + 1))
    start=$(date +%s)
    if timeout -k 10 "${KEEL_VALGRIND_TIMEOUT:-600}" valgrind --tool=memcheck $children --fair-sched=yes --error-exitcode=1 $leaks --track-origins=yes --num-callers=30 -q \
        "$bin" --test-threads=1 -q "${skips[@]}" "$@" >"$log/$name.out" 2>"$log/$name.err"; then
        echo "test-valgrind: $name clean ($(($(date +%s) - start)) s): $(grep -E '^test result' "$log/$name.out" | tail -1)"
        n=$(sed -nE 's/^test result: ok\. ([0-9]+) passed.*/\1/p' "$log/$name.out" | tail -1)
        passed=$((passed + ${n:-0}))
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
echo "test-valgrind: $ran binaries, $passed tests, 0 memcheck errors, clean in $(($(date +%s) - total_start)) s"
