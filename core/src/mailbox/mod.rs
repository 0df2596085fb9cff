//! The mailbox: everything another thread touches of an executor, and the one protocol
//! by which it touches it. A wake from another thread, an attach from another thread and
//! the unpark that follows both go through here, and through nothing else.
//!
//! ```text
//!  other thread                          the executor's thread
//!  ────────────                          ─────────────────────
//!  wake: CAS the task's notify word      run loop: pop the inbox, take the word,
//!        (wake rules 2-4), then          apply the wake (wake rules 1, 5)
//!  push the task's node on the inbox ──▶ inbox (inbox rules)
//!  fence, load the park word ──────────▶ park word: announce, fence, re-check,
//!        and unpark if PARKED              park (park rules)
//!  attach: claim the task, place the
//!        body, push as above (remote rules; a handle names its executor through a
//!        `HandleSlot`)
//! ```
//!
//! The pieces, bottom to top: [`notify`] (a task's notify word), [`inbox`] (the MPSC
//! queue), [`park`] (the park word and the driver's unparker), [`binding`] (the
//! `HandleSlot` an `ExecutorHandle` names its executor through), and here the
//! [`Mailbox`] (inbox and park word, the first field of every executor) and [`wake`]
//! (the waker's half of the protocol). The owner's half lives with the scheduler
//! (`exec`), which applies the wakes it takes; the rules it follows are stated here.
//!
//! # Wake rules (cited as "wake rule N")
//!
//! The notify word (`AtomicNotify`, in each task's header) = `woken_gen << 32 | QUEUED`.
//!
//! 1. Wake semantics (the `Future` contract), applied by the owner in
//!    `Sched::wake_local`: Suspended → Ready and queued; Running → flag
//!    `WOKEN_WHILE_RUNNING`, queued once when it suspends; Attached, Ready, Cancelling,
//!    Draining, Idle, Completed → no-op. No task is ever queued twice.
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
//! 8. A join on another thread (`crate::join`, join rule 5) *announces* itself: after
//!    storing its registration in the task, it sets `JOIN | QUEUED` with a CAS on the
//!    word, as a wake does (rules 3-5: it pushes the node if it set `QUEUED`, merges
//!    otherwise; AcqRel, so the owner's `take` sees the registration), but leaves
//!    `woken_gen` alone: the task itself is not woken. The owner that takes `JOIN` wakes
//!    the registered joins and, if the run is still attached, marks it so that its end
//!    wakes them again. `open` (a claim) reports `JOIN` too: a dispatched task's owner
//!    treats it as taken.
//!
//! Progress: a foreign wake is lock-free (its CAS retries only when another waker or
//! the owner changed the word) and pushes with one swap (wait-free). The owner's side
//! is wait-free.
//!
//! # Inbox rules (cited as "inbox rule N")
//!
//! 1. Producers (any thread) push with one `swap` of `head` and one store linking the
//!    previous node to theirs: wait-free.
//! 2. The single consumer is the owning executor's thread; `tail` is consumer-local.
//! 3. Between a producer's swap and its link store the queue looks cut: `pop` returns
//!    `Busy`, and the consumer tries again on its next pass. The park re-check
//!    (`Inbox::recheck`) tells that state apart (`Recheck::Busy`) from an empty inbox
//!    and from one with items. The run loop re-checks a push in progress at most
//!    `exec::INBOX_BUSY_SPINS` times in a row (each with a spin hint: `pause`, a yield
//!    under loom), and then parks: bounded, and lossless by park rule 2, since the
//!    producer mid-push fences *after* its link store and then loads the park word, so
//!    either the executor's re-check (after its own fence) sees the link, or the
//!    producer sees PARKED and unparks it. A producer preempted between its two steps
//!    therefore costs the executor at most that many passes and one park, not a busy
//!    wait of a scheduler quantum. An executor being dropped waits for the producer
//!    (cold, blocking).
//! 4. A node is pushed only by the waker that set its task's `QUEUED` bit (wake rule 3),
//!    or by the attacher that claimed the task (remote rule 3), so it is in the queue at
//!    most once.
//! 5. The inbox lives inside a pinned executor; `init` runs once it is pinned, before
//!    any task can name the executor (an attach publishes the owner only after it).
//!
//! # Park rules (cited as "park rule N")
//!
//! 1. The park word is RUNNING, PARKED or UNPARKING. Only the executor's thread stores
//!    RUNNING or PARKED; other threads only move PARKED to UNPARKING (one CAS, and only
//!    the winner calls the unparker, so a burst of wakes makes one syscall).
//! 2. Before parking the executor *announces* (stores PARKED), issues a `SeqCst` fence,
//!    and *re-checks* its inbox; if anything is there it stores RUNNING and does not park.
//!    A thread that pushed onto the inbox issues a `SeqCst` fence and then loads the park
//!    word. The two fences order the store-then-load on each side: either the executor
//!    sees the push, or the pusher sees PARKED and unparks it. No wake-up is lost. This
//!    holds for a push in progress too (inbox rule 3): the pusher's fence follows its
//!    *link* store, so if the re-check (after the executor's fence) does not see the
//!    link, the pusher's fence is the later one and its park-word load sees PARKED. That
//!    is why the run loop may park on `Recheck::Busy` after `INBOX_BUSY_SPINS` passes.
//! 3. The unparker makes a concurrent or later `Driver::park` return (for the ring, a CQE
//!    posted into it with `IORING_REGISTER_SEND_MSG_RING`, or a write to an eventfd the
//!    ring keeps a read armed on; a futex on the park word itself for ring-less drivers).
//!    It is set once, before any other thread can name the executor, and never changes.
//! 4. `active` counts other threads between finding the executor (through a task's owner
//!    or an `ExecutorHandle`) and finishing their unpark. An executor being dropped first
//!    makes itself unreachable, then waits for `active` to reach zero (blocking, cold).
//!
//! Progress: the executor's side is wait-free; a pusher's unpark check is one fence, one
//! load and at most one CAS.
//!
//! # Remote rules: attaching from another thread (cited as "remote rule N")
//!
//! 1. A [`HandleSlot`]'s epoch names one binding: binding stores the executor's mailbox
//!    address in the slot (CAS from null) and hands out the epoch it then reads;
//!    unbinding (the executor's drop) first bumps the epoch, then stores null, then
//!    waits until no attacher is inside (`active`), all `SeqCst`. An attacher enters
//!    `active`, then loads the address, then the epoch, and goes on only if the address
//!    is non-null and the epoch is its handle's. So a handle works only while its own
//!    binding lasts: an attacher that sees a later binding's address comes after that
//!    binding's CAS, which read the null stored after the bump, so it sees the bumped
//!    epoch (the bump is in unbind, before the null: a bump in bind after publishing the
//!    address lets a stale handle reach the new executor; loom: `loom_remote`'s twin).
//!    The epoch is 64 bits: no count of rebinds a program can reach wraps it. An
//!    attacher that sees the old address is waited for (`active`) before that executor
//!    goes.
//! 2. An attacher claims an unowned task by a CAS of its `owner` from null to
//!    `CLAIMING`, a sentinel no executor (and no dispatcher) ever compares equal to, and
//!    only then touches its local fields (body, generation, flags, result). The owner
//!    pointer is published only once the task is whole: for an attach, by the owner
//!    itself, which stores its own mailbox address when it takes the node off its inbox
//!    (that pop acquires the attacher's writes) and before it opens the task to wakes;
//!    for a dispatch, by the submitter, which stores the dispatcher's sentinel before it
//!    pushes. So every owner-side check (`Executor::attach`, `destroy`, `result`,
//!    `cancel`, `wake`, ..., all through `owner == self`) sees another owner while the
//!    attacher writes, and says so (`OwnedElsewhere`, `StaleHandle`), rather than
//!    reading or writing the fields being written (loom: `loom_remote`'s claim twin,
//!    which publishes the owner at the claim).
//! 3. The task's notify word keeps QUEUED while it is unowned and claimed (wake rule 3),
//!    so no waker pushes it or loads `owner`; the attacher adds ATTACH and pushes the
//!    node itself, then unparks the executor if it is parked (park rule 2).
//! 4. A task attached from another thread is released by its executor when it completes
//!    (or as soon after as no wake is in flight to it), so the attacher can attach it
//!    again; until then a new attach says `OwnedElsewhere`.
//!
//! Progress: an attach is lock-free (one CAS to claim, one swap to push, at most one CAS
//! to unpark) plus one syscall when the executor was parked.

