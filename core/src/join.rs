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
//! A join on the awaited task's own executor is woken exactly once, by the end of the
//! awaited run (or its own deadline, or its cancel); a join from another thread may also
//! be woken when other joins announce themselves (join rule 5), and looks again. Any number of joins may wait for one run. Dropping a join
//! (a `select` that chose another branch) unlinks it; the awaited task is not touched.
//!
//! Same executor: the join links a node in the awaited task's list of waiters, and the
//! run's end copies the result's words into it and wakes the joining task (join rules 3
//! and 6): no atomic read-modify-write, no allocation, no lock; the end of a run does one
//! pop and three word copies per waiter.
//! A join future is therefore neither `Send` nor `Sync` (its node is linked in a list
//! only the executor's thread touches), as `IoStatus` is ([`join_send`] is `Send`: it
//! always waits as a join from another thread, join rule 5):
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

pub use crate::task::join::CROSS_WAITERS;

use crate::clock::Instant;
use crate::cx::TaskCx;
use crate::error::TaskResult;
use crate::exec::sched::Sched;
use crate::fiber::Fiber;
use crate::sync::AtomicU32;
use crate::sync::Ordering;
use crate::task::TaskHandle;
use crate::task::header::{Header, SlotPtr};
use crate::task::join::{Entry, Held, JoinNode, Outcome, task_entry, thread_entry};
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
    /// [`CROSS_WAITERS`] joins from other threads wait
    /// for this task already (join rule 5): wait for one of them, or join from a task
    /// on the awaited task's own executor (no limit there).
    TooManyWaiters,
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
            JoinError::TooManyWaiters => {
                "too many joins from other threads wait for this task: join from a task on its own executor, \
                 or after another join returned"
            }
        })
    }
}

/// Waits for run `task` to complete and returns its result.
pub fn join(task: TaskHandle) -> Join {
    Join::new(task, NO_LIMIT, 0)
}

/// [`join`] that gives up after `timeout` (from its first poll) with `JoinError::TimedOut`.
/// A zero timeout only looks.
pub fn join_timeout(task: TaskHandle, timeout: Duration) -> Join {
    // Saturated: 2^64 ns is 584 years.
    Join::new(task, TIMEOUT, u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX))
}

/// [`join`] that gives up at `deadline` on the executor's clock.
pub fn join_until(task: TaskHandle, deadline: Instant) -> Join {
    Join::new(task, DEADLINE, deadline.as_nanos())
}

/// The future [`join`] returns. Polled again after it returned, it returns the same.
///
/// Its fields are whole words with no padding between them (the awaited run split in
/// its two halves, the small fields packed beside its generation): a body that makes a
/// `Join` moves it into its own state, and a copy that spans bytes no store wrote (a
/// `TaskHandle`'s padding, a `Duration`'s) becomes loads that span several stores, each
/// a stalled store-to-load forward (join rule 6's reason, for the node).
pub struct Join {
    /// The awaited run: its slot ...
    hdr: NonNull<Header>,
    /// ... and its generation (`TaskHandle::from_parts`).
    generation: u32,
    /// The entry held while it waits as a join from another thread (join rule 5:
    /// `Entry::index`), or `NO_ENTRY`.
    entry: u16,
    /// What `limit` is: `NO_LIMIT`, `TIMEOUT` (its nanoseconds, from the first poll that
    /// waits, which makes it a `DEADLINE`), or `DEADLINE` (an `Instant`'s nanoseconds).
    limit_kind: u16,
    limit: u64,
    /// Linked in the awaited task's waiters while `node.waiter` is set (join rule 3); it
    /// holds what the join returned, to return it again (join rule 6).
    node: JoinNode,
}

/// `Join::entry` when it holds none.
const NO_ENTRY: u16 = u16::MAX;
/// `Join::limit_kind`s.
const NO_LIMIT: u16 = 0;
const TIMEOUT: u16 = 1;
const DEADLINE: u16 = 2;

impl Join {
    #[inline(always)]
    fn new(task: TaskHandle, limit_kind: u16, limit: u64) -> Join {
        Join {
            hdr: task.header(),
            generation: task.generation(),
            entry: NO_ENTRY,
            limit_kind,
            limit,
            node: JoinNode::new(),
        }
    }

    /// The awaited run.
    #[inline(always)]
    fn task(&self) -> TaskHandle {
        TaskHandle::from_parts(self.hdr, self.generation)
    }

