//! `io_uring_enter`: the one place the driver enters the kernel on the executor's
//! behalf (the `ring` module doc, Batching), for `reap` and `park`, and the read kept
//! armed on the unpark eventfd. Invariants:
//! - Every enter first moves queued cancels (and a pending eventfd re-arm) into the SQ.
//! - An enter that fails with EAGAIN, EBUSY or EINTR leaves the SQEs in the SQ and the
//!   operations in their slots: the next enter retries them (counted in
//!   `RingStats::enter_retries`).
//! - A reap enters once, then at most `REAP_FOLLOW_UPS` more times while the kernel says
//!   completion work is pending, and at most 64 times to flush an overflowed CQ: every
//!   loop is bounded.
//! - `park` returns `Stalled` only when nothing can end the wait: nothing in flight, no
//!   deadline, no unparker handed out.
#![allow(unsafe_code)] // entering the ring and pushing SQEs are unsafe in the io-uring crate

use super::driver::RingDriver;
use super::slots::EVENTFD_TAG;
use crate::notice::notice;
use io_uring::{opcode, types};
use keel_core::driver::IoToken;
use keel_core::{Errno, Instant, IoResult, Park};
use std::io;

/// The most extra enters one reap makes to fetch completion work the kernel left
/// pending: each runs up to 20 completions, so with the first enter this covers a burst
/// of 260, the default `reap_batch` (256).
const REAP_FOLLOW_UPS: u32 = 12;

impl RingDriver {
    pub(super) fn reap_into<F: FnMut(IoToken, IoResult)>(&mut self, max: usize, sink: &mut F) -> usize {
        self.take_abandoned();
        let mut n = self.drain(max, sink);
        if n < max {
            if let Err(e) = self.enter(0, None) {
                notice!(warn, "io_uring_enter failed: {e}");
            }
            n += self.drain(max - n, sink);
            // The kernel ran only part of the pending completion work (`ring` module doc,
            // Batching): fetch the rest of the burst, a bounded number of times.
            let mut follow_ups = 0;
            while n < max && follow_ups < REAP_FOLLOW_UPS && self.ring.taskrun() {
                follow_ups += 1;
                self.stats.reap_follow_ups += 1;
                if let Err(e) = self.enter(0, None) {
                    notice!(warn, "io_uring_enter failed: {e}");
                    break;
                }
                n += self.drain(max - n, sink);
            }
        }
        // NODROP keeps overflowed CQEs in the kernel: flush them while the flag is set.
        let mut flushes = 0;
        while n < max && self.ring.cq_overflow() && flushes < 64 {
            self.stats.overflow_flushes += 1;
            flushes += 1;
            if self.enter(0, None).is_err() {
                break;
            }
            n += self.drain(max - n, sink);
        }
        n
    }

    pub(super) fn park_until(&mut self, deadline: Option<Instant>) -> Result<Park, Errno> {
        self.take_abandoned();
        // Stalled only if no other thread can end the wait either (no unparker handed out).
        if self.ops_in_flight() == 0 && deadline.is_none() && !self.unparker_given {
            return Ok(Park::Stalled);
        }
        if !self.ring.cq_is_empty() {
            if self.ops_in_flight() > 0 {
                return Ok(Park::Woke); // the run loop reaps them
            }
            // Nothing of the executor's is in flight, so the run loop does not reap: what
            // sits in the CQ is the driver's own (an unpark: the eventfd read's CQE or a
            // MsgRing CQE; cancels) or stale. Take it here (which re-arms the eventfd
            // read), or every later park would return at once and the executor would spin.
            let mut nothing = |_: IoToken, _: IoResult| {};
            self.drain(usize::MAX, &mut nothing);
        }
        match self.enter(1, deadline) {
            Ok(()) => Ok(Park::Woke),
            Err(e) => Err(Errno(e.raw_os_error().unwrap_or(libc::EIO))),
        }
    }

