//! The running task's context, resolved once per poll: [`TaskCx`].
//!
//! Every task-side call of keel asks first "which task is polling me, on which
//! executor?", and the answer comes from the `Context` (rt rules 1-2: the task's own
//! resume `Context`, which only its owner's thread can hold). A future that makes several
//! such calls in one poll (submit, then lend the driver, then mark itself waiting) resolves
//! the `Context` once with [`TaskCx::of`] and calls the methods here; the free functions
//! of `rt` and `io_status` resolve it per call and are these methods underneath.
//!
//! A `TaskCx` borrows the `Context` it came from, so it cannot outlive the poll, and it
//! is neither `Send` nor `Sync`.

use crate::clock::Instant;
use crate::driver::{Driver, DriverMut, OpId};
use crate::error::{DriverError, SubmitRefused};
use crate::exec::sched::Sched;
use crate::io_status::{DriverPtr, NotSubmitted};
use crate::priority::Priorities;
use crate::sync::Ordering;
use crate::task::TaskHandle;
use crate::task::header::{Header, flag};
use crate::task::state::SuspendReason;
use crate::task::wake::{is_resume_cx, task_of};
use core::marker::PhantomData;
use core::ptr::NonNull;
use core::task::Context;

/// The task being resumed and its executor, for the length of one poll.
///
/// It borrows the poll's `Context`, so it cannot be kept past the poll:
///
/// ```compile_fail
/// fn keep(cx: &core::task::Context<'_>) -> Option<keel_core::TaskCx<'static>> {
///     keel_core::TaskCx::of(cx)
/// }
/// ```
///
/// and it stays on the executor's thread:
///
/// ```compile_fail
/// fn send<T: Send>(_: T) {}
/// fn give_away(cx: &core::task::Context<'_>) {
///     if let Some(t) = keel_core::TaskCx::of(cx) {
///         send(t);
///     }
/// }
/// ```
#[derive(Copy, Clone)]
pub struct TaskCx<'a> {
    sched: &'a Sched,
    header: NonNull<Header>,
    /// Borrowed from the poll's `Context`; not `Send`/`Sync` (the executor is same-thread).
    _poll: PhantomData<&'a Context<'a>>,
}

impl core::fmt::Debug for TaskCx<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TaskCx").field("task", &self.task()).finish()
    }
}

/// The header of the task being resumed, if `cx` is the `Context` keel made for that
/// resume (rt rule 1); `None` otherwise (rt rule 2). For what needs only the task.
#[inline(always)]
pub(crate) fn current_header(cx: &Context<'_>) -> Option<NonNull<Header>> {
    let task = task_of(cx.waker())?;
    is_resume_cx(task, cx).then_some(task)
}

impl<'a> TaskCx<'a> {
    /// The running task, if `cx` is the `Context` keel made for its resume (rt rule 1);
    /// `None` outside a keel task or on another thread (rt rule 2).
    #[inline(always)]
    pub fn of(cx: &'a Context<'_>) -> Option<Self> {
        let header = current_header(cx)?;
        // Rt rule 1: we are on the owner's thread, inside its resume of `header`.
        Some(TaskCx { sched: Sched::of_task(header)?, header, _poll: PhantomData })
    }

    #[inline(always)]
    pub(crate) fn sched(self) -> &'a Sched {
        self.sched
    }

    #[inline(always)]
    pub(crate) fn header(self) -> NonNull<Header> {
        self.header
    }

    #[inline(always)]
    fn hdr(self) -> &'a Header {
        // SAFETY: `'static` header of the running task, read on its owner's thread.
        unsafe { self.header.as_ref() }
    }

    /// A handle to the running task's current run.
    pub fn task(self) -> TaskHandle {
        // Relaxed: owner-written, read on the owner's thread.
        TaskHandle::from_parts(self.header, self.hdr().generation.load(Ordering::Relaxed))
    }

    /// Whether the running task has been cancelled.
    #[inline(always)]
    pub fn is_cancelled(self) -> bool {
        self.hdr().has_flag(flag::CANCEL)
    }

    /// The running task's priorities.
    pub fn priorities(self) -> Priorities {
        self.hdr().prio.get()
    }

    /// The executor's clock.
    pub fn now(self) -> Instant {
        self.sched.now()
    }

    /// Marks the running task as waiting for i/o (for its state and statistics) before it
    /// returns `Pending`.
    #[inline(always)]
    pub fn waiting_for_io(self) {
        self.hdr().reason.set(SuspendReason::Io);
    }

    /// Lends the executor's driver to `f` if it is a `D` (driver rules 1-2, exec/lend.rs);
    /// the error says why not.
    pub fn try_with_driver<D: Driver, R>(self, f: impl FnOnce(&mut DriverMut<'_, D>) -> R) -> Result<R, DriverError> {
        let driver = self.sched.driver_as::<D>().ok_or(DriverError::WrongDriver)?;
        let _lent = self.sched.lend().map_err(|_| DriverError::Busy)?;
        // SAFETY: driver rule 1: lent (the flag set) until `_lent` drops, after `f`.
        let mut driver_mut = unsafe { DriverMut::lend(driver) };
        Ok(f(&mut driver_mut))
    }

    /// [`TaskCx::try_with_driver`], `None` for any reason it could not lend.
    #[inline]
    pub fn with_driver<D: Driver, R>(self, f: impl FnOnce(&mut DriverMut<'_, D>) -> R) -> Option<R> {
        self.try_with_driver(f).ok()
    }

    /// Submits the operation in `op` with a wake token (`io_status::try_submit_from`):
    /// taken when submitted, left in place when refused; with `wait`, a task with no room
    /// is queued for it (room rules).
    #[inline]
    pub fn try_submit_from<D: Driver>(self, op: &mut Option<D::Op>, wait: bool) -> Result<OpId, SubmitRefused> {
        self.sched.submit_with_wake_token::<D>(self.header, op, wait)
    }

    /// Submits `op` with a wake token (`io_status::try_submit`, `try_submit_now`).
    pub fn try_submit<D: Driver>(self, op: D::Op, wait: bool) -> Result<OpId, NotSubmitted<D::Op>> {
        let mut op = Some(op);
        let submitted = self.try_submit_from::<D>(&mut op, wait);
        let mut back = || op.take().expect("refused operations stay in place");
        match submitted {
            Ok(id) => Ok(id),
            Err(SubmitRefused::Wait) => Err(NotSubmitted::Wait(back())),
            Err(SubmitRefused::Failed(errno)) => Err(NotSubmitted::Failed(back(), errno)),
        }
    }

    /// The executor's driver as a raw pointer, if it is a `D` (`io_status::driver_ptr`'s
    /// contract).
    pub fn driver_ptr<D: Driver>(self) -> Option<*mut D> {
        self.sched.driver_as::<D>()
    }

    /// The executor's driver for a value's later `Drop` (`io_status::driver_handle`).
    pub fn driver_handle<D: Driver>(self) -> Option<DriverPtr<D>> {
        Some(DriverPtr::new(self.sched, self.sched.driver_as::<D>()?))
    }
}

static_assertions::assert_not_impl_any!(TaskCx<'static>: Send, Sync);
