//! Cancelling: `Executor::cancel`, `destroy` and `release`, and the scheduler's side:
//! waking a cancelled task, cancelling its i/o, dropping a body that has not returned,
//! leaking one that cannot be dropped (teardown rule 3).

use crate::acct::Accounting;
use crate::driver::Driver;
use crate::error::{CancelError, DestroyError, TaskError};
use crate::exec::Executor;
use crate::exec::executor::NotOwned;
use crate::exec::sched::{Sched, hdr};
use crate::stack::StackProvider;
use crate::sync::Ordering;
use crate::task::TaskHandle;
use crate::task::header::{Header, SlotPtr, flag};
use crate::task::state::{SuspendReason, TaskEvent, TaskEvent as E, TaskState, TaskState as S};
use core::pin::Pin;
use core::ptr::NonNull;

/// What `cancel` did.
///
/// A task whose body has been polled (or a fiber that has run) is never dropped by
/// `cancel`: it is resumed, and every keel suspension point it reaches returns
/// `Cancelled`, while an operation that completed before the cancel reached it still
/// reports its completion (the bytes read, the descriptor accepted): the task decides
/// what to do with it. Only a task that never ran is removed at once.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was attached and had not started: removed, and it completed as cancelled
    /// without its body ever running.
    Completed,
    /// It was ready (woken, or yielding) or suspended: it resumes (ready: where it is in
    /// the run queue; suspended: now) and its suspension points return `Cancelled`.
    Resumes,
    /// It was suspended on i/o: that i/o is being cancelled; it resumes once it completes.
    CancellingIo,
    /// It is running: its next suspension point returns `Cancelled`.
    AtNextSuspension,
    /// A cancel was already under way.
    AlreadyCancelling,
}

impl<D: Driver, S: StackProvider, A: Accounting> Executor<D, S, A> {
    /// Cancels run `task`, whatever its state (see [`CancelOutcome`]).
    ///
    /// # Panics
    /// If a queued body's `Drop` panics, the task completes as
    /// `TaskError::Panicked` (its body dropped once, its slot reusable), then the panic
    /// propagates out of `cancel`, as a body's panic does out of `run`. The executor stays
    /// usable.
    pub fn cancel(self: Pin<&Self>, task: TaskHandle) -> Result<CancelOutcome, CancelError> {
        let header = self.owned_header(task).map_err(|not_owned| match not_owned {
            NotOwned::Elsewhere => CancelError::OwnedElsewhere,
            NotOwned::Unowned => CancelError::NotAttached,
            NotOwned::Stale => CancelError::Stale,
        })?;
        let sched = self.sched();
        let task_ptr = task.header();
        use SuspendReason as R;
        Ok(match header.state.get() {
            TaskState::Idle => return Err(CancelError::NotAttached),
            TaskState::Draining | TaskState::Completed => return Err(CancelError::TooLate),
            TaskState::Ready => {
                // Started (a task leaves `Attached` only by running): a future or a fiber.
                // Its body may hold what a completion already delivered (a woken owned-
                // buffer operation, an accepted descriptor), which a drop would lose: a
                // cancel reports a completion it lost the race to. It stays queued and its next poll sees `Cancelled`
                // at keel's suspension points (fiber rule 2 for fibers, the same for
                // futures), while its operations report their own completions.
                header.set_flag(flag::CANCEL);
                CancelOutcome::Resumes
            }
            TaskState::Attached => {
                // Never polled: nothing of its body has run, so nothing can be lost; it
                // is in the run queue. A body `Drop` that panics completes the task as
                // `Panicked`, and the panic goes on out of `cancel` (body rule 1).
                sched.cancel_queued(task_ptr, true);
                CancelOutcome::Completed
            }
            TaskState::Suspended(R::Timer | R::Wait | R::SqSlot) => {
                header.set_flag(flag::CANCEL);
                sched.wake_cancelled(task_ptr, TaskEvent::CancelSuspended);
                CancelOutcome::Resumes
            }
            TaskState::Suspended(R::Io) => {
                header.set_flag(flag::CANCEL);
                sched.cancel_io(task_ptr);
                CancelOutcome::CancellingIo
            }
            TaskState::Running => {
                header.set_flag(flag::CANCEL);
                CancelOutcome::AtNextSuspension
            }
            TaskState::Cancelling => CancelOutcome::AlreadyCancelling,
        })
    }

