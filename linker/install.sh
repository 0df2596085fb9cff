#!/usr/bin/env bash
# make install: builds keel-ffi and puts libkeel.a, libkeel.so, keel.h, keel.hpp and a
# pkg-config file under PREFIX (lib/, include/, lib/pkgconfig/keel.pc).
# Usage: linker/install.sh PREFIX [release|debug]
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
prefix=${1:?usage: install.sh PREFIX [release|debug]}
profile=${2:-release}
case $profile in
    release) $CARGO build --release -p keel-ffi; dir=target/release ;;
    debug) $CARGO build -p keel-ffi; dir=target/debug ;;
    *) echo "install.sh: profile must be release or debug, not $profile" >&2; exit 2 ;;
esac
version=$(sed -n 's/^version = "\(.*\)"/\1/p' linker/Cargo.toml | head -1)
mkdir -p "$prefix/lib/pkgconfig" "$prefix/include"
install -m 644 "$dir/libkeel.a" "$prefix/lib/"
install -m 755 "$dir/libkeel.so" "$prefix/lib/"
install -m 644 linker/include/keel.h linker/include/keel.hpp "$prefix/include/"
prefix_abs=$(cd "$prefix" && pwd)
cat > "$prefix/lib/pkgconfig/keel.pc" <<PC
prefix=$prefix_abs
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: keel
Description: keel's C API: an embeddable runtime with fibers, priorities and io_uring
Version: $version
Libs: -L\${libdir} -lkeel
Libs.private: -lpthread -ldl -lm
Cflags: -I\${includedir}
PC
echo "installed keel $version ($profile) under $prefix_abs"
