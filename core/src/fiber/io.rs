//! A fiber's i/o: initiating operations on status blocks (one, or a linked pair), waiting
//! for and cancelling them, wake-token submission, and the driver lent to a closure.
//! Admission is the scheduler's (exec/submit.rs); what is here is the fiber's side: it
//! suspends until its operations complete or room is granted.

use super::Fiber;
use crate::driver::{Driver, DriverMut};
use crate::error::{Cancelled, InitiateError};
use crate::io_status::block::{IoStatus, NextIo};
use crate::task::header::{SlotPtr, flag};
use crate::task::state::SuspendReason;
use core::pin::Pin;
use core::time::Duration;

/// Why [`Fiber::initiate_pair`] submitted neither operation; both come back.
#[derive(Debug)]
pub struct PairRefused<Op> {
    /// The reason (`Refused(EBUSY)`: no room for both now).
    pub reason: InitiateError<()>,
    /// The first operation.
    pub first: Op,
    /// The second operation.
    pub second: Op,
}

impl Fiber {
    /// Starts `op`, linking `status` (pinned on this fiber's stack) on the task's
    /// initiated list.
    ///
    /// While there is no room to submit, the fiber waits in I/O-priority order (FIFO
    /// within a priority, so its own operations enter in the order it initiated them).
    ///
    /// Inlined, so the operation is built where the driver copies it from (out of line,
    /// the copy re-read bytes the caller had just stored piecewise: a store-forwarding
    /// stall that cost about a fifth of a NOP's user time).
    #[inline(always)]
    pub fn initiate<D: Driver>(&mut self, status: Pin<&IoStatus>, op: D::Op) -> Result<(), InitiateError<D::Op>> {
        let mut op = Some(op);
        match self.sched().initiate_from::<D>(status, self.header, &mut op) {
            Ok(()) => Ok(()),
            Err(refusal) => self.initiate_refused::<D>(status, op, refusal),
        }
    }

    /// `initiate` after a refusal: wait for room while it is `EBUSY`, else fail.
    #[inline(never)]
    fn initiate_refused<D: Driver>(
        &mut self,
        status: Pin<&IoStatus>,
        mut op: Option<D::Op>,
        mut refusal: InitiateError<()>,
    ) -> Result<(), InitiateError<D::Op>> {
        loop {
            match refusal {
                InitiateError::Refused((), crate::Errno::EBUSY) => {
                    self.sched().wait_for_submit(self.header);
                    self.switch_out();
                    if self.cancelled().is_err() {
                        return Err(InitiateError::Cancelled(op.take().expect("refused operations stay in place")));
                    }
                }
                InitiateError::Cancelled(()) => {
                    // Only on entry: after a switch the flag was checked just above.
                    let Cancelled = self.cancelled_yield();
                    return Err(InitiateError::Cancelled(op.take().expect("refused operations stay in place")));
                }
                other => return Err(other.with_op(op.take().expect("refused operations stay in place"))),
            }
            match self.sched().initiate_from::<D>(status, self.header, &mut op) {
                Ok(()) => return Ok(()),
                Err(next) => refusal = next,
            }
        }
    }

