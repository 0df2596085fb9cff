//! Spawning: a running task attaches another task to its own executor, with no handle
//! to the executor (task bodies are `'static`, so they cannot hold `Pin<&Executor>`).
//!
//! The forms: `spawn::spawn` and `spawn::spawn_fiber` (futures, awaited once in a task
//! body; the example is in `spawn.rs`), `TaskCx::spawn` and `TaskCx::spawn_fiber` (inside
//! a hand-written poll), [`Fiber::spawn`] and [`Fiber::spawn_fiber`] (fibers).
//!
//! Rules (cited as "spawn rule N"):
//! 1. A spawn attaches on the executor that is resuming the calling task, found from the
//!    task's header (rt rule 1: only the owner's thread resumes it): it is
//!    `Executor::attach` made from inside the run loop, and costs what that costs (no
//!    atomic read-modify-write, no allocation, no lock for a task the executor owns; one
//!    CAS to claim an unowned one). The child is queued behind its priority; the caller
//!    runs on until it suspends.
//! 2. Outside a keel task (rt rule 2: a `Context` keel did not make, another thread) a
//!    spawn attaches nothing and hands the body back ([`SpawnError::NotInTask`]).
//! 3. While its executor tears down (`shutdown`, or its drop: teardown rules 1-3) a spawn
//!    attaches nothing and hands the body back ([`SpawnError::TearingDown`]): a task
//!    unwinding through `Cancelled` cannot add work the teardown would have to chase.
//! 4. Every other refusal is `Executor::attach`'s, in [`SpawnError::Attach`], with the
//!    body: the slot attached already (also the caller's own), a stale handle, a task
//!    owned by another executor, a body too large, no stack for a fiber.
//! 5. A spawned task is an ordinary task of the executor: it is cancelled, joined,
//!    released and torn down like one attached from outside, whatever happens to the
//!    task that spawned it (a spawn ties nothing between the two).

use crate::error::AttachError;
use crate::exec::sched::Sched;
use crate::fiber::{Fiber, FiberAttrs};
use crate::switch::FiberSwitch;
use crate::task::TaskHandle;
use crate::task::body::{FutureBody, IntoTaskResult};
use core::future::Future;

/// Why a spawn attached nothing. Every variant but `Spent` hands the body back.
#[derive(PartialEq, Eq)]
#[non_exhaustive]
pub enum SpawnError<B> {
    /// Not called from inside a keel task (spawn rule 2).
    NotInTask(B),
    /// The executor is tearing down (spawn rule 3).
    TearingDown(B),
    /// The executor refused the attach (spawn rule 4).
    Attach(AttachError<B>),
    /// A [`Spawn`](crate::spawn::Spawn) future polled again after it returned an error, which handed the body
    /// back then.
    Spent,
}

impl<B> SpawnError<B> {
    /// The body that was not attached (`None` for `Spent`).
    pub fn into_body(self) -> Option<B> {
        match self {
            SpawnError::NotInTask(b) | SpawnError::TearingDown(b) => Some(b),
            SpawnError::Attach(e) => Some(e.into_body()),
            SpawnError::Spent => None,
        }
    }

    /// The error without its body, and the body (`None` for `Spent`).
    pub fn split(self) -> (SpawnError<()>, Option<B>) {
        match self {
            SpawnError::NotInTask(b) => (SpawnError::NotInTask(()), Some(b)),
            SpawnError::TearingDown(b) => (SpawnError::TearingDown(()), Some(b)),
            SpawnError::Attach(e) => {
                let (e, b) = e.split();
                (SpawnError::Attach(e), Some(b))
            }
            SpawnError::Spent => (SpawnError::Spent, None),
        }
    }
}

