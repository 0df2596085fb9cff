//! The ring's completion routing without a kernel: the operation-slot table, its
//! `user_data` encoding and a multishot slot's result queue (harness and checks:
//! linux/src/ring/slots_fuzz.rs, built under `--cfg keel_fuzz`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(why) = keel_linux::ring::slots_fuzz::run(data) {
        panic!("ring_slots: {why}");
    }
});