    /// The deadline, once there is one.
    fn deadline(&self) -> Option<Instant> {
        (self.limit_kind == DEADLINE).then(|| Instant::from_nanos(self.limit))
    }

    /// The entry held (join rule 5).
    fn entry(&self) -> Option<Entry> {
        (self.entry != NO_ENTRY).then(|| Entry::from_index(self.entry))
    }
}

impl core::fmt::Debug for Join {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Join").field("task", &self.task()).field("out", &outcome(&self.node)).finish_non_exhaustive()
    }
}

/// What a join finds when it looks.
enum Look {
    /// It returns this.
    Out(Result<TaskResult, JoinError>),
    /// The run is attached to the joiner's executor and not complete: wait in its list.
    Here,
    /// The run belongs to another executor (or none): wait as a join from another thread.
    Elsewhere,
}

/// What a join keeps in its node (join rule 6): a `JoinError` as the node's code for it.
fn keep(node: &JoinNode, out: Result<TaskResult, JoinError>) {
    node.keep(match out {
        Ok(result) => Held::Result(result),
        Err(err) => Held::Own(match err {
            JoinError::Stale => 0,
            JoinError::NeverAttached => 1,
            JoinError::JoinSelf => 2,
            JoinError::TimedOut => 3,
            JoinError::Cancelled => 4,
            JoinError::NotInTask => 5,
            JoinError::TooManyWaiters => 6,
        }),
    });
}

/// What a join's node holds (join rule 6), as the join returns it: `keep`'s inverse.
fn outcome(node: &JoinNode) -> Option<Result<TaskResult, JoinError>> {
    Some(match node.held()? {
        Held::Result(result) => Ok(result),
        Held::NeverAttached => Err(JoinError::NeverAttached),
        Held::Own(code) => Err(match code {
            0 => JoinError::Stale,
            1 => JoinError::NeverAttached,
            2 => JoinError::JoinSelf,
            3 => JoinError::TimedOut,
            4 => JoinError::Cancelled,
            5 => JoinError::NotInTask,
            6 => JoinError::TooManyWaiters,
            _ => unreachable!("keel bug: join code {code} was never kept"),
        }),
    })
}

/// The record of run `task` (join rule 2): `None` while the run has not completed.
fn record_look(task: TaskHandle) -> Option<Result<TaskResult, JoinError>> {
    let target = task.header();
    match target.trailer().record.read(task.generation(), &target.hdr().generation) {
        Err(()) => Some(Err(JoinError::Stale)),
        Ok(Some(Outcome::NeverAttached)) => Some(Err(JoinError::NeverAttached)),
        Ok(Some(Outcome::Done(result))) => Some(Ok(result)),
        Ok(None) => None,
    }
}

/// The checks every join from a task makes before it waits, on the joining task's
/// thread: itself, then where the run is attached, then the record (join rule 2).
#[inline(always)]
fn look(sched: &Sched, me: NonNull<Header>, task: TaskHandle) -> Look {
    let target = task.header();
    let header = target.hdr();
    if me == target && header.generation.load(Ordering::Relaxed) == task.generation() {
        return Look::Out(Err(JoinError::JoinSelf));
    }
    // Acquire: pairs with the Release that published the owner (remote rule 2); if it is
    // us, we stored it on this thread.
    let ours = header.owner.load(Ordering::Acquire) == sched.owner_id();
    // Ours, current and attached: not complete (its end seals the record only after
    // its state left the attached ones, and a later run has a later generation), so
    // the record is not read. Header rule 2: we own it, so its state is ours to read.
    if ours && header.generation.load(Ordering::Relaxed) == task.generation() && header.state.get().is_attached() {
        return Look::Here;
    }
    if let Some(out) = record_look(task) {
        return Look::Out(out);
    }
    if !ours {
        return Look::Elsewhere;
    }
    // Ours, not recorded, and not the current attached run: a later run started, or the
    // slot was released (join rule 1: an unattached run is recorded).
    Look::Out(Err(JoinError::Stale))
}

/// Join rule 5: registers `target` for run `task` and announces it (wake rule 8), then
/// looks again. `Ok(entry)`: registered, still waiting; `Err(out)`: the join returns
/// `out` (its entry freed).
fn register_cross(task: TaskHandle, target: u64) -> Result<Entry, Result<TaskResult, JoinError>> {
    register_cross_with(task, target, crate::task::wake::announce_join)
}

