//! What a task keeps for those who join it: the record of its last completed run, which
//! any thread may read, and the list of same-executor waiters, which its owner completes.
//!
//! Join rules (cited as "join rule N"; the API is `crate::join`):
//! 1. The *record* (`JoinRecord`, in the trailer) holds one run's result, encoded in
//!    atomics, and `done`, the generation of that run. It is the task's only result
//!    store (`Executor::result` reads it too). It is written by the task's owner: the
//!    words when the run's body is gone (`Sched::finish`, and a run teardown leaks),
//!    `done` when the run completes (`Sched::completed`, a leak); and by `create`
//!    (a pseudo-run "never attached" under the handle `create` returns, which no attach
//!    ever uses). Writers are ordered by the task's ownership hand-offs (claim, release),
//!    so there is one writer at a time.
//! 2. Write order: a Release fence, the result words (Relaxed), then, possibly later
//!    (a draining run), `done` (Release).
//!    Read order: `done` (Acquire) equal to the wanted generation, the words (Relaxed),
//!    an Acquire fence, then the slot's `generation` (Relaxed) still equal to it. A
//!    record's words are rewritten only when a later run's body is gone, and that run's attach stored a
//!    newer `generation` before the writer's fence; so a reader that read any word of a
//!    later run's write sees that newer generation after its fence (fence-to-fence
//!    synchronisation) and reports the handle stale. No reader ever retries: a join never
//!    returns a later run's result (a sequence lock whose sequence is the generation).
//! 3. The *waiters* (`joiners`, owner-local `Cell`s, list rules) are `JoinNode`s of
//!    joins made on the owner's own thread. Each node names the task to wake and has a
//!    cell for the result. When a run completes, its owner publishes the record (rule 2),
//!    then pops every node, writes the run's result into it and wakes its task once
//!    (same-thread wake, wake rule 7): bounded by the number of waiters. A waiter thus
//!    holds its own copy: re-attaching or releasing the slot right after it completed
//!    cannot change what a woken waiter returns, and nobody waits for waiters before
//!    releasing the slot (its release stays as before: remote rule 4, `release`,
//!    `destroy`).
//! 4. A node is linked only while its run is attached (it is linked by a join that saw
//!    the run not yet completed, on the owner's thread), and every attached run ends
//!    through the completion of rule 3 (or a teardown's leak, which does the same), so
//!    a node is never left in the list of a run that is over. A node unlinks itself when
//!    its join gives up first (cancelled, timed out, dropped).
//! 5. Joins from other threads (a task of another executor, a thread blocking) register
//!    in the task's `cross` entries: one CAS of a free entry from 0 to the waiter's
//!    wake target (a task and its run, or a thread's futex wake function), then an
//!    announce through the owner's inbox (wake rule 8), then a second look at the
//!    record. The owner that takes the announce wakes every registered entry, and marks
//!    the run (`cross_armed`) if it is still attached; a marked run's end wakes every
//!    entry again after publishing the record. Entries stay until their waiter clears
//!    them (a plain store of 0: only the waiter writes an entry it holds), whatever it
//!    returns: a wake is only a signal to read the record again, harmless when spurious
//!    (a task's wake names its run; a futex wake names the record's `done` word, in the
//!    `'static` slot). So a waiter that registered is either seen by its own second look
//!    (the record was published, and the task possibly released, before the announce) or
//!    woken by its owner: at the announce (the run was over) or at the run's end (marked).
//!    At most [`CROSS_WAITERS`] at once; one more gets `JoinError::TooManyWaiters`.
//! 6. A same-executor waiter's node holds its outcome as words, never as a `TaskResult`:
//!    the run's end copies the record's three words into it (rule 3's copy), and a join
//!    that returns anything else keeps it there encoded (a `JoinError` has a tag of its
//!    own), so polled again it returns the same. A node's tag is `EMPTY` until then. The
//!    common return (an `Ok` result) reads the tag and the value, each an aligned word
//!    one store wrote: no result is built on the stack between the run's end and the
//!    waiter (a store of one width read back at another stalls the load until the store
//!    commits: the run's end and the join's return each cost such a stall when they
//!    passed a `TaskResult`).
//! 7. A node names its waiter by header and run (`waiter_run`: the generation of the run
//!    that linked it, or last polled it). The run's end wakes the waiter only if that run
//!    is still the slot's current one and the slot is still owned by this executor: a
//!    join that is forgotten (`mem::forget` of a pinned `Join`, safe, leaks its node
//!    linked) outlives its waiter's run, whose slot may be re-attached, here or on
//!    another executor after `release`; waking it by header alone would run another
//!    run, or another executor's task, from this executor's ready list. A linked join
//!    polled by a task of another executor (two on one thread) unlinks and looks again,
//!    so it waits as a join from another thread (rule 5) and is woken.
//! 8. An entry names the run that registered it, or last polled its join: a join that
//!    waits with an entry (rule 5; a `join_send`, which is `Send`, or a `Join` of a run
//!    on another executor) and is polled by another task, or a later run (the join moved
//!    between tasks, or kept past the run that registered it), re-points its entry at
//!    the polling run, announces itself again and looks again (as `register` does), so
//!    the run's end wakes the task that awaits it now. Before rule 8 it woke the ended
//!    run (a no-op: the wake names its generation) and the task awaiting it waited for
//!    ever. The second announce is what orders the new target before the owner's read
//!    of the entry (the re-point's store is Relaxed, as register's CAS is): with the
//!    store alone, the run's end may still read the old target while the join's look
//!    misses the record (a store-buffer race; loom model in `loom-tests/tests/loom_join.rs`,
//!    whose twin leaves the announce out). A forgotten join (`mem::forget`) keeps its
//!    entry: a leak of one of the slot's `CROSS_WAITERS` entries (a later join past the
//!    limit gets `TooManyWaiters`), never a wake of another run.

