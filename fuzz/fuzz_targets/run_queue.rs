//! The run queue and the intrusive lists on real task headers against models (harness
//! and checks: core/src/exec/run_queue_fuzz.rs, built under `--cfg keel_fuzz`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(why) = keel_core::exec::run_queue_fuzz::run(data) {
        panic!("run_queue: {why}");
    }
});
