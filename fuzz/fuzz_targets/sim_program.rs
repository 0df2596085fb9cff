//! Random task programs on the simulated driver, drawn from the input's bytes (harness
//! and checks: core/tests/fuzz/sim_program.rs and core/tests/random/).
#![no_main]

#[path = "../../core/tests/fuzz/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(why) = harness::sim_program::run(data) {
        panic!("sim_program: {why}");
    }
});
