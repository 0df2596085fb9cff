//! NT-style i/o status blocks: the caller supplies a pinned `IoStatus` for
//! each operation it initiates; initiating links it on the task's *initiated* list; its
//! completion moves it to the task's *completed* list with `Result<u32, Errno>`; the
//! task takes completed ones with `suspend_until_completed_io(max)`.
//!
//! Rules (cited as "io_status rule N"):
//! 1. A status is Idle, InFlight (on `initiated`), Completed (on `completed`, result
//!    set) or Reaped (result set, on no list). Only the owning executor's thread
//!    touches it (plain `Cell`s).
//! 2. A status on either list is pinned and alive: `Drop` unlinks it first.
//! 3. The driver's token for an in-flight operation is the status block's address (an
//!    even number: statuses are 8-aligned). `user_data` finds the status with no
//!    lookup.
//! 4. A status dropped while in flight is orphaned: its token is retargeted to its
//!    task's header address with bit 0 set, the operation is cancelled (both held back
//!    while the driver is lent, and applied before any reap: driver rule 3,
//!    exec/lend.rs), and the task counts it in `orphans` until its completion is
//!    reaped. The task cannot complete
//!    (it drains) and its storage is not reused until then, so no completion ever
//!    reaches memory that was handed back.
//! 5. An operation submitted with a wake token (`try_submit`, `Fiber::try_submit`) is the
//!    driver's, not the run's: it is on no list and not counted in the task's i/o in
//!    flight, so it never holds a run in Draining (a body that returns, or is dropped,
//!    while the value that owns such an operation lives on elsewhere completes at once).
//!    The driver keeps what the operation names until its completion; the token carries
//!    the run's generation and a completion for a run that has ended wakes nothing
//!    (`complete_io`), the task's next run included. A driver crate's value polled in
//!    another task (or a later run) re-points the token at the polling task itself
//!    (keel-linux: wake-token rule 3 in its `ring` module).

pub(crate) mod block;

pub use crate::error::SubmitRefused;
use block::IoState;
pub(crate) use block::take_completed;
pub use block::{Completion, IoStatus, NextIo};

use crate::cx::{TaskCx, current_header};
use crate::driver::{Driver, DriverMut, IoToken, OpId};
use crate::error::{Cancelled, DriverError, InitiateError};
use crate::exec::sched::Sched;
use crate::task::header::{Header, SlotPtr, flag};
use crate::task::state::SuspendReason;
use core::future::Future;
use core::pin::Pin;
use core::ptr::NonNull;
use core::task::{Context, Poll};

impl Drop for IoStatus {
    /// Inline: the usual drop (a completed or idle status) is a list removal or nothing;
    /// an in-flight one goes out of line (`orphan`).
    #[inline(always)]
    fn drop(&mut self) {
        let Some(task) = self.task.get() else { return };
        let this = NonNull::from(&*self);
        match self.state.get() {
            IoState::InFlight => self.orphan(task, this),
            // SAFETY: completed means on `completed` (rule 1).
            IoState::Completed => unsafe { task.trailer().completed.remove(this) },
            IoState::Idle | IoState::Reaped => {}
        }
    }
}

impl IoStatus {
    /// Drops in-flight status `this` of `task` (rule 4).
    #[inline(never)]
    fn orphan(&self, task: NonNull<Header>, this: NonNull<IoStatus>) {
        // SAFETY: in flight means on `initiated` (rule 1).
        unsafe { task.trailer().initiated.remove(this) };
        task.trailer().orphans.set(task.trailer().orphans.get() + 1);
        let sched = Sched::of_task(task).expect("keel bug: in-flight i/o on an unowned task");
        // Rule 4: from now on the completion names the task, not this memory.
        sched.driver_retarget(self.op.get(), IoToken { addr: task.as_ptr() as usize | IoToken::ORPHAN, generation: 0 });
        sched.driver_cancel(self.op.get());
    }
}

/// Initiates `op` on the current task's executor, linking `status` (a future: await it).
///
/// `D` is the executor's driver type; a different one gives `WrongDriver`.
pub fn initiate<D: Driver>(status: Pin<&IoStatus>, op: D::Op) -> Initiate<'_, D> {
    Initiate { status, op: Some(op) }
}

/// The future `initiate` returns; ready on its first poll.
pub struct Initiate<'a, D: Driver> {
    status: Pin<&'a IoStatus>,
    op: Option<D::Op>,
}

impl<D: Driver> Unpin for Initiate<'_, D> {}

impl<D: Driver> Future for Initiate<'_, D> {
    type Output = Result<(), InitiateError<D::Op>>;
    /// Ready once submitted or refused; while there is no room to submit (`EBUSY`), the
    /// task waits in I/O-priority order and retries when the executor grants it room.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let op = self.op.take().expect("Initiate polled after it completed");
        let Some(tcx) = TaskCx::of(cx) else { return Poll::Ready(Err(InitiateError::NotInTask(op))) };
        let (sched, task) = (tcx.sched(), tcx.header());
        match sched.initiate::<D>(self.status, task, op) {
            Err(InitiateError::Refused(op, crate::Errno::EBUSY)) => {
                self.op = Some(op);
                sched.wait_for_submit(task);
                Poll::Pending
            }
            other => Poll::Ready(other),
        }
    }
}

