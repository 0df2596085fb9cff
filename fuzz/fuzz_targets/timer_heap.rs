//! The timer heap against a sorted model (harness and checks: core/tests/fuzz/timer_heap.rs).
#![no_main]

#[path = "../../core/tests/fuzz/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(why) = harness::timer_heap::run(data) {
        panic!("timer_heap: {why}");
    }
});
