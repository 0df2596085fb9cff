#!/usr/bin/env bash
# The examples' command lines (linux/examples/echo.rs, tour.rs), on their release builds:
# - `--help` and `-h` print the usage on stdout and exit 0;
# - bad input (an unknown flag, a missing value, a value that does not parse or is out of
#   range) exits 2 with exactly one line on stderr that names what to change, and no panic;
# - echo serves with every flag set: a message sent on loopback comes back, SIGINT stops
#   it (exit 0) and its summary counts the message; both handler kinds;
# - echo on an address it cannot bind exits 1 with one line saying so, no panic.
# Exits 1 with the failed checks listed when any check fails.
set -uo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}

$CARGO build --release -p keel-linux --example echo --example tour --example deny_io_uring || exit 1
bin=${CARGO_TARGET_DIR:-target}/release/examples
tmp=$(mktemp -d)
server=
cleanup() {
    [ -n "$server" ] && kill -KILL "$server" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
export RUST_BACKTRACE=1
checks=0
failed=() # the numbers of the checks that failed

fail() {
    echo "FAIL: $*" >&2
    failed[$checks]=1
}

# run NAME ARGS...: runs the example with a 20 s watchdog; sets $status, $out, $err.
run() {
    local name=$1
    shift
    timeout -s KILL 20 "$bin/$name" "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
    status=$?
    out=$(cat "$tmp/out")
    err=$(cat "$tmp/err")
}

panicked() {
    grep -qE 'panicked|stack backtrace' "$tmp/err" "$tmp/out"
}

# help NAME ARGS...: exit 0, the usage on stdout, nothing on stderr.
help() {
    checks=$((checks + 1))
    run "$@"
    local what="$* ->"
    [ "$status" -eq 0 ] || fail "$what exit $status, want 0"
    [[ $out == usage:* ]] || fail "$what stdout does not start with 'usage:': ${out:0:80}"
    [ -z "$err" ] || fail "$what stderr not empty: $err"
}

# bad NAME WANT ARGS...: exit 2, one line on stderr containing WANT, no panic, no stdout.
bad() {
    checks=$((checks + 1))
    local name=$1 want=$2
    shift 2
    run "$name" "$@"
    local what="$name $* ->"
    [ "$status" -eq 2 ] || fail "$what exit $status, want 2"
    [ "$(wc -l <"$tmp/err")" -eq 1 ] || fail "$what stderr is $(wc -l <"$tmp/err") lines, want 1: $err"
    [[ $err == *"$want"* ]] || fail "$what stderr lacks '$want': $err"
    [ -z "$out" ] || fail "$what stdout not empty: ${out:0:80}"
    panicked && fail "$what panicked: $err"
}

for name in echo tour; do
    help $name --help
    help $name -h
    bad $name "--bogus" --bogus
    bad $name '"3"' --help=3
done
bad tour '"extra"' extra

bad echo "--threads" --threads abc
bad echo "--addr" --addr $'two\nlines'
bad echo "--threads" --threads 0
bad echo "--threads" --threads=-1
bad echo "--addr" --addr nonsense
bad echo "--addr" --addr 127.0.0.1
bad echo "--addr" --addr
bad echo "--handler" --handler thread
bad echo "--conns" --conns 65537
bad echo "--conns" --conns ''
bad echo "--resume-batch" --resume-batch 0
bad echo '"extra"' --threads 2 extra
bad echo "--backend" --backend uring
bad echo "--direct" --direct --backend epoll

# An address no interface has (TEST-NET-1): bind fails, exit 1, one line after the start.
checks=$((checks + 1))
run echo --addr 192.0.2.1:7 --threads 2
[ "$status" -eq 1 ] || fail "echo --addr 192.0.2.1:7 -> exit $status, want 1"
[[ $(tail -n 1 "$tmp/err") == *"cannot listen on 192.0.2.1:7"* ]] || fail "echo --addr 192.0.2.1:7 -> stderr: $err"
panicked && fail "echo --addr 192.0.2.1:7 panicked: $err"

# serve HANDLER BACKEND [DENIED [FLAG...]]: every flag set; one message round trip over
# loopback; SIGINT; summary; the backend line names the backend wanted. DENIED (an errno)
# runs the server under deny_io_uring, where `--backend auto` must fall back to epoll;
# FLAGs go to the server as they are (`--direct`).
serve() {
    checks=$((checks + 1))
    local handler=$1 backend=$2 denied=${3:-} port try up reply want=io_uring
    local extra=("${@:4}")
    local wrap=()
    [ -n "$denied" ] && wrap=("$bin/deny_io_uring" "$denied")
    { [ "$backend" = epoll ] || [ -n "$denied" ]; } && want=epoll
    for try in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 30000))
        "${wrap[@]}" "$bin/echo" --addr "127.0.0.1:$port" --threads 2 --handler "$handler" --conns 4 --resume-batch 8 \
            --backend "$backend" "${extra[@]}" >"$tmp/out" 2>"$tmp/err" </dev/null &
        server=$!
        up=0
        for _ in $(seq 100); do
            if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
                up=1
                break
            fi
            kill -0 "$server" 2>/dev/null || break
            sleep 0.1
        done
        [ $up -eq 1 ] && break
        kill -KILL "$server" 2>/dev/null
        wait "$server" 2>/dev/null
        server=
    done
    local what="${wrap[*]} echo --handler $handler --backend $backend ${extra[*]} on 127.0.0.1:$port ->"
    if [ $up -ne 1 ]; then
        fail "$what not listening after 5 tries: $(cat "$tmp/err")"
        return
    fi
    # The probe above connected and closed at once: a connection with no message.
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    printf 'ping' >&3
    IFS= read -r -t 5 -N 4 reply <&3
    exec 3>&-
    [ "$reply" = ping ] || fail "$what echoed '$reply', want 'ping'"
    kill -INT "$server"
    for _ in $(seq 100); do
        kill -0 "$server" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$server" 2>/dev/null; then
        fail "$what still running 10 s after SIGINT"
        kill -KILL "$server"
    fi
    wait "$server"
    status=$?
    server=
    [ "$status" -eq 0 ] || fail "$what exit $status after SIGINT, want 0: $(cat "$tmp/err")"
    # The probe's connection counts if a handler accepted it before SIGINT.
    grep -qE '^echo: 1 messages, 4 bytes, [12] connections$' "$tmp/out" ||
        fail "$what summary: $(cat "$tmp/out"), want 1 message, 4 bytes, 1 or 2 connections"
    grep -q "^echo: serving on the $want backend$" "$tmp/err" || fail "$what backend line: $(cat "$tmp/err"), want $want"
    panicked && fail "$what panicked: $(cat "$tmp/err")"
}
serve fiber auto
serve future auto
serve fiber epoll
serve future epoll
serve fiber auto EPERM
serve future auto ENOSYS
serve fiber ring "" --direct
serve future ring "" --direct

echo "example-args: $((checks - ${#failed[@]})) passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