    /// Destroys the task: every handle to it becomes stale and its slot can be created
    /// again. Fails while it is attached. The slot must belong to this executor or to none.
    pub fn destroy(self: Pin<&Self>, task: TaskHandle) -> Result<(), DestroyError> {
        let sched = self.sched();
        let task_ptr = task.header();
        let header = match self.owned_header(task) {
            Ok(header) => header,
            Err(NotOwned::Stale) => return Err(DestroyError::Stale),
            Err(NotOwned::Elsewhere) => return Err(DestroyError::OwnedElsewhere),
            Err(NotOwned::Unowned) => {
                sched.claim(task).map_err(|claim| match claim {
                    crate::exec::attach::Claim::Stale => DestroyError::Stale,
                    crate::exec::attach::Claim::Raced => DestroyError::OwnedElsewhere,
                })?;
                // SAFETY: `'static` slot.
                unsafe { &*task_ptr.as_ptr() }
            }
        };
        if header.state.get().is_attached() {
            return Err(DestroyError::Attached);
        }
        // Relaxed: owner-written. Bump first so every handle is stale before the slot frees.
        let current = header.generation.load(Ordering::Relaxed);
        // Release: pairs with wakers' Acquire generation check.
        header.generation.store(current.wrapping_add(1), Ordering::Release);
        if !sched.release(task_ptr) {
            // Nothing changed but the generation: put it back, so the handle the error
            // asks the caller to retry with is still this task's (a wake it lets through
            // meanwhile finds the task unattached: a no-op, wake rule 1).
            // Release: as above.
            header.generation.store(current, Ordering::Release);
            return Err(DestroyError::WakeInFlight);
        }
        // Release: pairs with `create`'s Acquire CAS, publishing the released slot.
        task_ptr.trailer().live.store(0, Ordering::Release);
        Ok(())
    }

    /// Gives up a task that is not attached, so another executor can attach it.
    /// Returns the handle to attach it with.
    pub fn release(self: Pin<&Self>, task: TaskHandle) -> Result<TaskHandle, DestroyError> {
        let header = self.owned_header(task).map_err(|not_owned| match not_owned {
            NotOwned::Stale => DestroyError::Stale,
            NotOwned::Elsewhere | NotOwned::Unowned => DestroyError::OwnedElsewhere,
        })?;
        if header.state.get().is_attached() {
            return Err(DestroyError::Attached);
        }
        if !self.sched().release(task.header()) {
            return Err(DestroyError::WakeInFlight);
        }
        Ok(task)
    }
}

impl Sched {
    /// Cancel edge 9: a suspended task resumes with `Cancelled`.
    pub(crate) fn wake_cancelled(&self, task: NonNull<Header>, event: TaskEvent) {
        // SAFETY: `'static` header.
        let header = unsafe { task.as_ref() };
        self.disarm(task);
        // Room rule 5.
        self.leave_submit_queue(task);
        header.state.set(header.state.get().on(event).unwrap_or_else(|err| panic!("keel bug: {err}")));
        // SAFETY: a suspended task is in no run list.
        unsafe { self.ready.push(task) };
    }

    /// Cancel edge 10: cancel the task's i/o; it resumes when a completion arrives.
    pub(crate) fn cancel_io(&self, task: NonNull<Header>) {
        // SAFETY: `'static` header.
        let header = unsafe { task.as_ref() };
        // Room rule 5.
        self.leave_submit_queue(task);
        header.state.set(header.state.get().on(TaskEvent::CancelIo).unwrap_or_else(|err| panic!("keel bug: {err}")));
        let mut cursor = task.trailer().initiated.front();
        while let Some(status) = cursor {
            // SAFETY: linked statuses are alive (io_status rule 2).
            self.driver_cancel(unsafe { status.as_ref() }.op_id());
            // SAFETY: `status` is linked in `initiated`.
            cursor = unsafe { task.trailer().initiated.next_of(status) };
        }
        if task.io_in_flight() == 0 {
            header.state.set(TaskState::Ready);
            // SAFETY: a cancelling task is in no run list.
            unsafe { self.ready.push(task) };
        }
    }

    /// Teardown rule 1, for one owned task: marks it cancelled; drops its body if it can
    /// be dropped (a future, a fiber not started), completing it as cancelled; wakes a
    /// started fiber suspended on anything but i/o (it resumes with `Cancelled`) and
    /// cancels the i/o of one suspended on i/o. Returns whether it was attached and not
    /// yet cancelled before.
    pub(super) fn abandon(&self, task: NonNull<Header>) -> bool {
        // SAFETY: `'static` header.
        let header = unsafe { task.as_ref() };
        let state = header.state.get();
        if !state.is_attached() || matches!(state, TaskState::Running | TaskState::Draining) {
            return false;
        }
        let first = !header.has_flag(flag::CANCEL);
        header.set_flag(flag::CANCEL);
        if Sched::is_started_fiber(header) {
            // Fiber rule 2: it resumes with `Cancelled` from the suspension point it is in.
            match state {
                TaskState::Suspended(SuspendReason::Io) => self.cancel_io(task),
                TaskState::Suspended(_) => self.wake_cancelled(task, TaskEvent::CancelSuspended),
                // Ready: queued; Cancelling: resumes once its i/o completes.
                _ => {}
            }
            return first;
        }
        let queued = match state {
            TaskState::Attached | TaskState::Ready => true,
            TaskState::Suspended(_) => {
                // Room rule 5 (cancel_queued's finish unlinks a ready task).
                self.leave_submit_queue(task);
                self.disarm(task);
                header.state.set(TaskState::Ready);
                false
            }
            // Cancelling: its body waits for i/o to be cancelled; drop it now.
            _ => {
                header.state.set(TaskState::Ready);
                false
            }
        };
        self.cancel_queued(task, queued);
        first
    }