    /// Initiates `first` and `second` back to back, or neither: for a pair whose first
    /// operation links the second (`IOSQE_IO_LINK`, which the kernel honours only within
    /// one submission). Both go in only if there is room for both now and nobody waits for
    /// room; otherwise neither is submitted and both come back with `Refused(EBUSY)` (the
    /// task is not queued: the caller may fall back to doing them one after the other).
    #[inline(always)] // the ops are built in place in the caller's frame, not moved twice (224 bytes)
    pub fn initiate_pair<D: Driver>(
        &mut self,
        first: (Pin<&IoStatus>, D::Op),
        second: (Pin<&IoStatus>, D::Op),
    ) -> Result<(), PairRefused<D::Op>> {
        let ((status1, op1), (status2, op2)) = (first, second);
        let sched = self.sched();
        let refused =
            |reason: InitiateError<()>, first: D::Op, second: D::Op| Err(PairRefused { reason, first, second });
        if self.cancelled().is_err() {
            let Cancelled = self.cancelled_yield();
            return refused(InitiateError::Cancelled(()), op1, op2);
        }
        if status1.is_busy() || status2.is_busy() || core::ptr::eq(status1.get_ref(), status2.get_ref()) {
            return refused(InitiateError::StatusBusy(()), op1, op2);
        }
        let Some(driver) = sched.driver_as::<D>() else { return refused(InitiateError::WrongDriver(()), op1, op2) };
        // Driver rule 1: inside a `with_driver` closure.
        if sched.is_lent() {
            return refused(InitiateError::DriverBusy(()), op1, op2);
        }
        if !sched.room_for(driver, 2) {
            return refused(InitiateError::Refused((), crate::Errno::EBUSY), op1, op2);
        }
        let task = self.header;
        // As `initiate_from` does: a grant of room is used up by this submission.
        self.header().clear_flag(flag::GRANTED);
        let (mut slot1, mut slot2) = (Some(op1), Some(op2));
        // SAFETY: sched rule 3: no other borrow of the driver is live while task code runs
        // (not lent: checked above), and room for two was checked with nothing in between.
        let ids = unsafe { (*driver).submit_pair_from(&mut slot1, status1.token(), &mut slot2, status2.token()) };
        match ids {
            Ok((id1, id2)) => {
                status1.begin(id1, task);
                status2.begin(id2, task);
                sched.note_initiated(task, 2);
                Ok(())
            }
            Err(errno) => refused(
                InitiateError::Refused((), errno),
                slot1.expect("refused operations stay in place"),
                slot2.expect("refused operations stay in place"),
            ),
        }
    }

    /// Suspends until woken by a completion of one of its operations (or anything else),
    /// ignoring cancellation: for waiting out an operation whose buffer lives on this
    /// fiber's stack, which must complete before the frame is left.
    #[inline(always)]
    pub fn wait_io(&mut self) {
        self.header().reason.set(SuspendReason::Io);
        self.switch_out();
    }

    /// Asks the driver to cancel `status`'s operation if it is in flight.
    pub fn cancel_io(&mut self, status: Pin<&IoStatus>) {
        self.sched().cancel_status(&status);
    }