/// Names the variant (and an attach error's reason), not the body: bodies are futures
/// and closures, which rarely implement `Debug`.
impl<B> core::fmt::Debug for SpawnError<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SpawnError::NotInTask(_) => f.write_str("NotInTask(..)"),
            SpawnError::TearingDown(_) => f.write_str("TearingDown(..)"),
            SpawnError::Attach(e) => f.debug_tuple("Attach").field(&format_args!("{e}")).finish(),
            SpawnError::Spent => f.write_str("Spent"),
        }
    }
}

impl<B> core::fmt::Display for SpawnError<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SpawnError::NotInTask(_) => {
                f.write_str("spawn called outside a keel task: spawn from a task body, or attach through the executor")
            }
            SpawnError::TearingDown(_) => f.write_str(
                "the executor is tearing down (shutdown or drop): spawn nothing while cancelled, return instead",
            ),
            SpawnError::Attach(e) => e.fmt(f),
            SpawnError::Spent => {
                f.write_str("this spawn returned an error already and handed the body back: create a new spawn")
            }
        }
    }
}

impl Sched {
    /// Spawn rules 1, 3 and 4: `Sched::attach` from inside a task of this executor.
    #[inline]
    pub(crate) fn spawn<B>(
        &self,
        task: TaskHandle,
        body: B,
        vtable: &'static crate::task::body::BodyVTable,
    ) -> Result<TaskHandle, SpawnError<B>> {
        if self.closing.get() {
            return Err(SpawnError::TearingDown(body));
        }
        self.attach(task, body, vtable).map_err(SpawnError::Attach)
    }

    /// [`Sched::spawn`] of a fiber on switcher `Sw`.
    pub(crate) fn spawn_fiber<Sw, F, R>(
        &self,
        task: TaskHandle,
        attrs: FiberAttrs,
        body: F,
    ) -> Result<TaskHandle, SpawnError<F>>
    where
        Sw: FiberSwitch,
        F: FnOnce(&mut Fiber) -> R + 'static,
        R: IntoTaskResult,
    {
        if self.closing.get() {
            return Err(SpawnError::TearingDown(body));
        }
        self.attach_fiber::<Sw, F, R>(task, attrs, body).map_err(SpawnError::Attach)
    }
}

impl Fiber {
    /// Attaches the future `body` as the next run of `task` on this fiber's executor
    /// (spawn rules); the child runs once this fiber suspends. Not a suspension point:
    /// it spawns whether or not this fiber is cancelled (until teardown, spawn rule 3).
    pub fn spawn<F>(&mut self, task: TaskHandle, body: F) -> Result<TaskHandle, SpawnError<F>>
    where
        F: Future + 'static,
        F::Output: IntoTaskResult,
    {
        match Sched::of_task(self.task().header()) {
            Some(sched) => sched.spawn(task, body, &FutureBody::<F>::VTABLE),
            None => Err(SpawnError::NotInTask(body)),
        }
    }

    /// [`Fiber::spawn`] of a fiber on keel's own switch (a stack from the executor's
    /// pool).
    pub fn spawn_fiber<F, R>(
        &mut self,
        task: TaskHandle,
        attrs: FiberAttrs,
        body: F,
    ) -> Result<TaskHandle, SpawnError<F>>
    where
        F: FnOnce(&mut Fiber) -> R + 'static,
        R: IntoTaskResult,
    {
        self.spawn_fiber_with::<crate::arch::AsmSwitch, F, R>(task, attrs, body)
    }

    /// [`Fiber::spawn_fiber`] on switcher `Sw` (as `Executor::attach_fiber_with`).
    pub fn spawn_fiber_with<Sw, F, R>(
        &mut self,
        task: TaskHandle,
        attrs: FiberAttrs,
        body: F,
    ) -> Result<TaskHandle, SpawnError<F>>
    where
        Sw: FiberSwitch,
        F: FnOnce(&mut Fiber) -> R + 'static,
        R: IntoTaskResult,
    {
        match Sched::of_task(self.task().header()) {
            Some(sched) => sched.spawn_fiber::<Sw, F, R>(task, attrs, body),
            None => Err(SpawnError::NotInTask(body)),
        }
    }
}
