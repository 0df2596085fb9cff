//! Waiting for another task's result: [`join`] for futures, [`Fiber::join`] for fibers.
//!
//! ```
//! use core::pin::pin;
//! use keel_core::{Config, Executor, TaskAttrs, TaskSlot, join, sim::SimDriver};
//! static CHILD: TaskSlot = TaskSlot::new();
//! static PARENT: TaskSlot = TaskSlot::new();
//! let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
//! let ex = ex.into_ref();
//! let child = ex.attach(CHILD.create(TaskAttrs::default()).unwrap(), async { 20u64 }).unwrap();
//! let parent = ex.attach(PARENT.create(TaskAttrs::default()).unwrap(), async move {
//!     let got = join::join(child).await.expect("joined")?;
//!     Ok(got + 1)
//! }).unwrap();
//! while ex.attached() > 0 { ex.run(8, None).unwrap(); }
//! assert_eq!(ex.result(parent), Ok(Some(Ok(21))));
//! ```
//!
//! What a join returns, by what happened (join rules, `task/join.rs`):
//!
//! | the awaited run | a join returns |
//! |---|---|
//! | completed (before or while the join waits) | `Ok(its result)`: `Ok(value)`, `Err(TaskError::Cancelled)` if it was cancelled, ... |
//! | not complete by the deadline | `Err(JoinError::TimedOut)`; the awaited task runs on |
//! | the slot started a later run, or was destroyed, before the join read the result | `Err(JoinError::Stale)` |
//! | the handle came from `create`, not `attach` | `Err(JoinError::NeverAttached)` |
//! | it is the joining run itself | `Err(JoinError::JoinSelf)`, at once |
//! | the joining task is cancelled (before or while it waits) | `Err(JoinError::Cancelled)`; the awaited task runs on |
//! | polled outside a keel task (rt rule 2) | `Err(JoinError::NotInTask)` |
//!
//! A join that waits is woken exactly once, by the end of the awaited run (or its own
//! deadline, or its cancel). Any number of joins may wait for one run. Dropping a join
//! (a `select` that chose another branch) unlinks it; the awaited task is not touched.
//!
//! Same executor: the join links a node in the awaited task's list of waiters, and the
//! run's end writes the result into it and wakes the joining task (join rule 3): no atomic
//! read-modify-write, no allocation, no lock; the end of a run does one pop per waiter.
//! A join future is therefore neither `Send` nor `Sync` (its node is linked in a list
//! only the executor's thread touches), as `IoStatus` is:
//!
//! ```compile_fail
//! fn send<T: Send>(_: T) {}
//! # let h: keel_core::TaskHandle = unimplemented!();
//! send(keel_core::join::join(h));
//! ```
//!
//! Who releases the slot: nobody waits for the joins. The same-executor joins hold a copy
//! of the result (join rule 3), and the record read by every other join (join rules 1-2)
//! stays valid until the slot's next run starts; the slot is released as before (a
//! task attached from another thread at its end, remote rule 4; others by `release` or
//! `destroy`). A join that reads the record after the slot's next run started returns
//! `Stale`, never the later run's result.

use crate::clock::Instant;
use crate::cx::TaskCx;
use crate::error::TaskResult;
use crate::exec::sched::Sched;
use crate::fiber::Fiber;
use crate::sync::Ordering;
use crate::task::TaskHandle;
use crate::task::header::{Header, SlotPtr};
use crate::task::join::{JoinNode, Outcome};
use core::future::Future;
use core::pin::Pin;
use core::ptr::NonNull;
use core::task::{Context, Poll};
use core::time::Duration;

/// Why a join returned without the awaited run's result.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JoinError {
    /// The handle names a run the slot has left (a later attach, or a destroy, came
    /// before the join read the result).
    Stale,
    /// The handle came from `create`: no run of it exists.
    NeverAttached,
    /// The handle names the joining run itself, which would wait forever.
    JoinSelf,
    /// The deadline passed first; the awaited task runs on.
    TimedOut,
    /// The joining task was cancelled; the awaited task runs on.
    Cancelled,
    /// Polled outside a keel task (rt rule 2).
    NotInTask,
    /// The awaited task belongs to another executor (or to none yet): join it from a
    /// task of its own executor.
    OtherExecutor,
}