/// `register_cross` with the announce a loom model may weaken (`loom_api`).
fn register_cross_with(
    task: TaskHandle,
    target: u64,
    announce: fn(NonNull<Header>, u32),
) -> Result<Entry, Result<TaskResult, JoinError>> {
    let record = &task.header().trailer().record;
    let Some(entry) = record.register(target) else { return Err(Err(JoinError::TooManyWaiters)) };
    announce(task.header(), task.generation());
    match record_look(task) {
        Some(out) => {
            record.unregister(entry);
            Err(out)
        }
        None => Ok(entry),
    }
}

/// Join rule 8: a join waiting with `entry` and polled by the run `target` names (maybe
/// not the one that registered it) re-points the entry, announces itself again and looks
/// again; `Some(out)`: the run is over (the caller frees the entry). Under `keel_loom`,
/// `W` says whether it announces (`sync::Weaken::REPOINT_ANNOUNCE`; `loom_join`'s
/// re-point model and its twin); elsewhere it is `Strong`, a constant.
fn repoint_cross<#[cfg(keel_loom)] W: crate::sync::Weaken>(
    task: TaskHandle,
    entry: Entry,
    target: u64,
) -> Option<Result<TaskResult, JoinError>> {
    #[cfg(not(keel_loom))]
    use crate::sync::Strong as W;
    let record = &task.header().trailer().record;
    if !record.repoint(entry, target) {
        return None;
    }
    // As `register_cross_with`: the owner that takes this announce (or the run's end,
    // which it marks) reads the new target, since the announce's Release CAS follows the
    // entry's store and the owner's take acquires it; a run already over is seen by the
    // look. Without it the store and the owner's read of the entry at the run's end are
    // unordered (a store-buffer race): the owner may wake the run the entry named before.
    if W::REPOINT_ANNOUNCE {
        crate::task::wake::announce_join(task.header(), task.generation());
    }
    record_look(task)
}

/// Links `node` in run `task`'s waiters for run `me` to be woken (join rules 3 and 7).
///
/// # Safety
/// `look` said `Wait` for `task` on this thread just now; `node` is pinned, unlinked,
/// and unlinks itself (`unlink`) before it goes.
unsafe fn link(task: TaskHandle, node: &JoinNode, me: TaskHandle) {
    node.set_waiter(me.header(), me.generation());
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
        let task = self.task();
        let Some(tcx) = TaskCx::of(cx) else {
            // Join rule 6: the node that keeps this outcome leaves the waiters' list first
            // (this thread linked it: `Join` is `!Send`), or the run's end would overwrite
            // it; an entry held is freed as on every other return.
            unlink(task, &self.node);
            if let Some(entry) = self.entry() {
                self.entry = NO_ENTRY;
                task.header().trailer().record.unregister(entry);
            }
            return Some(Err(JoinError::NotInTask));
        };
        let (sched, me) = (tcx.sched(), tcx.header());
        if let Some(entry) = self.entry() {
            // Waiting as a join from another thread: woken to look at the record again
            // (join rule 8: the entry names the run polling now).
            let looked = record_look(task).or_else(|| {
                let target = task_entry(me, tcx.task().generation());
                #[cfg(keel_loom)]
                return repoint_cross::<crate::sync::Strong>(task, entry, target);
                #[cfg(not(keel_loom))]
                repoint_cross(task, entry, target)
            });
            let out = match looked {
                Some(out) => Some(out),
                None if tcx.is_cancelled() => Some(Err(JoinError::Cancelled)),
                None if self.deadline().is_some_and(|at| sched.now() >= at) => Some(Err(JoinError::TimedOut)),
                None => None,
            };
            if out.is_some() {
                self.entry = NO_ENTRY;
                task.header().trailer().record.unregister(entry);
                return out;
            }
        } else if self.node.waiter.get().is_none() {
            // (An outcome the node holds is returned by `poll` first: join rule 6.)
            if tcx.is_cancelled() {
                return Some(Err(JoinError::Cancelled));
            }
            let look = look(sched, me, task);
            if let Look::Out(out) = look {
                return Some(out);
            }
            if self.limit_kind == TIMEOUT {
                self.limit_kind = DEADLINE;
                self.limit = sched.now().saturating_add(Duration::from_nanos(self.limit)).as_nanos();
            }
            if self.deadline().is_some_and(|at| sched.now() >= at) {
                return Some(Err(JoinError::TimedOut));
            }
            if let Look::Here = look {
                // SAFETY: `look` said `Here` just now; the node is pinned (`Join` is
                // `!Unpin` and polled through `Pin`), unlinked, and `Drop` unlinks it.
                unsafe { link(task, &self.node, tcx.task()) };
            } else {
                // Join rule 5: woken by wakes of this run of the joining task.
                match register_cross(task, task_entry(me, tcx.task().generation())) {
                    Ok(entry) => self.entry = entry.index(),
                    Err(out) => return Some(out),
                }
            }
        } else {
            // Polled again while linked: by a wake of another future, a select, our
            // deadline, or a cancel.
            if tcx.is_cancelled() {
                unlink(task, &self.node);
                return Some(Err(JoinError::Cancelled));
            }
            if self.deadline().is_some_and(|at| sched.now() >= at) {
                unlink(task, &self.node);
                return Some(Err(JoinError::TimedOut));
            }
            // Join rule 7: polled by a task of another executor (two on one thread: a
            // `Join` is `!Send`, not bound to one executor), whose run's end would not
            // wake it: it leaves the list it is in (on this thread, the one that linked
            // it) and looks again as a new join, which waits as a join from another thread.
            // Acquire: pairs with the Release that published the owner (remote rule 2).
            if task.header().hdr().owner.load(Ordering::Acquire) != sched.owner_id() {
                unlink(task, &self.node);
                return self.step(cx);
            }
            // The task polling us now is the one to wake (a join moved between tasks).
            self.node.set_waiter(me, tcx.task().generation());
        }
        if let Some(at) = self.deadline() {
            sched.arm(me, at);
        }
        None
    }
}

