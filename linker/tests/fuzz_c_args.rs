//! Proptest twin of the cargo-fuzz target `c_args` (fuzz/): random byte strings played
//! as calls on the C API with arguments from the safe subset (`fuzz/c_args.rs` lists
//! the checks). Bounded: `PROPTEST_CASES` (default 128) inputs of up to 512 bytes; a
//! failure prints the shrunk input.

mod fuzz;
use fuzz::c_args::run;
use proptest::prelude::*;

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(128), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn c_api_calls_with_fuzzed_arguments_get_typed_results(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        run(&data).map_err(TestCaseError::fail)?;
    }
}

/// Over a fixed set of inputs the harness makes runs on executors with and without a
/// ring, and calls get refused.
#[test]
fn c_args_harness_reaches_each_path() {
    let mut rng = 0xc0de_u64;
    let (mut runs, mut errors, mut rings) = (0, 0, 0);
    for _ in 0..150 {
        let data: Vec<u8> = (0..400)
            .map(|_| {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (rng >> 33) as u8
            })
            .collect();
        let out = run(&data).unwrap_or_else(|why| panic!("{why}\ninput: {data:?}"));
        runs += out.runs;
        errors += out.errors;
        rings += out.ring as u64;
    }
    println!("{runs} runs, {errors} refused calls, {rings} of 150 programs on a ring");
    assert!(runs > 100 && errors > 300 && rings > 20 && rings < 130);
}