use crate::error::{TaskError, TaskResult};
use crate::list::{Link, Links};
use crate::sync::{AtomicPtr, AtomicU32, AtomicU64Like, Ordering, fence};
use crate::task::header::Header;
use core::cell::Cell;
use core::marker::PhantomPinned;
use core::ptr::NonNull;

/// Marker for the links of a task's list of waiters.
pub(crate) struct JoinLink;

/// What a completed run left, as the record words hold it: a result, or the pseudo-run
/// of a handle `create` returned (join rule 1).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The run's result.
    Done(TaskResult),
    /// The handle came from `create`: no run of it ever exists.
    NeverAttached,
}

// Result word tags.
const OK: u64 = 0;
const CANCELLED: u64 = 1;
const FAILED: u64 = 2;
const PANICKED: u64 = 3;
const FP: u64 = 4;
const NEVER: u64 = 5;
const NO_STACK: u64 = 6;

/// How many joins from other threads may wait for one task at once (join rule 5); a
/// task's slot holds one word for each.
#[cfg(not(keel_loom))]
pub const CROSS_WAITERS: usize = 8;
/// See the non-loom definition: two under loom, so the models reach a full table.
#[cfg(keel_loom)]
pub const CROSS_WAITERS: usize = 2;

/// The function a blocked thread's entry names (join rule 5): wakes every thread blocked
/// on the word (`join::ThreadWait::wake_all`).
pub(crate) type FutexWake = fn(&AtomicU32);

/// The low bits of a thread's entry (a task's entry has bit 0 set, or is a 64-byte
/// aligned address: `wake::encode`).
const THREAD: u64 = 2;

/// The record of a task's last completed run (join rules 1-2), and the joins from other
/// threads that wait for it (join rule 5).
pub(crate) struct JoinRecord {
    /// The generation of the run recorded; the word a blocked thread waits on.
    done: AtomicU32,
    tag: AtomicU64Like,
    value: AtomicU64Like,
    /// A panic message's bytes (its length is in `value`).
    text: AtomicPtr<u8>,
    /// Wake targets of joins from other threads; 0 is a free entry (join rule 5).
    cross: [AtomicU64Like; CROSS_WAITERS],
    /// The owner saw an announce while the run was attached: its end wakes `cross`
    /// (join rule 5). Owner-local (header rule 2).
    pub(crate) cross_armed: Cell<bool>,
}

#[cfg(not(keel_loom))]
const fn free_entries() -> [AtomicU64Like; CROSS_WAITERS] {
    [const { AtomicU64Like::new(0) }; CROSS_WAITERS]
}

#[cfg(keel_loom)]
fn free_entries() -> [AtomicU64Like; CROSS_WAITERS] {
    core::array::from_fn(|_| AtomicU64Like::new(0))
}

/// A registered join from another thread (join rule 5): the entry it holds (its index,
/// below [`CROSS_WAITERS`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry(u16);

impl Entry {
    /// The entry's index, to keep in a `u16` (`join::Join`); never `u16::MAX`.
    pub(crate) fn index(self) -> u16 {
        self.0
    }

