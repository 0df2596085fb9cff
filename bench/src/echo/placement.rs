//! The placement probe: how far apart the host has put this VM's two CPUs, measured as
//! the round trip of one cache line between them, printed on each round line so that a
//! slow round can be told from a slow placement.
//!
//! This VM moves between throughput levels for every server alike (echo at about 200K
//! or 135K msgs/s, for seconds to minutes). The levels follow this round trip: about
//! 140 ns (65 ns at times) in the fast level and about 550 ns in the slow one, while
//! single-CPU code runs at the same speed in both. So the host places the two vCPUs
//! near each other or far apart, and loopback TCP, which moves every message between
//! the CPUs, pays for the distance. (Other phases show round trips spread over 70-250
//! ns with throughput varying from slice to slice: the probe explains the two clear
//! levels, not every slow slice.)
//!
//! The probe runs between slices, while no server is loaded (before each round), takes
//! a few ms, and spins with a bound on every wait.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Round trips per probe (a few ms in all).
const ROUND_TRIPS: u64 = 20_000;
/// Spins after which a side gives up on the other (far beyond any real round trip).
const MAX_SPINS: u64 = 1 << 30;

/// The mean round trip of a cache line between a thread pinned to `a` and one pinned
/// to `b`, ns; 0 when they are the same CPU (nothing lies between; two spinning threads
/// on one CPU would only take turns by the scheduler's time slice).
pub fn probe(a: usize, b: usize) -> Result<f64, String> {
    if a == b {
        return Ok(0.0);
    }
    let line = AtomicU64::new(0);
    // Waits until the line holds `v`.
    let wait_for = |v: u64| {
        let mut spins = 0u64;
        // Acquire: pairs with the other side's Release store of `v`.
        while line.load(Ordering::Acquire) != v {
            spins += 1;
            if spins > MAX_SPINS {
                return Err("the placement probe's other side never answered".to_string());
            }
            std::hint::spin_loop();
        }
        Ok(())
    };
    // Both sides on threads of their own: pinning the caller would move it (the load
    // generator calls this) onto `a` for good.
    std::thread::scope(|s| {
        let answer = s.spawn(|| {
            super::pin(b)?;
            for i in 0..ROUND_TRIPS {
                wait_for(2 * i + 1)?;
                // Release: the first side's Acquire load in `wait_for` pairs with it.
                line.store(2 * i + 2, Ordering::Release);
            }
            Ok(())
        });
        let ask = s.spawn(|| {
            super::pin(a)?;
            let t = Instant::now();
            for i in 0..ROUND_TRIPS {
                // Release: the other side's Acquire load in `wait_for` pairs with it.
                line.store(2 * i + 1, Ordering::Release);
                wait_for(2 * i + 2)?;
            }
            Ok(t.elapsed().as_nanos() as f64 / ROUND_TRIPS as f64)
        });
        let asked = ask.join().unwrap_or_else(|_| Err("the placement probe panicked".into()));
        let answered = answer.join().unwrap_or_else(|_| Err("the placement probe panicked".into()));
        answered.and(asked)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_measures_a_round_trip() {
        let (a, b) = super::super::cpus().expect("the CPUs this process may use");
        let p = probe(a, b).expect("the probe completes");
        if a == b {
            assert_eq!(p, 0.0, "one CPU: nothing to measure");
        } else {
            assert!(p > 0.0 && p.is_finite(), "a round trip of {p} ns between CPUs {a} and {b}");
        }
    }

    /// The CPUs the calling thread may run on.
    fn affinity() -> Vec<usize> {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; the kernel fills it.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 is the calling thread.
        assert_eq!(unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) }, 0);
        // SAFETY: CPU_ISSET reads the set within its size.
        (0..libc::CPU_SETSIZE as usize).filter(|&i| unsafe { libc::CPU_ISSET(i, &set) }).collect()
    }

    /// The load generator probes between slices: the probe must leave it where it was
    /// (it once pinned its caller to the server's CPU, so client and server shared one).
    #[test]
    fn the_probe_leaves_its_callers_cpus_alone() {
        let (a, b) = super::super::cpus().expect("the CPUs this process may use");
        let before = affinity();
        probe(a, b).expect("the probe completes");
        assert_eq!(affinity(), before);
    }
}
