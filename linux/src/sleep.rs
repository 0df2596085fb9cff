//! A driver with no ring: it reads `CLOCK_MONOTONIC` and parks by sleeping until the
//! deadline with `clock_nanosleep(TIMER_ABSTIME)`. It does no i/o: its operation type
//! has no values, so initiating i/o on it does not compile.
//!
//! Parking with no deadline has nothing to wait for yet (waking from other threads
//! arrives with the cross-thread work), so it reports `Stalled` instead of sleeping
//! forever.

use crate::clock::monotonic_now;
use keel_core::driver::IoToken;
use keel_core::{Driver, Errno, Instant, IoResult, OpId, Park};
use rustix::thread::{ClockId, clock_nanosleep_absolute};
use rustix::time::Timespec;

/// The ring-less driver.
#[derive(Debug, Default)]
pub struct SleepDriver {
    _private: (),
}

impl SleepDriver {
    /// A new driver.
    pub fn new() -> Self {
        SleepDriver { _private: () }
    }
}

/// There is no operation a ring-less executor can perform.
#[derive(Debug)]
pub enum NoOp {}

impl Driver for SleepDriver {
    type Op = NoOp;

    fn now(&self) -> Instant {
        monotonic_now()
    }

    fn submit(&mut self, op: NoOp, _: IoToken) -> Result<OpId, (NoOp, Errno)> {
        match op {}
    }

    fn cancel(&mut self, _: OpId) {}

    fn retarget(&mut self, _: OpId, _: IoToken) {}

    fn reap(&mut self, _: usize, _: &mut dyn FnMut(IoToken, IoResult)) -> usize {
        0
    }

    fn in_flight(&self) -> usize {
        0
    }

    fn park(&mut self, deadline: Option<Instant>) -> Result<Park, Errno> {
        let Some(deadline) = deadline else { return Ok(Park::Stalled) };
        let ns = deadline.as_nanos();
        let ts = Timespec { tv_sec: (ns / 1_000_000_000) as i64, tv_nsec: (ns % 1_000_000_000) as i64 };
        match clock_nanosleep_absolute(ClockId::Monotonic, &ts) {
            Ok(()) => Ok(Park::Woke),
            Err(e) if e == rustix::io::Errno::INTR => Ok(Park::Woke),
            Err(e) => Err(Errno(e.raw_os_error())),
        }
    }
}