impl Future for Join {
    type Output = Result<TaskResult, JoinError>;
    /// Inlined up to the common second poll, the one after the run's end; the rest is
    /// out of line (`poll_slow`).
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: the node is never moved out (it is only used in place); the other
        // fields are plain data.
        let this = unsafe { self.get_unchecked_mut() };
        if let Some(value) = this.node.ok() {
            // The run's end unlinked the node and left an `Ok` result (join rules 3 and
            // 6); it stays there, so a later poll returns it again.
            return Poll::Ready(Ok(Ok(value)));
        }
        this.poll_slow(cx)
    }
}

impl Join {
    /// A poll with no `Ok` result in the node: another outcome it holds, or the wait's
    /// next step.
    #[inline(never)]
    fn poll_slow(&mut self, cx: &Context<'_>) -> Poll<Result<TaskResult, JoinError>> {
        if let Some(out) = outcome(&self.node) {
            return Poll::Ready(out);
        }
        match self.step(cx) {
            Some(out) => {
                // Join rule 6: returned again by a later poll (the node is unlinked:
                // every `Some` of `step` is).
                keep(&self.node, out);
                Poll::Ready(out)
            }
            None => Poll::Pending,
        }
    }
}

impl Drop for Join {
    fn drop(&mut self) {
        // A dropped waiter leaves the list (or frees its entry); the awaited task is
        // untouched.
        let task = self.task();
        unlink(task, &self.node);
        if let Some(entry) = self.entry() {
            task.header().trailer().record.unregister(entry);
        }
    }
}

/// [`join`] for a future that must be `Send` (attached through an `ExecutorHandle` or a
/// `Dispatcher`): it always waits as a join from another thread (join rule 5), also for a
/// task of its own executor, so it holds no node in an owner-local list, only an entry
/// of the awaited task (at most [`CROSS_WAITERS`] at once). `timeout`: as
/// [`join_timeout`] (`None`: no limit). Outcomes as [`join`]'s.
pub fn join_send(task: TaskHandle, timeout: Option<Duration>) -> JoinSend {
    JoinSend { task, timeout, deadline: None, entry: None, out: None }
}

/// The future [`join_send`] returns: `Send`, and polled again after it returned, it
/// returns the same.
#[derive(Debug)]
pub struct JoinSend {
    task: TaskHandle,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    entry: Option<Entry>,
    out: Option<Result<TaskResult, JoinError>>,
}

