#!/usr/bin/env bash
# keel's C API from C and C++: builds libkeel (debug profile, shared with `make unit`),
# checks the generated header is current and compiles as C11 and C++17 with
# -Wall -Wextra -Werror, checks that libkeel.so exports only keel_* symbols, then builds
# every C program in linker/tests/c against libkeel.a with gcc and every C++ program in
# linker/tests/cpp with g++, and runs them; one C program is also built through pkg-config
# from a `make install` prefix (against libkeel.so), and one linked -static. A program exiting 77 is skipped (it says why on stderr). Ends with
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
command -v pkg-config > /dev/null || { echo "c-api: pkg-config is missing (.ci/run installs it)" >&2; exit 1; }

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

# keel-core built alone (an rlib, no LTO) references no allocator: it is no_std without
# alloc. Its undefined symbols are checked against every allocator entry point.
$CARGO build -q -p keel-core
alloc_syms='malloc|calloc|realloc|free|posix_memalign|aligned_alloc|memalign|valloc|__rust_alloc|__rust_dealloc|__rust_realloc|__rust_alloc_zeroed|__rust_alloc_error_handler|__rg_alloc|__rdl_alloc'
undefined=$(nm -u "$LIB/libkeel_core.rlib" 2>/dev/null | awk 'NF == 2 {print $2}' | sort -u)
found=$(echo "$undefined" | grep -E "(^|[0-9_])($alloc_syms)\$" || true)
if [ -n "$found" ]; then
    echo "keel-core references allocator symbols:" >&2
    echo "$found" >&2
    exit 1
fi
echo "audit: keel-core's $(echo "$undefined" | grep -c .) undefined symbols include none of: ${alloc_syms//|/ }"

# no_malloc.c counts allocator calls through the linker's --wrap.
WRAP=-Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free,--wrap=posix_memalign,--wrap=aligned_alloc
for src in linker/tests/c/*.c; do
    name=$(basename "$src" .c)
    extra=()
    [ "$name" = no_malloc ] && extra=(-DKEEL_WRAP_MALLOC "$WRAP")
    $CC -std=c11 -D_GNU_SOURCE "${WARN[@]}" -I"$INC" "$src" "$LIB/libkeel.a" "${LIBS[@]}" "${extra[@]}" -o "$OUT/$name"
    run "$name" "$OUT/$name"
done

# The inline yield's switch lives in the caller's code: also built optimized (locals in
# registers across the switch), with frame pointers, and as C++ (its clobber list and the
# compiler's register use meet there, not in keel).
for opt in "-O2" "-O2 -fno-omit-frame-pointer" "-O3 -march=native"; do
    tag=$(echo "$opt" | tr -dc 'a-zA-Z0-9')
    # shellcheck disable=SC2086
    $CC -std=c11 -D_GNU_SOURCE $opt "${WARN[@]}" -I"$INC" linker/tests/c/inline_yield.c "$LIB/libkeel.a" "${LIBS[@]}" -o "$OUT/inline_yield_$tag"
    run "inline_yield $opt" "$OUT/inline_yield_$tag"
done
$CXX -std=c++17 -O2 -x c++ "${WARN[@]}" -I"$INC" linker/tests/c/inline_yield.c -x none "$LIB/libkeel.a" "${LIBS[@]}" -o "$OUT/inline_yield_cpp"
run "inline_yield (C++)" "$OUT/inline_yield_cpp"

for src in linker/tests/cpp/*.cpp; do
    name=$(basename "$src" .cpp)
    $CXX -std=c++17 "${WARN[@]}" -I"$INC" "$src" "$LIB/libkeel.a" "${LIBS[@]}" -o "$OUT/$name"
    run "$name" "$OUT/$name"
done

# The README's program, as written there, with a main that checks its result.
awk '/^```c$/ {on = 1; next} on && /^```$/ {exit} on' linker/README.md > "$OUT/readme.c"
printf '#include <stdio.h>\nint main(void) { return run_once() == 42 ? 0 : 1; }\n' >> "$OUT/readme.c"
$CC -std=c11 -D_GNU_SOURCE "${WARN[@]}" -I"$INC" "$OUT/readme.c" "$LIB/libkeel.a" "${LIBS[@]}" -o "$OUT/readme"
run readme "$OUT/readme"

# The ecosystem's way: `make install` into a prefix, then a program built through
# pkg-config against it, linked to libkeel.so and run from there.
make -s install PREFIX="$OUT/prefix" KEEL_PROFILE=debug CARGO="$CARGO" > /dev/null
export PKG_CONFIG_PATH="$OUT/prefix/lib/pkgconfig"
# shellcheck disable=SC2046 # pkg-config's output is a list of flags
$CC -std=c11 -D_GNU_SOURCE "${WARN[@]}" linker/tests/c/one_task.c $(pkg-config --cflags --libs keel) \
    -o "$OUT/one_task_pkgconfig"
echo "pkg-config: built one_task with: $(pkg-config --cflags --libs keel)"
run one_task_pkgconfig env LD_LIBRARY_PATH="$OUT/prefix/lib" "$OUT/one_task_pkgconfig"

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

# keel's GDB script rides in libkeel (linker/src/gdb.rs): its `.debug_gdb_scripts` entry
# is in the linked C programs, the static one (--gc-sections) too, and gdb loads it from
# there by itself once the directory is trusted.
for bin in "$OUT/one_task" "$OUT/one_task_static"; do
    section=$(readelf -W -p .debug_gdb_scripts "$bin" 2>/dev/null || true)
    if grep -q 'keel-gdb' <<< "$section"; then
        echo "gdb script: in $(basename "$bin")'s .debug_gdb_scripts"
    else
        echo "FAILED: no keel-gdb entry in $bin's .debug_gdb_scripts" >&2
        failed=$((failed + 1))
    fi
done
if command -v gdb > /dev/null; then
    loaded=$(gdb -batch -nx -iex "add-auto-load-safe-path $OUT" -ex "info auto-load python-scripts" \
        "$OUT/one_task_static" 2>&1 || true)
    if grep -Eq '^Yes +keel-gdb' <<< "$loaded"; then
        echo "gdb script: auto-loaded from one_task_static"
    else
        echo "FAILED: gdb did not auto-load keel-gdb from one_task_static:" >&2
        echo "$loaded" >&2
        failed=$((failed + 1))
    fi
else
    echo "SKIPPED: gdb auto-load check (gdb is missing; .ci/run installs it)"
    skipped=$((skipped + 1))
fi
strip -o "$OUT/one_task_static.stripped" "$OUT/one_task_static"
echo "size: one_task_static stripped is $(stat -c %s "$OUT/one_task_static.stripped") bytes" \
    "(libkeel.a from the debug profile); code bytes by origin:"
nm -S -t d "$OUT/one_task_static" 2>/dev/null | awk '$3 ~ /^[tTwW]$/ {
        s = $2 + 0
        if ($4 ~ /^_R/ || $4 ~ /^_ZN/) { if ($4 ~ /keel/) k += s; else r += s } else c += s
    }
    END { printf "  keel %d, other Rust (std, core, io-uring, rustix) %d, C (glibc) %d\n", k, r, c }'

echo "c-api: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
