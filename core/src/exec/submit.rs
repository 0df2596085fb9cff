//! Admission and submission: what a task's i/o goes through on its way to the driver
//! (the room rules below, the in-flight limit, driver rule 1), for status blocks
//! (`initiate`) and for operations with a wake token (`submit_with_wake_token`).

//!
//! Waiting for room to submit (cited as "room rule N"). A body may poll any number of
//! keel futures in one poll (join, select), so waiting for room is not a suspension
//! reason of its own but a membership, kept apart from the task's state:
//! 1. A task is in its I/O priority's `submit_waiters` list exactly when its
//!    `QUEUED_FOR_ROOM` flag is set, and `room_waiters` counts the tasks in the three
//!    lists (one load for the run loop's test on every pass). The list has its own links
//!    (`submit_links`), so a task may wait for room while it is also ready, running, or
//!    suspended for any reason (a timer armed, i/o in flight); `reason` is only what its
//!    state reports.
//! 2. `wait_for_submit` (a refused initiator, future or fiber, status or wake token)
//!    sets `ASKED_ROOM` and links the task if it is not linked: asking twice in one poll
//!    (two initiates joined) queues it once, and a task that asks again keeps its place.
//! 3. When a poll returns `Pending`, a task still linked that did not ask in that poll
//!    (the asking future was dropped: a select took the other branch) leaves the list;
//!    one that asked stays, and `ASKED_ROOM` is cleared for the next poll. A grant not
//!    used in the poll it was for lapses (`GRANTED` is cleared).
//! 4. A grant unlinks the task before it wakes it (`wake_local` does nothing to a task
//!    that is not suspended), so granting never meets the same task twice.
//! 5. Every path that ends the run or cancels it unlinks it: `finish` (return, cancel of
//!    a queued task, executor drop), `wake_cancelled`, `cancel_io`, `abandon`. A wake for
//!    another reason leaves the task linked (its place kept): its next poll asks again or
//!    leaves by rule 3.

