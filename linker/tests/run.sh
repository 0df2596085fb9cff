#!/usr/bin/env bash
# keel's C API from C and C++: builds libkeel (debug profile, shared with `make unit`),
# checks the generated header is current and compiles as C11 and C++17 with
# -Wall -Wextra -Werror, checks that libkeel.so exports only keel_* symbols, then builds
# every C program in linker/tests/c against libkeel.a with gcc (one of them also linked
# -static) and runs it. A program exiting 77 is skipped (it says why on stderr). Ends with
# "N passed, N failed, N skipped" and exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
CARGO=${CARGO:-cargo}
CC=${CC:-gcc}
CXX=${CXX:-g++}
OUT=target/keel-c-tests
mkdir -p "$OUT"

$CARGO build -p keel-ffi
$CARGO test -q -p keel-ffi --test header

LIB=target/debug
INC=linker/include
WARN=(-Wall -Wextra -Werror -pedantic)
LIBS=(-lpthread -ldl -lm)

echo '#include "keel.h"' > "$OUT/header.c"
$CC -std=c11 "${WARN[@]}" -I"$INC" -c "$OUT/header.c" -o "$OUT/header_c.o"
cp "$OUT/header.c" "$OUT/header.cpp"
$CXX -std=c++17 "${WARN[@]}" -I"$INC" -c "$OUT/header.cpp" -o "$OUT/header_cpp.o"
echo "header: compiles as C11 and C++17 with ${WARN[*]}"

others=$(nm -D --defined-only "$LIB/libkeel.so" | awk '{print $3}' | grep -v '^keel_' || true)
if [ -n "$others" ]; then
    echo "libkeel.so exports symbols outside keel_*:" >&2
    echo "$others" >&2
    exit 1
fi
echo "exports: libkeel.so defines $(nm -D --defined-only "$LIB/libkeel.so" | grep -c ' keel_') symbols, all keel_*"

passed=0 failed=0 skipped=0
run() {
    local name=$1
    shift
    set +e
    "$@"
    local rc=$?
    set -e
    case $rc in
        0) passed=$((passed + 1)) ;;
        77) skipped=$((skipped + 1)); echo "SKIPPED: $name" ;;
        *) failed=$((failed + 1)); echo "FAILED: $name (exit $rc)" ;;
    esac
}

for src in linker/tests/c/*.c; do
    name=$(basename "$src" .c)
    $CC -std=c11 -D_GNU_SOURCE "${WARN[@]}" -I"$INC" "$src" "$LIB/libkeel.a" "${LIBS[@]}" -o "$OUT/$name"
    run "$name" "$OUT/$name"
done

# Fully static: glibc and libkeel.a in one binary. The linker warns that std's
# getpwuid_r and getaddrinfo (home_dir, DNS lookup: code keel never calls) would need
# glibc's NSS modules at run time; nothing else stays dynamic.
$CC -static -std=c11 -D_GNU_SOURCE "${WARN[@]}" -I"$INC" linker/tests/c/one_task.c "$LIB/libkeel.a" \
    "${LIBS[@]}" -Wl,--gc-sections -o "$OUT/one_task_static" 2> "$OUT/static-link.log" \
    || { cat "$OUT/static-link.log" >&2; exit 1; }
ldd_out=$(ldd "$OUT/one_task_static" 2>&1 || true)
if [[ $ldd_out == *"not a dynamic executable"* ]]; then
    echo "static: one_task_static has no dynamic section"
else
    echo "static: one_task_static is dynamic:" >&2
    echo "$ldd_out" >&2
    failed=$((failed + 1))
fi
run one_task_static "$OUT/one_task_static"

echo "c-api: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
