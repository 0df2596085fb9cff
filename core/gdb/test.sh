#!/usr/bin/env bash
# keel's GDB support, end to end: runs linux/examples/gdb_demo under `gdb -batch` (dev
# and release builds), stops at `keel_gdb_demo_break` inside a running fiber while three
# other tasks are suspended in known functions, and checks that
# - gdb loaded core/gdb/keel.py by itself from the binary (`info auto-load
#   python-scripts`, the directory trusted with add-auto-load-safe-path, never `source`),
# - `keel tasks` lists the four tasks with their states, priorities, kinds and
#   accounting (the executor accounts),
# - `keel bt 1` and `keel bt 2` show the suspended functions (asm and ucontext fibers),
# - `bt` in the running fiber reaches the executor's `run` and the thread's function,
# - `keel stats` prints the executor's counters and its ring's fill,
# - the process then continues and exits normally.
# Needs gdb with Python (.ci/run installs it).
set -euo pipefail
cd "$(dirname "$0")/../.."
CARGO=${CARGO:-cargo}
command -v gdb > /dev/null || { echo "gdb-test: gdb is missing (.ci/run installs it)" >&2; exit 1; }
gdb -batch -ex "python print('py-ok')" 2>/dev/null | grep -q py-ok \
    || { echo "gdb-test: this gdb has no Python" >&2; exit 1; }

fail=0
check() { # output, what, extended regex
    if grep -Eq -- "$3" "$1"; then
        echo "  ok: $2"
    else
        echo "  FAILED: $2 (no match for /$3/)" >&2
        fail=1
    fi
}

run_profile() { # cargo profile flag ("" or --release), target dir name
    $CARGO build -q $1 -p keel-linux --example gdb_demo
    local bin="target/$2/examples/gdb_demo" out
    out=$(mktemp)
    timeout 300 gdb -batch -nx \
        -iex "add-auto-load-safe-path $PWD/target" \
        -ex "set pagination off" \
        -ex "break keel_gdb_demo_break" \
        -ex "run" \
        -ex "info auto-load python-scripts" \
        -ex "keel tasks" \
        -ex "keel bt 1" \
        -ex "keel bt 2" \
        -ex "keel stats" \
        -ex "up" \
        -ex "print *status.pointer" \
        -ex "echo ==bt==\\n" \
        -ex "bt" \
        -ex "frame function gdb_demo::run_executor" \
        -ex "print *ex.pointer" \
        -ex "continue" \
        "$bin" > "$out" 2>&1 || true
    echo "gdb-test ($2): $bin"
    check "$out" "keel.py auto-loaded from the binary" '^Yes +pretty-printer-gdb_demo'
    check "$out" "waiter: asm fiber, suspended (wait), cpu high, io low" \
        "task 1 'waiter' suspended\(wait\) cpu=high io=low fiber .*stack 0x[0-9a-f]+-0x[0-9a-f]+ used [0-9]+"
    check "$out" "sleeper: ucontext fiber, suspended (timer), cpu low, io normal" \
        "task 2 'sleeper' suspended\(timer\) cpu=low io=normal custom .*used [0-9]+"
    # (The future's read is the driver's, held in one of its op slots, not a status block
    # of the task's: the task's own count stays 0, the driver line below shows the slot.)
    check "$out" "reader: future, suspended (io), cpu normal, io high" \
        "task 3 'reader' suspended\(io\) cpu=normal io=high future"
    check "$out" "per-task accounting: the running probe has ticks" \
        "task 4 'probe' running .* ticks running=[0-9]+ suspended=[0-9]+ ready_wait=[0-9]+ longest_run=[0-9]+"
    check "$out" "waiter's accounting: it ran before it waited" "task 1 'waiter' .* ticks running=[1-9][0-9]*"
    check "$out" "probe: asm fiber, running, cpu low" "task 4 'probe' running cpu=low io=normal fiber"
    check "$out" "keel bt 1 shows demo_wait_here" "^#[0-9]+ .*demo_wait_here"
    check "$out" "keel bt 2 shows demo_sleep_here" "^#[0-9]+ .*demo_sleep_here"
    if [ "$2" = debug ]; then # the printers need the types only dev builds describe
        check "$out" "the status block printer" '^\$1 = io status: IoState::Idle, op OpId \(0\), result Option<.*>::None'
        check "$out" "the executor printer, with its ring's fill" \
            '^\$2 = executor 0x[0-9a-f]+: 4 attached, running, .* 4 tasks; driver io_uring, ring fd [0-9]+ sq 0/[0-9]+ cq 0/[0-9]+, op slots 1/[0-9]+'
    fi
    check "$out" "keel stats counts the stack pool" "stacks created 3 .* in_use 3"
    check "$out" "keel stats shows the ring's fill (kernel fdinfo) and the read holding a slot" \
        "^  driver io_uring, ring fd [0-9]+ sq 0/[0-9]+ cq 0/[0-9]+, op slots 1/[0-9]+"
    # The running fiber's own `bt`: its bottom frame, then the executor's run loop and
    # the thread's function on the executor's stack.
    awk '/^==bt==$/ { inbt = 1 } inbt' "$out" > "$out.bt"
    check "$out.bt" "bt starts in the running fiber" "^#[0-9]+ .*keel_gdb_demo_break"
    check "$out.bt" "bt passes the fiber's bottom frame" "<signal handler called>"
    check "$out.bt" "bt reaches Executor::run" "^#[0-9]+ .*Executor(<.*>)?::run(<| \()"
    check "$out.bt" "bt reaches the executor thread's function" "^#[0-9]+ .*gdb_demo::run_executor"
    check "$out" "the process continues and finishes" "^gdb_demo: done"
    check "$out" "the process exits normally" "exited normally"
    if [ "$fail" != 0 ]; then
        echo "---- gdb output ($2) ----" >&2
        cat "$out" >&2
    fi
    rm -f "$out" "$out.bt"
}

run_profile "" debug
run_profile --release release
[ "$fail" = 0 ] || { echo "gdb-test: FAILED" >&2; exit 1; }
echo "gdb-test: all checks passed"
