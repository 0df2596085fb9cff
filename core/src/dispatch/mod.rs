//! The work dispatcher: tasks submitted from any thread, with CPU priorities;
//! executors serving the dispatcher take the highest-priority waiting task whenever they
//! have no work of their own.
//!
//! Written by hand: the queues thread through the tasks' own `'static` inbox links (no
//! allocation, no capacity), must be lock-free (no mutex, no spinlock), and must run under loom through `crate::sync`.
//!
//! Rules (cited as "dispatch rule N"):
//! 1. One lock-free stack per CPU priority (Treiber). Its head is a (top task, tag) pair
//!    changed only by one double-word compare-and-swap (`lock cmpxchg16b`), the tag a
//!    64-bit count bumped by every push and pop, so a node popped and pushed again between
//!    another thread's load and CAS (ABA) fails that CAS: that takes 2^64 operations on
//!    one level inside one pop's window (at a billion a second, 584 years), so no program
//!    can make the tag wrap; a task is never handed out twice and a pop never installs a
//!    link it read from a node that has moved on (the inbox link it reuses may by then
//!    point into an executor's inbox). The links between nodes are the headers' inbox
//!    nodes; nodes are `'static`, so reading a stale node's link is harmless; the CAS
//!    decides. Within a priority, order is LIFO. A CPU without `cmpxchg16b` (only the
//!    first x86_64 generation) cannot use the dispatcher: `submit` says
//!    `AttachError::Unsupported` and `serve` refuses. Under loom (which has no 128-bit
//!    atomics) the pair is packed in one 64-bit word, the task's address shifted right
//!    by 6 in the low 42 bits under a 22-bit tag: the same algorithm, with a tag no loom
//!    execution comes near wrapping (`dispatch_rule_1_a_stale_pop_fails_at_every_narrow_tag_wrap` shows
//!    the 64-bit tag tells apart the views a 22- or 32-bit one would confuse).
//! 2. A submitted task is claimed for the dispatcher (its owner pointer becomes the
//!    dispatcher's sentinel, never dereferenced): while dispatched, no executor or waker
//!    touches it (its notify word keeps QUEUED: wake rule 3). The worker that pops it
//!    claims it for itself (CAS from the sentinel), then attaches it locally.
//! 3. A dispatched task is released by its worker when it completes (remote rule 4), and
//!    `completed` counts it; `remaining = submitted - completed`.
//! 4. Workers register a slot (their park word) so a submitter can unpark one: the
//!    submitter pushes, issues a `SeqCst` fence, reads the count of idle workers and,
//!    only if it is not zero, looks for a PARKED worker; a worker counts itself idle,
//!    announces PARKED, fences, and re-checks the dispatcher before it parks (park rule
//!    2 with the dispatcher as a second inbox), and leaves the count once it runs again.
//!    The two fences order each side's store (the push; the idle count and PARKED)
//!    before its load (the idle count; the re-check): either the submitter sees the
//!    worker counted and scans, or the worker's re-check sees the push. So a submit
//!    while every worker is busy costs no look at any worker's slot, and a scan looks
//!    only at the slots below the highest ever registered (a worker registers before it
//!    first counts itself idle, so a submitter that sees it counted sees its slot). A
//!    worker's slot is emptied and waited quiet (`active`) before its executor goes
//!    away.
//! 5. `quit(n)` adds n quit tokens and unparks every worker. A worker takes a token only
//!    when it is idle: no task of its own attached, and — looked at *after* loading the
//!    quit word, and again on every retry — no task waiting in the dispatcher; it then
//!    returns `RunError::Quit` from `run`. The quit word packs the tokens ever added
//!    (high 32 bits) and ever taken (low 32), so a take's CAS fails if any quit or take
//!    landed since its load (both halves only grow; an ABA needs 2^32 of them in the
//!    window). Every word operation is a read-modify-write, so the taker's Acquire load
//!    synchronises with every `quit` counted in the word it read (a release sequence),
//!    and the dispatcher check after it sees every task submitted before those quits
//!    (or a later pop by some worker, which then runs it before it can quit itself).
//!    So quit *drains*: a task submitted before `quit(n)` is called is never stranded by
//!    it; it runs on a worker before the last quitting worker returns, or on one that
//!    stays. A task submitted concurrently with or after the quit may find every worker
//!    gone: it stays queued, `remaining()` (and so `wait`) counts it, and the next
//!    executor to `serve` the dispatcher runs it. Tokens beyond the live workers wait
//!    for the next worker that serves (it quits as soon as it is idle).
//!
//! Retry bounds: every CAS loop here (push, pop, token take) retries only when another
//! thread's CAS on the same word succeeded in between: lock-free, and bounded by the
//! number of concurrent operations on that word. A token take re-checks the three
//! levels per retry (three loads).