use crate::driver::{Driver, IoToken, OpId};
use crate::error::{InitiateError, SubmitRefused};
use crate::exec::sched::{Sched, hdr};
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
        task: NonNull<Header>,
        op: D::Op,
    ) -> Result<(), InitiateError<D::Op>> {
        let mut op = Some(op);
        match self.initiate_from::<D>(status, task, &mut op) {
            Ok(()) => Ok(()),
            Err(err) => Err(err.with_op(op.take().expect("refused operations stay in place"))),
        }
    }

    /// `initiate` from where the operation lies (taken when submitted).
    #[inline(always)]
    pub(crate) fn initiate_from<D: Driver>(
        &self,
        status: Pin<&IoStatus>,
        task: NonNull<Header>,
        op: &mut Option<D::Op>,
    ) -> Result<(), InitiateError<()>> {
        // SAFETY: `'static` header of the running task.
        let header = unsafe { task.as_ref() };
        if header.has_flag(flag::CANCEL) {
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
        let granted = header.has_flag(flag::GRANTED);
        header.clear_flag(flag::GRANTED);
        // SAFETY: sched rule 3: no other borrow of the driver is live while task code runs.
        if (!granted && self.submit_queue_busy()) || self.at_io_limit(driver) {
            return Err(InitiateError::Refused((), crate::Errno::EBUSY));
        }
        // SAFETY: sched rule 3: no other borrow of the driver is live while task code runs.
        let id = match unsafe { (*driver).submit_from(op, status.token()) } {
            Ok(id) => id,
            Err(err) => return Err(InitiateError::Refused((), err)),
        };
        status.begin(id, task);
        let initiated = &task.trailer().stats.io_initiated;
        initiated.set(initiated.get() + 1);
        self.stats.io_submitted.set(self.stats.io_submitted.get() + 1);
        Ok(())
    }

    /// Counts `n` operations just submitted for `task` (its and the executor's counters).
    #[inline(always)]
    pub(crate) fn note_initiated(&self, task: NonNull<Header>, n: u64) {
        let initiated = &task.trailer().stats.io_initiated;
        initiated.set(initiated.get() + n);
        self.stats.io_submitted.set(self.stats.io_submitted.get() + n);
    }

    /// Asks the driver to cancel `status`'s operation if it is in flight (it then
    /// completes, usually with `ECANCELED`). Only from the task that initiated it.
    pub(crate) fn cancel_status(&self, status: &IoStatus) {
        if status.is_in_flight() {
            self.driver_cancel(status.op_id());
        }
    }

    /// The admission and submission behind `io_status::try_submit_from` and `Fiber::try_submit`, for
    /// running `task` of this executor: with `wait`, a task with no room is queued for it.
    pub(crate) fn submit_with_wake_token<D: Driver>(
        &self,
        task: NonNull<Header>,
        op: &mut Option<D::Op>,
        wait: bool,
    ) -> Result<OpId, SubmitRefused> {
        // SAFETY: `'static` header of the running task.
        let header = unsafe { task.as_ref() };
        if header.has_flag(flag::CANCEL) {
            return Err(SubmitRefused::Failed(crate::Errno::ECANCELED));
        }
        let Some(driver) = self.driver_as::<D>() else { return Err(SubmitRefused::Failed(crate::Errno::EINVAL)) };
        // Driver rule 1: inside a `with_driver` closure (waiting could not end there).
        if self.is_lent() {
            return Err(SubmitRefused::Failed(crate::Errno::EDEADLK));
        }
        let granted = header.has_flag(flag::GRANTED);
        header.clear_flag(flag::GRANTED);
        // SAFETY: sched rule 3: no other borrow of the driver is live while task code runs.
        let full = unsafe { (*driver).submit_capacity() } == 0;
        if full || (!granted && self.submit_queue_busy()) || self.at_io_limit(driver) {
            if !wait {
                return Err(SubmitRefused::Failed(crate::Errno::EBUSY));
            }
            self.wait_for_submit(task);
            return Err(SubmitRefused::Wait);
        }
        // Relaxed: owner-written generation.
        let token =
            IoToken::wake(crate::TaskHandle::from_parts(task, header.generation.load(crate::sync::Ordering::Relaxed)));
        // SAFETY: as above.
        match unsafe { (*driver).submit_from(op, token) } {
            Ok(id) => {
                let initiated = &task.trailer().stats.io_initiated;
                initiated.set(initiated.get() + 1);
                self.stats.io_submitted.set(self.stats.io_submitted.get() + 1);
                Ok(id)
            }
            // The driver had no room after all: wait for it as for any other lack of room.
            Err(crate::Errno::EBUSY) if wait => {
                self.wait_for_submit(task);
                Err(SubmitRefused::Wait)
            }
            Err(err) => Err(SubmitRefused::Failed(err)),
        }
    }

    /// Detaches every status still on `task`'s lists (executor teardown of a task whose
    /// body is leaked, teardown rule 3), so the slot's next run starts with empty lists and a
    /// status dropped later touches neither. Each is marked reaped; an in-flight one is
    /// orphaned as its `Drop` would do (io_status rule 4: its completion now names the task
    /// and is counted in `orphans`, its operation cancelled) and gets `ECANCELED` as its
    /// result.
    pub(crate) fn orphan_all(&self, task: NonNull<Header>) {
        // SAFETY: `'static` header.
        let trailer = task.trailer();
        while let Some(status) = trailer.initiated.pop_front() {
            // SAFETY: linked statuses are alive (io_status rule 2).
            let status = unsafe { status.as_ref() };
            trailer.orphans.set(trailer.orphans.get() + 1);
            self.driver_retarget(
                status.op_id(),
                IoToken { addr: task.as_ptr() as usize | IoToken::ORPHAN, generation: 0 },
            );
            self.driver_cancel(status.op_id());
            status.reap_with(Err(crate::Errno::ECANCELED));
        }
        take_completed(trailer, usize::MAX);
    }
}

