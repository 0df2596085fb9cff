//! Fuzz harness: random task programs on the simulated driver (`core/tests/random/`, the
//! generator and checker of `random_programs.rs`) with the program drawn from a byte
//! string instead of a seed: each of the generator's decisions reads the next two bytes
//! (`program::Rng::from_bytes`), so the fuzzer steers tasks, operations, i/o results and
//! latencies, faults, cancels and the executor's batch sizes one decision at a time. The
//! checks are `random/mod.rs`'s, after every harness action: one queue per task, priority
//! order and FIFO within a priority, no task done with i/o in flight, timers never early
//! and in (deadline, arming) order, every waiter woken or cancelled, every operation
//! completed once, counters back at zero; and the same input gives the same trace.
//!
//! Used by the cargo-fuzz target `sim_program` (fuzz/) and its proptest twin
//! (core/tests/fuzz_sim_program.rs).

#[path = "../random/mod.rs"]
pub mod random;

use random::model::Plant;
pub use random::program::from_bytes;
use random::run_program;

/// Operations per task at most (as `random_programs.rs` draws them).
pub const SIZE: usize = 12;

/// What a program did: its trace hash and how many steps it took.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub hash: u64,
    pub steps: u64,
    pub resumes: usize,
}

/// Plays the program `data` names; `Err` says which check failed (with the program).
pub fn run(data: &[u8]) -> Result<Outcome, String> {
    let p = from_bytes(data, SIZE);
    let out = run_program(&p, Plant::None).map_err(|why| format!("{why}\nprogram: {p:#?}"))?;
    Ok(Outcome { hash: out.hash, steps: out.steps, resumes: out.resumes.len() })
}
