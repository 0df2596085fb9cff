//! `CLOCK_MONOTONIC` through rustix (vDSO; no syscall on x86_64).

use keel_core::Instant;
use rustix::time::{ClockId, clock_gettime};

/// Nanoseconds on `CLOCK_MONOTONIC`.
pub fn monotonic_now() -> Instant {
    let ts = clock_gettime(ClockId::Monotonic);
    Instant::from_nanos(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}