impl JoinSend {
    /// One look at the run, or the wait's next step; `None`: still waiting. `W`: as
    /// `repoint_cross`'s.
    fn step<#[cfg(keel_loom)] W: crate::sync::Weaken>(
        &mut self,
        cx: &Context<'_>,
    ) -> Option<Result<TaskResult, JoinError>> {
        let Some(tcx) = TaskCx::of(cx) else { return Some(Err(JoinError::NotInTask)) };
        let (sched, me) = (tcx.sched(), tcx.header());
        let out = match self.entry {
            // Join rule 8: the entry names the run polling now (a `JoinSend` may move).
            Some(entry) => record_look(self.task).or_else(|| {
                let target = task_entry(me, tcx.task().generation());
                #[cfg(keel_loom)]
                return repoint_cross::<W>(self.task, entry, target);
                #[cfg(not(keel_loom))]
                repoint_cross(self.task, entry, target)
            }),
            None => {
                if tcx.is_cancelled() {
                    return Some(Err(JoinError::Cancelled));
                }
                let mine =
                    me == self.task.header() && me.hdr().generation.load(Ordering::Relaxed) == self.task.generation();
                if mine {
                    return Some(Err(JoinError::JoinSelf));
                }
                if let Some(out) = record_look(self.task) {
                    return Some(out);
                }
                if let Some(t) = self.timeout {
                    self.deadline = Some(sched.now().saturating_add(t));
                }
                if self.deadline.is_some_and(|at| sched.now() >= at) {
                    return Some(Err(JoinError::TimedOut));
                }
                match register_cross(self.task, task_entry(me, tcx.task().generation())) {
                    Ok(entry) => self.entry = Some(entry),
                    Err(out) => return Some(out),
                }
                None
            }
        };
        let out = match out {
            Some(out) => Some(out),
            None if tcx.is_cancelled() => Some(Err(JoinError::Cancelled)),
            None if self.deadline.is_some_and(|at| sched.now() >= at) => Some(Err(JoinError::TimedOut)),
            None => None,
        };
        if out.is_some() {
            if let Some(entry) = self.entry.take() {
                self.task.header().trailer().record.unregister(entry);
            }
        } else if let Some(at) = self.deadline {
            sched.arm(me, at);
        }
        out
    }
}

impl Future for JoinSend {
    type Output = Result<TaskResult, JoinError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        #[cfg(keel_loom)]
        return self.get_mut().poll_with::<crate::sync::Strong>(cx);
        #[cfg(not(keel_loom))]
        self.get_mut().poll_with(cx)
    }
}

impl JoinSend {
    /// `poll`, with `W`'s re-point (`repoint_cross`; `loom_api::poll_join_send_with`).
    #[inline(always)]
    pub(crate) fn poll_with<#[cfg(keel_loom)] W: crate::sync::Weaken>(
        &mut self,
        cx: &Context<'_>,
    ) -> Poll<Result<TaskResult, JoinError>> {
        if let Some(out) = self.out {
            return Poll::Ready(out);
        }
        #[cfg(keel_loom)]
        let stepped = self.step::<W>(cx);
        #[cfg(not(keel_loom))]
        let stepped = self.step(cx);
        match stepped {
            Some(out) => {
                self.out = Some(out);
                Poll::Ready(out)
            }
            None => Poll::Pending,
        }
    }
}

