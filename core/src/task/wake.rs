//! Waking a task from any thread: the notify word, the waker, and the protocol that
//! keeps a task in at most one inbox and ignores stale wakes.
//!
//! The notify word (`AtomicU64`) = `woken_gen << 32 | QUEUED`.
//!
//! Rules (cited as "wake rule N"):
//! 1. Wake semantics (the `Future` contract), applied by the owner in
//!    `Sched::wake_local`: Suspended → Ready and queued; Running → `NOTIFIED`, queued
//!    once when it suspends; Attached, Ready, Cancelling, Draining, Idle, Completed →
//!    no-op. No task is ever queued twice.
//! 2. A wake names a run: a waker or handle carries the generation of the run it was
//!    made for. A wake whose generation is not the task's current one is a no-op
//!    (checked first by the waker, and again by the owner when it takes the wake).
//! 3. `QUEUED` set means the task's inbox node is in (or being pushed onto) its
//!    owner's inbox, or the task has no owner. Only the waker that moves `QUEUED` from
//!    clear to set pushes the node; so a node is in at most one inbox, once.
//! 4. Wakers that find `QUEUED` set merge their generation into `woken_gen`, keeping
//!    the newer, so a wake for the current run is never lost behind a stale one. They
//!    merge with their CAS even when it changes nothing: a load that finds the wake
//!    queued may be stale (the owner may have taken it, polled without seeing this
//!    waker's writes and suspended), and only the CAS both finds out and orders the
//!    waker's writes before the owner's next take (loom: `loom_wake`'s merge twin).
//! 5. The owner takes the word with a swap to 0 after popping the node off its inbox,
//!    then applies rule 1 if `woken_gen` is the current generation. (A swap, not a
//!    plain store: rule 4 lets wakers write while `QUEUED` is set.) The swap and the
//!    wakers' CAS are AcqRel both ways: a waker acquires what it publishes to, and the
//!    next waker acquires the owner's last writes to the node (its pop links the stub
//!    behind the node), so the node's next push cannot race its last pop.
//!    Every write to the word is a read-modify-write (`open` swaps too).
//! 6. An owner gives a task up (release, destroy, executor drop) only by a CAS from a
//!    word without `QUEUED` to `QUEUED`: a task with a wake in flight to an executor
//!    stays owned by it until that executor has drained the wake.
//! 7. Same-thread wakes from the executor itself (timers, i/o completions, `yield_now`,
//!    `Executor::wake`) bypass the word entirely: they are plain `Cell` updates.
//!
//! Progress: a foreign wake is lock-free (its CAS retries only when another waker or
//! the owner changed the word) and pushes with one swap (wait-free). The owner's side
//! is wait-free.

use crate::exec::sched::Sched;
use crate::sync::{AtomicU64Like, Ordering};
use crate::task::header::{Header, SlotPtr};
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use core::task::{Context, RawWaker, RawWakerVTable, Waker};

pub(crate) const QUEUED: u64 = 1;
/// With QUEUED: the node was pushed by a foreign attach, not a wake (`exec/remote.rs`).
pub(crate) const ATTACH: u64 = 2;
const LOW: u64 = 0xFFFF_FFFF;

#[inline(always)]
const fn gen_of(word: u64) -> u32 {
    (word >> 32) as u32
}

