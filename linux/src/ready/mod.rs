//! Readiness waits: `poll(fd, events)` with an optional timeout, for any descriptor,
//! including ones keel does not own (an eventfd, a timerfd or a pipe from another library),
//! two ways as in `fs` and `net`: fibers ([`FiberReady`], a blocking-style call) and
//! futures ([`poll`], [`poll_multi`], [`next_ready`]). A wait returns the `revents` mask
//! ([`PollFlags`]): the events asked for that are ready, plus `ERR`, `HUP` and `NVAL`,
//! which poll(2) always reports.
//!
//! The operation is described by [`PollOp`] (descriptor, events, one-shot or multishot)
//! and the timeout by a `Duration`, independently of the driver; on the ring driver a
//! `PollOp` is one `IORING_OP_POLL_ADD`, a one-shot poll's timeout its deadline
//! (`IORING_OP_LINK_TIMEOUT`) and a stream wait's an `IORING_OP_TIMEOUT`.
//!
//! Rules (cited as "ready rule N"):
//! 1. **Borrowed descriptor.** A wait names the descriptor by number while it borrows it
//!    (`BorrowedFd<'_>`, or anything `AsFd`): a fiber's call returns only after its
//!    operations' completions; a future borrows it for its life. Once the kernel has the
//!    operation it holds the open file itself, so closing the descriptor under a waiting
//!    poll does not end it (no `NVAL`): its timeout, a cancel, or an event on the file (a
//!    pipe whose other end closed: `HUP`) does. A future dropped in flight abandons its
//!    operations (cancelled in their slots, results discarded: `slot_op.rs`); a poll
//!    reads no data and writes no memory of the caller's, so nothing is lost even if the
//!    number was closed and reused before the cancel took.
//! 2. **Timeout.** A timeout is a deadline on the poll (`deadline` rules 1-3): the poll
//!    and an `IORING_OP_LINK_TIMEOUT` at the call's time plus the timeout, submitted
//!    together or not at all (waiting for room as any operation does, the deadline running
//!    meanwhile); the kernel cancels the poll at the deadline and the timer when the poll
//!    ends, and readiness the kernel posted before the cancel took is returned, else
//!    `ETIME` (`deadline::TIMED_OUT`). `Duration::ZERO` asks whether the descriptor is
//!    ready now (still through the ring); a timeout beyond the clock's range
//!    (`Duration::MAX`) is taken as the end of the clock, never sooner.
//! 3. **Cancel.** A cancelled task cancels its operations and waits for their completions
//!    (fibers) or their results (futures, `slot_op.rs`): readiness the kernel posted before
//!    the cancel took, its CQE reaped or not, is returned; else `ECANCELED`. A task
//!    cancelled before the poll went in gets `ECANCELED` at once.
//! 4. **Multishot** ([`poll_multi`], `FiberReady::poll_multi`; `IORING_POLL_ADD_MULTI`): a
//!    stream of readiness events, one per CQE, taken in order with `next_ready` (net rule 2:
//!    re-armed when the kernel or the driver ends it without an error; an error ends it for
//!    good). The kernel posts one on every wake-up of the file's wait queue that matches the
//!    events (edge-like: an event not consumed is not repeated until the next wake-up). The
//!    stream owns a duplicate of the descriptor (`F_DUPFD_CLOEXEC`, once, when it is made),
//!    so it may outlive the borrow and always re-arms on the same file, never on a reused
//!    number; dropping it cancels the operation, and the duplicate is closed when its last
//!    CQE is reaped (fd rules 1 and 3). A task cancelled while it waits for the next event
//!    cancels the operation and gets the events posted first, then `ECANCELED`. A wait for
//!    the next event may have a timeout (a timer as in rule 2, started only when nothing is
//!    queued): `ETIME` leaves the stream armed, and later events wait in it for the next
//!    call.
//!
//! Nothing here is on the executor's hot path: a wait is one or two SQEs and completions
//! and allocates nothing, but a stream wait's timer (its 16-byte timespec, kept by the
//! timer's slot until its completion) and a multishot stream's one duplicate descriptor
//! when made.
#![allow(unsafe_code)] // building SQEs for the poll and the timer

mod fiber;
mod future;

pub use crate::flags::PollFlags;
pub use fiber::FiberReady;
pub use future::{Ready, next_ready, poll, poll_multi};

use core::time::Duration;
use io_uring::{opcode, squeue, types};
use keel_core::Errno;
use std::os::fd::RawFd;

/// One readiness wait, as any driver performs it: the descriptor, the events and whether
/// it reports once or every time (ready rule 4). On the ring driver it is one
/// `IORING_OP_POLL_ADD` ([`PollOp::sqe`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PollOp {
    /// The descriptor, by number (ready rule 1).
    pub fd: RawFd,
    /// The events to wait for.
    pub events: PollFlags,
    /// A stream of events (`IORING_POLL_ADD_MULTI`) rather than one.
    pub multishot: bool,
}

impl PollOp {
    /// The `IORING_OP_POLL_ADD` SQE (it references no memory).
    pub fn sqe(&self) -> squeue::Entry {
        opcode::PollAdd::new(types::Fd(self.fd), u32::from(bits_of(self.events))).multi(self.multishot).build()
    }
}

/// `d` as the kernel's timespec, saturated at `i64::MAX` seconds (a longer one, as
/// `Duration::MAX`, means "never" and must not wrap to a negative, refused, time).
fn timespec(d: Duration) -> types::Timespec {
    types::Timespec::from(d.min(Duration::from_secs(i64::MAX as u64)))
}

/// The `IORING_OP_TIMEOUT` SQE of a pure timer (count 0) firing `ts` after submission.
fn timer_sqe(ts: *const types::Timespec) -> squeue::Entry {
    opcode::Timeout::new(ts).build()
}

/// A poll CQE's result as the `revents` mask, or its error.
fn revents(res: i32) -> Result<PollFlags, Errno> {
    if res < 0 { Err(Errno(-res)) } else { Ok(mask_of(res as u16)) }
}

/// The 16 `revents` bits as `PollFlags`, whose bits are `u16` with rustix's raw backend
/// and `i16` (C's `short`) with its libc backend: the cast adapts to either.
pub(crate) fn mask_of(bits: u16) -> PollFlags {
    PollFlags::from_bits_retain(bits as _)
}

/// `PollFlags`' 16 bits, whichever backend's type holds them (see [`mask_of`]).
#[allow(clippy::unnecessary_cast)] // `i16` on the libc backend
pub(crate) fn bits_of(flags: PollFlags) -> u16 {
    flags.bits() as u16
}

/// The 16 bits of a readiness mask as `u16`, the same with either of rustix's backends
/// (whose `PollFlags::bits` is `u16` on its raw backend and `i16` on its libc one).
pub fn poll_bits(flags: PollFlags) -> u16 {
    bits_of(flags)
}

/// `op` with a deadline `timeout` from now (ready rule 2): `Duration::MAX` saturates to
/// the end of the clock, never sooner.
fn with_timeout(op: crate::ring::RingOp, timeout: Option<Duration>) -> crate::ring::RingOp {
    match timeout {
        None => op,
        Some(d) => op.with_deadline(crate::deadline::Deadline::after(d)).unwrap_or_else(|op| op), // not multishot
    }
}
