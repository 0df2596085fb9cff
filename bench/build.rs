//! Compiles the C task bodies of the `c_yield` and `c_suspend_io` cases (`c/bodies.c`,
//! against keel's header) into a static library linked into keel-bench.

fn main() {
    println!("cargo:rerun-if-changed=c/bodies.c");
    println!("cargo:rerun-if-changed=../linker/include/keel.h");
    cc::Build::new()
        .file("c/bodies.c")
        .include("../linker/include")
        .std("c11")
        .opt_level(2)
        .warnings_into_errors(true)
        .flag("-Wall")
        .flag("-Wextra")
        .compile("keel_bench_bodies");
}
