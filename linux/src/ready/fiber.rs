//! Readiness waits for fiber tasks ([`FiberReady`]): blocking-style calls, see the
//! `ready` module doc.
#![allow(unsafe_code)] // the timer's SQE points at a timespec on the fiber's stack

use super::{PollFlags, PollOp, timer_sqe, timespec};
use crate::fs::FiberFs;
use crate::net::{MultiKind, Multishot};
use crate::ring::{RingDriver, RingOp};
use core::pin::{Pin, pin};
use core::time::Duration;
use keel_core::{Errno, Fiber, InitiateError, IoStatus};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Readiness waits for fiber tasks. Each doc opens with the C form.
pub trait FiberReady {
    /// `poll(&(struct pollfd){fd, events}, 1, timeout)`, see poll(2), through the ring
    /// (`IORING_OP_POLL_ADD`): suspends until `fd` has one of `events` (or `ERR`, `HUP`,
    /// `NVAL`) and returns the ready mask. With a timeout, `Err(ETIME)` when it passes
    /// first (ready rule 2); a cancelled task gets readiness posted before the cancel took,
    /// else `ECANCELED` (ready rule 3). Any descriptor will do, keel's or not (ready rule 1).
    fn poll(&mut self, fd: BorrowedFd<'_>, events: PollFlags, timeout: Option<Duration>) -> Result<PollFlags, Errno>;
    /// A stream of readiness events on `fd` (`IORING_POLL_ADD_MULTI`, ready rule 4): it
    /// owns a duplicate of `fd`, made here (`EMFILE` and the like if that fails); take the
    /// events with [`next_ready`](Self::next_ready).
    fn poll_multi(&mut self, fd: BorrowedFd<'_>, events: PollFlags) -> Result<Multishot, Errno>;
    /// The next event mask of a [`poll_multi`](Self::poll_multi) stream (`EINVAL` for a
    /// stream of another kind). With a timeout, `Err(ETIME)` when it passes first; the
    /// stream stays armed and events that arrive later are returned by the next call
    /// (ready rule 4).
    fn next_ready(&mut self, m: &mut Multishot, timeout: Option<Duration>) -> Result<PollFlags, Errno>;
}

fn initiate(f: &mut Fiber, st: Pin<&IoStatus>, op: RingOp) -> Result<(), Errno> {
    match f.initiate::<RingDriver>(st, op) {
        Ok(()) => Ok(()),
        Err(InitiateError::Cancelled(_)) => Err(Errno::ECANCELED),
        Err(InitiateError::Refused(_, e)) => Err(e),
        Err(_) => Err(Errno::EINVAL),
    }
}

impl FiberReady for Fiber {
    fn poll(&mut self, fd: BorrowedFd<'_>, events: PollFlags, timeout: Option<Duration>) -> Result<PollFlags, Errno> {
        let op = PollOp { fd: fd.as_raw_fd(), events, multishot: false };
        // SAFETY: a poll SQE references no memory.
        let poll = super::with_timeout(unsafe { RingOp::from_entry(op.sqe()) }, timeout);
        // Ready rules 2-3: the deadline's `ETIME`, a cancel's `ECANCELED`, or the mask.
        self.run_op(poll).map(|m| super::mask_of(m as u16))
    }

    fn poll_multi(&mut self, fd: BorrowedFd<'_>, events: PollFlags) -> Result<Multishot, Errno> {
        super::future::poll_multi(fd, events)
    }

    fn next_ready(&mut self, m: &mut Multishot, timeout: Option<Duration>) -> Result<PollFlags, Errno> {
        if m.kind() != MultiKind::Poll {
            return Err(Errno::EINVAL);
        }
        let ts = timeout.map(timespec);
        let st = pin!(IoStatus::new());
        // The timer starts the first time the stream has nothing queued (an event already
        // there costs no timer); only its expiry ends the wait (ready rule 4).
        let mut started = false;
        let r = crate::net::next_multi_fiber_until(self, m, |f| {
            let Some(ts) = &ts else { return false };
            if !started {
                started = true;
                // SAFETY: `ts` lives in this frame, which waits for the timer's completion below.
                if initiate(f, st.as_ref(), unsafe { RingOp::from_entry(timer_sqe(ts)) }).is_err() {
                    return false; // no timer (a cancelled task): wait without one
                }
            }
            matches!(st.result(), Some(Err(Errno::ETIME)))
        });
        if st.is_in_flight() {
            self.cancel_io(st.as_ref());
            while st.is_in_flight() {
                self.wait_io(); // the timer completes before this frame (and `ts`) is left
            }
        }
        r.map(|(res, _)| super::mask_of(res as u16))
    }
}