pub(crate) mod binding;
pub(crate) mod inbox;
pub(crate) mod notify;
pub(crate) mod park;

pub use binding::HandleSlot;
pub use park::Unparker;

use crate::sync::{AtomicPtr, AtomicU32, Ordering};
use core::ptr::NonNull;
use inbox::{Inbox, InboxNode};
use notify::{AtomicNotify, JOIN, QUEUED, gen_of, newer};
use park::ParkWord;

/// The part of an executor that other threads touch: its inbox and its park word, each
/// on cache lines of its own. The first field of the scheduler (`#[repr(C)]`), so the
/// mailbox's address is the executor's identity as a task's owner.
#[repr(C)]
pub(crate) struct Mailbox {
    pub(crate) inbox: Inbox,
    pub(crate) park: ParkWord,
}

impl Mailbox {
    pub(crate) fn new() -> Self {
        Mailbox { inbox: Inbox::new(), park: ParkWord::new() }
    }

    /// Pushes `node` and unparks the executor if it is parked (inbox rule 1, park rule 2).
    ///
    /// # Safety
    /// The caller owns the node's next trip through an inbox (inbox rule 4: it set the
    /// task's `QUEUED` bit, or claimed the task), and the executor is alive until this
    /// returns (park rule 4, remote rule 1).
    #[inline]
    pub(crate) unsafe fn push(&self, node: NonNull<InboxNode>) {
        // SAFETY: the caller's duties are `Inbox::push`'s.
        unsafe { self.inbox.push(node) };
        self.park.after_push();
    }
}

