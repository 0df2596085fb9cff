//! Task bodies and the switchers that resume them, chosen per task at run time.
//!
//! A body is stored in its slot's body bytes; the header names a `BodyVTable` made
//! for the body's type. The vtable *is* the context switcher: `resume` runs the body
//! until it next suspends or returns. This file has the stackless switcher (a body
//! that is a `Future`, polled with an allocation-free waker); stackful switchers plug
//! in the same way.
//!
//! Rules (cited as "body rule N"):
//! 1. A body is dropped at most once: whoever drops it clears the header's `body` (the
//!    vtable) *before* the body's `Drop` runs. A `Drop` that panics therefore leaves no
//!    body installed: nothing drops it again or resumes it, and whoever caught the unwind
//!    (`PanicGuard`, the drop guard of `Sched::drop_body`'s callers) completes the task
//!    as `TaskError::Panicked`.

use crate::error::{AttachError, TaskError, TaskResult};
use crate::switch::SwitcherKind;
use crate::sync::Ordering;
use crate::task::header::{BODY_ALIGN, Header, SlotPtr};
use core::future::Future;
use core::pin::Pin;
use core::ptr::NonNull;
use core::task::Poll;

/// What one resume of a body ended with.
pub(crate) enum Step {
    /// It suspended.
    Pending,
    /// It returned: its body has been dropped and the header's vtable cleared (body
    /// rule 1).
    Done(TaskResult),
}

/// How the executor drives one body type.
pub(crate) struct BodyVTable {
    /// Runs the body until it suspends or returns.
    pub(crate) resume: unsafe fn(NonNull<Header>) -> Step,
    /// Drops a body that has not returned (cancellation, executor drop). Returns false if
    /// it cannot be dropped (a fiber that has started: fiber rule 2), having touched
    /// nothing. Called with the header's `body` already cleared (body rule 1).
    pub(crate) drop: unsafe fn(NonNull<Header>) -> bool,
    pub(crate) kind: SwitcherKind,
    /// `Some` only for a started fiber on keel's own switch with nothing to do around
    /// its switches (fiber rule 9): the scheduler switches into it inline
    /// (`fiber::resume_inline`) rather than calling `resume`, and calls this once the
    /// fiber has exited. `resume` stays a whole resume of the same body.
    pub(crate) exited: Option<unsafe fn(NonNull<Header>) -> Step>,
}

/// What a task body may return: `()`, a `u64`, or `Result<u64 or (), TaskError>` (so
/// `?` on a suspension point's `Cancelled` works).
pub trait IntoTaskResult {
    /// The task's result.
    fn into_task_result(self) -> TaskResult;
}

impl IntoTaskResult for () {
    fn into_task_result(self) -> TaskResult {
        Ok(0)
    }
}
impl IntoTaskResult for u64 {
    fn into_task_result(self) -> TaskResult {
        Ok(self)
    }
}
impl IntoTaskResult for TaskResult {
    fn into_task_result(self) -> TaskResult {
        self
    }
}
impl IntoTaskResult for Result<(), TaskError> {
    fn into_task_result(self) -> TaskResult {
        self.map(|()| 0)
    }
}
impl IntoTaskResult for Result<(), crate::error::Cancelled> {
    fn into_task_result(self) -> TaskResult {
        self.map(|()| 0).map_err(Into::into)
    }
}

/// Checks that `body` fits the slot behind `task` and moves it in.
///
/// # Safety
/// The caller owns `task` (header rule 2) and its body bytes hold no live body.
pub(crate) unsafe fn place<B>(task: NonNull<Header>, body: B) -> Result<(), AttachError<B>> {
    let capacity = task.trailer().body_capacity.get();
    if core::mem::size_of::<B>() > capacity {
        return Err(AttachError::BodyTooLarge { body, needed: core::mem::size_of::<B>(), capacity });
    }
    if core::mem::align_of::<B>() > BODY_ALIGN {
        return Err(AttachError::BodyOverAligned { body, align: core::mem::align_of::<B>() });
    }
    // SAFETY: the body storage is `capacity` bytes aligned to BODY_ALIGN, checked above
    // to hold a `B`; it holds no live body (caller).
    unsafe { (task.body_ptr() as *mut B).write(body) };
    Ok(())
}

/// The stackless switcher for future type `F`.
pub(crate) struct FutureBody<F>(core::marker::PhantomData<F>);

impl<F> FutureBody<F>
where
    F: Future,
    F::Output: IntoTaskResult,
{
    pub(crate) const VTABLE: BodyVTable =
        BodyVTable { resume: Self::resume, drop: Self::drop_body, kind: SwitcherKind::Stackless, exited: None };

    unsafe fn resume(task: NonNull<Header>) -> Step {
        // SAFETY: `'static` header.
        let hdr = unsafe { task.as_ref() };
        // Relaxed: the owner wrote the generation on this thread.
        let generation = hdr.generation.load(Ordering::Relaxed);
        // SAFETY: the body bytes hold a live `F` (this vtable was installed with it) that
        // never moves until it is dropped in place (header rule 3): it is pinned.
        let fut = unsafe { Pin::new_unchecked(&mut *(task.body_ptr() as *mut F)) };
        // Rt rule 1: the task's own `Context`, which keel futures recognise by address.
        // SAFETY: we are the owner resuming the task; no poll of its body is on the stack
        // (header rule 3), and the `Context` is used for this poll only.
        let cx = unsafe { crate::task::wake::resume_context(task, generation) };
        let polled = fut.poll(cx);
        match polled {
            Poll::Pending => Step::Pending,
            Poll::Ready(out) => {
                // Body rule 1: taken before its `Drop` runs, so a `Drop` that panics leaves
                // no body installed for the unwind (`PanicGuard`) to drop again.
                hdr.body.set(None);
                // SAFETY: the future has returned; drop it where it lies, once (its vtable
                // is no longer installed, so nothing else drops it).
                let _ = unsafe { Self::drop_body(task) };
                Step::Done(out.into_task_result())
            }
        }
    }

    unsafe fn drop_body(task: NonNull<Header>) -> bool {
        // SAFETY: the body bytes hold a live `F` (caller of the vtable), dropped once.
        unsafe { core::ptr::drop_in_place(task.body_ptr() as *mut F) };
        true
    }
}