    /// The entry whose [`index`](Self::index) this is.
    pub(crate) fn from_index(index: u16) -> Self {
        debug_assert!(usize::from(index) < CROSS_WAITERS);
        Entry(index)
    }
}

/// The entry value naming run `generation` of the task at `hdr` (woken with a wake by
/// generation, wake rule 2).
pub(crate) fn task_entry(hdr: NonNull<Header>, generation: u32) -> u64 {
    crate::task::wake::encode(hdr, generation) as usize as u64
}

/// The entry value naming a blocked thread's wake function.
pub(crate) fn thread_entry(wake: FutexWake) -> u64 {
    // Code addresses are below 2^62 on the 64-bit targets keel builds for.
    (wake as usize as u64) << 2 | THREAD
}

impl JoinRecord {
    crate::sync::maybe_const_fn! {
        /// A record of no run (`done` 0 is the generation no handle of an empty slot names).
        pub(crate) fn new() -> Self {
            JoinRecord {
                done: AtomicU32::new(0),
                tag: AtomicU64Like::new(NEVER),
                value: AtomicU64Like::new(0),
                text: AtomicPtr::new(core::ptr::null_mut()),
                cross: free_entries(),
                cross_armed: Cell::new(false),
            }
        }
    }

    /// The word that holds the recorded generation (for a futex wait on it).
    pub(crate) fn done_word(&self) -> &AtomicU32 {
        &self.done
    }

    /// Records `outcome` as run `generation`'s (join rule 2, the writer: the task's owner
    /// or its creator): [`stage`](Self::stage) then [`seal`](Self::seal).
    pub(crate) fn publish(&self, generation: u32, outcome: Outcome) {
        self.stage(outcome);
        self.seal(generation);
    }

    /// Writes the result words of the run in progress (join rule 2's first half): when
    /// its body is gone, which may be before the run completes (a draining run). Readers
    /// of the previous run that read these words see the newer generation (join rule 2)
    /// and report the handle stale; readers of this run wait for [`seal`](Self::seal).
    #[inline(always)]
    pub(crate) fn stage(&self, outcome: Outcome) {
        let (tag, value, text) = encode(outcome);
        // Release fence: join rule 2; pairs with a reader's Acquire fence, so a reader
        // that reads any word below also sees the generation this run's attach stored.
        fence(Ordering::Release);
        // Relaxed: ordered by the fence above and `seal`'s Release store.
        self.tag.store(tag, Ordering::Relaxed);
        self.value.store(value, Ordering::Relaxed);
        // `decode` reads `text` only for a panic; an `Ok` leaves the old pointer there.
        if tag != OK {
            self.text.store(text, Ordering::Relaxed);
        }
    }

    /// Marks the staged words as run `generation`'s (join rule 2's second half): the run
    /// is complete.
    #[inline(always)]
    pub(crate) fn seal(&self, generation: u32) {
        // Release: pairs with a reader's Acquire load of `done` (join rule 2): the words
        // staged are visible to whoever sees this generation here.
        self.done.store(generation, Ordering::Release);
    }

    /// The staged result, read by the owner (the only writer, join rule 1) after its run's
    /// body is gone.
    pub(crate) fn staged(&self) -> TaskResult {
        // Relaxed: the owner's own writes (join rule 1: one writer at a time, ordered by the
        // ownership hand-offs).
        let (tag, value) = (self.tag.load(Ordering::Relaxed), self.value.load(Ordering::Relaxed));
        if tag == OK {
            return Ok(value);
        }
        core::hint::cold_path();
        match decode(tag, value, self.text.load(Ordering::Relaxed)) {
            Outcome::Done(result) => result,
            Outcome::NeverAttached => Err(TaskError::Cancelled),
        }
    }

    /// Run `generation`'s outcome if it is recorded and the slot has not moved past it
    /// (join rule 2, the reader): `Ok(None)` while not recorded, `Err(())` if the slot's
    /// current generation (`generation_now`) is another run's.
    pub(crate) fn read(&self, generation: u32, generation_now: &AtomicU32) -> Result<Option<Outcome>, ()> {
        // Acquire: pairs with `publish`'s Release store of `done`.
        if self.done.load(Ordering::Acquire) != generation {
            // Acquire: pairs with the attach's Release store of the generation.
            return if generation_now.load(Ordering::Acquire) == generation { Ok(None) } else { Err(()) };
        }
        // Relaxed: ordered by the Acquire above and the fence below (join rule 2).
        let (tag, value, text) =
            (self.tag.load(Ordering::Relaxed), self.value.load(Ordering::Relaxed), self.text.load(Ordering::Relaxed));
        // Acquire fence: pairs with `publish`'s Release fence (join rule 2).
        fence(Ordering::Acquire);
        // Relaxed: ordered by the fence.
        if generation_now.load(Ordering::Relaxed) != generation {
            return Err(());
        }
        Ok(Some(decode(tag, value, text)))
    }
}

