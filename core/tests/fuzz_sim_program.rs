//! Proptest twin of the cargo-fuzz target `sim_program` (fuzz/): random byte strings read
//! as random task programs on the simulated driver (`fuzz/sim_program.rs`; the checks are
//! `random/mod.rs`'s). Bounded: `PROPTEST_CASES` (default 128) inputs of up to 512
//! bytes; a failure prints the shrunk input and the program it names.

mod fuzz;
use fuzz::sim_program::{SIZE, from_bytes, run};
use proptest::prelude::*;

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(128), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn byte_programs_keep_every_invariant(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let a = run(&data).map_err(TestCaseError::fail)?;
        // The same input plays the same way (driver trace, steps, resumes).
        let b = run(&data).map_err(TestCaseError::fail)?;
        prop_assert_eq!(a, b);
    }
}

/// Byte strings reach the generator's whole range: several tasks, fibers and futures,
/// harness scripts, and programs that take many steps.
#[test]
fn byte_programs_reach_the_generators_range() {
    let mut rng = 0xb17e_u64;
    let (mut tasks, mut fibers, mut actions, mut steps) = (0, 0, 0, 0);
    for _ in 0..100 {
        let data: Vec<u8> = (0..400)
            .map(|_| {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (rng >> 33) as u8
            })
            .collect();
        let p = from_bytes(&data, SIZE);
        tasks += p.tasks.len();
        fibers += p.tasks.iter().filter(|t| t.fiber).count();
        actions += p.script.len();
        steps += run(&data).unwrap_or_else(|why| panic!("{why}")).steps;
    }
    println!("{tasks} tasks ({fibers} fibers), {actions} harness actions, {steps} steps");
    assert!(tasks > 200 && fibers > 50 && actions > 500 && steps > 3000);
}