impl core::fmt::Display for JoinError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            JoinError::Stale => {
                "stale task handle: the slot started a later run or was destroyed before the join read the result; \
                 join before re-attaching the slot, with the handle the attach returned"
            }
            JoinError::NeverAttached => {
                "this handle came from create, which names no run: join the handle attach returned"
            }
            JoinError::JoinSelf => "a task cannot join its own run: join another task's handle",
            JoinError::TimedOut => "the awaited run did not complete before the deadline",
            JoinError::Cancelled => "the joining task was cancelled; return and let it complete",
            JoinError::NotInTask => "join polled outside a keel task: await it in a task body",
            JoinError::OtherExecutor => {
                "the awaited task belongs to another executor: join it from a task on that executor"
            }
        })
    }
}

/// Waits for run `task` to complete and returns its result.
pub fn join(task: TaskHandle) -> Join {
    Join { task, timeout: None, deadline: None, node: JoinNode::new(), out: None }
}

/// [`join`] that gives up after `timeout` (from its first poll) with `JoinError::TimedOut`.
/// A zero timeout only looks.
pub fn join_timeout(task: TaskHandle, timeout: Duration) -> Join {
    Join { task, timeout: Some(timeout), deadline: None, node: JoinNode::new(), out: None }
}

/// [`join`] that gives up at `deadline` on the executor's clock.
pub fn join_until(task: TaskHandle, deadline: Instant) -> Join {
    Join { task, timeout: None, deadline: Some(deadline), node: JoinNode::new(), out: None }
}

/// The future [`join`] returns. Polled again after it returned, it returns the same.
pub struct Join {
    task: TaskHandle,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    /// Linked in the awaited task's waiters while `node.waiter` is set (join rule 3).
    node: JoinNode,
    out: Option<Result<TaskResult, JoinError>>,
}

impl core::fmt::Debug for Join {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Join").field("task", &self.task).field("out", &self.out).finish_non_exhaustive()
    }
}

/// What a join finds when it looks.
enum Look {
    /// It returns this.
    Out(Result<TaskResult, JoinError>),
    /// The run is attached to the joiner's executor and not complete: wait.
    Wait,
}

/// The checks every join makes before it waits, on the joining task's thread: itself,
/// the record (join rule 2), then whether the run is attached here.
fn look(sched: &Sched, me: NonNull<Header>, task: TaskHandle) -> Look {
    let target = task.header();
    let header = target.hdr();
    if me == target && header.generation.load(Ordering::Relaxed) == task.generation() {
        return Look::Out(Err(JoinError::JoinSelf));
    }
    match target.trailer().record.read(task.generation(), &header.generation) {
        Err(()) => return Look::Out(Err(JoinError::Stale)),
        Ok(Some(Outcome::NeverAttached)) => return Look::Out(Err(JoinError::NeverAttached)),
        Ok(Some(Outcome::Done(result))) => return Look::Out(Ok(result)),
        Ok(None) => {}
    }
    // Acquire: pairs with the Release that published the owner (remote rule 2); if it is
    // us, we stored it on this thread.
    if header.owner.load(Ordering::Acquire) != sched.owner_id() {
        return Look::Out(Err(JoinError::OtherExecutor));
    }
    // Ours, current, not recorded: attached (join rule 1: an unattached run is recorded).
    // Header rule 2: we own it, so its state is ours to read.
    if header.generation.load(Ordering::Relaxed) != task.generation() || !header.state.get().is_attached() {
        return Look::Out(Err(JoinError::Stale));
    }
    Look::Wait
}

/// Links `node` in run `task`'s waiters for `me` to be woken (join rule 3).
///
/// # Safety
/// `look` said `Wait` for `task` on this thread just now; `node` is pinned, unlinked,
/// and unlinks itself (`unlink`) before it goes.
unsafe fn link(task: TaskHandle, node: &JoinNode, me: NonNull<Header>) {
    node.waiter.set(Some(me));
    // SAFETY: the caller's duties: pinned and unlinked; the list is the owner's and we
    // are on its thread (the run is attached here).
    unsafe { task.header().trailer().joiners.push_back(NonNull::from(node)) };
}

/// Takes `node` out of run `task`'s waiters if the run's end has not (join rule 4).
fn unlink(task: TaskHandle, node: &JoinNode) {
    if node.waiter.take().is_some() {
        // SAFETY: linked (its waiter is set) in this list, by this thread (the list's
        // owner's: join futures are not `Send`, fibers stay on their executor).
        unsafe { task.header().trailer().joiners.remove(NonNull::from(node)) };
    }
}