/// What a wake touches of a task: the header fields other threads use.
pub(crate) struct WakeTarget<'a> {
    /// The current run's generation.
    pub(crate) generation: &'a AtomicU32,
    pub(crate) notify: &'a AtomicNotify,
    /// The owning executor's mailbox, null if none.
    pub(crate) owner: &'a AtomicPtr<Mailbox>,
    /// The task's inbox node, with the whole task slot's provenance (the owner steps back
    /// from it to the task).
    pub(crate) node: NonNull<InboxNode>,
}

/// Wakes run `generation` of `task` from any thread (wake rules 2-4): the waker's half.
#[inline(always)]
pub(crate) fn wake(task: WakeTarget<'_>, generation: u32) {
    #[cfg(keel_loom)]
    wake_with::<crate::sync::Strong>(task, generation);
    #[cfg(not(keel_loom))]
    wake_with(task, generation);
}

/// `wake`, with the CAS ordering a loom model may weaken (`sync::Weaken`).
pub(crate) fn wake_with<#[cfg(keel_loom)] W: crate::sync::Weaken>(task: WakeTarget<'_>, generation: u32) {
    #[cfg(not(keel_loom))]
    use crate::sync::Strong as W;
    // Acquire: pairs with the owner's Release store of a new generation at attach.
    if task.generation.load(Ordering::Acquire) != generation {
        return; // wake rule 2: stale
    }
    let word = task.notify.word();
    let mut seen = word.load(Ordering::Acquire);
    loop {
        let merged = if seen & QUEUED != 0 && !newer(generation, gen_of(seen)) { gen_of(seen) } else { generation };
        let new = (merged as u64) << 32 | (seen & notify::LOW) | QUEUED;
        if W::MERGE_BY_LOAD && new == seen {
            return; // a weakened twin's early return (`Strong` never takes it)
        }
        // AcqRel (W::WAKE_CAS; wake rules 4-5). Release: publishes what the waker wrote
        // before waking (pairs with `take`'s Acquire; also when merging changes nothing).
        // Acquire: pairs with `take`'s Release (the node's last trip through the inbox
        // is over before we push it again) and with `open`'s Release (the `owner` loaded
        // below is the owner that opened the word: a load alone may have seen an older
        // zero, from before the task changed owner). Acquire on failure: we re-read the
        // word to decide again.
        match word.compare_exchange_weak(seen, new, W::WAKE_CAS, Ordering::Acquire) {
            Ok(_) if seen & QUEUED != 0 => return, // wake rule 4: merged
            Ok(_) => break,                        // wake rule 3: ours to push
            Err(now) => seen = now,
        }
    }
    push_queued(task);
}

