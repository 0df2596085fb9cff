//! Readiness waits for fiber tasks ([`FiberReady`]): blocking-style calls, see the
//! `ready` module doc.
#![allow(unsafe_code)] // the timer's SQE points at a timespec on the fiber's stack

use super::{PollFlags, PollOp, link_timer_sqe, outcome, timer_sqe, timespec};
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

/// Waits until the poll `sp` and its timer `st` have both completed (ready rules 2-3) and
/// says what they mean. `linked` (`IORING_OP_LINK_TIMEOUT`): the kernel cancels the poll at
/// expiry and the timer when the poll ends, so only a cancelled task sends a cancel (the
/// poll's; its timer follows). Apart: whichever ends first has the other cancelled.
#[inline(always)] // the fiber's suspend must not straddle an out-of-line frame (arch doc)
fn wait_both(f: &mut Fiber, sp: Pin<&IoStatus>, st: Pin<&IoStatus>, linked: bool) -> Result<PollFlags, Errno> {
    let (mut poll_cancelled, mut timer_cancelled) = (false, false);
    loop {
        let (p, t) = (sp.is_in_flight(), st.is_in_flight());
        if !p && !t {
            break;
        }
        let cancelled = f.is_cancelled();
        if p && !poll_cancelled && (cancelled || (!linked && !t)) {
            f.cancel_io(sp); // its own completion still decides (readiness wins)
            poll_cancelled = true;
        }
        if t && !timer_cancelled && !linked && (!p || cancelled) {
            f.cancel_io(st);
            timer_cancelled = true;
        }
        f.wait_io(); // both complete before the caller's frame (and its timespec) is left
    }
    outcome(sp.result().unwrap_or(Err(Errno::EIO)), matches!(st.result(), Some(Err(Errno::ETIME))))
}

impl FiberReady for Fiber {
    fn poll(&mut self, fd: BorrowedFd<'_>, events: PollFlags, timeout: Option<Duration>) -> Result<PollFlags, Errno> {
        let op = PollOp { fd: fd.as_raw_fd(), events, multishot: false };
        // SAFETY: a poll SQE references no memory.
        let poll = unsafe { RingOp::from_entry(op.sqe()) };
        let Some(ts) = timeout.map(timespec) else {
            return outcome(self.run_op(poll), false); // cancelled: ready rule 3 (fs module doc)
        };
        let (sp, st) = (pin!(IoStatus::new()), pin!(IoStatus::new()));
        // Ready rule 2, linked: the poll and an `IORING_OP_LINK_TIMEOUT` in one submission.
        // SAFETY: `ts` lives in this frame, which waits for the timer's completion below.
        let timer = unsafe { RingOp::from_entry(link_timer_sqe(&ts)) };
        let refused = match self.initiate_pair::<RingDriver>((sp.as_ref(), poll.linked()), (st.as_ref(), timer)) {
            Ok(()) => return wait_both(self, sp.as_ref(), st.as_ref(), true),
            Err(r) => r,
        };
        match refused.reason {
            // No room for both now: the two apart, the timer first (ready rule 2).
            InitiateError::Refused((), Errno::EBUSY) => {}
            InitiateError::Cancelled(()) => return Err(Errno::ECANCELED),
            InitiateError::Refused((), e) => return Err(e),
            _ => return Err(Errno::EINVAL),
        }
        // SAFETY: as above; this SQE is the plain timer, not linked.
        initiate(self, st.as_ref(), unsafe { RingOp::from_entry(timer_sqe(&ts)) })?;
        // SAFETY: a poll SQE references no memory.
        if let Err(e) = initiate(self, sp.as_ref(), unsafe { RingOp::from_entry(op.sqe()) }) {
            self.cancel_io(st.as_ref());
            while st.is_in_flight() {
                self.wait_io(); // the timer completes before this frame (and `ts`) is left
            }
            return Err(e);
        }
        wait_both(self, sp.as_ref(), st.as_ref(), false)
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
