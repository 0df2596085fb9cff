//! Readiness waits for fiber tasks ([`FiberReady`]): blocking-style calls, see the
//! `ready` module doc.
#![allow(unsafe_code)] // the timer's SQE points at a timespec on the fiber's stack

use super::{PollFlags, PollOp, outcome, timer_sqe, timespec};
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
        let ts = timeout.map(timespec);
        let (sp, st) = (pin!(IoStatus::new()), pin!(IoStatus::new()));
        // SAFETY: a poll SQE references no memory.
        initiate(self, sp.as_ref(), unsafe { RingOp::from_entry(op.sqe()) })?;
        // Ready rule 2: the timer, once the poll is in. If it cannot start, the poll is
        // cancelled and its own completion decides (readiness wins, else this error).
        let timer_failed = match &ts {
            // SAFETY: `ts` lives in this frame, which waits for the timer's completion below.
            Some(ts) => initiate(self, st.as_ref(), unsafe { RingOp::from_entry(timer_sqe(ts)) }).err(),
            None => None,
        };
        let (mut poll_cancelled, mut timer_cancelled) = (false, false);
        loop {
            let (p, t) = (sp.is_in_flight(), st.is_in_flight());
            if !p && !t {
                break;
            }
            let cancelled = self.is_cancelled();
            // The timer ended (expired, or never started): cancel the poll, keep waiting for it.
            let timer_ended = ts.is_some() && !t;
            if p && !poll_cancelled && (timer_ended || cancelled) {
                self.cancel_io(sp.as_ref());
                poll_cancelled = true;
            }
            // The poll ended: the timer has nothing left to decide.
            if t && !timer_cancelled && (!p || cancelled) {
                self.cancel_io(st.as_ref());
                timer_cancelled = true;
            }
            self.wait_io(); // both complete before this frame (and `ts`) is left
        }
        let poll = sp.result().unwrap_or(Err(Errno::EIO));
        let expired = matches!(st.result(), Some(Err(Errno::ETIME)));
        match (timer_failed, poll) {
            (Some(e), Err(Errno::ECANCELED)) => Err(e),
            (_, poll) => outcome(poll, expired),
        }
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
        r.map(|(res, _)| PollFlags::from_bits_retain(res as u16))
    }
}
