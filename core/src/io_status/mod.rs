//! NT-style i/o status blocks (seed 000): the caller supplies a pinned `IoStatus` for
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
pub use block::IoStatus;
pub(crate) use block::take_completed;

use crate::driver::{Driver, DriverMut, IoToken, OpId};
use crate::error::{Cancelled, DriverError, InitiateError};
use crate::exec::sched::Sched;
use crate::rt::current;
use crate::task::header::{SlotPtr, flag};
use crate::task::state::SuspendReason;
use core::future::Future;
use core::pin::Pin;
use core::ptr::NonNull;
use core::task::{Context, Poll};

impl Drop for IoStatus {
    fn drop(&mut self) {
        let Some(h) = self.task.get() else { return };
        let me = NonNull::from(&*self);
        match self.state.get() {
            IoState::InFlight => {
                // SAFETY: in flight means on `initiated` (rule 1).
                unsafe { h.trailer().initiated.remove(me) };
                h.trailer().orphans.set(h.trailer().orphans.get() + 1);
                let sched = Sched::of_task(h).expect("keel bug: in-flight i/o on an unowned task");
                // Rule 4: from now on the completion names the task, not this memory.
                sched.driver_retarget(
                    self.op.get(),
                    IoToken { addr: h.as_ptr() as usize | IoToken::ORPHAN, generation: 0 },
                );
                sched.driver_cancel(self.op.get());
            }
            // SAFETY: completed means on `completed` (rule 1).
            IoState::Completed => unsafe { h.trailer().completed.remove(me) },
            IoState::Idle | IoState::Reaped => {}
        }
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
        let Some((sched, h)) = current(cx) else { return Poll::Ready(Err(InitiateError::NotInTask(op))) };
        match sched.initiate::<D>(self.status, h, op) {
            Err(InitiateError::Refused(op, crate::Errno::EBUSY)) => {
                self.op = Some(op);
                sched.wait_for_submit(h);
                Poll::Pending
            }
            other => Poll::Ready(other),
        }
    }
}

/// Suspends the current task until at least one of its operations has completed, then
/// takes up to `max` completed status blocks off its completed list (their `result()`
/// is set) and returns how many it took. Returns `Ok(0)` at once when nothing is in
/// flight and nothing is completed.
pub fn suspend_until_completed_io(max: usize) -> CompletedIo {
    CompletedIo { max }
}

/// The future `suspend_until_completed_io` returns.
#[derive(Debug)]
pub struct CompletedIo {
    max: usize,
}

impl Future for CompletedIo {
    type Output = Result<usize, Cancelled>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some((_, h)) = current(cx) else { return Poll::Ready(Ok(0)) };
        // SAFETY: `'static` header of the running task.
        let t = unsafe { h.as_ref() };
        if t.has_flag(flag::CANCEL) {
            return Poll::Ready(Err(Cancelled));
        }
        let tr = h.trailer();
        if tr.completed.is_empty() {
            if tr.initiated.is_empty() {
                return Poll::Ready(Ok(0));
            }
            t.reason.set(SuspendReason::Io);
            return Poll::Pending;
        }
        Poll::Ready(Ok(take_completed(tr, self.max)))
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
    submit_for_task::<D>(cx, op, true)
}

/// As [`try_submit`], but never waits: with no room now it fails with `EBUSY` (the task is
/// not queued).
pub fn try_submit_now<D: Driver>(cx: &Context<'_>, op: D::Op) -> Result<OpId, NotSubmitted<D::Op>> {
    submit_for_task::<D>(cx, op, false)
}

fn submit_for_task<D: Driver>(cx: &Context<'_>, op: D::Op, wait: bool) -> Result<OpId, NotSubmitted<D::Op>> {
    let mut op = Some(op);
    let r = try_submit_from::<D>(cx, &mut op, wait);
    let mut back = || op.take().expect("refused operations stay in place");
    match r {
        Ok(id) => Ok(id),
        Err(SubmitRefused::Wait) => Err(NotSubmitted::Wait(back())),
        Err(SubmitRefused::Failed(e)) => Err(NotSubmitted::Failed(back(), e)),
    }
}

/// [`try_submit`] (`wait`) or [`try_submit_now`] from where the operation lies: taken
/// (left `None`) when submitted, left in place when refused. The driver copies it once,
/// straight into its queue (for an operation kept in a future's state, no move through
/// the stack first).
pub fn try_submit_from<D: Driver>(cx: &Context<'_>, op: &mut Option<D::Op>, wait: bool) -> Result<OpId, SubmitRefused> {
    let Some((sched, h)) = current(cx) else { return Err(SubmitRefused::Failed(crate::Errno::EPERM)) };
    sched.submit_with_wake_token::<D>(h, op, wait)
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
    let (sched, _) = current(cx).ok_or(DriverError::NotInTask)?;
    let driver = sched.driver_as::<D>().ok_or(DriverError::WrongDriver)?;
    let _lent = sched.lend().map_err(|_| DriverError::Busy)?;
    // SAFETY: driver rule 1: lent (the flag set) until `_lent` drops, after `f`.
    let mut d = unsafe { DriverMut::lend(driver) };
    Ok(f(&mut d))
}

/// The driver of the running task as a raw pointer, for code that must reach it later
/// from `Drop` on the executor's thread (an owned-buffer future abandoning its operation).
/// Valid while the executor lives; dereference it only on the executor's thread, for one
/// call that runs no user code, and never while the driver is lent (driver rule 1: from
/// a `Drop` that may run inside a `with_driver` closure, that is a second reference;
/// [`driver_handle`] gives such a `Drop` a call that is held back instead).
pub fn driver_ptr<D: Driver>(cx: &Context<'_>) -> Option<*mut D> {
    current(cx).and_then(|(s, _)| s.driver_as::<D>())
}

/// The running task's driver, for a value that must reach it later from `Drop` (a
/// driver-kept operation abandoning itself): [`DriverPtr::call_or_defer`] runs the call
/// now, or holds it back while the driver is lent to a `with_driver` closure (driver rule
/// 3, exec/lend.rs), so a drop inside such a closure never forms a second reference.
/// `None` outside a keel task or for another driver type.
pub fn driver_handle<D: Driver>(cx: &Context<'_>) -> Option<DriverPtr<D>> {
    let (sched, _) = current(cx)?;
    let driver = sched.driver_as::<D>()?;
    Some(DriverPtr { sched: NonNull::from(sched), driver })
}

/// See [`driver_handle`].
pub struct DriverPtr<D> {
    sched: NonNull<Sched>,
    driver: *mut D,
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
        unsafe fn tramp<D>(d: *mut (), f: *const (), id: OpId) {
            // SAFETY: `f` was a `fn(&mut D, OpId)` (`call_or_defer`), and `d` this
            // executor's driver, unlent (sched rule 3).
            unsafe {
                let f: fn(&mut D, OpId) = core::mem::transmute::<*const (), fn(&mut D, OpId)>(f);
                f(&mut *(d as *mut D), id)
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
    if let Some((_, h)) = current(cx) {
        // SAFETY: `'static` header of the running task.
        unsafe { h.as_ref() }.reason.set(SuspendReason::Io);
    }
}

// Rule 1: a status never crosses threads (see `IoStatus`).
#[cfg(not(keel_loom))]
static_assertions::assert_not_impl_any!(IoStatus: Send, Sync);
