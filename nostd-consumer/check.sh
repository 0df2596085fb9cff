#!/usr/bin/env bash
# keel-core is provably no_std and alloc-free (see README.md):
#   1. build the #![no_std] #![no_main] consumer (release and dev) and run it: exit 0;
#   2. its binary holds no allocator and no std code;
#   3. the deliberately broken builds FAIL, with the errors that make 1 a proof:
#      features leak-alloc and leak-std link a dependency (leak/) that pulls in alloc
#      or std.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
manifest="$here/Cargo.toml"
export CARGO_TARGET_DIR="$here/target"
CARGO="${CARGO:-cargo}"

fail() {
    echo "nostd: FAILED: $*" >&2
    exit 1
}

for profile in release dev; do
    "$CARGO" build --quiet --manifest-path "$manifest" --profile "$profile"
    dir=release
    [ "$profile" = dev ] && dir=debug
    bin="$CARGO_TARGET_DIR/$dir/keel-nostd-consumer"
    status=0
    "$bin" 2>&1 || status=$?
    [ "$status" -eq 0 ] || fail "the consumer ($profile build) exited with status $status (see the table in nostd-consumer/README.md)"
    echo "nostd: the $profile consumer ran every check and exited 0"
    if command -v nm >/dev/null; then
        if syms="$(nm -C "$bin" | grep -E '__rust_alloc|__rg_alloc|__rdl_alloc| std::')"; then
            fail "the $profile binary holds allocator or std symbols:"$'\n'"$syms"
        fi
        echo "nostd: the $profile binary holds no allocator and no std symbol ($(nm "$bin" | wc -l) symbols checked)"
    fi
done

# The guard works: each broken variant must fail to build, with the expected error.
expect_failure() {
    local feature="$1" pattern="$2" out
    if out="$("$CARGO" build --manifest-path "$manifest" --release --features "$feature" 2>&1)"; then
        fail "the $feature build succeeded: nothing would stop alloc or std from being linked"
    fi
    grep -qE "$pattern" <<<"$out" || fail "the $feature build failed, but not with /$pattern/:"$'\n'"$out"
    echo "nostd: the $feature build fails as it must: $(grep -m1 -E "$pattern" <<<"$out")"
}
expect_failure leak-alloc 'no global memory allocator found'
expect_failure leak-std 'duplicate lang item .*panic_impl'
echo "nostd: ok"
