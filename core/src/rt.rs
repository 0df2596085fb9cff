//! What a future task can call: suspension points and the current task.
//!
//! Every suspension point returns `Err(Cancelled)` once the task has been cancelled
//! (and then without suspending), so a body that propagates it with `?` winds down.
//!
//! Rules (cited as "rt rule N"):
//! 1. A keel future is inside its task only when polled with the task's own `Context`:
//!    the one that lives in the task's `'static` trailer (`ResumeCx`), which the owner
//!    rewrites (with a waker for the current run) and hands to the body for each poll,
//!    and nowhere else. `current` compares the address of the `Context` it was given
//!    with the trailer's. `Context` is neither `Send` nor `Sync`, and the body gets it
//!    only for the length of one poll, so only the owner's thread, inside a resume of
//!    that task, can hold a reference to it; any other `Context` (on another thread, or
//!    made by hand from the task's waker) lives elsewhere and never compares equal. The
//!    check reads no state at all, of an executor or of the task: a poll on another
//!    thread is harmless whatever the executor is doing, dropped included. One address
//!    compare per poll.
//! 2. Outside its task (the waker in the `Context` is not a keel waker, or the
//!    `Context` is not the one of rule 1: a keel future polled by hand on another
//!    thread with `TaskHandle::waker()`, polled after being moved out of the task, or
//!    polled with a `Context` rebuilt from the task's waker) every keel future and
//!    function behaves as "not in a task", the same on every thread: `yield_now`,
//!    `sleep` and `wait` return `Ok(())` at once, `now`, `current_task` and
//!    `priorities` return `None`, `is_cancelled` `false`; i/o futures return their
//!    typed "not in a task" error (`InitiateError::NotInTask`, `EPERM` where the result
//!    is an errno). None of them touches the executor.
//!
//! These are keel's own-thread paths (wake rule 7): no atomic read-modify-write, no
//! allocation.

use crate::clock::Instant;
use crate::cx::{TaskCx, current_header};
use crate::error::Cancelled;
use crate::sync::Ordering;
use crate::task::TaskHandle;
use crate::task::header::{Header, flag};
use crate::task::state::SuspendReason;
use core::future::Future;
use core::pin::Pin;
use core::ptr::NonNull;
use core::task::{Context, Poll};
use core::time::Duration;

fn cancelled(task: NonNull<Header>) -> bool {
    // SAFETY: `'static` header of the running task.
    unsafe { task.as_ref() }.has_flag(flag::CANCEL)
}

/// Yields: the task goes to the back of its priority's run queue.
pub fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

/// The future `yield_now` returns.
#[derive(Debug)]
pub struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = Result<(), Cancelled>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(task) = current_header(cx) else { return Poll::Ready(Ok(())) };
        if cancelled(task) {
            return Poll::Ready(Err(Cancelled));
        }
        if self.yielded {
            return Poll::Ready(Ok(()));
        }
        self.yielded = true;
        // SAFETY: `'static` header of the running task, on its owner's thread.
        unsafe { task.as_ref() }.set_flag(flag::WOKEN_WHILE_RUNNING);
        Poll::Pending
    }
}

/// Suspends the task for `duration` (`suspend_for`). Huge durations saturate to "never".
pub fn sleep(duration: Duration) -> Sleep {
    Sleep { deadline: None, duration }
}

/// Suspends the task until `deadline` on its executor's clock (`suspend_until`).
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep { deadline: Some(deadline), duration: Duration::ZERO }
}

/// The future `sleep` and `sleep_until` return.
#[derive(Debug)]
pub struct Sleep {
    deadline: Option<Instant>,
    duration: Duration,
}

impl Future for Sleep {
    type Output = Result<(), Cancelled>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(tcx) = TaskCx::of(cx) else { return Poll::Ready(Ok(())) };
        let (sched, task) = (tcx.sched(), tcx.header());
        if cancelled(task) {
            return Poll::Ready(Err(Cancelled));
        }
        let now = sched.now();
        let duration = self.duration;
        let deadline = *self.deadline.get_or_insert_with(|| now.saturating_add(duration));
        if now >= deadline {
            return Poll::Ready(Ok(()));
        }
        sched.arm(task, deadline);
        // SAFETY: `'static` header of the running task.
        unsafe { task.as_ref() }.reason.set(SuspendReason::Timer);
        Poll::Pending
    }
}

/// Suspends the task until something wakes it (its waker, `TaskHandle::wake`, or
/// `Executor::wake`). A wake that came while it was running counts: it returns at once.
pub fn wait() -> Wait {
    Wait { waited: false }
}

/// The future `wait` returns.
#[derive(Debug)]
pub struct Wait {
    waited: bool,
}

impl Future for Wait {
    type Output = Result<(), Cancelled>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(task) = current_header(cx) else { return Poll::Ready(Ok(())) };
        if cancelled(task) {
            return Poll::Ready(Err(Cancelled));
        }
        if self.waited {
            return Poll::Ready(Ok(()));
        }
        self.waited = true;
        // SAFETY: `'static` header of the running task.
        unsafe { task.as_ref() }.reason.set(SuspendReason::Wait);
        Poll::Pending
    }
}

/// The current time on the task's executor clock, `None` outside a keel task.
pub fn now(cx: &Context<'_>) -> Option<Instant> {
    TaskCx::of(cx).map(TaskCx::now)
}

/// A handle to the running task's current run, `None` outside a keel task.
pub fn current_task(cx: &Context<'_>) -> Option<TaskHandle> {
    current_header(cx).map(|task| {
        // SAFETY: `'static` header. Relaxed: owner-written, read on the owner's thread.
        let generation = unsafe { task.as_ref() }.generation.load(Ordering::Relaxed);
        TaskHandle::from_parts(task, generation)
    })
}

/// Whether the running task has been cancelled (`false` outside a keel task). Futures
/// that wait on something keel does not track use it to wind down.
pub fn is_cancelled(cx: &Context<'_>) -> bool {
    current_header(cx).is_some_and(cancelled)
}

/// The running task's priorities, `None` outside a keel task.
pub fn priorities(cx: &Context<'_>) -> Option<crate::Priorities> {
    // SAFETY: `'static` header of the running task.
    current_header(cx).map(|task| unsafe { task.as_ref() }.prio.get())
}

/// `now` as a future, for `async fn` bodies that have no `Context` at hand.
pub fn clock() -> Clock {
    Clock
}

/// The future `clock` returns: ready at once with the executor's time.
#[derive(Debug)]
pub struct Clock;

impl Future for Clock {
    type Output = Option<Instant>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(now(cx))
    }
}
