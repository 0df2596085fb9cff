//! The work dispatcher (seed 000): tasks submitted from any thread, with CPU priorities;
//! executors serving the dispatcher take the highest-priority waiting task whenever they
//! have no work of their own.
//!
//! Written by hand: the queues thread through the tasks' own `'static` inbox links (no
//! allocation, no capacity), must be lock-free (no mutex, no spinlock: the C executor we
//! re-create spins), and must run under loom through `crate::sync`.
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
//!    execution comes near wrapping (`a_stale_pop_fails_at_every_narrow_tag_wrap` shows
//!    the 64-bit tag tells apart the views a 22- or 32-bit one would confuse).
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

use crate::Priority;
use crate::acct::Accounting;
use crate::driver::Driver;
use crate::error::AttachError;
use crate::exec::Executor;
use crate::exec::work_source::WorkSource;
use crate::mailbox::Mailbox;
use crate::mailbox::inbox::InboxNode;
use crate::mailbox::park::{PARKED, ParkWord};
use crate::stack::StackProvider;
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

/// Dispatch rule 1: a level's top task and its tag, as loaded or to be stored.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Top {
    task: Option<NonNull<Header>>,
    tag: u64,
}

#[cfg(keel_loom)]
use narrow::Head;
#[cfg(not(keel_loom))]
use wide::Head;

/// Dispatch rule 1's head as one 16-byte pair: `[top address, tag]`.
#[cfg(not(keel_loom))]
mod wide {
    use super::{Header, NonNull, Top};
    use crate::sync::{AtomicU8, AtomicU64Like, Ordering};

    /// The pair. The halves are read with 8-byte atomic loads (aligned 8-byte loads
    /// are atomic on x86_64, and a torn pair is harmless: see `load`) and written only
    /// by `lock cmpxchg16b` on the whole 16 bytes.
    #[repr(C, align(16))]
    pub(super) struct Head([AtomicU64Like; 2]);

    /// Whether the CPU has `cmpxchg16b`: 0 not looked yet, 1 yes, 2 no.
    static CX16: AtomicU8 = AtomicU8::new(0);

    /// Whether this CPU can run dispatch rule 1 (`cmpxchg16b`, CPUID.1:ECX bit 13).
    pub(super) fn supported() -> bool {
        // Relaxed: a cached fact about the CPU; any thread may compute it again.
        match CX16.load(Ordering::Relaxed) {
            1 => true,
            2 => false,
            _ => {
                let yes = core::arch::x86_64::__cpuid(1).ecx & (1 << 13) != 0;
                // Relaxed: as above.
                CX16.store(if yes { 1 } else { 2 }, Ordering::Relaxed);
                yes
            }
        }
    }

    impl Head {
        pub(super) const fn new() -> Self {
            Head([AtomicU64Like::new(0), AtomicU64Like::new(0)])
        }

        /// An empty head whose tag starts at `tag` (tests of the tag's edges).
        #[cfg(test)]
        pub(super) const fn with_tag(tag: u64) -> Self {
            Head([AtomicU64Like::new(0), AtomicU64Like::new(tag)])
        }

        /// The pair, read tag first. A pair torn by a CAS in between names a top and a
        /// tag the head never held together; every tag is held once (it only grows), so
        /// a CAS expecting that pair fails and returns the real one.
        #[inline(always)]
        pub(super) fn load(&self) -> Top {
            // Acquire (both): pair with the CAS that wrote them (a `lock`ed instruction,
            // which orders everything before it), so the top's link and the task's body
            // and fields (the push) are visible.
            let tag = self.0[1].load(Ordering::Acquire);
            let addr = self.0[0].load(Ordering::Acquire);
            Top { task: NonNull::new(addr as *mut Header), tag }
        }

        /// Whether a task is on top.
        #[inline(always)]
        pub(super) fn has_task(&self) -> bool {
            // Acquire: as in `load`.
            self.0[0].load(Ordering::Acquire) != 0
        }

