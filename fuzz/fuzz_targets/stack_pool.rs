//! The spare-stack pool with a recording provider against a model (harness and checks:
//! core/src/stack/pool_fuzz.rs, built under `--cfg keel_fuzz`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(why) = keel_core::stack::pool_fuzz::run(data) {
        panic!("stack_pool: {why}");
    }
});
