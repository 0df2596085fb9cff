//! The work dispatcher (seed 000): tasks submitted from any thread, with CPU priorities;
//! executors serving the dispatcher take the highest-priority waiting task whenever they
//! have no work of their own.
//!
//! Written by hand: the queues thread through the tasks' own `'static` inbox links (no
//! allocation, no capacity), must be lock-free (no mutex, no spinlock: the C executor we
//! re-create spins), and must run under loom through `crate::sync`.
//!
//! Rules (cited as "dispatch rule N"):
//! 1. One lock-free stack per CPU priority (Treiber), its head a tagged pointer: the low
//!    48 bits the task header's inbox node, the high 16 a counter bumped by every push and
//!    pop, so a node popped and pushed again between another thread's load and CAS (ABA)
//!    fails that CAS (unless exactly 65,536 operations land in that window). Nodes are
//!    `'static`, so reading a stale node's link is harmless; the CAS decides. Within a
//!    priority, order is LIFO.
//! 2. A submitted task is claimed for the dispatcher (its owner pointer becomes the
//!    dispatcher's sentinel, never dereferenced): while dispatched, no executor or waker
//!    touches it (its notify word keeps QUEUED: wake rule 3). The worker that pops it
//!    claims it for itself (CAS from the sentinel), then attaches it locally.
//! 3. A dispatched task is released by its worker when it completes (remote rule 4), and
//!    `completed` counts it; `remaining = submitted - completed`.
//! 4. Workers register a slot (their park word) so a submitter can unpark one: the
//!    submitter pushes, issues a `SeqCst` fence and looks for a PARKED worker; a worker
//!    announces PARKED, fences, and re-checks the dispatcher before it parks (park rule
//!    2 with the dispatcher as a second inbox). A worker's slot is emptied and waited
//!    quiet (`active`) before its executor goes away.
//! 5. `quit(n)` adds n quit tokens and unparks every worker; an idle worker that takes a
//!    token returns `RunError::Quit` from `run`.
//!
//! Retry bounds: every CAS loop here (push, pop, token take) retries only when another
//! thread's CAS on the same word succeeded in between: lock-free, and bounded by the
//! number of concurrent operations on that word.

use crate::Priority;
use crate::error::AttachError;
use crate::exec::inbox::InboxNode;
use crate::exec::park::{PARKED, Remote};
use crate::exec::sched::Sched;
use crate::sync::{AtomicPtr, AtomicU32, AtomicU64Like, Ordering};
use crate::task::TaskHandle;
use crate::exec::remote::claim_and_place;
use crate::task::body::{BodyVTable, FutureBody, IntoTaskResult};
use crate::task::header::{Header, flag};
use core::future::Future;
use core::ptr::{self, NonNull};

/// Workers that can register with one dispatcher.
#[cfg(not(keel_loom))]
pub const MAX_WORKERS: usize = 64;
/// Workers that can register with one dispatcher (shrunk under loom, so the models
/// reach the edge and every submit's scan stays short).
#[cfg(keel_loom)]
pub const MAX_WORKERS: usize = 2;

const PTR_MASK: u64 = (1 << 48) - 1;
const TAG_ONE: u64 = 1 << 48;

/// A worker's registration (dispatch rule 4).
struct WorkerSlot {
    remote: AtomicPtr<Remote>,
    active: AtomicU32,
}

/// The dispatcher. `'static` (a `static`, or leaked), shared by submitters and workers.
pub struct Dispatcher {
    levels: [AtomicU64Like; 3],
    submitted: AtomicU64Like,
    completed: AtomicU64Like,
    quit_tokens: AtomicU32,
    quit_taken: AtomicU32,
    workers: [WorkerSlot; MAX_WORKERS],
}

impl core::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Dispatcher").field("remaining", &self.remaining()).finish_non_exhaustive()
    }
}

/// The owner pointer of a dispatched task (dispatch rule 2): never dereferenced.
fn sentinel(d: &Dispatcher) -> *mut Sched {
    d as *const Dispatcher as *mut Sched
}

fn node_of(h: NonNull<Header>) -> *mut InboxNode {
    // SAFETY: `'static` header.
    unsafe { &raw const (*h.as_ptr()).inbox as *mut InboxNode }
}

fn header_of(n: *mut InboxNode) -> NonNull<Header> {
    let off = core::mem::offset_of!(Header, inbox);
    // SAFETY: only task headers' inbox nodes are pushed here.
    unsafe { NonNull::new_unchecked((n as *mut u8).sub(off) as *mut Header) }
}