    /// Teardown rule 3: ends the run of the attached `task` without resuming or dropping its
    /// body (a started fiber that ignored `Cancelled`, or a task whose i/o the driver never
    /// completed). Its stack, and everything its frames own, is leaked: never resumed,
    /// reused or freed. Its statuses are detached (marked reaped, on no list; in-flight
    /// ones orphaned, io_status rule 4) so the slot's next run starts with empty lists.
    pub(super) fn leak(&self, task: NonNull<Header>) {
        // SAFETY: `'static` header.
        let header = unsafe { task.as_ref() };
        let draining = header.state.get() == TaskState::Draining;
        match header.state.get() {
            TaskState::Attached | TaskState::Ready => {
                // SAFETY: queued states are in the run queue.
                unsafe { self.ready.remove(task) };
            }
            _ => {}
        }
        // Room rule 5.
        self.leave_submit_queue(task);
        self.disarm(task);
        // Fiber rule 2: the frames stay on the stack, which is never handed back. A
        // finished fiber's stack held for draining (fiber rule 4) is leaked the same way.
        header.body.set(None);
        let _leaked = task.trailer().pending_stack.take();
        self.orphan_all(task);
        if !draining {
            // A body that never returned (a draining one staged its result in `finish`).
            task.trailer().record.stage(crate::task::join::Outcome::Done(Err(crate::error::TaskError::Cancelled)));
        }
        // Join rule 4: a leaked run ends for its joins too.
        self.complete_joiners(task);
        header.state.set(TaskState::Completed);
        self.attached.set(self.attached.get() - 1);
        self.stats.completed.set(self.stats.completed.get() + 1);
        if header.has_flag(flag::DISPATCHED)
            && let Some((dispatcher, _)) = self.dispatcher.get()
        {
            // Dispatch rule 3: its run is over.
            dispatcher.note_completed();
        }
    }

    /// Removes a queued or suspended body without resuming it (cancel, executor drop, a
    /// panicking resume). Returns false, keeping the body, if it cannot be dropped (a
    /// started fiber). The body is taken before its `Drop` runs (body rule 1): if that
    /// `Drop` panics, no body is installed any more, and the caller's [`DropGuard`]
    /// completes the task.
    pub(crate) fn drop_body(&self, task: NonNull<Header>) -> bool {
        let header = hdr(task);
        let Some(vtable) = header.body.get() else { return true };
        header.body.set(None);
        // SAFETY: the body bytes hold the body `vtable` was made for; it is not running, and
        // with its vtable cleared nothing else can drop or resume it.
        if unsafe { (vtable.drop)(task) } {
            return true;
        }
        // Not droppable (fiber rule 2): `drop` touched nothing; put the vtable back.
        header.body.set(Some(vtable));
        false
    }

    /// Whether the task's body is a fiber that has started (fiber rule 2: it cannot be
    /// dropped, only resumed with `Cancelled` until it returns). A fiber starts at its
    /// first resume, which is also when its task leaves `Attached`.
    pub(crate) fn is_started_fiber(header: &Header) -> bool {
        header.state.get() != S::Attached
            && header.body.get().is_some_and(|vtable| vtable.kind != crate::switch::SwitcherKind::Stackless)
    }

    /// Drops the body of the queued `task` (`Attached` or `Ready`, not a started fiber) and
    /// completes it as cancelled (edge 8, or 15 with i/o in flight). `queued`: it is in the
    /// run queue. A body `Drop` that panics completes the task as `Panicked` instead, and
    /// the panic goes on (body rule 1).
    pub(crate) fn cancel_queued(&self, task: NonNull<Header>, queued: bool) {
        if queued {
            // SAFETY: the caller says it is in the run queue.
            unsafe { self.ready.remove(task) };
        }
        let guard = DropGuard { sched: self, task };
        if !self.drop_body(task) {
            panic!("keel bug: a started fiber's body was dropped");
        }
        core::mem::forget(guard);
        self.finish_cancelled(task);
    }

    pub(crate) fn finish_cancelled(&self, task: NonNull<Header>) {
        self.finish(task, E::CancelQueued, Err(TaskError::Cancelled));
    }
}

/// Completes a queued task whose body `Drop` panicked (body rule 1): armed around
/// `drop_body` by cancel and executor drop, with the task out of every queue and in
/// `Attached` or `Ready`. The task completes as `Panicked` (its slot reusable, its i/o
/// drained first as for any cancel); the panic goes on. Costs nothing unless a panic
/// unwinds.
pub(crate) struct DropGuard<'a> {
    pub(crate) sched: &'a Sched,
    pub(crate) task: NonNull<Header>,
}

impl Drop for DropGuard<'_> {
    fn drop(&mut self) {
        self.sched.finish(
            self.task,
            E::CancelQueued,
            Err(TaskError::Panicked("the task body panicked while being dropped")),
        );
    }
}
