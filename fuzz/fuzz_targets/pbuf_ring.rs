//! The provided-buffer ring's accounting with the harness as the kernel (harness and
//! checks: linux/src/pbuf_fuzz.rs, built under `--cfg keel_fuzz`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(why) = keel_linux::pbuf::fuzz::run(data) {
        panic!("pbuf_ring: {why}");
    }
});