mod levels;
mod workers;

use levels::Head;
use workers::{WorkerSlot, quit_halves};

use crate::acct::Accounting;
use crate::driver::Driver;
use crate::error::AttachError;
use crate::exec::Executor;
use crate::exec::remote::unstacked_fiber;
use crate::exec::work_source::WorkSource;
use crate::fiber::{Fiber, FiberAttrs, FiberVt};
use crate::mailbox::Mailbox;
use crate::mailbox::inbox::InboxNode;
use crate::stack::StackProvider;
use crate::switch::FiberSwitch;
use crate::sync::{AtomicPtr, AtomicU32, AtomicU64Like, Ordering};
use crate::task::TaskHandle;
use crate::task::body::{BodyVTable, FutureBody, IntoTaskResult};
use crate::task::claim::claim_and_place;
use crate::task::header::{Header, flag};
use core::future::Future;
use core::pin::Pin;
use core::ptr::{self, NonNull};

/// Workers that can register with one dispatcher.
#[cfg(not(keel_loom))]
pub const MAX_WORKERS: usize = 64;
/// Workers that can register with one dispatcher (shrunk under loom, so the models
/// reach the edge and every submit's scan stays short).
#[cfg(keel_loom)]
pub const MAX_WORKERS: usize = 2;

/// A value on a cache line of its own (DESIGN convention 7, cross-thread words padded).
#[repr(align(64))]
struct Line<T>(T);

impl<T> core::ops::Deref for Line<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// The dispatcher. `'static` (a `static`, or leaked), shared by submitters and workers.
/// The submitters' count and the workers' count each have a line of their own, away from
/// the level heads: a worker's completion then does not take the heads' line from a
/// submitter (or the other way round) once more per task.
pub struct Dispatcher {
    levels: [Head; 3],
    submitted: Line<AtomicU64Like>,
    completed: Line<AtomicU64Like>,
    /// Dispatch rule 4: workers between counting themselves idle (before their announce)
    /// and running again; at most `MAX_WORKERS`.
    idle: Line<AtomicU32>,
    /// Dispatch rule 4: one past the highest worker slot ever registered (only grows, at
    /// most `MAX_WORKERS`): a scan for a parked worker stops there.
    slots_end: AtomicU32,
    /// Dispatch rule 5: tokens ever added (high 32 bits), ever taken (low 32).
    quit: AtomicU64Like,
    /// Pops whose claim failed: the task was handed out twice (see `double_takes`).
    double_takes: AtomicU32,
    workers: [WorkerSlot; MAX_WORKERS],
}

impl core::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Dispatcher").field("remaining", &self.remaining()).finish_non_exhaustive()
    }
}

/// The owner pointer of a dispatched task (dispatch rule 2): never dereferenced.
fn sentinel(dispatcher: &Dispatcher) -> *mut Mailbox {
    dispatcher as *const Dispatcher as *mut Mailbox
}

fn node_of(task: NonNull<Header>) -> *mut InboxNode {
    // Provenance rule 3: the node keeps the whole slot's provenance for `header_of`.
    crate::task::header::SlotPtr::inbox_node(task).as_ptr()
}

fn header_of(node: *mut InboxNode) -> NonNull<Header> {
    // SAFETY: only task headers' inbox nodes, made by `node_of`, are pushed here
    // (non-null: `header_of` is called on a non-null node).
    unsafe { Header::from_inbox(NonNull::new_unchecked(node)) }
}

impl Dispatcher {
    /// A dispatcher with nothing submitted (usable as a `static`).
    #[cfg(not(keel_loom))]
    pub const fn new() -> Self {
        Dispatcher {
            levels: [Head::new(), Head::new(), Head::new()],
            submitted: Line(AtomicU64Like::new(0)),
            completed: Line(AtomicU64Like::new(0)),
            idle: Line(AtomicU32::new(0)),
            slots_end: AtomicU32::new(0),
            quit: AtomicU64Like::new(0),
            double_takes: AtomicU32::new(0),
            workers: [const { WorkerSlot { remote: AtomicPtr::new(ptr::null_mut()), active: AtomicU32::new(0) } };
                MAX_WORKERS],
        }
    }