/// Suspends the current task until at least one of its operations has completed, then
/// takes up to `max` completed status blocks off its completed list (their `result()`
/// is set) and returns how many it took. Returns `Ok(0)` at once when nothing is in
/// flight and nothing is completed. A `max` of 0 is taken as 1: taking none would
/// answer `Ok(0)`, which means "nothing in flight", while a completion waits.
pub fn suspend_until_completed_io(max: usize) -> CompletedIo {
    CompletedIo { max: max.max(1) }
}

/// The future `suspend_until_completed_io` returns.
#[derive(Debug)]
pub struct CompletedIo {
    max: usize,
}

impl Future for CompletedIo {
    type Output = Result<usize, Cancelled>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(task) = current_header(cx) else { return Poll::Ready(Ok(0)) };
        // SAFETY: `'static` header of the running task.
        let header = unsafe { task.as_ref() };
        if header.has_flag(flag::CANCEL) {
            return Poll::Ready(Err(Cancelled));
        }
        let trailer = task.trailer();
        if trailer.completed.is_empty() {
            if trailer.initiated.is_empty() {
                return Poll::Ready(Ok(0));
            }
            header.reason.set(SuspendReason::Io);
            return Poll::Pending;
        }
        Poll::Ready(Ok(take_completed(trailer, self.max)))
    }
}

/// Suspends the current task until one of its status blocks completes, or `timeout`
/// passes (`None`: no limit), and takes that one off its completed list (the future
/// form of `Fiber::next_completed_io`). `NextIo::Idle` at once if nothing is in flight
/// and nothing completed, or outside a keel task (rt rule 2).
pub fn next_completed_io(timeout: Option<core::time::Duration>) -> NextCompletedIo {
    NextCompletedIo { timeout, deadline: None }
}

/// The future `next_completed_io` returns. It never disarms the task's timer (one per
/// task, shared with `sleep` and other timed futures of the same task, which a disarm
/// would strand when joined or selected with this one): once it is ready or dropped, its
/// deadline may still wake the task once, spuriously, which a future tolerates.
#[derive(Debug)]
pub struct NextCompletedIo {
    timeout: Option<core::time::Duration>,
    deadline: Option<crate::clock::Instant>,
}

impl Future for NextCompletedIo {
    type Output = Result<NextIo, Cancelled>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(tcx) = TaskCx::of(cx) else { return Poll::Ready(Ok(NextIo::Idle)) };
        let (sched, task) = (tcx.sched(), tcx.header());
        // SAFETY: `'static` header of the running task.
        let header = unsafe { task.as_ref() };
        if header.has_flag(flag::CANCEL) {
            return Poll::Ready(Err(Cancelled));
        }
        let trailer = task.trailer();
        let found = if let Some(done) = block::take_one_completed(trailer) {
            NextIo::Completed(done)
        } else if trailer.initiated.is_empty() {
            NextIo::Idle
        } else {
            let deadline = match (self.deadline, self.timeout) {
                (Some(d), _) => Some(d),
                (None, Some(t)) => Some(*self.deadline.insert(sched.now().saturating_add(t))),
                (None, None) => None,
            };
            match deadline {
                Some(d) if sched.now() >= d => NextIo::TimedOut,
                _ => {
                    if let Some(d) = deadline {
                        sched.arm(task, d);
                    }
                    header.reason.set(SuspendReason::Io);
                    return Poll::Pending;
                }
            }
        };
        Poll::Ready(Ok(found))
    }
}

/// Why `try_submit` did not submit. The operation comes back either way.
#[derive(Debug)]
pub enum NotSubmitted<Op> {
    /// No room now: the task is queued for room (by I/O priority) and will be woken; return
    /// `Pending` and try again when polled.
    Wait(Op),
    /// The operation cannot be submitted (not in a task, wrong driver, cancelled, or the
    /// driver refused it).
    Failed(Op, crate::Errno),
}

/// Submits `op` for the running task with a wake token (the driver keeps the result for
/// the caller to take), queueing for room as `initiate` does. Same-thread, no allocation.
pub fn try_submit<D: Driver>(cx: &Context<'_>, op: D::Op) -> Result<OpId, NotSubmitted<D::Op>> {
    match TaskCx::of(cx) {
        Some(tcx) => tcx.try_submit::<D>(op, true),
        None => Err(NotSubmitted::Failed(op, crate::Errno::EPERM)),
    }
}

/// As [`try_submit`], but never waits: with no room now it fails with `EBUSY` (the task is
/// not queued).
pub fn try_submit_now<D: Driver>(cx: &Context<'_>, op: D::Op) -> Result<OpId, NotSubmitted<D::Op>> {
    match TaskCx::of(cx) {
        Some(tcx) => tcx.try_submit::<D>(op, false),
        None => Err(NotSubmitted::Failed(op, crate::Errno::EPERM)),
    }
}

