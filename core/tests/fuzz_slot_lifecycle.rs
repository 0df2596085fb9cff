//! Proptest twin of the cargo-fuzz target `slot_lifecycle` (fuzz/): random byte strings
//! played as task-slot lifecycle call sequences on the simulated driver
//! (`fuzz/slot_lifecycle.rs` lists the checks). Bounded: `PROPTEST_CASES` (default 256)
//! inputs of up to 512 bytes; a failure prints the shrunk input.

mod fuzz;
use fuzz::slot_lifecycle::run;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn slot_lifecycle_sequences_keep_every_check(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let a = run(&data).map_err(TestCaseError::fail)?;
        // The same input plays the same way (driver trace and counts).
        let b = run(&data).map_err(TestCaseError::fail)?;
        prop_assert_eq!(a, b);
    }
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The harness reaches what it is for: over a fixed set of inputs, runs complete,
/// cancels and refusals happen, and both endings (wind-down and teardown) occur.
#[test]
fn slot_lifecycle_harness_reaches_each_path() {
    let mut rng = 0x5107_u64;
    let (mut completed, mut cancels, mut refusals, mut teardowns) = (0, 0, 0, 0);
    for _ in 0..300 {
        let data: Vec<u8> = (0..400)
            .map(|_| {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (rng >> 33) as u8
            })
            .collect();
        let out = run(&data).unwrap_or_else(|why| panic!("{why}\ninput: {data:?}"));
        completed += out.completed_runs;
        cancels += out.cancels;
        refusals += out.refusals;
        teardowns += out.teardowns;
    }
    println!("{completed} runs completed, {cancels} cancels, {refusals} refused attaches, {teardowns} teardowns");
    assert!(completed > 100 && cancels > 50 && refusals > 10 && teardowns > 10);
}
