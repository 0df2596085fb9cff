//! Deadlines on operations: any ring operation, a fiber's or a future's, may carry a
//! [`Deadline`], an instant on `CLOCK_MONOTONIC` (the executor's clock, `clock.rs`). On
//! the ring driver the operation's SQE goes in with `IOSQE_IO_LINK`, followed by an
//! `IORING_OP_LINK_TIMEOUT` with `IORING_TIMEOUT_ABS` at the deadline: the kernel cancels
//! the operation when the deadline passes, and the timer when the operation ends first.
//!
//! Three ways to give one: [`RingOp::with_deadline`] for one operation; a scope for
//! fibers ([`FiberDeadline::within`]) or futures ([`within`]), which gives every operation
//! the task submits inside it the deadline (the earliest one, when scopes nest). A scope
//! belongs to its task: other tasks that run while a fiber waits inside its scope are not
//! affected. Operations that must run whatever the time (a close: fd rule 3), the
//! driver's own (cancels), timers and multishot operations take no deadline from a scope;
//! [`RingOp::with_deadline`] refuses a multishot one. A deadline bounds ring operations
//! only: a wait on a semaphore, a join or a sleep inside a scope is not one (each has its
//! own timeout).
//!
//! Rules (cited as "deadline rule N"):
//! 1. **Together or not at all.** The operation and its timer take two SQEs, pushed back
//!    to back in one `submit`; with fewer than two free the submission is refused with
//!    `EBUSY` and the task waits for room as for any operation (no chain is ever left half
//!    in the SQ). The operation takes one slot; the timer takes none (its `user_data` is
//!    `LINK_TIMER | the operation's`). A deadline op never goes the direct path (it has
//!    two CQEs to join). An operation that opens a chain (`RingOp::linked`) goes in only
//!    with room for itself, its successor and the successor's timer, so the second of a
//!    pair the core admits together (`Fiber::initiate_pair`) is never refused after the
//!    first went in (`EINVAL` on an SQ too small for that: 2 or 3 entries). A chain's
//!    links may each have a deadline: each timer follows its operation and carries the
//!    link on.
//! 2. **Two CQEs, one completion.** The slot stays in flight until both CQEs are reaped
//!    (in either order), and the timer's timespec lives in the slot until then (the
//!    kernel copies it when it takes the SQE; keeping it longer costs nothing). The
//!    operation's task hears of it once, at the second CQE; a cancel (the task's, a dropped
//!    future's abandon, executor drop) goes to the operation, and the kernel then ends its
//!    timer (`ECANCELED`).
//! 3. **Result** ([`outcome`]): the timer `ETIME` and the operation `ECANCELED` (or `EINTR`,
//!    interrupted in io-wq): the deadline won, keel reports [`TIMED_OUT`] (`ETIME`, which no
//!    other operation returns). The operation ended first: the timer says `ECANCELED` and
//!    the operation's result stands. The kernel could not cancel the operation (buffered
//!    file i/o already running in io-wq; the timer says `EALREADY`, or `ENOENT` when its
//!    cancel no longer finds the work: measured on 6.18 for a read forced to io-wq): the
//!    operation's own result stands (`RingStats::deadlines_uncancellable` counts these).
//!    Any other pair (the timer fired after the operation completed, the task's own
//!    cancel) keeps the operation's result: only the first case is `TIMED_OUT`.
//! 4. **A deadline in the past** is not refused: the timer fires at once, and an operation
//!    that cannot complete at its submission is timed out.
//!
//! Hot path: an operation without a deadline pays one branch in the driver's submit, and a
//! fiber's or a future's submission one thread-local load (`scope.rs`: no scope open).
//! A deadline operation is one slot submission with a second SQE and no allocation (the
//! alloc-free window `ring_deadline` measures it, scope and all); only a thread's first
//! scopes allocate (its scope list grows to the most scopes open at once, then stays).
//! Looking a task's scopes up walks the thread's open scopes (bounded by how many are
//! open), only while one is.
#![allow(unsafe_code)] // the scope future's pin projection (`future.rs`); SQE-building tests

mod fiber;
mod future;
pub(crate) mod scope;

pub use fiber::FiberDeadline;
pub use future::{Within, within};

use crate::ring::RingOp;
use core::time::Duration;
use io_uring::{opcode, types};
use keel_core::{Errno, Instant};

/// An open deadline scope of one task run, closed when dropped (scope rule 1): the
/// closure-free form of [`FiberDeadline::within`] and [`within`], for callers that cannot
/// pass a closure (the C API's `keel_within`). Made by [`scope`].
#[must_use = "the scope closes when this is dropped"]
pub struct DeadlineScope(#[allow(dead_code)] scope::Scope); // held for its `Drop`

impl core::fmt::Debug for DeadlineScope {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("DeadlineScope")
    }
}

/// Opens a deadline scope for `task`'s run: until the returned value is dropped, every
/// operation that run submits on this thread carries deadline `d` (or an earlier one).
/// Drop it on the thread that made it, before the run ends (a scope outliving the run
/// names a run that will not come again and does nothing).
pub fn scope(task: keel_core::TaskHandle, d: Deadline) -> DeadlineScope {
    DeadlineScope(scope::Scope::open(task, d.instant()))
}