impl Sched {
    /// Whether the executor's `max_io_in_flight` is reached.
    #[inline(always)]
    pub(crate) fn at_io_limit<D: crate::Driver>(&self, driver: *mut D) -> bool {
        // SAFETY: sched rule 3: the driver pointer is valid and unborrowed here.
        self.cfg.max_io_in_flight.is_some_and(|l| unsafe { (*driver).in_flight() } >= l)
    }

    /// Whether `count` more operations may be submitted at once with no waiting: nobody is
    /// queued for room, the driver has room for `count`, and `max_io_in_flight` allows
    /// `count` more.
    pub(crate) fn room_for<D: crate::Driver>(&self, driver: *mut D, count: usize) -> bool {
        // SAFETY: sched rule 3: the driver pointer is valid and unborrowed here.
        let (cap, in_flight) = unsafe { ((*driver).submit_capacity(), (*driver).in_flight()) };
        !self.submit_queue_busy() && cap >= count && self.cfg.max_io_in_flight.is_none_or(|l| in_flight + count <= l)
    }

    /// Whether tasks are queued for submission room (new initiators queue behind them).
    #[inline(always)]
    pub(crate) fn submit_queue_busy(&self) -> bool {
        debug_assert_eq!(
            self.room_waiters.get(),
            self.submit_waiters.iter().map(|l| l.len()).sum::<usize>(),
            "keel bug: room rule 1"
        );
        self.room_waiters.get() != 0
    }

    /// Queues the running `task` for submission room (room rule 2: once, however many
    /// of its suspension points ask); if it suspends now it reports `SqSlot`.
    pub(crate) fn wait_for_submit(&self, task: NonNull<Header>) {
        let header = hdr(task);
        header.reason.set(crate::task::state::SuspendReason::SqSlot);
        let flags = header.flags.get();
        header.flags.set(flags | flag::ASKED_ROOM | flag::QUEUED_FOR_ROOM);
        if flags & flag::QUEUED_FOR_ROOM == 0 {
            // SAFETY: room rule 1: not linked in any waiter list; `'static` header.
            unsafe { self.submit_waiters[header.prio.get().io.index()].push_back(task) };
            self.room_waiters.set(self.room_waiters.get() + 1);
        }
    }

    /// Unlinks `task` from the waiters for room if it is linked (room rule 1).
    pub(crate) fn leave_submit_queue(&self, task: NonNull<Header>) {
        let header = hdr(task);
        if header.has_flag(flag::QUEUED_FOR_ROOM) {
            header.clear_flag(flag::QUEUED_FOR_ROOM | flag::ASKED_ROOM);
            // SAFETY: room rule 1: the flag says it is linked in its I/O priority's list
            // (priorities do not change while a task is attached).
            unsafe { self.submit_waiters[header.prio.get().io.index()].remove(task) };
            self.room_waiters.set(self.room_waiters.get() - 1);
        }
    }

    /// Room rule 3, after a poll that returned `Pending` with the task queued or granted.
    #[cold]
    pub(super) fn after_poll_room(&self, task: NonNull<Header>) {
        let header = hdr(task);
        let flags = header.flags.get();
        if flags & flag::QUEUED_FOR_ROOM != 0 && flags & flag::ASKED_ROOM == 0 {
            self.leave_submit_queue(task);
        }
        header.clear_flag(flag::ASKED_ROOM | flag::GRANTED);
    }

    /// Wakes up to `room` waiters, highest I/O priority first, FIFO within a level
    /// (bounded by `room` and the waiters). Room rule 4: each is unlinked first.
    pub(crate) fn grant_submit(&self, room: usize) {
        let mut room = room;
        for list in &self.submit_waiters {
            while room > 0 {
                let Some(task) = list.pop_front() else { break };
                self.room_waiters.set(self.room_waiters.get() - 1);
                let header = hdr(task);
                header.clear_flag(flag::QUEUED_FOR_ROOM | flag::ASKED_ROOM);
                header.set_flag(flag::GRANTED);
                self.wake_local(task);
                room -= 1;
            }
        }
    }
}
