//! Admission and submission: what a task's i/o goes through on its way to the driver
//! (the room rules below, the in-flight limit, driver rule 1), for status blocks
//! (`initiate`) and for operations with a wake token (`submit_with_wake_token`).

use crate::driver::{Driver, IoToken, OpId};
use crate::error::{InitiateError, SubmitRefused};
use crate::exec::sched::Sched;
use crate::io_status::block::{IoStatus, take_completed};
use crate::task::header::{Header, SlotPtr, flag};
use core::pin::Pin;
use core::ptr::NonNull;

impl Sched {
    /// Starts `op` on the driver for running task `h`, linking `status` on the task's
    /// initiated list (admission: room rules, the in-flight limit, driver rule 1).
    pub(crate) fn initiate<D: Driver>(
        &self,
        status: Pin<&IoStatus>,
        h: NonNull<Header>,
        op: D::Op,
    ) -> Result<(), InitiateError<D::Op>> {
        let mut op = Some(op);
        match self.initiate_from::<D>(status, h, &mut op) {
            Ok(()) => Ok(()),
            Err(e) => Err(e.with_op(op.take().expect("refused operations stay in place"))),
        }
    }

    /// `initiate` from where the operation lies (taken when submitted).
    #[inline(always)]
    pub(crate) fn initiate_from<D: Driver>(
        &self,
        status: Pin<&IoStatus>,
        h: NonNull<Header>,
        op: &mut Option<D::Op>,
    ) -> Result<(), InitiateError<()>> {
        // SAFETY: `'static` header of the running task.
        let t = unsafe { h.as_ref() };
        if t.has_flag(flag::CANCEL) {
            return Err(InitiateError::Cancelled(()));
        }
        if status.is_busy() {
            return Err(InitiateError::StatusBusy(()));
        }
        let Some(driver) = self.driver_as::<D>() else { return Err(InitiateError::WrongDriver(())) };
        // Driver rule 1: inside a `with_driver` closure.
        if self.is_lent() {
            return Err(InitiateError::DriverBusy(()));
        }
        // Queue behind tasks already waiting for room (unless this task was just granted
        // room), and respect the in-flight limit.
        let granted = t.has_flag(flag::GRANTED);
        t.clear_flag(flag::GRANTED);
        // SAFETY: sched rule 3: no other borrow of the driver is live while task code runs.
        if (!granted && self.submit_queue_busy()) || self.at_io_limit(driver) {
            return Err(InitiateError::Refused((), crate::Errno::EBUSY));
        }
        // SAFETY: sched rule 3: no other borrow of the driver is live while task code runs.
        let id = match unsafe { (*driver).submit_from(op, status.token()) } {
            Ok(id) => id,
            Err(e) => return Err(InitiateError::Refused((), e)),
        };
        status.begin(id, h);
        let s = &h.trailer().stats.io_initiated;
        s.set(s.get() + 1);
        self.stats.io_submitted.set(self.stats.io_submitted.get() + 1);
        Ok(())
    }

    /// Asks the driver to cancel `status`'s operation if it is in flight (it then
    /// completes, usually with `ECANCELED`). Only from the task that initiated it.
    pub(crate) fn cancel_status(&self, status: &IoStatus) {
        if status.is_in_flight() {
            self.driver_cancel(status.op_id());
        }
    }

    /// The admission and submission behind `io_status::try_submit_from` and `Fiber::try_submit`, for
    /// running task `h` of `sched`: with `wait`, a task with no room is queued for it.
    pub(crate) fn submit_with_wake_token<D: Driver>(
        &self,
        h: NonNull<Header>,
        op: &mut Option<D::Op>,
        wait: bool,
    ) -> Result<OpId, SubmitRefused> {
        // SAFETY: `'static` header of the running task.
        let t = unsafe { h.as_ref() };
        if t.has_flag(flag::CANCEL) {
            return Err(SubmitRefused::Failed(crate::Errno::ECANCELED));
        }
        let Some(driver) = self.driver_as::<D>() else { return Err(SubmitRefused::Failed(crate::Errno::EINVAL)) };
        // Driver rule 1: inside a `with_driver` closure (waiting could not end there).
        if self.is_lent() {
            return Err(SubmitRefused::Failed(crate::Errno::EDEADLK));
        }
        let granted = t.has_flag(flag::GRANTED);
        t.clear_flag(flag::GRANTED);
        // SAFETY: sched rule 3: no other borrow of the driver is live while task code runs.
        let full = unsafe { (*driver).submit_capacity() } == 0;
        if full || (!granted && self.submit_queue_busy()) || self.at_io_limit(driver) {
            if !wait {
                return Err(SubmitRefused::Failed(crate::Errno::EBUSY));
            }
            self.wait_for_submit(h);
            return Err(SubmitRefused::Wait);
        }
        // Relaxed: owner-written generation.
        let token = IoToken::wake(crate::TaskHandle::from_parts(h, t.generation.load(crate::sync::Ordering::Relaxed)));
        // SAFETY: as above.
        match unsafe { (*driver).submit_from(op, token) } {
            Ok(id) => {
                let s = &h.trailer().stats.io_initiated;
                s.set(s.get() + 1);
                self.stats.io_submitted.set(self.stats.io_submitted.get() + 1);
                Ok(id)
            }
            // The driver had no room after all: wait for it as for any other lack of room.
            Err(crate::Errno::EBUSY) if wait => {
                self.wait_for_submit(h);
                Err(SubmitRefused::Wait)
            }
            Err(e) => Err(SubmitRefused::Failed(e)),
        }
    }

    /// Detaches every status still on task `h`'s lists (executor teardown of a task whose
    /// body is leaked, teardown rule 3), so the slot's next run starts with empty lists and a
    /// status dropped later touches neither. Each is marked reaped; an in-flight one is
    /// orphaned as its `Drop` would do (rule 4: its completion now names the task and is
    /// counted in `orphans`, its operation cancelled) and gets `ECANCELED` as its result.
    pub(crate) fn orphan_all(&self, h: NonNull<Header>) {
        // SAFETY: `'static` header.
        let tr = h.trailer();
        while let Some(st) = tr.initiated.pop_front() {
            // SAFETY: linked statuses are alive (rule 2).
            let st = unsafe { st.as_ref() };
            tr.orphans.set(tr.orphans.get() + 1);
            self.driver_retarget(st.op_id(), IoToken { addr: h.as_ptr() as usize | IoToken::ORPHAN, generation: 0 });
            self.driver_cancel(st.op_id());
            st.reap_with(Err(crate::Errno::ECANCELED));
        }
        take_completed(tr, usize::MAX);
    }
}