impl JoinRecord {
    /// Join rule 5: takes a free entry for `target` (`task_entry`, `thread_entry`);
    /// `None` if all [`CROSS_WAITERS`] are taken. Lock-free: each failed CAS is an entry
    /// another waiter holds.
    pub(crate) fn register(&self, target: u64) -> Option<Entry> {
        for (i, entry) in self.cross.iter().enumerate() {
            // Relaxed: the announce's Release CAS that follows publishes it to the owner
            // (wake rule 8); the entry itself is all a competing waiter must see.
            if entry.compare_exchange(0, target, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                // `CROSS_WAITERS` is far below `u16::MAX`.
                return Some(Entry(i as u16));
            }
        }
        None
    }

    /// Join rule 8: points the entry its waiter holds at `target` (the run polling the
    /// join now); `false` if it named `target` already.
    pub(crate) fn repoint(&self, entry: Entry, target: u64) -> bool {
        let e = &self.cross[usize::from(entry.0)];
        // Relaxed, both: only the waiter writes an entry it holds (rule 5), so it reads
        // its own last store (a join moved to another thread was moved after that store,
        // through whatever synchronised the move); the announce's Release CAS that
        // follows publishes the new target to the owner, as `register`'s does.
        if e.load(Ordering::Relaxed) == target {
            return false;
        }
        e.store(target, Ordering::Relaxed);
        true
    }

    /// Join rule 5: frees the entry its waiter holds.
    pub(crate) fn unregister(&self, entry: Entry) {
        // Relaxed: an owner that still reads the old value wakes the waiter spuriously,
        // which is harmless (join rule 5); the next waiter's CAS sees the 0 (one location).
        self.cross[usize::from(entry.0)].store(0, Ordering::Relaxed);
    }

    /// Join rule 5, the owner: wakes every registered join from another thread. Bounded
    /// by [`CROSS_WAITERS`].
    pub(crate) fn wake_cross(&self) {
        for entry in &self.cross {
            // Relaxed: the announce this owner took (AcqRel) ordered the registration
            // before this load; a value read late only wakes spuriously.
            let target = entry.load(Ordering::Relaxed);
            if target == 0 {
                continue;
            }
            if target & 3 == THREAD {
                // SAFETY: made by `thread_entry` from a `FutexWake` (the shift is exact:
                // code addresses are below 2^62); function pointers carry no provenance.
                let wake: FutexWake = unsafe { core::mem::transmute::<usize, FutexWake>((target >> 2) as usize) };
                wake(&self.done);
            } else {
                crate::task::wake::wake_data(target as usize as *const ());
            }
        }
    }
}

#[inline(always)]
fn encode(outcome: Outcome) -> (u64, u64, *mut u8) {
    let none = core::ptr::null_mut();
    if let Outcome::Done(Ok(value)) = outcome {
        return (OK, value, none);
    }
    core::hint::cold_path();
    match outcome {
        Outcome::NeverAttached => (NEVER, 0, none),
        Outcome::Done(Ok(value)) => (OK, value, none),
        Outcome::Done(Err(TaskError::Cancelled)) => (CANCELLED, 0, none),
        Outcome::Done(Err(TaskError::Failed(code))) => (FAILED, code as u64, none),
        Outcome::Done(Err(TaskError::Panicked(msg))) => (PANICKED, msg.len() as u64, msg.as_ptr().cast_mut()),
        Outcome::Done(Err(TaskError::FpControlChanged { task, mxcsr, x87_cw })) => {
            (FP | (x87_cw as u64) << 8, (task as u64) << 32 | mxcsr as u64, none)
        }
        Outcome::Done(Err(TaskError::NoStack { errno, wanted })) => {
            (NO_STACK | (errno as u32 as u64) << 8, wanted as u64, none)
        }
    }
}

