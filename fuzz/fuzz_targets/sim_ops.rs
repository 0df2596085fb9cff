//! The simulated driver's operation sequences against a model (harness and checks:
//! core/tests/fuzz/sim_ops.rs).
#![no_main]

#[path = "../../core/tests/fuzz/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(why) = harness::sim_ops::run(data) {
        panic!("sim_ops: {why}");
    }
});