/// [`try_submit`] (`wait`) or [`try_submit_now`] from where the operation lies: taken
/// (left `None`) when submitted, left in place when refused. The driver copies it once,
/// straight into its queue (for an operation kept in a future's state, no move through
/// the stack first).
pub fn try_submit_from<D: Driver>(cx: &Context<'_>, op: &mut Option<D::Op>, wait: bool) -> Result<OpId, SubmitRefused> {
    let Some(tcx) = TaskCx::of(cx) else { return Err(SubmitRefused::Failed(crate::Errno::EPERM)) };
    tcx.try_submit_from::<D>(op, wait)
}

/// Lends the running task's driver to `f` if it is a `D` (for operations whose state the
/// driver keeps: taking a result, abandoning an operation), as a [`DriverMut`] (driver
/// rules 1-2, exec/lend.rs). `None` outside a keel task, for another driver type, or
/// while the driver is lent already; [`try_with_driver`] says which.
pub fn with_driver<D: Driver, R>(cx: &Context<'_>, f: impl FnOnce(&mut DriverMut<'_, D>) -> R) -> Option<R> {
    try_with_driver(cx, f).ok()
}

/// [`with_driver`] with the reason it could not lend the driver.
pub fn try_with_driver<D: Driver, R>(
    cx: &Context<'_>,
    f: impl FnOnce(&mut DriverMut<'_, D>) -> R,
) -> Result<R, DriverError> {
    TaskCx::of(cx).ok_or(DriverError::NotInTask)?.try_with_driver(f)
}

/// The driver of the running task as a raw pointer, for code that must reach it later
/// from `Drop` on the executor's thread (an owned-buffer future abandoning its operation).
/// Valid while the executor lives; dereference it only on the executor's thread, for one
/// call that runs no user code, and never while the driver is lent (driver rule 1: from
/// a `Drop` that may run inside a `with_driver` closure, that is a second reference;
/// [`driver_handle`] gives such a `Drop` a call that is held back instead).
pub fn driver_ptr<D: Driver>(cx: &Context<'_>) -> Option<*mut D> {
    TaskCx::of(cx)?.driver_ptr::<D>()
}

/// The running task's driver, for a value that must reach it later from `Drop` (a
/// driver-kept operation abandoning itself): [`DriverPtr::call_or_defer`] runs the call
/// now, or holds it back while the driver is lent to a `with_driver` closure (driver rule
/// 3, exec/lend.rs), so a drop inside such a closure never forms a second reference.
/// `None` outside a keel task or for another driver type.
pub fn driver_handle<D: Driver>(cx: &Context<'_>) -> Option<DriverPtr<D>> {
    TaskCx::of(cx)?.driver_handle::<D>()
}

/// See [`driver_handle`].
pub struct DriverPtr<D> {
    sched: NonNull<Sched>,
    driver: *mut D,
}

impl<D> DriverPtr<D> {
    pub(crate) fn new(sched: &Sched, driver: *mut D) -> Self {
        DriverPtr { sched: NonNull::from(sched), driver }
    }
}

impl<D> Clone for DriverPtr<D> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<D> Copy for DriverPtr<D> {}

impl<D> core::fmt::Debug for DriverPtr<D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("DriverPtr")
    }
}

impl<D: Driver> DriverPtr<D> {
    /// The driver's address (for comparisons; dereferencing it is [`driver_ptr`]'s
    /// contract).
    pub fn as_ptr(self) -> *mut D {
        self.driver
    }

    /// Runs `f(driver, id)` now, or, while the driver is lent, after the closure it is
    /// lent to returns (before any completion is reaped); in order with the executor's
    /// own held-back cancels. `f` keeps [`DriverMut::get_mut`]'s contract (a driver
    /// crate's own state, or a cancel of an operation it keeps itself).
    ///
    /// # Safety
    /// The executor this came from is alive and this runs on its thread.
    pub unsafe fn call_or_defer(self, f: fn(&mut D, OpId), id: OpId) {
        unsafe fn tramp<D>(driver: *mut (), f: *const (), id: OpId) {
            // SAFETY: `f` was a `fn(&mut D, OpId)` (`call_or_defer`), and `driver` this
            // executor's driver, unlent (sched rule 3).
            unsafe {
                let f: fn(&mut D, OpId) = core::mem::transmute::<*const (), fn(&mut D, OpId)>(f);
                f(&mut *(driver as *mut D), id)
            }
        }
        // SAFETY: the caller keeps the executor alive; on its thread.
        let sched = unsafe { self.sched.as_ref() };
        sched.driver_call(tramp::<D>, f as *const (), id);
    }
}

/// Marks the running task as waiting for i/o (for its state and statistics) before it
/// returns `Pending`.
pub fn waiting_for_io(cx: &Context<'_>) {
    if let Some(task) = current_header(cx) {
        // SAFETY: `'static` header of the running task.
        unsafe { task.as_ref() }.reason.set(SuspendReason::Io);
    }
}

// Rule 1: a status never crosses threads (see `IoStatus`).
#[cfg(not(keel_loom))]
static_assertions::assert_not_impl_any!(IoStatus: Send, Sync);