    /// Submits the SQ without reaping (cold: only to end a task's open link chain before
    /// the driver pushes its own SQEs). Whether the SQ is empty afterwards.
    #[cold]
    pub(super) fn submit_queued(&mut self) -> bool {
        if self.inject.is_none() {
            self.ring.submit_only();
        }
        let empty = self.ring.sq_len() == 0;
        if empty {
            self.tail_linked = false;
        }
        empty
    }

    /// One `io_uring_enter`: submit what is queued, reap (GETEVENTS), wait for
    /// `min_complete` until `deadline` (absolute, CLOCK_MONOTONIC).
    pub(super) fn enter(&mut self, min_complete: u32, deadline: Option<Instant>) -> io::Result<()> {
        self.flush_cancels();
        if let Some((n, errno)) = self.inject {
            self.inject = if n > 1 { Some((n - 1, errno)) } else { None };
            self.stats.enter_retries += 1;
            return Ok(()); // SQEs stay queued: the next enter submits them
        }
        self.stats.enters += 1;
        #[cfg(keel_valgrind)]
        if min_complete > 0 && self.ring.uring().is_some() {
            return self.wait_in_poll(deadline);
        }
        let entered = self.ring.enter(min_complete, deadline);
        if self.tail_linked && self.ring.sq_len() == 0 {
            self.tail_linked = false; // the kernel ended the chain with the submission
        }
        match entered {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EBUSY | libc::EINTR | libc::ETIME)) => {
                if e.raw_os_error() != Some(libc::ETIME) {
                    self.stats.enter_retries += 1;
                }
                Ok(())
            }
            other => other,
        }
    }

    /// Valgrind builds only (`--cfg keel_valgrind`, `make test-valgrind`): `enter`'s wait
    /// for a completion, made in `poll(2)` on the ring descriptor instead of inside
    /// `io_uring_enter`. Valgrind 3.19 runs `io_uring_enter` while holding its lock that
    /// lets one thread run at a time (it does not count the call as one that may block),
    /// so a wait there for a completion another thread must cause (a peer thread's send,
    /// an unpark) never ends and every other thread stops: the process hangs. `poll` is
    /// a call valgrind lets block. Each slice is at most 10 ms and is followed by an
    /// enter that does not wait (it submits, and runs the deferred completion work that
    /// DEFER_TASKRUN posts only on an enter), until a completion is in the CQ or the
    /// deadline passed: bounded by the deadline, and by the wake that ends an endless
    /// park (a completion or an unpark CQE).
    #[cfg(keel_valgrind)]
    fn wait_in_poll(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        use keel_core::Driver;
        use std::os::fd::AsRawFd;
        loop {
            let entered = self.ring.enter(0, None);
            if let Err(e) = entered
                && !matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EBUSY | libc::EINTR))
            {
                return Err(e);
            }
            if self.tail_linked && self.ring.sq_len() == 0 {
                self.tail_linked = false;
            }
            let now = self.now();
            if !self.ring.cq_is_empty() || deadline.is_some_and(|d| d <= now) {
                return Ok(());
            }
            let left_ms = deadline.map_or(10, |d| (d.as_nanos() - now.as_nanos()).div_ceil(1_000_000).min(10));
            let mut pfd = libc::pollfd { fd: self.ring.raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd for the call; the ring descriptor is open (ours).
            unsafe { libc::poll(&mut pfd, 1, left_ms as libc::c_int) };
        }
    }

    /// Keeps a read armed on the unpark eventfd (re-armed after each completion), if
    /// this driver unparks through one.
    pub(super) fn arm_eventfd(&mut self) {
        use std::os::fd::AsRawFd;
        let Some(fd) = &self.eventfd else { return };
        if self.closing {
            return; // the driver is going (`Drop`): the read stays unarmed
        }
        let buf: *mut u64 = &mut *self.eventfd_buf;
        let e = opcode::Read::new(types::Fd(fd.as_raw_fd()), buf.cast(), 8).build().user_data(EVENTFD_TAG);
        // SAFETY: the buffer is boxed in the driver, which outlives the ring's use of it
        // (the ring is dropped first: field order).
        self.eventfd_rearm = !unsafe { self.ring.push(&e) };
        self.eventfd_armed |= !self.eventfd_rearm;
    }
}