impl Dispatcher {
    /// A dispatcher with nothing submitted (usable as a `static`).
    #[cfg(not(keel_loom))]
    pub const fn new() -> Self {
        Dispatcher {
            levels: [AtomicU64Like::new(0), AtomicU64Like::new(0), AtomicU64Like::new(0)],
            submitted: AtomicU64Like::new(0),
            completed: AtomicU64Like::new(0),
            quit_tokens: AtomicU32::new(0),
            quit_taken: AtomicU32::new(0),
            workers: [const { WorkerSlot { remote: AtomicPtr::new(ptr::null_mut()), active: AtomicU32::new(0) } }; MAX_WORKERS],
        }
    }

    /// A dispatcher with nothing submitted (loom's atomics have no const constructors).
    #[cfg(keel_loom)]
    pub fn new() -> Self {
        Dispatcher {
            levels: [AtomicU64Like::new(0), AtomicU64Like::new(0), AtomicU64Like::new(0)],
            submitted: AtomicU64Like::new(0),
            completed: AtomicU64Like::new(0),
            quit_tokens: AtomicU32::new(0),
            quit_taken: AtomicU32::new(0),
            workers: core::array::from_fn(|_| WorkerSlot { remote: AtomicPtr::new(ptr::null_mut()), active: AtomicU32::new(0) }),
        }
    }

    /// Tasks submitted and not yet completed.
    pub fn remaining(&self) -> u64 {
        // Acquire (both): a completion seen here happened-before the caller's next step.
        let c = self.completed.load(Ordering::Acquire);
        self.submitted.load(Ordering::Acquire).saturating_sub(c)
    }

    /// Executors that have taken a quit token so far.
    pub fn quit_count(&self) -> u32 {
        // Acquire: pairs with the worker's Release when it takes a token.
        self.quit_taken.load(Ordering::Acquire)
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

    fn submit_body<B>(&'static self, task: TaskHandle, body: B, vt: &'static BodyVTable) -> Result<TaskHandle, AttachError<B>> {
        // Dispatch rule 2: claimed for the dispatcher's sentinel, as an attach claims for
        // an executor (remote rule 2).
        let run = claim_and_place(sentinel(self), task, body, vt, flag::RELEASE_ON_COMPLETE | flag::DISPATCHED)?;
        // Relaxed: only the count matters; the push below publishes the task.
        self.submitted.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `'static` slot, claimed by us.
        let prio = unsafe { run.header().as_ref() }.prio.get().cpu;
        self.push(prio, run.header());
        self.unpark_one();
        Ok(run)
    }

    /// Dispatch rule 1: push.
    fn push(&self, p: Priority, h: NonNull<Header>) {
        let node = node_of(h);
        debug_assert_eq!(node as u64 & !PTR_MASK, 0, "keel bug: task header above 2^48");
        let head = &self.levels[p.index()];
        // Relaxed: the CAS below re-checks.
        let mut old = head.load(Ordering::Relaxed);
        loop {
            // SAFETY: `'static` node; we own the task (claimed), so its link is ours.
            // Relaxed: published by the Release CAS.
            unsafe { (*node).next_store((old & PTR_MASK) as *mut InboxNode) };
            let new = (old & !PTR_MASK).wrapping_add(TAG_ONE) | node as u64;
            // Release: publishes the task (body, fields, link) to the popper's Acquire.
            match head.compare_exchange_weak(old, new, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now) => old = now,
            }
        }
    }

    /// Dispatch rule 1: pop the highest priority's newest task.
    pub(crate) fn pop(&self) -> Option<NonNull<Header>> {
        for head in &self.levels {
            // Acquire: pairs with the pusher's Release, so the node's link is visible.
            let mut old = head.load(Ordering::Acquire);
            loop {
                let p = (old & PTR_MASK) as *mut InboxNode;
                if p.is_null() {
                    break;
                }
                // SAFETY: `'static` node (a stale one's link is garbage the CAS rejects).
                let next = unsafe { (*p).next_load() };
                let new = (old & !PTR_MASK).wrapping_add(TAG_ONE) | next as u64;
                // Acquire: the task's body and fields, published by the push.
                match head.compare_exchange_weak(old, new, Ordering::Acquire, Ordering::Acquire) {
                    Ok(_) => return Some(header_of(p)),
                    Err(now) => old = now,
                }
            }
        }
        None
    }

    /// Whether any task waits (the worker's park re-check, dispatch rule 4).
    pub(crate) fn has_work(&self) -> bool {
        // Relaxed: ordered by the SeqCst fence the caller issued.
        self.levels.iter().any(|l| l.load(Ordering::Relaxed) & PTR_MASK != 0)
    }

