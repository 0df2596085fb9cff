//! Random task programs on the simulated driver, checked after every step (see
//! `random/mod.rs` for the invariants and `random/program.rs` for what a program holds).
//!
//! - `random_programs_keep_every_invariant`: a bounded run (`RANDOM_PROGRAMS`, default
//!   2000 programs) from a seed that changes per run unless `KEEL_SEED` fixes it: a
//!   failing seed is printed with its shrunk program and the command that re-runs it.
//! - `the_same_seed_gives_the_same_trace`: each program run twice gives the same driver
//!   trace hash and resume log.
//! - `a_corrupted_expectation_is_caught`: each planted error in the checker's
//!   expectations (priority order, timer deadline and order, i/o result) fails programs.
//! - `fuzz_sim` (ignored; `make fuzz-sim`): `KEEL_FUZZ_STEPS` steps (default 1,000,000),
//!   release, printing steps/s.

mod random;
use random::model::{Plant, SEEN};
use random::program::{Program, generate, shrink};
use random::run_program;
use std::time::Instant;

/// Program size: operations per task at most.
const SIZE: usize = 12;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        let v = v.trim();
        v.strip_prefix("0x").map_or_else(|| v.parse(), |h| u64::from_str_radix(h, 16)).expect(name)
    })
}

fn start_seed() -> u64 {
    env_u64("KEEL_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    })
}

/// Runs `p` twice: both runs pass and give the same trace and resume log.
fn check(p: &Program) -> Option<String> {
    let a = match run_program(p, Plant::None) {
        Ok(a) => a,
        Err(why) => return Some(why),
    };
    match run_program(p, Plant::None) {
        Ok(b) if a == b => None,
        Ok(b) => Some(format!(
            "two runs differ: hash {:#x} vs {:#x}, {} vs {} resumes",
            a.hash,
            b.hash,
            a.resumes.len(),
            b.resumes.len()
        )),
        Err(why) => Some(format!("the second run failed: {why}")),
    }
}

fn report(seed: u64, p: Program, first: String) -> ! {
    let (small, why) = shrink(p, check, 3000);
    let why = format!("{first}\nshrunk: {why}");
    if std::env::var_os("KEEL_DEBUG").is_some() {
        random::debug(true);
        let _ = run_program(&small, Plant::None);
    }
    panic!(
        "program {seed:#x} failed:\n{why}\nshrunk program:\n{small:#?}\n\
         re-run: KEEL_SEED={seed:#x} RANDOM_PROGRAMS=1 cargo nextest run -p keel-core --test random_programs \
         (KEEL_DEBUG=1 prints each harness step of the shrunk program)"
    );
}

/// Runs programs from `seed` on until `more` says stop; returns (programs, steps) and
/// prints what they covered.
fn sweep(seed: u64, mut more: impl FnMut(u64, u64) -> bool) -> (u64, u64) {
    let (mut programs, mut steps) = (0u64, 0u64);
    let mut seen = [0u64; SEEN];
    while more(programs, steps) {
        let s = seed.wrapping_add(programs);
        let p = generate(s, SIZE);
        match run_program(&p, Plant::None) {
            Ok(out) => {
                steps += out.steps;
                seen.iter_mut().zip(out.seen).for_each(|(a, b)| *a += b);
            }
            Err(why) => report(s, p, why),
        }
        programs += 1;
    }
    let names: [&str; SEEN] = [
        "completed in full",
        "refused",
        "cancelled at the driver",
        "errno results",
        "short results",
        "out-of-order completions",
        "sleeps ended",
        "harness cancels",
        "stall cancels",
        "selects won by i/o",
        "selects won by the sleep",
        "joined sleeps",
        "waits for room (EBUSY)",
        "spawned from a task",
        "shutdowns",
        "executors dropped mid-program",
        "completions named by next_completed_io",
        "next_completed_io timeouts",
        "destroys retried after WakeInFlight",
    ];
    let covered: Vec<String> = names.iter().zip(seen).map(|(n, c)| format!("{n} {c}")).collect();
    println!("covered: {}", covered.join(", "));
    // The last is rare (more than two inbox batches of wakes queued for completed runs).
    for (name, count) in names.iter().zip(seen).take(SEEN - 1) {
        assert!(count > 0 || programs < 100, "{programs} programs never reached: {name}");
    }
    (programs, steps)
}

#[test]
fn random_programs_keep_every_invariant() {
    let seed = start_seed();
    let count = env_u64("RANDOM_PROGRAMS").unwrap_or(2000);
    let (programs, steps) = sweep(seed, |done, _| done < count);
    println!("{programs} programs from seed {seed:#x}, {steps} steps");
    assert_eq!(programs, count);
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let seed = start_seed() ^ 0x5eed;
    for i in 0..40 {
        let p = generate(seed.wrapping_add(i), SIZE);
        if let Some(why) = check(&p) {
            report(seed.wrapping_add(i), p, why);
        }
    }
}

#[test]
fn a_corrupted_expectation_is_caught() {
    for plant in [Plant::ReversePriority, Plant::EarlyTimer, Plant::WrongResult, Plant::ReverseTimers] {
        let caught = (0..200u64).filter(|&s| run_program(&generate(0xc0ffee + s, SIZE), plant).is_err()).count();
        println!("{plant:?}: {caught} of 200 programs caught");
        assert!(caught >= 20, "{plant:?} caught in only {caught} of 200 programs");
    }
}

#[test]
#[ignore = "long: make fuzz-sim"]
fn fuzz_sim() {
    let seed = start_seed();
    let target = env_u64("KEEL_FUZZ_STEPS").unwrap_or(1_000_000);
    let t0 = Instant::now();
    let (programs, steps) = sweep(seed, |_, steps| steps < target);
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "fuzz-sim: {steps} steps, {programs} programs from seed {seed:#x} in {secs:.1} s: {:.0} steps/s",
        steps as f64 / secs
    );
}