/// What keel reports when an operation's deadline won (deadline rule 3): `ETIME`.
pub const TIMED_OUT: Errno = Errno::ETIME;

/// An instant on `CLOCK_MONOTONIC` by which an operation must complete (module doc).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(Instant);

impl Deadline {
    /// The deadline at `at` (an instant of [`monotonic_now`](crate::monotonic_now), which
    /// is the ring executor's clock).
    pub const fn at(at: Instant) -> Self {
        Deadline(at)
    }

    /// The deadline `d` from now (saturating: `Duration::MAX` is never).
    pub fn after(d: Duration) -> Self {
        Deadline(crate::monotonic_now().saturating_add(d))
    }

    /// The instant.
    pub const fn instant(self) -> Instant {
        self.0
    }
}

impl RingOp {
    /// This operation with a deadline (deadline rules 1-3): submitted linked to an
    /// `IORING_OP_LINK_TIMEOUT` at `d`; it completes with [`TIMED_OUT`] if the deadline
    /// cancels it. A multishot operation (whose stream a timer would end) comes back in
    /// `Err` unchanged. A deadline already set is replaced.
    pub fn with_deadline(mut self, d: Deadline) -> Result<Self, Self> {
        if self.multi() {
            return Err(self);
        }
        self.set_deadline_ns(d.0.as_nanos());
        Ok(self)
    }

    /// The deadline this operation carries, if any.
    pub fn deadline(&self) -> Option<Deadline> {
        self.deadline_ns().map(|n| Deadline(Instant::from_nanos(n)))
    }

    /// Gives this operation the scope's deadline `d` (the earlier of it and its own),
    /// unless it is one a scope leaves alone (module doc).
    pub(crate) fn scoped(mut self, d: Instant) -> Self {
        let code = self.opcode();
        let exempt = [opcode::Close::CODE, opcode::AsyncCancel::CODE, opcode::Timeout::CODE, opcode::LinkTimeout::CODE];
        if !self.multi() && !exempt.contains(&code) {
            let d = d.as_nanos();
            self.set_deadline_ns(self.deadline_ns().map_or(d, |own| own.min(d)));
        }
        self
    }
}

/// The result of a deadline operation from its two CQEs' results (deadline rule 3).
pub fn outcome(op_res: i32, timer_res: i32) -> i32 {
    let cancelled = op_res == -Errno::ECANCELED.0 || op_res == -Errno::EINTR.0;
    if timer_res == -Errno::ETIME.0 && cancelled { -TIMED_OUT.0 } else { op_res }
}

/// `at` as the kernel's absolute `CLOCK_MONOTONIC` timespec.
pub(crate) fn abs_timespec(at: Instant) -> types::Timespec {
    let ns = at.as_nanos();
    types::Timespec::new().sec(ns / 1_000_000_000).nsec((ns % 1_000_000_000) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETIME: i32 = -Errno::ETIME.0;
    const ECANCELED: i32 = -Errno::ECANCELED.0;
    const EINTR: i32 = -Errno::EINTR.0;
    const EALREADY: i32 = -114;

    #[test]
    fn deadline_rule_3_only_a_fired_timer_and_a_cancelled_op_time_out() {
        // (op, timer) -> reported
        let table = [
            ((ECANCELED, ETIME), ETIME),         // the deadline won
            ((EINTR, ETIME), ETIME),             // ... while the op ran in io-wq
            ((5, ECANCELED), 5),                 // the op won
            ((-11, ECANCELED), -11),             // the op failed first: its error
            ((5, EALREADY), 5),                  // could not be cancelled: its result
            ((EINTR, EALREADY), EINTR),          // ... whatever that is
            ((5, ETIME), 5),                     // the timer fired after the op completed
            ((ECANCELED, ECANCELED), ECANCELED), // the task's own cancel
            ((0, ETIME), 0),
        ];
        for ((op, timer), want) in table {
            assert_eq!(outcome(op, timer), want, "op {op} timer {timer}");
        }
    }

    #[test]
    fn a_multishot_op_refuses_a_deadline_and_a_scope_leaves_it_and_a_close_alone() {
        // SAFETY: a multishot NOP-shaped op references no memory (never submitted here).
        let multi = unsafe { RingOp::multishot(opcode::Nop::new().build()) };
        let d = Deadline::after(Duration::from_secs(1));
        assert!(multi.with_deadline(d).is_err());
        // SAFETY: never submitted.
        let close = unsafe { RingOp::from_entry(opcode::Close::new(types::Fd(-1)).build()) };
        assert_eq!(close.scoped(d.instant()).deadline(), None);
        let nop = RingOp::nop().with_deadline(d).unwrap();
        let earlier = Instant::from_nanos(d.instant().as_nanos() - 1);
        assert_eq!(nop.scoped(earlier).deadline(), Some(Deadline::at(earlier)), "nested: the earliest");
    }

    #[test]
    fn abs_timespec_splits_seconds_and_nanoseconds() {
        let ts = abs_timespec(Instant::from_nanos(3_000_000_007));
        // SAFETY: `Timespec` is `#[repr(C)]` {i64 tv_sec, i64 tv_nsec} (`__kernel_timespec`).
        let (sec, nsec) = unsafe { core::mem::transmute::<types::Timespec, (i64, i64)>(ts) };
        assert_eq!((sec, nsec), (3, 7));
    }
}
