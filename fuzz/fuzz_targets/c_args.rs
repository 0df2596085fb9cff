//! The C API's argument handling (harness and checks: linker/tests/fuzz/c_args.rs).
#![no_main]

#[path = "../../linker/tests/fuzz/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(why) = harness::c_args::run(data) {
        panic!("c_args: {why}");
    }
});
