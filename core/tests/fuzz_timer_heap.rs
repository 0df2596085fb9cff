//! Proptest twin of the cargo-fuzz target `timer_heap` (fuzz/): random byte strings
//! played as inserts, removals, pops and clock moves on the timer heap against a sorted
//! model (`fuzz/timer_heap.rs` lists the checks). Bounded: `PROPTEST_CASES` (default
//! 512) inputs of up to 1024 bytes; a failure prints the shrunk input.

mod fuzz;
use fuzz::timer_heap::run;
use proptest::prelude::*;

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(512), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn timer_heap_sequences_match_the_sorted_model(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let a = run(&data).map_err(TestCaseError::fail)?;
        let b = run(&data).map_err(TestCaseError::fail)?;
        prop_assert_eq!(a, b);
    }
}

/// Over a fixed set of inputs the harness arms, removes and fires timers, with ties.
#[test]
fn timer_heap_harness_reaches_each_path() {
    let mut rng = 0x7153_u64;
    let mut total = fuzz::timer_heap::Outcome::default();
    for _ in 0..200 {
        let data: Vec<u8> = (0..600)
            .map(|_| {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (rng >> 33) as u8
            })
            .collect();
        let out = run(&data).unwrap_or_else(|why| panic!("{why}\ninput: {data:?}"));
        total.inserted += out.inserted;
        total.removed += out.removed;
        total.fired += out.fired;
        total.ties += out.ties;
    }
    println!("{total:?}");
    assert!(total.inserted > 1000 && total.removed > 100 && total.fired > 500 && total.ties > 100);
}
