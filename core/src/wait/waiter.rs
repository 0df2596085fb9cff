//! A waiter and the queue it waits in: three FIFO lists, one per CPU priority level
//! (wait rule 4), of nodes that live in the waiting future or on the waiting fiber's
//! stack. Everything here is touched under the primitive's lock (wait rule 3).

use super::{Flavour, WaitError};
use crate::exec::sched::Sched;
use crate::list::{Link, Links, List};
use crate::priority::Priority;
use crate::sync::Ordering;
use crate::task::TaskHandle;
use crate::task::header::{Header, flag};
use core::cell::Cell;
use core::marker::PhantomPinned;
use core::ptr::NonNull;

/// Where a waiter is in its wait (wait rule 5).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Not queued: before its first try, or after its wait ended.
    Idle,
    /// In the queue.
    Linked,
    /// Taken off the queue with a unit (a permit, a slot, an item, the event) that is
    /// now its own: it must use it or pass it on (wait rule 6).
    Granted,
    /// Taken off the queue because the primitive was closed.
    Closed,
}

/// The task a waiter wakes, as seen at its latest try.
#[derive(Copy, Clone)]
pub(crate) struct Here {
    pub(crate) task: TaskHandle,
    /// The task's executor (on this thread, inside its resume), for a same-thread wake.
    pub(crate) sched: NonNull<Sched>,
    pub(crate) level: Priority,
}

impl Here {
    /// The running task of `header`, on its owner's thread inside its resume.
    #[inline(always)]
    fn of(header: NonNull<Header>) -> Option<Here> {
        let sched = Sched::of_task(header)?;
        // SAFETY: `'static` header of the running task, read on its owner's thread.
        let hdr = unsafe { header.as_ref() };
        // Relaxed: owner-written, read on the owner's thread.
        let task = TaskHandle::from_parts(header, hdr.generation.load(Ordering::Relaxed));
        Some(Here { task, sched: NonNull::from(sched), level: hdr.prio.get().cpu })
    }
}

/// The task a queued waiter names (wait rule 5) and the executor it was queued from.
#[derive(Copy, Clone)]
struct Named {
    task: TaskHandle,
    sched: NonNull<Sched>,
}

/// Whether the running task of `header` was cancelled.
#[inline(always)]
fn cancelled(header: NonNull<Header>) -> bool {
    // SAFETY: `'static` header of the running task, read on its owner's thread.
    unsafe { header.as_ref() }.has_flag(flag::CANCEL)
}

/// The list kind of [`Waiter`]'s links.
pub(crate) struct WaitLink;

/// A waiting task's node. Pinned while linked (list rule 2: a future's node is in the
/// pinned future, a fiber's on its stack, and both unlink in their `Drop`).
pub(crate) struct Waiter {
    links: Links<Waiter>,
    stage: Cell<Stage>,
    /// The task to wake and its executor, as seen at the latest try; `None` before the
    /// first that queued it. One field: a wake tests one `Option`.
    named: Cell<Option<Named>>,
    level: Cell<Priority>,
    _pin: PhantomPinned,
}

// SAFETY: `links` is the node's own field, used only for wait queues.
unsafe impl Link<WaitLink> for Waiter {
    fn links(this: NonNull<Self>) -> NonNull<Links<Self>> {
        // SAFETY: `this` is a valid node; the projection stays inside it.
        unsafe { NonNull::new_unchecked(&raw mut (*this.as_ptr()).links) }
    }
}

// SAFETY: every field is read and written only under the primitive's lock (wait rule 3),
// so the node may sit in a future that moves to (or is polled on) another thread.
unsafe impl Send for Waiter {}
// SAFETY: as for `Send`.
unsafe impl Sync for Waiter {}

impl Waiter {
    pub(crate) const fn new() -> Self {
        Waiter {
            links: Links::new(),
            stage: Cell::new(Stage::Idle),
            named: Cell::new(None),
            level: Cell::new(Priority::Normal),
            _pin: PhantomPinned,
        }
    }

    fn set_here(&self, here: &Here) {
        self.named.set(Some(Named { task: here.task, sched: here.sched }));
    }
}

/// Wakes the task `node` names (wait rule 7). The same-thread flavour wakes a task of a
/// live executor on this thread with `Sched::wake_local` (wake rule 7: no atomics);
/// anything else goes through `TaskHandle::wake` (wake rules 2-4), which is a no-op for
/// a stale run.
#[inline(always)]
fn wake<F: Flavour>(node: &Waiter) {
    let Some(Named { task, sched }) = node.named.get() else { return };
    if F::LOCAL {
        // SAFETY: `'static` header.
        let hdr = unsafe { task.header().as_ref() };
        // Compared only, until it matches (see below): no reference to a scheduler that
        // may be gone is formed.
        let id = crate::exec::sched::Sched::owner_id_of(sched);
        // Relaxed, both: on the owner's thread they are owner-written. Wait rule 7: the
        // node was queued on this thread (a same-thread primitive never leaves it) by a
        // task of `sched`; if that task's current run is still the one queued and still
        // owned by `sched`, `sched` is alive (an executor's drop releases every task it
        // owns: owner cleared) and on this thread.
        if hdr.owner.load(Ordering::Relaxed) == id && hdr.generation.load(Ordering::Relaxed) == task.generation() {
            // SAFETY: as just checked, a live executor on this thread, which touches its
            // state only through `Cell`s and holds no borrow across task code (sched
            // rules 2-3).
            unsafe { sched.as_ref() }.wake_local(task.header());
            return;
        }
    }
    task.wake();
}