fn decode(tag: u64, value: u64, text: *mut u8) -> Outcome {
    Outcome::Done(match tag & 0xff {
        OK => Ok(value),
        CANCELLED => Err(TaskError::Cancelled),
        FAILED => Err(TaskError::Failed(value as i64)),
        PANICKED => {
            // SAFETY: written by `encode` from a `&'static str` with this length (join rule
            // 2: the words read belong to one write), and the pointer kept its provenance.
            let bytes = unsafe { core::slice::from_raw_parts(text, value as usize) };
            // SAFETY: the bytes of a `str`.
            Err(TaskError::Panicked(unsafe { core::str::from_utf8_unchecked(bytes) }))
        }
        FP => Err(TaskError::FpControlChanged {
            task: (value >> 32) as u32,
            mxcsr: value as u32,
            x87_cw: (tag >> 8) as u16,
        }),
        NO_STACK => Err(TaskError::NoStack { errno: (tag >> 8) as u32 as i32, wanted: value as usize }),
        _ => return Outcome::NeverAttached,
    })
}

/// One same-executor waiter (join rule 3): in the join future, or on a joining fiber's
/// stack; pinned while linked and unlinked by its owner before it goes (list rule 2).
///
/// It holds what its join returns as words (join rule 6): the record's words of the run
/// (`encode`), copied by the completion that unlinked it, or a join's own outcome (a
/// code the join layer gives each `JoinError`, under a tag of its own); `EMPTY` until
/// then. Plain aligned words, so the
/// completion copies three and the join's common return reads two, each with a load of
/// exactly what one store wrote (no `TaskResult` is built in between: join rule 6).
pub(crate) struct JoinNode {
    links: Links<JoinNode>,
    /// The task to wake; `None` while not linked.
    pub(crate) waiter: Cell<Option<NonNull<Header>>>,
    /// The generation of `waiter`'s run to wake (join rule 7); a whole word, so a
    /// `Join` keeps no padding (join rule 6's reason).
    waiter_run: Cell<u64>,
    /// `OK`, another result tag, `OWN` plus a join's own code, or `EMPTY`.
    tag: Cell<u64>,
    value: Cell<u64>,
    text: Cell<*mut u8>,
    _pinned: PhantomPinned,
}

/// A node's tag while it holds no outcome (join rule 6).
const EMPTY: u64 = 0xff;
/// The tags of a join's own outcomes: this plus the join's code, below `OWN_CODES`
/// (join rule 6). No result tag is in `OWN..OWN + OWN_CODES` or `EMPTY` (their low bytes
/// are 0-6).
const OWN: u64 = 0x10;
const OWN_CODES: u64 = 0x20;

/// What a node holds (join rule 6).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Held {
    /// A run's result.
    Result(TaskResult),
    /// A join's own outcome, by the code it kept.
    Own(u8),
    /// The pseudo-run of a handle `create` returned (join rule 1).
    NeverAttached,
}

// SAFETY: `links` is used only for a task's `joiners` list.
unsafe impl Link<JoinLink> for JoinNode {
    fn links(this: NonNull<Self>) -> NonNull<Links<Self>> {
        // SAFETY: `this` is a valid node; the projection stays inside it.
        unsafe { NonNull::new_unchecked(&raw mut (*this.as_ptr()).links) }
    }
}

impl JoinNode {
    /// An unlinked node holding no outcome.
    pub(crate) const fn new() -> Self {
        JoinNode {
            links: Links::new(),
            waiter: Cell::new(None),
            waiter_run: Cell::new(0),
            tag: Cell::new(EMPTY),
            value: Cell::new(0),
            text: Cell::new(core::ptr::null_mut()),
            _pinned: PhantomPinned,
        }
    }

    /// Join rule 7: run `generation` of the task at `me` is the one to wake.
    #[inline(always)]
    pub(crate) fn set_waiter(&self, me: NonNull<Header>, generation: u32) {
        self.waiter.set(Some(me));
        self.waiter_run.set(u64::from(generation));
    }

    /// Join rule 7: the generation of the waiter's run to wake.
    #[inline(always)]
    pub(crate) fn waiter_run(&self) -> u32 {
        self.waiter_run.get() as u32
    }

    /// Join rules 3 and 6, the owner at a run's end: copies the run's result words from
    /// `record` (staged when its body went, sealed before this).
    #[inline(always)]
    pub(crate) fn fill(&self, record: &JoinRecord) {
        // Relaxed: the owner's own writes (join rule 1: the owner is the only writer).
        self.tag.set(record.tag.load(Ordering::Relaxed));
        self.value.set(record.value.load(Ordering::Relaxed));
        self.text.set(record.text.load(Ordering::Relaxed));
    }