impl Drop for JoinSend {
    fn drop(&mut self) {
        // An entry is freed with one store, from any thread (join rule 5).
        if let Some(entry) = self.entry.take() {
            self.task.header().trailer().record.unregister(entry);
        }
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
        let look = look(sched, me, task);
        if let Look::Out(out) = look {
            return out;
        }
        let deadline = timeout.map(|t| sched.now().saturating_add(t));
        if deadline.is_some_and(|at| sched.now() >= at) {
            return Err(JoinError::TimedOut);
        }
        if let Look::Elsewhere = look {
            return self.join_cross(sched, task, deadline);
        }
        let node = core::pin::pin!(JoinNode::new());
        // SAFETY: `look` said `Wait` just now; the node is pinned on this stack and
        // unlinked on every way out below.
        unsafe { link(task, &node, self.task()) };
        loop {
            if let Some(at) = deadline {
                sched.arm(me, at);
            }
            let waited = self.wait();
            // Join rule 6: the run's end copied its result words into the node.
            if let Some(out) = outcome(&node) {
                return out;
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

    /// `join` of a run on another executor (join rule 5).
    fn join_cross(
        &mut self,
        sched: &Sched,
        task: TaskHandle,
        deadline: Option<Instant>,
    ) -> Result<TaskResult, JoinError> {
        let me = self.task();
        let entry = match register_cross(task, task_entry(me.header(), me.generation())) {
            Ok(entry) => entry,
            Err(out) => return out,
        };
        let out = loop {
            if let Some(at) = deadline {
                sched.arm(me.header(), at);
            }
            let waited = self.wait();
            if let Some(out) = record_look(task) {
                break out;
            }
            if waited.is_err() {
                break Err(JoinError::Cancelled);
            }
            if deadline.is_some_and(|at| sched.now() >= at) {
                break Err(JoinError::TimedOut);
            }
        };
        task.header().trailer().record.unregister(entry);
        out
    }
}

/// How a thread that is not an executor's blocks until a word changes: the futex pair
/// (keel-linux implements it with `futex(2)`: `keel_linux::Futex`). keel-core has no
/// threads of its own, so the caller names the blocking piece.
///
/// The executor that completes a run calls `wake_all` on its thread, after the record's
/// `done` word changed (join rule 5): it must not block.
pub trait ThreadWait {
    /// A point in time on the implementation's clock.
    type Deadline: Copy;
    /// The deadline `timeout` from now.
    fn deadline_after(timeout: Duration) -> Self::Deadline;
    /// Blocks while `*word == expected`, until `wake_all` on `word` or `deadline`
    /// (spurious returns are fine). Returns false once `deadline` has passed.
    fn wait(word: &AtomicU32, expected: u32, deadline: Option<Self::Deadline>) -> bool;
    /// Wakes every thread blocked in `wait` on `word`.
    fn wake_all(word: &AtomicU32);
}

/// Blocks this thread (not an executor's: it would stop that executor) until run `task`
/// completes, at most `timeout` (`None`: no limit). The outcomes are those of [`join`];
/// it cannot be cancelled (give it a timeout). Any thread; one entry of the task's
/// [`CROSS_WAITERS`] while it blocks.
pub fn join_blocking<P: ThreadWait>(task: TaskHandle, timeout: Option<Duration>) -> Result<TaskResult, JoinError> {
    join_blocking_with::<P>(task, timeout, crate::task::wake::announce_join)
}

/// `join_blocking` with the announce a loom model may weaken (`loom_api`).
pub(crate) fn join_blocking_with<P: ThreadWait>(
    task: TaskHandle,
    timeout: Option<Duration>,
    announce: fn(NonNull<Header>, u32),
) -> Result<TaskResult, JoinError> {
    if let Some(out) = record_look(task) {
        return out;
    }
    let deadline = timeout.map(P::deadline_after);
    let entry = match register_cross_with(task, thread_entry(P::wake_all), announce) {
        Ok(entry) => entry,
        Err(out) => return out,
    };
    let record = &task.header().trailer().record;
    let out = loop {
        // Acquire: pairs with `publish`'s Release store (join rule 2); the value the wait
        // compares with, read before the look, so a publish between the two ends the wait.
        let seen = record.done_word().load(Ordering::Acquire);
        if let Some(out) = record_look(task) {
            break out;
        }
        if !P::wait(record.done_word(), seen, deadline) {
            break record_look(task).unwrap_or(Err(JoinError::TimedOut));
        }
    };
    record.unregister(entry);
    out
}

#[cfg(all(test, not(keel_loom)))]
mod tests {
    use super::*;

    /// Join rule 6: every `JoinError` a join keeps in its node reads back as itself.
    #[test]
    fn join_rule_6_every_join_error_round_trips_through_a_node() {
        let all = [
            JoinError::Stale,
            JoinError::NeverAttached,
            JoinError::JoinSelf,
            JoinError::TimedOut,
            JoinError::Cancelled,
            JoinError::NotInTask,
            JoinError::TooManyWaiters,
        ];
        for err in all {
            let node = JoinNode::new();
            keep(&node, Err(err));
            assert_eq!(outcome(&node), Some(Err(err)));
            assert_eq!(node.ok(), None);
        }
        let node = JoinNode::new();
        assert_eq!(outcome(&node), None);
        keep(&node, Ok(Err(crate::error::TaskError::Failed(3))));
        assert_eq!(outcome(&node), Some(Ok(Err(crate::error::TaskError::Failed(3)))));
    }
}
