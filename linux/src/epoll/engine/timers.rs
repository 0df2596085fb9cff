//! The engine's timers: TIMEOUT and armed LINK_TIMEOUT ops by instant, nearest first.
//!
//! Timer rules (cited as "timer rule N"):
//! 1. An entry names its op by index and serial (op rule 1); an op that completed or was
//!    cancelled leaves its entry behind, and [`Timers::pop_due`] drops such stale entries
//!    (so removal is lazy and costs nothing where the op ends).
//! 2. Instants are nanoseconds on `CLOCK_MONOTONIC`; a TIMEOUT's or LINK_TIMEOUT's
//!    timespec is copied once, when its SQE is taken (as the kernel copies it at prep: op
//!    rule 5); a relative one counts from the op's start (a link timer's: its op's), and
//!    an absolute one on `CLOCK_BOOTTIME` or `CLOCK_REALTIME` is converted by the clocks'
//!    offset then.

use super::ops::{Op, Ops, State};
use super::sqe::{IORING_TIMEOUT_ABS, IORING_TIMEOUT_BOOTTIME, IORING_TIMEOUT_REALTIME};
use core::cmp::Reverse;
use std::collections::BinaryHeap;

/// The heap (module doc).
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(u64, u64, u32)>>,
}

impl Timers {
    /// Whether no timer (live or cancelled) is queued: nothing can be due.
    #[inline(always)]
    pub(crate) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    pub(crate) fn push(&mut self, at: u64, serial: u64, i: u32) {
        self.heap.push(Reverse((at, serial, i)));
    }

    /// The nearest instant of a live timer (timer rule 1: stale entries on top go).
    pub(crate) fn next(&mut self, ops: &Ops) -> Option<u64> {
        while let Some(&Reverse((at, serial, i))) = self.heap.peek() {
            if live(ops, i, serial) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// A live timer due at `now`, if any.
    pub(crate) fn pop_due(&mut self, ops: &Ops, now: u64) -> Option<u32> {
        while let Some(&Reverse((at, serial, i))) = self.heap.peek() {
            if !live(ops, i, serial) {
                self.heap.pop();
                continue;
            }
            if at > now {
                return None;
            }
            self.heap.pop();
            return Some(i);
        }
        None
    }
}

fn live(ops: &Ops, i: u32, serial: u64) -> bool {
    ops.is(i, serial) && matches!(ops[i].state, State::Timer | State::LinkTimer { armed: true })
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is on this frame.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `CLOCK_MONOTONIC` now, in nanoseconds (keel's `Instant`).
pub(crate) fn now() -> u64 {
    crate::clock::monotonic_now().as_nanos()
}

/// Timer rule 2: the instant TIMEOUT or LINK_TIMEOUT op `op` names (started at `now`),
/// or `-EINVAL` for a bad timespec or flags.
pub(crate) fn deadline_of(op: &Op, now: u64) -> Result<u64, i32> {
    const KNOWN: u32 = IORING_TIMEOUT_ABS
        | IORING_TIMEOUT_BOOTTIME
        | IORING_TIMEOUT_REALTIME
        | super::sqe::IORING_TIMEOUT_ETIME_SUCCESS;
    let s = &op.sqe;
    let fl = s.op_flags;
    if fl & !KNOWN != 0 || (fl & IORING_TIMEOUT_BOOTTIME != 0 && fl & IORING_TIMEOUT_REALTIME != 0) || s.len != 1 {
        return Err(-libc::EINVAL);
    }
    // Op rule 5: the timespec as it was when the SQE was taken.
    let Some((sec, nsec)) = op.ts else { return Err(-libc::EFAULT) };
    if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
        return Err(-libc::EINVAL);
    }
    let ns = (sec as u64).saturating_mul(1_000_000_000).saturating_add(nsec as u64);
    if fl & IORING_TIMEOUT_ABS == 0 {
        return Ok(now.saturating_add(ns));
    }
    let clock = if fl & IORING_TIMEOUT_BOOTTIME != 0 {
        libc::CLOCK_BOOTTIME
    } else if fl & IORING_TIMEOUT_REALTIME != 0 {
        libc::CLOCK_REALTIME
    } else {
        return Ok(ns);
    };
    let (c, m) = (clock_ns(clock), now);
    Ok(if ns >= c { m.saturating_add(ns - c) } else { m.saturating_sub(c - ns) })
}