/// The waiters of one kind, by priority level, FIFO within a level (wait rule 4).
pub(crate) struct Queue {
    levels: [List<Waiter, WaitLink>; Priority::LEVELS],
}

// SAFETY: the queue and the nodes it links are touched only under the primitive's lock
// (wait rule 3), and nodes are `Send` (above).
unsafe impl Send for Queue {}

impl Queue {
    pub(crate) const fn new() -> Self {
        Queue { levels: [List::new(), List::new(), List::new()] }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.levels.iter().all(List::is_empty)
    }

    /// Waiters queued.
    pub(crate) fn len(&self) -> usize {
        self.levels.iter().map(List::len).sum()
    }

    /// Queues `node` behind the waiters of its level.
    fn push(&self, node: &Waiter, here: &Here) {
        node.set_here(here);
        node.level.set(here.level);
        node.stage.set(Stage::Linked);
        // SAFETY: not linked (stage was Idle), pinned, and it unlinks before it dies
        // (wait rule 5).
        unsafe { self.levels[here.level.index()].push_back(NonNull::from(node)) };
    }

    fn remove(&self, node: &Waiter) {
        // SAFETY: stage Linked: it is in this queue at its level.
        unsafe { self.levels[node.level.get().index()].remove(NonNull::from(node)) };
        node.stage.set(Stage::Idle);
    }

    /// Takes the first waiter of the highest level off the queue, marks it `stage` and
    /// wakes it (wait rule 7). `false` if none waits. Inlined: a permit's drop is one
    /// call of it, on every hand-off.
    #[inline(always)]
    pub(crate) fn wake_one<F: Flavour>(&self, stage: Stage) -> bool {
        for level in &self.levels {
            if let Some(node) = level.pop_front() {
                // SAFETY: linked nodes are alive (list rule 2).
                let node = unsafe { node.as_ref() };
                node.stage.set(stage);
                wake::<F>(node);
                return true;
            }
        }
        false
    }

    /// Wakes every waiter with `stage`: bounded by the waiters queued now (no new one
    /// can queue meanwhile: the caller holds the lock).
    pub(crate) fn wake_all<F: Flavour>(&self, stage: Stage) {
        while self.wake_one::<F>(stage) {}
    }
}

/// What a waiter waits on: one or more kinds of unit, each with its queue.
pub(crate) trait Source {
    /// Takes a unit of `kind` for a waiter that is not queued: `Ok(true)` taken,
    /// `Ok(false)` none free (or others wait first: wait rule 4), `Err` closed.
    fn try_take(&mut self, kind: usize) -> Result<bool, WaitError>;
    /// The queue of `kind`.
    fn queue(&self, kind: usize) -> &Queue;
    /// A waiter of `kind` that was granted a unit gives it up unused (cancelled or
    /// dropped): pass it on (wait rule 6).
    fn pass_on<F: Flavour>(&mut self, kind: usize);
}

/// Who tries a wait: the running task, found from what the try was given.
pub(crate) trait Poller {
    /// The running task's header (rt rule 1), `None` outside a task (rt rule 2).
    fn task(&self) -> Option<NonNull<Header>>;
    /// Whether the try runs inside a resume of the task at `header`, on its owner's
    /// thread (rt rule 1). Reads nothing. `true` when [`task`](Self::task) names it, and
    /// also for a body that stored another `Context` in its own (`*cx = ...`), whose
    /// `task` is then `None`: it still runs in that resume.
    fn is(&self, header: NonNull<Header>) -> bool;
}

/// A future's poll: its `Context` says where it runs.
impl Poller for core::task::Context<'_> {
    #[inline(always)]
    fn task(&self) -> Option<NonNull<Header>> {
        crate::cx::current_header(self)
    }
    #[inline(always)]
    fn is(&self, header: NonNull<Header>) -> bool {
        // Rt rule 1: `self` is that task's resume `Context`, which only its owner's
        // thread holds, inside its resume. (A body that stored another `Context` in it
        // (`*cx = ...`) is still that run, there.)
        crate::task::wake::is_resume_cx(header, self)
    }
}

/// A fiber's wait: the fiber's own task, on its owner's thread.
impl Poller for NonNull<Header> {
    #[inline(always)]
    fn task(&self) -> Option<NonNull<Header>> {
        Some(*self)
    }
    #[inline(always)]
    fn is(&self, header: NonNull<Header>) -> bool {
        *self == header
    }
}

