//! A driver with no ring: it reads `CLOCK_MONOTONIC` and parks on a futex on the
//! executor's park word, until the deadline (`FUTEX_WAIT_BITSET`, absolute monotonic
//! time) or until another thread unparks it (`FUTEX_WAKE`, keel-core park rule 3). It does
//! no i/o: its operation type has no values, so initiating i/o on it does not compile.
//!
//! Before the executor hands it the park word (on first use), parking just sleeps until
//! the deadline, and with no deadline reports `Stalled`.
#![allow(unsafe_code)] // the park word is reached through the address keel-core hands over

use crate::clock::monotonic_now;
use keel_core::driver::IoToken;
use keel_core::{Driver, Errno, Instant, IoResult, OpId, Park, Unparker};
use rustix::thread::futex;
use rustix::time::Timespec;
use std::num::NonZeroU32;
use std::sync::atomic::AtomicU32;

/// The ring-less driver.
#[derive(Debug)]
pub struct SleepDriver {
    word: *const AtomicU32,
}

impl Default for SleepDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl SleepDriver {
    /// A new driver.
    pub fn new() -> Self {
        SleepDriver { word: core::ptr::null() }
    }
}

/// There is no operation a ring-less executor can perform.
#[derive(Debug)]
pub enum NoOp {}

fn timespec(t: Instant) -> Timespec {
    let ns = t.as_nanos();
    Timespec { tv_sec: (ns / 1_000_000_000) as i64, tv_nsec: (ns % 1_000_000_000) as i64 }
}

fn futex_unpark(addr: usize) {
    // SAFETY: `addr` is the executor's park word, alive while any thread may unpark it
    // (keel-core park rule 4).
    let word = unsafe { &*(addr as *const AtomicU32) };
    let _ = futex::wake(word, futex::Flags::PRIVATE, 1);
}

// SAFETY: the `Driver` contract (items 1-5 of its `# Safety`) holds: it accepts no
// operation (its `Op` is uninhabited), and its unparker is a futex wake on the executor's
// park word, which outlives the driver's use.
unsafe impl Driver for SleepDriver {
    type Op = NoOp;

    fn now(&self) -> Instant {
        monotonic_now()
    }

    fn submit(&mut self, op: NoOp, _: IoToken) -> Result<OpId, (NoOp, Errno)> {
        match op {}
    }

    fn cancel(&mut self, _: OpId) {}

    fn retarget(&mut self, _: OpId, _: IoToken) {}

    fn reap<F: FnMut(IoToken, IoResult)>(&mut self, _: usize, _: &mut F) -> usize {
        0
    }

    fn in_flight(&self) -> usize {
        0
    }

    fn unparker(&mut self, park_word: *const u32) -> Option<Unparker> {
        self.word = park_word as *const AtomicU32;
        Some(Unparker { ctx: park_word as usize, unpark: futex_unpark })
    }

    fn park(&mut self, deadline: Option<Instant>) -> Result<Park, Errno> {
        if self.word.is_null() {
            let Some(deadline) = deadline else { return Ok(Park::Stalled) };
            return match rustix::thread::clock_nanosleep_absolute(
                rustix::thread::ClockId::Monotonic,
                &timespec(deadline),
            ) {
                Ok(()) | Err(rustix::io::Errno::INTR) => Ok(Park::Woke),
                Err(e) => Err(Errno(e.raw_os_error())),
            };
        }
        // SAFETY: the executor's park word, valid while this driver serves it.
        let word = unsafe { &*self.word };
        let ts = deadline.map(timespec);
        // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline; it returns at once
        // if the word is no longer PARKED (an unpark came first: park rule 2).
        let all = NonZeroU32::new(u32::MAX).expect("non-zero");
        match futex::wait_bitset(word, futex::Flags::PRIVATE, Unparker::PARKED, ts.as_ref(), all) {
            Ok(()) | Err(rustix::io::Errno::AGAIN | rustix::io::Errno::TIMEDOUT | rustix::io::Errno::INTR) => {
                Ok(Park::Woke)
            }
            Err(e) => Err(Errno(e.raw_os_error())),
        }
    }
}