    /// A dispatcher with nothing submitted (loom's atomics have no const constructors).
    #[cfg(keel_loom)]
    pub fn new() -> Self {
        Dispatcher {
            levels: [Head::new(), Head::new(), Head::new()],
            submitted: Line(AtomicU64Like::new(0)),
            completed: Line(AtomicU64Like::new(0)),
            idle: Line(AtomicU32::new(0)),
            slots_end: AtomicU32::new(0),
            quit: AtomicU64Like::new(0),
            double_takes: AtomicU32::new(0),
            workers: core::array::from_fn(|_| WorkerSlot {
                remote: AtomicPtr::new(ptr::null_mut()),
                active: AtomicU32::new(0),
            }),
        }
    }

    /// Tasks submitted and not yet completed.
    pub fn remaining(&self) -> u64 {
        // Acquire (both): a completion seen here happened-before the caller's next step.
        let completed = self.completed.load(Ordering::Acquire);
        self.submitted.load(Ordering::Acquire).saturating_sub(completed)
    }

    /// Executors that have taken a quit token so far (wraps at 2^32).
    pub fn quit_count(&self) -> u32 {
        // Acquire: pairs with the worker's AcqRel token take.
        quit_halves(self.quit.load(Ordering::Acquire)).1
    }

    /// Submits a future as the next run of `task` (unowned: newly created or released),
    /// from any thread; one waiting worker is unparked. Returns the run's handle.
    pub fn submit<F>(&'static self, task: TaskHandle, body: F) -> Result<TaskHandle, AttachError<F>>
    where
        F: Future + Send + 'static,
        F::Output: IntoTaskResult,
    {
        self.submit_body(task, body, &FutureBody::<F>::VTABLE)
    }

    /// Submits a fiber on keel's own switch as the next run of `task`, from any thread:
    /// the worker that takes it gives it a stack from its own pool when it first runs it
    /// (fiber rule 8). So a dispatched body may suspend (yield, sleep, i/o on the
    /// worker's driver) like any fiber.
    pub fn submit_fiber<F, R>(
        &'static self,
        task: TaskHandle,
        attrs: FiberAttrs,
        body: F,
    ) -> Result<TaskHandle, AttachError<F>>
    where
        F: FnOnce(&mut Fiber) -> R + Send + 'static,
        R: IntoTaskResult,
    {
        self.submit_fiber_with::<crate::arch::AsmSwitch, F, R>(task, attrs, body)
    }

    /// [`submit_fiber`](Self::submit_fiber) on switcher `Sw`.
    pub fn submit_fiber_with<Sw, F, R>(
        &'static self,
        task: TaskHandle,
        attrs: FiberAttrs,
        body: F,
    ) -> Result<TaskHandle, AttachError<F>>
    where
        Sw: FiberSwitch,
        F: FnOnce(&mut Fiber) -> R + Send + 'static,
        R: IntoTaskResult,
    {
        let fiber = unstacked_fiber::<Sw, F>(task, attrs, body)?;
        self.submit_body(task, fiber, &FiberVt::<Sw, F, R>::VTABLE).map_err(|failed| {
            let (err, fiber) = failed.split();
            err.with_body(fiber.into_body())
        })
    }

    fn submit_body<B>(
        &'static self,
        task: TaskHandle,
        body: B,
        vtable: &'static BodyVTable,
    ) -> Result<TaskHandle, AttachError<B>> {
        #[cfg(keel_loom)]
        return self.submit_body_with::<crate::sync::Strong, B>(task, body, vtable);
        #[cfg(not(keel_loom))]
        self.submit_body_with(task, body, vtable)
    }

    /// `submit`, with the fence a loom model may leave out (`sync::Weaken::PUSH_FENCE`).
    pub(crate) fn submit_body_with<#[cfg(keel_loom)] W: crate::sync::Weaken, B>(
        &'static self,
        task: TaskHandle,
        body: B,
        vtable: &'static BodyVTable,
    ) -> Result<TaskHandle, AttachError<B>> {
        if !Self::supported() {
            return Err(AttachError::Unsupported(body));
        }
        // Dispatch rule 2: claimed for the dispatcher's sentinel, as an attach claims for
        // an executor (remote rule 2).
        #[cfg(keel_loom)]
        let run = claim_and_place::<crate::sync::Strong, B>(
            sentinel(self),
            task,
            body,
            vtable,
            flag::RELEASE_ON_COMPLETE | flag::DISPATCHED,
        )?;
        #[cfg(not(keel_loom))]
        let run = claim_and_place(sentinel(self), task, body, vtable, flag::RELEASE_ON_COMPLETE | flag::DISPATCHED)?;
        // Remote rule 2: the task is whole; publish its owner, the sentinel. Release:
        // pairs with the worker's claim (its Acquire CAS from the sentinel), with the
        // level push's Release for the fields.
        // SAFETY: `'static` slot.
        unsafe { run.header().as_ref() }.owner.store(sentinel(self), Ordering::Release);
        // Relaxed: only the count matters; the push below publishes the task.
        self.submitted.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `'static` slot, claimed by us.
        let prio = unsafe { run.header().as_ref() }.prio.get().cpu;
        self.push(prio, run.header());
        #[cfg(keel_loom)]
        self.unpark_one::<W>();
        #[cfg(not(keel_loom))]
        self.unpark_one();
        Ok(run)
    }