        /// Replaces `old` with `new` if the head holds `old`; the head's pair if not.
        /// Sequentially consistent (a `lock`ed read-modify-write): it publishes what the
        /// caller wrote before (a push's link and task) and acquires what the last
        /// writer published (a pop's task).
        #[inline(always)]
        pub(super) fn cas(&self, old: Top, new: Top) -> Result<(), Top> {
            debug_assert!(supported(), "keel bug: dispatch rule 1 used without cmpxchg16b");
            let addr = |t: Top| t.task.map_or(0, |h| h.as_ptr() as u64);
            let (mut lo, mut hi) = (addr(old), old.tag);
            let ok: u8;
            // SAFETY: `self.0` is 16 bytes, 16-aligned (`repr(align(16))`), valid for the
            // `'static` dispatcher; `cmpxchg16b` exists (`supported`, checked before any
            // task reaches a level: `submit` and `serve`). rbx, which cmpxchg16b takes
            // the new low half in, is reserved by LLVM: it is swapped with a scratch
            // register around the instruction and restored before the block ends.
            unsafe {
                core::arch::asm!(
                    "xchg {new_lo}, rbx",
                    "lock cmpxchg16b xmmword ptr [{dst}]",
                    "sete {ok}",
                    "mov rbx, {new_lo}",
                    dst = in(reg) self.0.as_ptr(),
                    new_lo = inout(reg) addr(new) => _,
                    ok = out(reg_byte) ok,
                    in("rcx") new.tag,
                    inout("rax") lo,
                    inout("rdx") hi,
                    options(nostack),
                );
            }
            if ok != 0 { Ok(()) } else { Err(Top { task: NonNull::new(lo as *mut Header), tag: hi }) }
        }
    }
}

/// Dispatch rule 1's head packed in one word (loom has no 128-bit atomics): the task
/// header's address shifted right by 6 (64-byte aligned, below 2^48: 42 bits) under a
/// `TAG_BITS`-bit tag that wraps.
#[cfg(keel_loom)]
mod narrow {
    use super::{Header, NonNull, Top};
    use crate::sync::{AtomicU64Like, Ordering};

    const ADDR_SHIFT: u32 = 6;
    const PTR_MASK: u64 = (1 << 42) - 1;
    /// Bits of tag above the address.
    pub(super) const TAG_BITS: u32 = 22;

    pub(super) fn supported() -> bool {
        true
    }

    pub(super) struct Head(AtomicU64Like);

    fn pack(t: Top) -> u64 {
        let addr = t.task.map_or(0, |h| h.as_ptr() as u64 >> ADDR_SHIFT);
        (t.tag & ((1 << TAG_BITS) - 1)) << 42 | addr
    }

    fn unpack(w: u64) -> Top {
        Top { task: NonNull::new(((w & PTR_MASK) << ADDR_SHIFT) as *mut Header), tag: w >> 42 }
    }

    impl Head {
        pub(super) fn new() -> Self {
            Head(AtomicU64Like::new(0))
        }

        pub(super) fn load(&self) -> Top {
            // Acquire: pairs with the CAS that wrote it.
            unpack(self.0.load(Ordering::Acquire))
        }

        pub(super) fn has_task(&self) -> bool {
            // Acquire: as in `load`.
            self.0.load(Ordering::Acquire) & PTR_MASK != 0
        }

        pub(super) fn cas(&self, old: Top, new: Top) -> Result<(), Top> {
            // AcqRel: as the wide head's `lock cmpxchg16b` (publishes and acquires);
            // Acquire on failure: the caller decides again on what it returns.
            self.0
                .compare_exchange_weak(pack(old), pack(new), Ordering::AcqRel, Ordering::Acquire)
                .map(|_| ())
                .map_err(unpack)
        }
    }
}

/// Dispatch rule 5: one token added, in the quit word's high half.
const QUIT_ADDED_ONE: u64 = 1 << 32;

/// Tokens added and taken, from the quit word (dispatch rule 5).
fn quit_halves(w: u64) -> (u32, u32) {
    ((w >> 32) as u32, w as u32)
}

/// A worker's registration (dispatch rule 4).
struct WorkerSlot {
    remote: AtomicPtr<ParkWord>,
    active: AtomicU32,
}