    /// The value of an `Ok` run result held (the common return, join rule 6).
    #[inline(always)]
    pub(crate) fn ok(&self) -> Option<u64> {
        (self.tag.get() == OK).then(|| self.value.get())
    }

    /// What the node holds, if anything (join rule 6).
    pub(crate) fn held(&self) -> Option<Held> {
        let tag = self.tag.get();
        if tag == EMPTY {
            return None;
        }
        if let Some(code) = tag.checked_sub(OWN)
            && code < OWN_CODES
        {
            return Some(Held::Own(code as u8));
        }
        Some(match decode(tag, self.value.get(), self.text.get()) {
            Outcome::Done(result) => Held::Result(result),
            Outcome::NeverAttached => Held::NeverAttached,
        })
    }

    /// Keeps `held` as what the node holds (join rule 6: what its join returns again).
    /// A join's own code is below 32.
    pub(crate) fn keep(&self, held: Held) {
        let (tag, value, text) = match held {
            Held::Result(result) => encode(Outcome::Done(result)),
            Held::Own(code) => {
                debug_assert!(u64::from(code) < OWN_CODES, "keel bug: join code {code} out of range");
                (OWN + u64::from(code), 0, core::ptr::null_mut())
            }
            Held::NeverAttached => encode(Outcome::NeverAttached),
        };
        self.tag.set(tag);
        self.value.set(value);
        self.text.set(text);
    }
}

#[cfg(all(test, not(keel_loom)))]
mod tests {
    use super::*;

    #[test]
    fn join_rule_2_every_outcome_round_trips() {
        let outcomes = [
            Outcome::NeverAttached,
            Outcome::Done(Ok(0)),
            Outcome::Done(Ok(u64::MAX)),
            Outcome::Done(Err(TaskError::Cancelled)),
            Outcome::Done(Err(TaskError::Failed(-7))),
            Outcome::Done(Err(TaskError::Panicked("the body panicked"))),
            Outcome::Done(Err(TaskError::FpControlChanged { task: 9, mxcsr: 0x1f80, x87_cw: 0x37f })),
            Outcome::Done(Err(TaskError::NoStack { errno: -12, wanted: 1 << 20 })),
            Outcome::Done(Err(TaskError::NoStack { errno: 12, wanted: usize::MAX })),
        ];
        let record = JoinRecord::new();
        let generation = AtomicU32::new(0);
        for (i, outcome) in outcomes.into_iter().enumerate() {
            let g = i as u32 + 1;
            assert_eq!(record.read(g, &generation), Err(()), "another run is current");
            generation.store(g, Ordering::Relaxed);
            assert_eq!(record.read(g, &generation), Ok(None), "not yet recorded");
            record.publish(g, outcome);
            assert_eq!(record.read(g, &generation), Ok(Some(outcome)));
            assert_eq!(record.read(g - 1, &generation), Err(()), "an earlier run is stale");
        }
    }

    /// Join rule 6: a node holds every outcome a join returns, as words: a run's result
    /// copied from the record (`fill`), and anything a join keeps (`keep`), a join's own
    /// codes included; only an `Ok` result reads as `ok`.
    #[test]
    fn join_rule_6_a_node_holds_every_outcome_as_words() {
        let results = [
            Ok(0),
            Ok(u64::MAX),
            Err(TaskError::Cancelled),
            Err(TaskError::Failed(-7)),
            Err(TaskError::Panicked("the body panicked")),
            Err(TaskError::FpControlChanged { task: 9, mxcsr: 0x1f80, x87_cw: 0x37f }),
            Err(TaskError::NoStack { errno: -12, wanted: 1 << 20 }),
            Err(TaskError::NoStack { errno: 0x10, wanted: 3 }),
        ];
        let record = JoinRecord::new();
        for result in results {
            let node = JoinNode::new();
            assert_eq!(node.held(), None, "a new node holds nothing");
            assert_eq!(node.ok(), None);
            record.publish(1, Outcome::Done(result));
            node.fill(&record);
            assert_eq!(node.held(), Some(Held::Result(result)), "copied from the record");
            assert_eq!(node.ok(), result.ok());
            let kept = JoinNode::new();
            kept.keep(Held::Result(result));
            assert_eq!(kept.held(), Some(Held::Result(result)), "kept");
            assert_eq!(kept.ok(), result.ok());
        }
        for held in (0..OWN_CODES as u8).map(Held::Own).chain([Held::NeverAttached]) {
            let node = JoinNode::new();
            node.keep(held);
            assert_eq!(node.held(), Some(held));
            assert_eq!(node.ok(), None);
        }
    }
}
