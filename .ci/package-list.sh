#!/usr/bin/env bash
# What `cargo publish` would upload for keel-core and keel-linux, listed without building
# (`cargo package --list`, a dry run): each crate packages (every dependency has a
# version, the manifest is complete: no warning from cargo) and its package holds the
# README and both licence texts. `--list` does not check that a path dependency has a
# version (publish needs one): an awk pass over the manifest does, outside
# [dev-dependencies] (cargo drops path-only dev-dependencies from a package). Every file
# that src/, tests/ or examples/ includes by path (include_str!, include_bytes!, include!,
# #[path]) must be in the package, or the published library, tests or examples do not
# build from it. Uncommitted changes are allowed (--allow-dirty): the list
# is of the working tree.
set -uo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
checks=0
failed=0

for dir in core linux; do
    crate=keel-$dir
    checks=$((checks + 1))
    bad=$(awk '/^\[/ { dev = ($0 ~ /dev-dependencies/) }
        !dev && /path *=/ && !/version *=/ { printf "a path dependency without a version: %s; ", $0 }' "$dir/Cargo.toml")
    if [ -n "$bad" ]; then
        :
    elif ! $CARGO package --list --allow-dirty -p "$crate" >"$tmp/list" 2>"$tmp/err"; then
        bad="cargo package --list failed: $(cat "$tmp/err")"
    elif grep -q 'warning' "$tmp/err"; then
        bad="cargo package --list warns: $(cat "$tmp/err")"
    else
        for file in Cargo.toml README.md LICENSE-MIT LICENSE-APACHE src/lib.rs; do
            grep -qx "$file" "$tmp/list" || bad="${bad}the package lacks $file; "
        done
        # FILE:LINE:include_str!("PATH") or FILE:LINE:#[path = "PATH"], PATH relative to FILE's directory.
        while IFS= read -r hit; do
            src=${hit%%:*}
            path=$(sed -E 's/.*"([^"]+)".*/\1/' <<<"$hit")
            rel=$(realpath -m -s --relative-to="$dir" "$(dirname "$src")/$path")
            grep -qx "$rel" "$tmp/list" || bad="${bad}$hit names $rel, which is not in the package; "
        done < <(grep -rnoE '(include_str!|include_bytes!|include!)\("[^"]+"\)|#\[path = "[^"]+"\]' "$dir/src" "$dir/tests" "$dir/examples" 2>/dev/null)
    fi
    if [ -n "$bad" ]; then
        echo "FAIL: $crate: $bad" >&2
        failed=$((failed + 1))
    else
        echo "$crate: $(wc -l <"$tmp/list") files, README and both licences included"
    fi
done

echo "package-list: $((checks - failed)) passed, $failed failed"
[ $failed -eq 0 ]