/// Wake rule 8: announces a join registered in `task` (run `generation`) to its owner,
/// from any thread. The task is not woken.
#[cfg(not(keel_loom))]
pub(crate) fn announce_join(task: WakeTarget<'_>, generation: u32) {
    announce_join_with(task, generation);
}

/// `announce_join`, with the step a loom model may weaken (`sync::Weaken::ANNOUNCE_JOIN`).
pub(crate) fn announce_join_with<#[cfg(keel_loom)] W: crate::sync::Weaken>(task: WakeTarget<'_>, generation: u32) {
    #[cfg(not(keel_loom))]
    use crate::sync::Strong as W;
    if !W::ANNOUNCE_JOIN {
        return; // a weakened twin's registration that the owner never hears of
    }
    // Acquire: as in `wake_with`. A stale run's joiner finds the record moved on itself.
    if task.generation.load(Ordering::Acquire) != generation {
        return;
    }
    let word = task.notify.word();
    let mut seen = word.load(Ordering::Acquire);
    loop {
        // Wake rule 8: the task is not woken: `woken_gen` is kept, or, in a word that had
        // no wake queued, set to the run before this one (never current when taken).
        let new = if seen & QUEUED != 0 {
            seen | JOIN
        } else {
            (generation.wrapping_sub(1) as u64) << 32 | (seen & notify::LOW) | JOIN | QUEUED
        };
        // AcqRel: as a wake's CAS (wake rules 4-5; `W::WAKE_CAS`): Release publishes the
        // registration to the owner's `take`, also when it changes nothing. Acquire on
        // failure: re-read to decide again.
        match word.compare_exchange_weak(seen, new, W::WAKE_CAS, Ordering::Acquire) {
            Ok(_) if seen & QUEUED != 0 => return,
            Ok(_) => break,
            Err(now) => seen = now,
        }
    }
    push_queued(task);
}

/// Pushes the node of a task whose `QUEUED` this thread set (wake rule 3).
fn push_queued(task: WakeTarget<'_>) {
    // Acquire: pairs with the Release that published `owner`: a local claim's CAS, or the
    // owner's `take`/`open` after it stored itself (remote rule 2, dispatch rule 2), so
    // the owner's inbox is initialised. Non-null: a task with no owner has QUEUED set
    // (wake rule 3), and it keeps its owner while we hold QUEUED (wake rule 6).
    let owner = task.owner.load(Ordering::Acquire);
    debug_assert!(!owner.is_null(), "keel bug: QUEUED clear on a task with no owner");
    // SAFETY: the owner cannot be dropped while a wake holds QUEUED (wake rule 6: its
    // drop drains the inbox until our node arrives, then waits for `active`: park rule
    // 4), so `owner` is valid here and until `leave`. The node is ours to push (wake
    // rule 3).
    unsafe {
        let mailbox = &*owner;
        mailbox.park.enter();
        mailbox.push(task.node);
        mailbox.park.leave();
    }
}