/// One try of a wait, under the lock: what the waiter at `node` gets now, tried by
/// `who` (the running task, rt rule 1, or none: rt rule 2).
#[inline(always)]
pub(crate) fn try_wait<F: Flavour, S: Source>(
    state: &mut S,
    kind: usize,
    node: &Waiter,
    who: &impl Poller,
) -> Option<Result<(), WaitError>> {
    // The two stages of every wait (its first try, and its try once granted) are tested
    // inline, in that order; the rest are out of line.
    let stage = node.stage.get();
    if stage == Stage::Idle {
        let task = who.task();
        if task.is_some_and(cancelled) {
            return Some(Err(WaitError::Cancelled));
        }
        match state.try_take(kind) {
            Ok(true) => return Some(Ok(())),
            Ok(false) => {}
            Err(e) => return Some(Err(e)),
        }
        let Some(here) = task.and_then(Here::of) else { return Some(Err(WaitError::NotInTask)) };
        state.queue(kind).push(node, &here);
        return None;
    }
    if stage == Stage::Granted {
        node.stage.set(Stage::Idle);
        // The task the node names (it was queued) is in the common case the one trying:
        // then that one check stands for resolving the running task.
        let is_cancelled = match node.named.get() {
            Some(named) if who.is(named.task.header()) => cancelled(named.task.header()),
            _ => who.task().is_some_and(cancelled),
        };
        if is_cancelled {
            core::hint::cold_path();
            // Rt rule: a cancelled task's suspension point says `Cancelled`; the unit it
            // was handed goes on (wait rule 6).
            state.pass_on::<F>(kind);
            return Some(Err(WaitError::Cancelled));
        }
        return Some(Ok(()));
    }
    try_wait_other::<S>(state, kind, node, who.task(), stage)
}

/// [`try_wait`] for a node that is queued or was closed.
#[inline(never)]
fn try_wait_other<S: Source>(
    state: &mut S,
    kind: usize,
    node: &Waiter,
    task: Option<NonNull<Header>>,
    stage: Stage,
) -> Option<Result<(), WaitError>> {
    match stage {
        Stage::Closed => {
            node.stage.set(Stage::Idle);
            Some(Err(WaitError::Closed))
        }
        Stage::Linked => match task.and_then(|t| if cancelled(t) { None } else { Here::of(t) }) {
            None => {
                state.queue(kind).remove(node);
                Some(Err(if task.is_some() { WaitError::Cancelled } else { WaitError::NotInTask }))
            }
            Some(here) => {
                // A spurious wake, or the waiting future moved to another task: the
                // next grant wakes whoever polled last.
                node.set_here(&here);
                None
            }
        },
        Stage::Idle | Stage::Granted => unreachable!("keel bug: try_wait handles these stages inline"),
    }
}

/// A waiter gives up (its future dropped, its fiber cancelled or unwinding), under the
/// lock: out of the queue, and a unit granted to it goes on (wait rule 6).
/// Inlined for the common case, a node whose wait ended with its unit (`Idle`: nothing
/// to give up); the other stages are out of line.
#[inline(always)]
pub(crate) fn abandon<F: Flavour, S: Source>(state: &mut S, kind: usize, node: &Waiter) {
    if node.stage.get() != Stage::Idle {
        abandon_waiting::<F, S>(state, kind, node);
    }
}

/// [`abandon`] for a node still queued, granted or closed.
#[inline(never)]
fn abandon_waiting<F: Flavour, S: Source>(state: &mut S, kind: usize, node: &Waiter) {
    match node.stage.get() {
        Stage::Linked => state.queue(kind).remove(node),
        Stage::Granted => {
            node.stage.set(Stage::Idle);
            state.pass_on::<F>(kind);
        }
        Stage::Closed => node.stage.set(Stage::Idle),
        Stage::Idle => {}
    }
}

/// A count of free units and the waiters for them (a semaphore's permits, a channel's
/// slots or items). Handing a unit to a waiter takes it off the queue (wait rule 6).
pub(crate) struct Pool {
    pub(crate) free: usize,
    pub(crate) queue: Queue,
}

impl Pool {
    pub(crate) const fn new(free: usize) -> Self {
        Pool { free, queue: Queue::new() }
    }

    /// Takes a free unit if nobody waits for one (wait rule 4: no barging).
    #[inline(always)]
    pub(crate) fn try_take(&mut self) -> bool {
        if self.free > 0 && self.queue.is_empty() {
            self.free -= 1;
            true
        } else {
            false
        }
    }

    /// Gives a unit back: to the first waiter, or to the free count.
    #[inline(always)]
    pub(crate) fn give<F: Flavour>(&mut self) {
        if !self.queue.wake_one::<F>(Stage::Granted) {
            self.free += 1;
        }
    }
}