/// Whether generation `a` is newer than `b` (wrapping).
#[inline(always)]
const fn newer(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// The notify word.
pub(crate) struct AtomicNotify(AtomicU64Like);

impl AtomicNotify {
    crate::sync::maybe_const_fn! {
        /// A word for a task with no owner (`QUEUED` set: wakes go nowhere, rule 3).
        pub(crate) fn new_unowned() -> Self {
            AtomicNotify(AtomicU64Like::new(QUEUED))
        }
    }

    /// Owner, after claiming an unowned task: open it to wakes (rule 6's inverse).
    /// Wakes merged while it had no owner were for runs that are over.
    pub(crate) fn open(&self) {
        // Release: pairs with the waker's Acquire (its load, or its CAS) in `wake_by_gen`,
        // which then sees the claim's `exec` store made before this. A swap, not a store:
        // every write to the word is a read-modify-write, so its modification order is
        // the order in which they read it (rule 4's merges rely on it, and loom models RMW
        // atomicity against RMWs only: tokio-rs/loom#254).
        let was = self.0.swap(0, Ordering::Release);
        debug_assert!(was & QUEUED != 0, "keel bug: opening a task that had an owner");
    }

    /// Owner, after popping the task off its inbox (rule 5). Returns the woken generation
    /// and whether the node came from a foreign attach.
    pub(crate) fn take(&self) -> (u32, bool) {
        // Acquire: pairs with the waker's (or attacher's) Release, so whatever it wrote
        // before waking (or the body it placed) is visible to the owner and the task.
        // Release: pairs with the next waker's Acquire CAS (rule 5): this pop's writes to
        // the node (the stub linked into its `next`) happen before that waker clears
        // `next` to push it again. Without it the owner's link can land last and leave
        // the node pointing at the stub that points at it: a cycle, the task taken
        // forever (loom: `loom_wake`'s Release-CAS twins).
        let w = self.0.swap(0, Ordering::AcqRel);
        (gen_of(w), w & ATTACH != 0)
    }

    /// A foreign attacher that claimed an unowned task (QUEUED set since its release):
    /// mark the coming push as an attach, keeping whatever wakers merged (rule 4).
    pub(crate) fn mark_attach(&self) {
        // Release: publishes the placed body and local fields to the owner's `take`.
        self.0.fetch_or(ATTACH, Ordering::Release);
    }

    /// Owner, after popping the task off its inbox: whether the node came from a foreign
    /// attach (remote rule 2), before `take`.
    #[inline(always)]
    pub(crate) fn attach_pending(&self) -> bool {
        // Relaxed: the attacher's `mark_attach` came before its push, which our pop
        // acquired; wakers keep the bit (rule 4) and only `take` clears it.
        self.0.load(Ordering::Relaxed) & ATTACH != 0
    }

    /// Owner: give the task up (rule 6). Fails if a wake is in flight to the owner.
    pub(crate) fn close(&self, generation: u32) -> bool {
        let closed = (generation as u64) << 32 | QUEUED;
        // The word is 0 whenever QUEUED is clear (rules 4 and 5), so one CAS from 0 decides.
        // AcqRel on success: the caller's following `exec` store must not be seen first.
        // Relaxed on failure: the caller drains its inbox before trying again.
        self.0.compare_exchange(0, closed, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }
}

/// Wakes run `generation` of the task at `hdr` from any thread (rules 2-4).
#[inline(always)]
pub(crate) fn wake_by_gen(hdr: NonNull<Header>, generation: u32) {
    #[cfg(keel_loom)]
    wake_by_gen_with::<crate::sync::Strong>(hdr, generation);
    #[cfg(not(keel_loom))]
    wake_by_gen_with(hdr, generation);
}

/// `wake_by_gen`, with the CAS ordering a loom model may weaken (`sync::Weaken`).
pub(crate) fn wake_by_gen_with<#[cfg(keel_loom)] W: crate::sync::Weaken>(hdr: NonNull<Header>, generation: u32) {
    #[cfg(not(keel_loom))]
    use crate::sync::Strong as W;
    // SAFETY: headers live in `'static` task slots, never freed.
    let h = unsafe { hdr.as_ref() };
    // Acquire: pairs with the owner's Release store of a new generation at attach.
    if h.generation.load(Ordering::Acquire) != generation {
        return; // rule 2: stale
    }
    let word = &h.notify.0;
    let mut w = word.load(Ordering::Acquire);
    loop {
        let merged = if w & QUEUED != 0 && !newer(generation, gen_of(w)) { gen_of(w) } else { generation };
        let new = (merged as u64) << 32 | (w & LOW) | QUEUED;
        if W::MERGE_BY_LOAD && new == w {
            return; // a weakened twin's early return (`Strong` never takes it)
        }
        // AcqRel (W::WAKE_CAS; rules 4-5). Release: publishes what the waker wrote before
        // waking (pairs with `take`'s Acquire; also when merging changes nothing).
        // Acquire: pairs with `take`'s Release (the node's last trip through the inbox
        // is over before we push it again) and with `open`'s Release (the `exec` loaded
        // below is the owner that opened the word: a load alone may have seen an older
        // zero, from before the task changed owner). Acquire on failure: we re-read the
        // word to decide again.
        match word.compare_exchange_weak(w, new, W::WAKE_CAS, Ordering::Acquire) {
            Ok(_) if w & QUEUED != 0 => return, // rule 4: merged
            Ok(_) => break,                     // rule 3: ours to push
            Err(now) => w = now,
        }
    }
    // Acquire: pairs with the Release that published `exec`: a local claim's CAS, or the
    // owner's `take`/`open` after it stored itself (remote rule 2, dispatch rule 2), so
    // the owner's inbox is initialised. Non-null: a task with no owner has QUEUED set (rule 3), and it keeps
    // its owner while we hold QUEUED (rule 6).
    let sched = h.exec.load(Ordering::Acquire);
    debug_assert!(!sched.is_null(), "keel bug: QUEUED clear on a task with no owner");
    // SAFETY: the owner cannot be dropped while a wake holds QUEUED (rule 6: its drop
    // drains the inbox until our node arrives, then waits for `active`: park rule 4), so
    // `sched` is valid here and until `leave`.
    unsafe {
        let s = &*sched;
        s.remote.enter();
        // Provenance rule 3: the node carries the whole slot's provenance, for the
        // owner's step back to the header.
        s.inbox.push(hdr.inbox_node());
        s.remote.after_push();
        s.remote.leave();
    }
}

// ---- the `core::task::Waker` for future tasks ----
//
// The data pointer packs the header's address (64-byte aligned, below 2^48 on the
// targets keel builds for: 42 significant bits) shifted right by 5 into bits 1..43, and
// the generation's low 21 bits into bits 43..64; bit 0 says the tag is present (one
// shift and two ors to make, as every resume makes one). A tag that cannot be formed
// (an address at or above 2^48) is left out: the data is then the plain address, and
// such a waker skips rule 2's first check; the owner's check in rule 5 still applies.
// A stale waker held across exactly a multiple of 2^21 re-uses of its task would pass
// the check: the wake then lands on the newer run as a spurious wake, which futures
// must tolerate anyway.

const TAG_BIT: usize = 1;
const ADDR_MASK: usize = ((1usize << 48) - 1) & !63;
/// Bits 1..43 of tagged data: the address shifted right by 5.
const PACKED_ADDR: usize = ((1usize << 43) - 1) & !TAG_BIT;
const TAG_SHIFT: u32 = 43;

#[inline(always)]
fn encode(hdr: NonNull<Header>, generation: u32) -> *const () {
    let addr = hdr.as_ptr() as usize;
    if usize::BITS < 64 || addr & !ADDR_MASK != 0 {
        return addr as *const ();
    }
    // Bit 0 of `addr >> 5` is the address's bit 5: clear (64-byte aligned).
    ((addr >> 5) | TAG_BIT | (generation as usize) << TAG_SHIFT) as *const ()
}

#[inline(always)]
fn decode(data: *const ()) -> (NonNull<Header>, Option<u32>) {
    let bits = data as usize;
    let (addr, tag) =
        if bits & TAG_BIT != 0 { ((bits & PACKED_ADDR) << 5, Some((bits >> TAG_SHIFT) as u32)) } else { (bits, None) };
    // SAFETY: every waker with this vtable was made by `waker_for` from a non-null header
    // pointer, whose whole-slot provenance `encode` exposed (header provenance rule 5).
    (unsafe { NonNull::new_unchecked(addr as *mut Header) }, tag)
}

fn wake_data(data: *const ()) {
    let (hdr, tag) = decode(data);
    // SAFETY: headers live in `'static` slots.
    let current = unsafe { hdr.as_ref() }.generation.load(Ordering::Acquire);
    let matches = tag.is_none_or(|t| t == current & 0x1F_FFFF);
    if matches {
        wake_by_gen(hdr, current);
    }
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(|data| RawWaker::new(data, &VTABLE), wake_data, wake_data, |_| {});

/// A waker for run `generation` of the task at `hdr`. Allocation-free; cloning copies.
pub(crate) fn waker_for(hdr: NonNull<Header>, generation: u32) -> Waker {
    // SAFETY: the vtable's functions accept any data `encode` produces, and the header
    // they name is `'static`, so the waker may outlive anything and cross threads.
    unsafe { Waker::from_raw(RawWaker::new(encode(hdr, generation), &VTABLE)) }
}

/// The task a keel waker names, if `waker` is one; `None` for foreign wakers.
pub(crate) fn task_of(waker: &Waker) -> Option<NonNull<Header>> {
    if core::ptr::eq(waker.vtable(), &VTABLE) { Some(decode(waker.data()).0) } else { None }
}

/// The `Context` a task's body is polled with, and the waker it names (rt rule 1): in
/// the task's `'static` trailer, so its address is fixed and names the task. Touched
/// only by the owner's thread (header rule 2), rewritten before every poll of the body.
pub(crate) struct ResumeCx {
    waker: UnsafeCell<MaybeUninit<Waker>>,
    cx: UnsafeCell<MaybeUninit<Context<'static>>>,
}

impl ResumeCx {
    pub(crate) const fn new() -> Self {
        ResumeCx { waker: UnsafeCell::new(MaybeUninit::uninit()), cx: UnsafeCell::new(MaybeUninit::uninit()) }
    }
}

/// The task's resume `Context` (rt rule 1), made afresh for run `generation` of the task
/// at `h`, for the body's poll.
///
/// # Safety
/// The owner, on its thread, about to poll the body: no reference to this task's resume
/// `Context` or waker is live (no poll of this task's body is on the stack), and the one
/// returned is used only for that poll. (The body cannot keep one past its poll either:
/// `Future::poll` takes the `Context` at a lifetime of its own, so `cx.waker()` is
/// borrowed for that poll, and a waker it keeps is a clone, a copy of the data.)
#[inline(always)]
pub(crate) unsafe fn resume_context<'a>(h: NonNull<Header>, generation: u32) -> &'a mut Context<'static> {
    // Provenance rule 2: through the whole-slot pointer.
    let r: &'static ResumeCx = &h.trailer().resume;
    let w = r.waker.get() as *mut Waker;
    let c = r.cx.get() as *mut Context<'static>;
    // SAFETY: the caller's duties: nothing else refers to these two now. The waker
    // overwritten (if any) is not dropped: a keel waker's drop does nothing. Both stay in
    // the `'static` trailer, so the `'static` borrows hold.
    unsafe {
        w.write(waker_for(h, generation));
        c.write(Context::from_waker(&*w));
        &mut *c
    }
}

/// Whether `cx` is the task at `hdr`'s resume `Context` (rt rule 1), which only its
/// owner's thread can hold, inside a poll of its body. Any thread; reads nothing.
#[inline(always)]
pub(crate) fn is_resume_cx(hdr: NonNull<Header>, cx: &Context<'_>) -> bool {
    // Only the field's address is taken (provenance rule 2).
    let mine = hdr.trailer().resume.cx.get() as *const ();
    #[cfg(keel_loom)]
    if crate::loom_api::any_resume_is_current() {
        // The weakened twin (`loom_api::weaken_current`): "the task is running", on
        // whatever thread, taken for "inside the task" (as rt rule 1 first was, through
        // the owner's record of the task it resumes): it reads the owner's Cell.
        let _ = mine;
        // SAFETY: none across threads: this is the bug the twin shows.
        return unsafe { hdr.as_ref() }.state.get() == crate::task::state::TaskState::Running;
    }
    core::ptr::eq(cx as *const Context<'_> as *const (), mine)
}

/// The executor currently owning the task of a keel waker.
///
/// Only meaningful on that executor's thread, inside a resume of the task.
pub(crate) fn sched_of(hdr: NonNull<Header>) -> Option<NonNull<Sched>> {
    // SAFETY: `'static` header. Relaxed: on the owner's thread the owner wrote it.
    NonNull::new(unsafe { hdr.as_ref() }.exec.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_newer_wraps() {
        let fake = NonNull::new(0x7f00_1234_5640usize as *mut Header).unwrap();
        for g in [0u32, 1, 31, 32, 0x1F_FFFF, 0x20_0000, u32::MAX] {
            let (h, tag) = decode(encode(fake, g));
            assert_eq!(h, fake);
            assert_eq!(tag, Some(g & 0x1F_FFFF));
        }
        assert!(newer(1, 0));
        assert!(newer(0, u32::MAX));
        assert!(!newer(5, 5));
        assert!(!newer(u32::MAX, 0));
    }
}