    /// Lends the executor's driver to `f` if it is a `D`, as a [`DriverMut`] (driver
    /// rules 1-2, exec/lend.rs). `None` for another driver type or while the driver is
    /// lent already; [`Fiber::try_with_driver`] says which.
    pub fn with_driver<D: Driver, R>(&mut self, f: impl FnOnce(&mut DriverMut<'_, D>) -> R) -> Option<R> {
        self.try_with_driver(f).ok()
    }

    /// [`Fiber::with_driver`] with the reason it could not lend the driver.
    pub fn try_with_driver<D: Driver, R>(
        &mut self,
        f: impl FnOnce(&mut DriverMut<'_, D>) -> R,
    ) -> Result<R, crate::DriverError> {
        let sched = self.sched();
        let driver = sched.driver_as::<D>().ok_or(crate::DriverError::WrongDriver)?;
        let _lent = sched.lend().map_err(|_| crate::DriverError::Busy)?;
        // SAFETY: driver rule 1: lent (the flag set) until `_lent` drops, after `f`.
        let mut driver = unsafe { DriverMut::lend(driver) };
        Ok(f(&mut driver))
    }

    /// Suspends until one of its operations completes, then takes up to `max` completed
    /// status blocks (their `result()` is set); `Ok(0)` at once if nothing is in flight.
    /// A `max` of 0 is taken as 1 (as `io_status::suspend_until_completed_io` does).
    #[inline(always)]
    pub fn suspend_until_completed_io(&mut self, max: usize) -> Result<usize, Cancelled> {
        let max = max.max(1);
        loop {
            if self.header().has_flag(flag::CANCEL) {
                // Fiber rule 5 (a cancel that woke it costs one more pass).
                return Err(self.cancelled_yield());
            }
            let trailer = self.header.trailer();
            if !trailer.completed.is_empty() {
                return Ok(crate::io_status::block::take_completed(trailer, max));
            }
            if trailer.initiated.is_empty() {
                return Ok(0);
            }
            self.header().reason.set(SuspendReason::Io);
            self.switch_out();
        }
    }

    /// Suspends until one of its status blocks completes, or `timeout` passes (`None`: no
    /// limit), and takes that one off its completed list: the seed API's shape, which
    /// returns the completed status. `NextIo::Idle` at once if nothing is in flight and
    /// nothing completed; a zero timeout only looks. On return no timer of this wait is
    /// left armed.
    pub fn next_completed_io(&mut self, timeout: Option<Duration>) -> Result<NextIo, Cancelled> {
        let deadline = timeout.map(|t| self.sched().now().saturating_add(t));
        let task = self.header;
        let found = loop {
            if self.header().has_flag(flag::CANCEL) {
                self.sched().disarm(task);
                // Fiber rule 5 (a cancel that woke it costs one more pass).
                return Err(self.cancelled_yield());
            }
            let trailer = task.trailer();
            if let Some(done) = crate::io_status::block::take_one_completed(trailer) {
                break NextIo::Completed(done);
            }
            if trailer.initiated.is_empty() {
                break NextIo::Idle;
            }
            if let Some(deadline) = deadline {
                if self.sched().now() >= deadline {
                    break NextIo::TimedOut;
                }
                self.sched().arm(task, deadline);
            }
            self.header().reason.set(SuspendReason::Io);
            self.switch_out();
        };
        self.sched().disarm(task);
        Ok(found)
    }

    /// Submits `op` with a wake token, for an operation whose result the driver keeps for
    /// the caller to take (multishot, buffer-select): the fiber counterpart of
    /// [`crate::io_status::try_submit`]. Admission is `initiate`'s: while the driver has no
    /// room, other tasks already queue for it, or the executor's `max_io_in_flight` is
    /// reached, the fiber waits in I/O-priority order (FIFO within a priority) and tries
    /// again when granted room. The operation is on no status block, so the caller owns
    /// its id: it must take the result or abandon the operation through the driver.
    ///
    /// Errors hand the operation back: `Cancelled` (before submission, also while
    /// waiting), `WrongDriver`, `Refused` (the driver refused it for a reason other than
    /// room).
    pub fn try_submit<D: Driver>(&mut self, op: D::Op) -> Result<crate::OpId, InitiateError<D::Op>> {
        use crate::error::SubmitRefused;
        if self.sched().driver_as::<D>().is_none() {
            return Err(InitiateError::WrongDriver(op));
        }
        let mut op = Some(op);
        let back = |op: &mut Option<D::Op>| op.take().expect("refused operations stay in place");
        let mut entry = true;
        loop {
            if self.cancelled().is_err() {
                if entry {
                    let Cancelled = self.cancelled_yield();
                }
                return Err(InitiateError::Cancelled(back(&mut op)));
            }
            entry = false;
            match self.sched().submit_with_wake_token::<D>(self.header, &mut op, true) {
                Ok(id) => return Ok(id),
                // Queued for room (by I/O priority); the grant wakes this fiber.
                Err(SubmitRefused::Wait) => {}
                // The driver had no room after all: queue as for any other lack of room.
                Err(SubmitRefused::Failed(crate::Errno::EBUSY)) => self.sched().wait_for_submit(self.header),
                Err(SubmitRefused::Failed(crate::Errno::ECANCELED)) => {
                    return Err(InitiateError::Cancelled(back(&mut op)));
                }
                Err(SubmitRefused::Failed(errno)) => return Err(InitiateError::Refused(back(&mut op), errno)),
            }
            self.switch_out();
        }
    }
}
