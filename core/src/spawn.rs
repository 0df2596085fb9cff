//! Spawning from inside a task, for futures: [`spawn`], [`spawn_fiber`] and
//! [`TaskCx::spawn`]; fibers call [`Fiber::spawn`]. The rules ("spawn rule N") and an
//! example are in `exec/spawn.rs`, re-exported here.
//!
//! ```
//! use core::pin::pin;
//! use keel_core::{Config, Executor, TaskAttrs, TaskError, TaskSlot, join, sim::SimDriver, spawn};
//! static PARENT: TaskSlot = TaskSlot::new();
//! static CHILD: TaskSlot = TaskSlot::new();
//! let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
//! let ex = ex.into_ref();
//! let parent = ex.attach(PARENT.create(TaskAttrs::default()).unwrap(), async {
//!     let slot = CHILD.create(TaskAttrs::default()).unwrap();
//!     let child = spawn::spawn(slot, async { 20u64 }).await.map_err(|_| TaskError::Failed(1))?;
//!     let got = join::join(child).await.expect("joined")?;
//!     Ok::<u64, TaskError>(got + 1)
//! }).unwrap();
//! while ex.attached() > 0 { ex.run(8, None).unwrap(); }
//! assert_eq!(ex.result(parent), Ok(Some(Ok(21))));
//! ```

pub use crate::exec::SpawnError;

use crate::cx::TaskCx;
use crate::fiber::{Fiber, FiberAttrs};
use crate::task::TaskHandle;
use crate::task::body::{FutureBody, IntoTaskResult};
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

impl TaskCx<'_> {
    /// Attaches `body` as the next run of `task` on the running task's executor (spawn
    /// rules): the child runs after the caller suspends, by its priority. Returns the
    /// child run's handle (to `join`, cancel or wake it).
    #[inline]
    pub fn spawn<F>(self, task: TaskHandle, body: F) -> Result<TaskHandle, SpawnError<F>>
    where
        F: Future + 'static,
        F::Output: IntoTaskResult,
    {
        self.sched().spawn(task, body, &FutureBody::<F>::VTABLE)
    }

    /// [`TaskCx::spawn`] of a fiber (a stack from the executor's pool).
    pub fn spawn_fiber<F, R>(self, task: TaskHandle, attrs: FiberAttrs, body: F) -> Result<TaskHandle, SpawnError<F>>
    where
        F: FnOnce(&mut Fiber) -> R + 'static,
        R: IntoTaskResult,
    {
        self.sched().spawn_fiber::<crate::arch::AsmSwitch, F, R>(task, attrs, body)
    }
}

/// Attaches the future `body` as the next run of `task` on the executor of the task
/// that awaits this (spawn rules), and returns the child run's handle. Ready at its first
/// poll; polled again, it returns the same handle (or `Spent` after an error).
pub fn spawn<F>(task: TaskHandle, body: F) -> Spawn<F>
where
    F: Future + 'static,
    F::Output: IntoTaskResult,
{
    Spawn { task, state: State::Body(body) }
}

/// [`spawn`] of a fiber: `body` runs on a stack from the executor's pool.
pub fn spawn_fiber<F, R>(task: TaskHandle, attrs: FiberAttrs, body: F) -> SpawnFiber<F>
where
    F: FnOnce(&mut Fiber) -> R + 'static,
    R: IntoTaskResult,
{
    SpawnFiber { task, attrs, state: State::Body(body) }
}

/// What a spawn future holds: the body until its poll, then the outcome's memo.
enum State<B> {
    Body(B),
    Spawned(TaskHandle),
    Spent,
}

impl<B> State<B> {
    /// One poll: `attach` the body if it is still here, else the memo.
    fn poll_with(
        &mut self,
        cx: &Context<'_>,
        attach: impl FnOnce(TaskCx<'_>, B) -> Result<TaskHandle, SpawnError<B>>,
    ) -> Result<TaskHandle, SpawnError<B>> {
        match core::mem::replace(self, State::Spent) {
            State::Body(body) => {
                let out = match TaskCx::of(cx) {
                    Some(tcx) => attach(tcx, body),
                    None => Err(SpawnError::NotInTask(body)),
                };
                if let Ok(run) = out {
                    *self = State::Spawned(run);
                }
                out
            }
            State::Spawned(run) => {
                *self = State::Spawned(run);
                Ok(run)
            }
            State::Spent => Err(SpawnError::Spent),
        }
    }
}

/// The future [`spawn`] returns. It never pins the body (it moves it into the task's
/// slot), so it is `Unpin`, and `Send` when the body is.
pub struct Spawn<F> {
    task: TaskHandle,
    state: State<F>,
}

impl<F> Unpin for Spawn<F> {}

impl<F> core::fmt::Debug for Spawn<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Spawn").field("task", &self.task).finish_non_exhaustive()
    }
}

impl<F> Future for Spawn<F>
where
    F: Future + 'static,
    F::Output: IntoTaskResult,
{
    type Output = Result<TaskHandle, SpawnError<F>>;
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let task = this.task;
        Poll::Ready(this.state.poll_with(cx, |tcx, body| tcx.spawn(task, body)))
    }
}

/// The future [`spawn_fiber`] returns (`Unpin`; `Send` when the body is).
pub struct SpawnFiber<F> {
    task: TaskHandle,
    attrs: FiberAttrs,
    state: State<F>,
}

impl<F> Unpin for SpawnFiber<F> {}

impl<F> core::fmt::Debug for SpawnFiber<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SpawnFiber").field("task", &self.task).finish_non_exhaustive()
    }
}

impl<F, R> Future for SpawnFiber<F>
where
    F: FnOnce(&mut Fiber) -> R + 'static,
    R: IntoTaskResult,
{
    type Output = Result<TaskHandle, SpawnError<F>>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let (task, attrs) = (this.task, this.attrs);
        Poll::Ready(this.state.poll_with(cx, |tcx, body| tcx.spawn_fiber(task, attrs, body)))
    }
}