    /// A worker claims a popped task for itself (dispatch rule 2).
    pub(crate) fn claim(&self, h: NonNull<Header>, worker: &Sched) -> bool {
        // SAFETY: `'static` header.
        let t = unsafe { h.as_ref() };
        let me = worker as *const Sched as *mut Sched;
        // AcqRel: Acquire sees the submitter's writes; Release publishes the claim.
        t.exec.compare_exchange(sentinel(self), me, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// A dispatched task completed (dispatch rule 3).
    pub(crate) fn note_completed(&self) {
        // Release: pairs with `remaining`'s Acquire.
        self.completed.fetch_add(1, Ordering::Release);
    }

    /// Registers a worker (dispatch rule 4). `None` if all slots are taken.
    pub(crate) fn register(&self, remote: &Remote) -> Option<usize> {
        let r = remote as *const Remote as *mut Remote;
        self.workers
            .iter()
            // SeqCst: dispatch rule 4 (as remote rule 1).
            .position(|w| w.remote.compare_exchange(ptr::null_mut(), r, Ordering::SeqCst, Ordering::SeqCst).is_ok())
    }

    /// Unregisters worker `i` and waits until no submitter is looking at it (cold).
    pub(crate) fn unregister(&self, i: usize) {
        let w = &self.workers[i];
        // SeqCst: dispatch rule 4.
        w.remote.store(ptr::null_mut(), Ordering::SeqCst);
        let mut spins: u64 = 0;
        // SeqCst: dispatch rule 4.
        while w.active.load(Ordering::SeqCst) != 0 {
            spins += 1;
            crate::sync::spin_loop();
            debug_assert!(spins < 1 << 40, "keel bug: a submitter never left");
        }
    }

    /// Dispatch rule 4, the submitter's half: unpark one parked worker.
    fn unpark_one(&self) {
        // SeqCst fence: the push (store) is ordered before the park-word loads; pairs with
        // the worker's announce fence.
        crate::sync::fence(Ordering::SeqCst);
        self.unpark_where(|_| true, 1);
    }

    /// Unparks up to `n` parked workers (bounded by MAX_WORKERS).
    fn unpark_where(&self, _filter: impl Fn(usize) -> bool, n: usize) {
        let mut left = n;
        for w in &self.workers {
            if left == 0 {
                return;
            }
            // SeqCst: dispatch rule 4 (increment before reading the pointer).
            w.active.fetch_add(1, Ordering::SeqCst);
            // SeqCst: as above.
            let r = w.remote.load(Ordering::SeqCst);
            if !r.is_null() {
                // SAFETY: registered and we are inside `active`: the worker's executor
                // waits for us before going away.
                let remote = unsafe { &*r };
                // Relaxed: ordered by the fence above.
                if remote.park.load(Ordering::Relaxed) == PARKED {
                    remote.after_push();
                    left -= 1;
                }
            }
            // Release: the unregistering worker sees everything we did.
            w.active.fetch_sub(1, Ordering::Release);
        }
    }

    /// Makes `n` worker executors return `RunError::Quit` from `run` (dispatch rule 5).
    pub fn quit(&self, n: u32) {
        #[cfg(keel_loom)]
        self.quit_with::<crate::sync::Strong>(n);
        #[cfg(not(keel_loom))]
        self.quit_with(n);
    }

    /// `quit`, with the fence a loom model may leave out (`sync::Weaken::PUSH_FENCE`).
    pub(crate) fn quit_with<#[cfg(keel_loom)] W: crate::sync::Weaken>(&self, n: u32) {
        #[cfg(not(keel_loom))]
        use crate::sync::Strong as W;
        // Release: pairs with the worker's Acquire token take.
        self.quit_tokens.fetch_add(n, Ordering::Release);
        // SeqCst fence: the tokens (store) are ordered before the park-word loads; pairs
        // with the worker's announce fence (dispatch rule 4, park rule 2).
        if W::PUSH_FENCE {
            crate::sync::fence(Ordering::SeqCst);
        }
        self.unpark_where(|_| true, MAX_WORKERS);
    }

    /// Whether quit tokens wait to be taken (the worker's park re-check).
    pub(crate) fn quit_pending(&self) -> bool {
        // Relaxed: ordered by the SeqCst fence the caller issued.
        self.quit_tokens.load(Ordering::Relaxed) > 0
    }

    /// A worker with nothing to do takes a quit token if there is one.
    pub(crate) fn take_quit(&self) -> bool {
        // Acquire: pairs with `quit`'s Release.
        let mut n = self.quit_tokens.load(Ordering::Acquire);
        while n > 0 {
            match self.quit_tokens.compare_exchange_weak(n, n - 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    // Release: pairs with `quit_count`'s Acquire.
                    self.quit_taken.fetch_add(1, Ordering::Release);
                    return true;
                }
                Err(now) => n = now,
            }
        }
        false
    }
}

impl Default for Dispatcher {
    fn default() -> Self {
        Self::new()
    }
}