/// The dispatcher. `'static` (a `static`, or leaked), shared by submitters and workers.
pub struct Dispatcher {
    levels: [Head; 3],
    submitted: AtomicU64Like,
    completed: AtomicU64Like,
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
fn sentinel(d: &Dispatcher) -> *mut Mailbox {
    d as *const Dispatcher as *mut Mailbox
}

fn node_of(h: NonNull<Header>) -> *mut InboxNode {
    // Provenance rule 3: the node keeps the whole slot's provenance for `header_of`.
    crate::task::header::SlotPtr::inbox_node(h).as_ptr()
}

fn header_of(n: *mut InboxNode) -> NonNull<Header> {
    // SAFETY: only task headers' inbox nodes, made by `node_of`, are pushed here
    // (non-null: `header_of` is called on a non-null node).
    unsafe { Header::from_inbox(NonNull::new_unchecked(n)) }
}

impl Dispatcher {
    /// A dispatcher with nothing submitted (usable as a `static`).
    #[cfg(not(keel_loom))]
    pub const fn new() -> Self {
        Dispatcher {
            levels: [Head::new(), Head::new(), Head::new()],
            submitted: AtomicU64Like::new(0),
            completed: AtomicU64Like::new(0),
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
            submitted: AtomicU64Like::new(0),
            completed: AtomicU64Like::new(0),
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
        let c = self.completed.load(Ordering::Acquire);
        self.submitted.load(Ordering::Acquire).saturating_sub(c)
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

    fn submit_body<B>(
        &'static self,
        task: TaskHandle,
        body: B,
        vt: &'static BodyVTable,
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
            vt,
            flag::RELEASE_ON_COMPLETE | flag::DISPATCHED,
        )?;
        #[cfg(not(keel_loom))]
        let run = claim_and_place(sentinel(self), task, body, vt, flag::RELEASE_ON_COMPLETE | flag::DISPATCHED)?;
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
        self.unpark_one();
        Ok(run)
    }

    /// Dispatch rule 1: push.
    fn push(&self, p: Priority, h: NonNull<Header>) {
        let node = node_of(h);
        debug_assert!(h.as_ptr() as u64 >> 48 == 0, "keel bug: task header above 2^48");
        debug_assert!((h.as_ptr() as u64).is_multiple_of(64), "keel bug: task header not 64-byte aligned");
        let head = &self.levels[p.index()];
        let mut old = head.load();
        loop {
            let next = old.task.map_or(ptr::null_mut(), node_of);
            // SAFETY: `'static` node; we own the task (claimed), so its link is ours.
            // Relaxed: published by the CAS.
            unsafe { (*node).next_store(next) };
            // The CAS publishes the task (body, fields, link) to the popper.
            match head.cas(old, Top { task: Some(h), tag: old.tag.wrapping_add(1) }) {
                Ok(()) => return,
                Err(now) => old = now,
            }
        }
    }

    /// Dispatch rule 1: pop the highest priority's newest task.
    pub(crate) fn pop(&self) -> Option<NonNull<Header>> {
        for head in &self.levels {
            // The load acquires the pusher's link.
            let mut old = head.load();
            while let Some(h) = old.task {
                // SAFETY: `'static` node (a stale one's link is garbage the CAS rejects).
                let next = unsafe { (*node_of(h)).next_load() };
                let next = (!next.is_null()).then(|| header_of(next));
                // The CAS acquires the task's body and fields, published by the push.
                match head.cas(old, Top { task: next, tag: old.tag.wrapping_add(1) }) {
                    Ok(()) => return Some(h),
                    Err(now) => old = now,
                }
            }
        }
        None
    }

    /// Whether any task waits (the worker's park re-check, dispatch rule 4; the token
    /// take's drain check, dispatch rule 5).
    pub(crate) fn has_work(&self) -> bool {
        // Acquire: pairs with the pushes' Release CAS; for the token take it is what the
        // quit word's Acquire made visible (rule 5); for the park re-check the caller's
        // SeqCst fence orders it (rule 4).
        self.levels.iter().any(Head::has_task)
    }

    /// A worker claims a popped task for itself (dispatch rule 2).
    pub(crate) fn claim(&self, h: NonNull<Header>, owner: *mut Mailbox) -> bool {
        // SAFETY: `'static` header.
        let t = unsafe { h.as_ref() };
        // AcqRel: Acquire sees the submitter's writes; Release publishes the claim.
        t.owner.compare_exchange(sentinel(self), owner, Ordering::AcqRel, Ordering::Relaxed).is_ok()
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
        return wide::supported();
        #[cfg(keel_loom)]
        narrow::supported()
    }

    /// Registers a worker (dispatch rule 4). `None` if all slots are taken, or the CPU
    /// cannot run the dispatcher (`supported`).
    pub(crate) fn register(&self, remote: &ParkWord) -> Option<usize> {
        if !Self::supported() {
            return None;
        }
        let r = remote as *const ParkWord as *mut ParkWord;
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
            // Relaxed: a slot with no worker is skipped without the two RMWs below (they
            // cost a submit ~100 atomic operations over the 64 slots). Sound after the
            // caller's SeqCst fence: a worker whose registration we miss registered after
            // that fence, so its own announce fence comes later too and its park re-check
            // sees the push (dispatch rule 4).
            if w.remote.load(Ordering::Relaxed).is_null() {
                continue;
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

    /// Makes `n` worker executors return `RunError::Quit` from `run` once they are idle
    /// (dispatch rule 5): each quitting worker first finishes the tasks it owns and keeps
    /// taking dispatched tasks while any wait, so no task submitted before this call is
    /// left queued by it. Tasks submitted later may outlive every worker: they stay
    /// queued, counted by `remaining()`, for the next executor that serves. Tokens beyond
    /// the workers serving now wait for later workers. Returns at once; `quit_count`
    /// (or keel-linux's `pool::quit`) tells when the workers have gone.
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
        // Release: pairs with the worker's Acquire load in `take_quit` (rule 5): the
        // tasks submitted before this call are visible to its dispatcher check. The added
        // half is the high one, so it wraps at 2^32 without touching the taken half.
        self.quit.fetch_add(u64::from(n).wrapping_mul(QUIT_ADDED_ONE), Ordering::Release);
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
        let (added, taken) = quit_halves(self.quit.load(Ordering::Relaxed));
        added != taken
    }

    /// An idle worker (no task of its own) takes a quit token if there is one and no
    /// dispatched task waits (dispatch rule 5).
    pub(crate) fn take_quit(&self) -> bool {
        #[cfg(keel_loom)]
        return self.take_quit_with::<crate::sync::Strong>();
        #[cfg(not(keel_loom))]
        self.take_quit_with()
    }

    /// `take_quit`, with the drain check a loom model may leave out
    /// (`sync::Weaken::QUIT_DRAINS`).
    pub(crate) fn take_quit_with<#[cfg(keel_loom)] W: crate::sync::Weaken>(&self) -> bool {
        #[cfg(not(keel_loom))]
        use crate::sync::Strong as W;
        // Acquire: synchronises with every `quit` counted in `w` (all operations on the
        // word are read-modify-writes: one release sequence), so the check below sees
        // the tasks submitted before them (rule 5).
        let mut w = self.quit.load(Ordering::Acquire);
        loop {
            let (added, taken) = quit_halves(w);
            if added == taken {
                return false;
            }
            // Rule 5: a task waits: take it instead (the caller's next pass does).
            if W::QUIT_DRAINS && self.has_work() {
                return false;
            }
            let new = (w & !(u32::MAX as u64)) | u64::from(taken.wrapping_add(1));
            // AcqRel: Release pairs with `quit_count`'s Acquire; Acquire as for the load
            // above, on success (nothing landed between: the check stands) and failure.
            match self.quit.compare_exchange_weak(w, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => w = now,
            }
        }
    }
}

impl Default for Dispatcher {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, not(keel_loom)))]
mod tests {
    use super::*;
    use crate::exec::sched::Sched;
    use crate::{Config, TaskAttrs, TaskSlot};
    extern crate std;