    /// A worker claims a popped task for itself (dispatch rule 2).
    pub(crate) fn claim(&self, task: NonNull<Header>, owner: *mut Mailbox) -> bool {
        // SAFETY: `'static` header.
        let header = unsafe { task.as_ref() };
        // AcqRel: Acquire sees the submitter's writes; Release publishes the claim.
        header.owner.compare_exchange(sentinel(self), owner, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// Times a worker popped a task that was not the dispatcher's any more (its claim
    /// failed): the stack handed it out twice, which takes an ABA past the 64-bit tag
    /// (dispatch rule 1: 2^64 operations inside one pop), so it stays 0: a check on keel
    /// itself. Debug builds panic there instead. The task itself would not be lost (the
    /// first taker runs it) and is not pushed back (it would run twice).
    pub fn double_takes(&self) -> u32 {
        // Relaxed: a count; nothing is published with it.
        self.double_takes.load(Ordering::Relaxed)
    }

    /// A worker's claim of a popped task failed (`double_takes`). Cold.
    pub(crate) fn note_double_take(&self) {
        // Relaxed: as in `double_takes`.
        self.double_takes.fetch_add(1, Ordering::Relaxed);
    }

    /// A dispatched task completed (dispatch rule 3).
    pub(crate) fn note_completed(&self) {
        // Release: pairs with `remaining`'s Acquire.
        self.completed.fetch_add(1, Ordering::Release);
    }

    /// Whether this CPU can run the dispatcher (dispatch rule 1: `cmpxchg16b`).
    pub fn supported() -> bool {
        #[cfg(not(keel_loom))]
        return levels::wide::supported();
        #[cfg(keel_loom)]
        levels::narrow::supported()
    }
}

#[cfg(all(test, not(keel_loom)))]
mod tests;

impl Default for Dispatcher {
    fn default() -> Self {
        Self::new()
    }
}

impl<D: Driver, S: StackProvider, A: Accounting> Executor<D, S, A> {
    /// Makes this executor a worker of `dispatcher`: whenever it has no work of its own it
    /// takes the highest-priority dispatched task, and `Dispatcher::quit` makes its `run`
    /// return `RunError::Quit`. `false` if it serves one already or all worker slots are
    /// taken.
    pub fn serve(self: Pin<&Self>, dispatcher: &'static Dispatcher) -> bool {
        let sched = self.sched();
        if sched.dispatcher.get().is_some() {
            return false;
        }
        match dispatcher.register(&sched.mailbox.park) {
            Some(slot) => {
                sched.dispatcher.set(Some((dispatcher, slot)));
                true
            }
            None => false,
        }
    }
}

impl WorkSource for Dispatcher {
    fn unregister(&self, slot: usize) {
        Dispatcher::unregister(self, slot)
    }
    fn has_work(&self) -> bool {
        Dispatcher::has_work(self)
    }
    fn quit_pending(&self) -> bool {
        Dispatcher::quit_pending(self)
    }
    fn take_quit(&self) -> bool {
        Dispatcher::take_quit(self)
    }
    fn pop(&self) -> Option<NonNull<Header>> {
        Dispatcher::pop(self)
    }
    fn claim(&self, task: NonNull<Header>, owner: *mut Mailbox) -> bool {
        Dispatcher::claim(self, task, owner)
    }
    fn note_double_take(&self) {
        Dispatcher::note_double_take(self)
    }
    fn note_completed(&self) {
        Dispatcher::note_completed(self)
    }
    fn idle_enter(&self) {
        Dispatcher::idle_enter(self)
    }
    fn idle_leave(&self) {
        Dispatcher::idle_leave(self)
    }
}
