//! Task-slot lifecycle call sequences on the simulated driver (harness and checks:
//! core/tests/fuzz/slot_lifecycle.rs).
#![no_main]

#[path = "../../core/tests/fuzz/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(why) = harness::slot_lifecycle::run(data) {
        panic!("slot_lifecycle: {why}");
    }
});