    /// Rule 1: each level is LIFO, higher priorities first, and the packed addresses
    /// round-trip.
    #[test]
    fn levels_pop_highest_first_newest_first() {
        static T: [TaskSlot; 3] = [TaskSlot::new(), TaskSlot::new(), TaskSlot::new()];
        let d: &'static Dispatcher = std::boxed::Box::leak(std::boxed::Box::new(Dispatcher::new()));
        let h: std::vec::Vec<_> = T.iter().map(|t| t.create(TaskAttrs::default()).unwrap().header()).collect();
        d.push(Priority::Low, h[0]);
        d.push(Priority::Normal, h[1]);
        d.push(Priority::Normal, h[2]);
        assert!(d.has_work());
        assert_eq!(d.pop(), Some(h[2]));
        assert_eq!(d.pop(), Some(h[1]));
        assert_eq!(d.pop(), Some(h[0]));
        assert_eq!(d.pop(), None);
        assert!(!d.has_work());
    }

    /// Rule 2 and `Sched::take_dispatched`: a popped task whose claim fails (the stack
    /// handed it out twice; here forced by pushing a task the dispatcher never claimed)
    /// is reported (`double_takes`; debug builds panic), not pushed back, not attached.
    #[test]
    fn a_failed_claim_after_a_pop_is_reported_not_requeued() {
        static T: TaskSlot = TaskSlot::new();
        let d: &'static Dispatcher = std::boxed::Box::leak(std::boxed::Box::new(Dispatcher::new()));
        let worker = Sched::new(Config::default());
        worker.dispatcher.set(Some((d, 0)));
        let h = T.create(TaskAttrs::default()).unwrap().header();
        // Owned by nobody, not by the sentinel: as if another worker had claimed it.
        d.push(Priority::Normal, h);
        let took = std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| worker.take_dispatched()));
        match took {
            #[cfg(debug_assertions)]
            Ok(_) => panic!("debug builds must panic on a double take"),
            #[cfg(not(debug_assertions))]
            Ok(t) => assert!(!t, "a task whose claim failed was taken"),
            Err(e) => {
                let msg = e.downcast_ref::<&str>().copied().unwrap_or("");
                assert!(msg.contains("taken twice"), "unexpected panic: {msg}");
            }
        }
        assert_eq!(d.double_takes(), 1, "the double take was not reported");
        assert_eq!(d.pop(), None, "the task was pushed back: it would run twice");
        assert_eq!(worker.attached.get(), 0);
        // SAFETY: `'static` slot.
        assert!(unsafe { h.as_ref() }.owner.load(Ordering::Relaxed).is_null(), "its owner changed");
    }

    /// Rule 1: a popper's view of a level (top, tag) goes stale as soon as the level has
    /// moved on, however far: a view exactly 2^22 or 2^32 operations old with the same
    /// task on top again (where a 22-bit tag, as before, or a 32-bit one would wrap and
    /// let the stale CAS install the link it read long ago) fails its CAS; and the
    /// 64-bit tag wraps at 2^64 without harm.
    #[test]
    fn a_stale_pop_fails_at_every_narrow_tag_wrap() {
        if !Dispatcher::supported() {
            std::println!("SKIPPED: this CPU lacks cmpxchg16b (dispatch rule 1)");
            return;
        }
        static T: [TaskSlot; 2] = [TaskSlot::new(), TaskSlot::new()];
        let h = T[0].create(TaskAttrs::default()).unwrap().header();
        let other = T[1].create(TaskAttrs::default()).unwrap().header();
        for edge in [1u64 << 22, 1 << 32, 3 << 40] {
            let head = Head::with_tag(5);
            head.cas(head.load(), Top { task: Some(h), tag: 6 }).unwrap();
            // A popper loads the view, reads the top's link (`other`, say), and stalls.
            let stale = head.load();
            assert_eq!(stale, Top { task: Some(h), tag: 6 });
            // `edge` operations later the same task is on top again.
            head.cas(stale, Top { task: Some(h), tag: 6 + edge }).unwrap();
            let now = head.load();
            assert_eq!(
                head.cas(stale, Top { task: Some(other), tag: 7 }),
                Err(now),
                "a view {edge} operations old passed the CAS"
            );
            assert_eq!(head.load(), now);
        }
        // The tag wraps at 2^64 (unreachable in practice: every push and pop adds one).
        let head = Head::with_tag(u64::MAX);
        let top = head.load();
        head.cas(top, Top { task: Some(h), tag: top.tag.wrapping_add(1) }).unwrap();
        assert_eq!(head.load(), Top { task: Some(h), tag: 0 });
        assert!(head.has_task());
    }
}

impl<D: Driver, S: StackProvider, A: Accounting> Executor<D, S, A> {
    /// Makes this executor a worker of `dispatcher`: whenever it has no work of its own it
    /// takes the highest-priority dispatched task, and `Dispatcher::quit` makes its `run`
    /// return `RunError::Quit`. `false` if it serves one already or all worker slots are
    /// taken.
    pub fn serve(self: Pin<&Self>, dispatcher: &'static Dispatcher) -> bool {
        let s = self.sched();
        if s.dispatcher.get().is_some() {
            return false;
        }
        match dispatcher.register(&s.mailbox.park) {
            Some(i) => {
                s.dispatcher.set(Some((dispatcher, i)));
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
}