impl Join {
    /// One look at the run, or the wait's next step; `None`: still waiting.
    fn step(&mut self, cx: &Context<'_>) -> Option<Result<TaskResult, JoinError>> {
        let Some(tcx) = TaskCx::of(cx) else { return Some(Err(JoinError::NotInTask)) };
        let (sched, me) = (tcx.sched(), tcx.header());
        if self.node.waiter.get().is_none() {
            if let Some(result) = self.node.result.take() {
                // The run's end unlinked us and left its result (join rule 3).
                return Some(Ok(result));
            }
            if tcx.is_cancelled() {
                return Some(Err(JoinError::Cancelled));
            }
            match look(sched, me, self.task) {
                Look::Out(out) => return Some(out),
                Look::Wait => {}
            }
            let deadline = match (self.deadline, self.timeout) {
                (Some(at), _) => Some(at),
                (None, Some(t)) => Some(sched.now().saturating_add(t)),
                (None, None) => None,
            };
            self.deadline = deadline;
            if deadline.is_some_and(|at| sched.now() >= at) {
                return Some(Err(JoinError::TimedOut));
            }
            // SAFETY: `look` said `Wait` just now; the node is pinned (`Join` is `!Unpin`
            // and polled through `Pin`), unlinked, and `Drop` unlinks it.
            unsafe { link(self.task, &self.node, me) };
        } else {
            // Polled again while linked: by a wake of another future, a select, our
            // deadline, or a cancel.
            if tcx.is_cancelled() {
                unlink(self.task, &self.node);
                return Some(Err(JoinError::Cancelled));
            }
            if self.deadline.is_some_and(|at| sched.now() >= at) {
                unlink(self.task, &self.node);
                return Some(Err(JoinError::TimedOut));
            }
            // The task polling us now is the one to wake (a join moved between tasks).
            self.node.waiter.set(Some(me));
        }
        if let Some(at) = self.deadline {
            sched.arm(me, at);
        }
        None
    }
}

impl Future for Join {
    type Output = Result<TaskResult, JoinError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: the node is never moved out (it is only used in place); the other
        // fields are plain data.
        let this = unsafe { self.get_unchecked_mut() };
        if let Some(out) = this.out {
            return Poll::Ready(out);
        }
        match this.step(cx) {
            Some(out) => {
                this.out = Some(out);
                Poll::Ready(out)
            }
            None => Poll::Pending,
        }
    }
}

impl Drop for Join {
    fn drop(&mut self) {
        // A dropped waiter leaves the list; the awaited task is untouched.
        unlink(self.task, &self.node);
    }
}

impl Fiber {
    /// Waits for run `task` to complete and returns its result, or gives up after
    /// `timeout` (`None`: no limit). The outcomes are those of [`join`] (module doc).
    /// A cancelled fiber gets `Err(JoinError::Cancelled)` (fiber rule 5: after switching
    /// out once).
    pub fn join(&mut self, task: TaskHandle, timeout: Option<Duration>) -> Result<TaskResult, JoinError> {
        let me = self.task().header();
        let Some(sched) = Sched::of_task(me) else { return Err(JoinError::NotInTask) };
        if self.is_cancelled() {
            // Fiber rule 5: the suspension point switches out once.
            let _ = self.wait();
            return Err(JoinError::Cancelled);
        }
        if let Look::Out(out) = look(sched, me, task) {
            return out;
        }
        let deadline = timeout.map(|t| sched.now().saturating_add(t));
        if deadline.is_some_and(|at| sched.now() >= at) {
            return Err(JoinError::TimedOut);
        }
        let node = core::pin::pin!(JoinNode::new());
        // SAFETY: `look` said `Wait` just now; the node is pinned on this stack and
        // unlinked on every way out below.
        unsafe { link(task, &node, me) };
        loop {
            if let Some(at) = deadline {
                sched.arm(me, at);
            }
            let waited = self.wait();
            if let Some(result) = node.result.take() {
                return Ok(result);
            }
            if waited.is_err() {
                unlink(task, &node);
                return Err(JoinError::Cancelled);
            }
            if deadline.is_some_and(|at| sched.now() >= at) {
                unlink(task, &node);
                return Err(JoinError::TimedOut);
            }
        }
    }
}
