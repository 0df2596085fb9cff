//! Shared by the hostile-peer and cancellation-soak tests: descriptor and resident-memory
//! counts read from `/proc`, a seeded generator (the seed is printed and can be set again
//! with `KEEL_SOAK_SEED`), and the soak length (`KEEL_SOAK_SECS`).
#![allow(dead_code)]

use std::time::Duration;

/// Open descriptors of process `pid` (`None`: this process), counted in `/proc/<pid>/fd`.
pub fn fd_count(pid: Option<u32>) -> usize {
    let dir = match pid {
        Some(p) => format!("/proc/{p}/fd"),
        None => "/proc/self/fd".to_owned(),
    };
    // The directory handle `read_dir` holds is one of the entries it lists: not counted.
    std::fs::read_dir(dir).map(|d| d.count().saturating_sub(usize::from(pid.is_none()))).unwrap_or(0)
}

/// Resident memory of process `pid` (`None`: this process) in bytes, from `/proc/<pid>/statm`.
pub fn rss_bytes(pid: Option<u32>) -> u64 {
    let path = match pid {
        Some(p) => format!("/proc/{p}/statm"),
        None => "/proc/self/statm".to_owned(),
    };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let pages: u64 = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

/// A xorshift64* generator: cheap, seeded, the same sequence for the same seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// The seed: `KEEL_SOAK_SEED` if set, else from the clock; printed so a failing run can be
/// repeated.
pub fn seed(what: &str) -> u64 {
    let s = std::env::var("KEEL_SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    eprintln!("{what}: seed {s} (repeat with KEEL_SOAK_SEED={s})");
    s
}

/// How long each soak runs: `KEEL_SOAK_SECS` (seconds, fractions allowed), else `default`.
pub fn soak_time(default: Duration) -> Duration {
    std::env::var("KEEL_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .map(Duration::from_secs_f64)
        .unwrap_or(default)
}

/// The 99th percentile of `v` (sorted in place); zero for none.
pub fn p99(v: &mut [Duration]) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}
