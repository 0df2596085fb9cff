//! Proptest twin of the cargo-fuzz target `sim_ops` (fuzz/): random byte strings played
//! as operation sequences on the simulated driver against a model written apart from it
//! (`fuzz/sim_ops.rs` lists the checks). Bounded: `PROPTEST_CASES` (default 512) inputs
//! of up to 1024 bytes; a failure prints the shrunk input.

mod fuzz;
use fuzz::sim_ops::run;
use proptest::prelude::*;

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(512), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn sim_driver_sequences_match_the_model(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let a = run(&data).map_err(TestCaseError::fail)?;
        let b = run(&data).map_err(TestCaseError::fail)?;
        prop_assert_eq!(a, b);
    }
}

/// Over a fixed set of inputs the harness submits, refuses, cancels and reaps.
#[test]
fn sim_ops_harness_reaches_each_path() {
    let mut rng = 0x51d0_u64;
    let mut total = fuzz::sim_ops::Outcome::default();
    for _ in 0..300 {
        let data: Vec<u8> = (0..600)
            .map(|_| {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (rng >> 33) as u8
            })
            .collect();
        let out = run(&data).unwrap_or_else(|why| panic!("{why}\ninput: {data:?}"));
        total.submitted += out.submitted;
        total.refused += out.refused;
        total.cancelled += out.cancelled;
        total.reaped += out.reaped;
    }
    println!("{total:?}");
    assert!(total.submitted > 1000 && total.refused > 100 && total.cancelled > 100);
}
