//! A task's notify word: `woken_gen << 32 | JOIN | ATTACH | QUEUED`, the task's side of the
//! wake protocol (wake rules 2-6 in the mailbox module). The waker's CAS is
//! `mailbox::wake`; the owner's operations are here.

use crate::sync::{AtomicU64Like, Ordering};

pub(crate) const QUEUED: u64 = 1;
/// With QUEUED: the node was pushed by a foreign attach, not a wake (remote rule 3).
pub(crate) const ATTACH: u64 = 2;
/// With QUEUED: a join from another thread registered itself (wake rule 8).
pub(crate) const JOIN: u64 = 4;
pub(crate) const LOW: u64 = 0xFFFF_FFFF;

#[inline(always)]
pub(crate) const fn gen_of(word: u64) -> u32 {
    (word >> 32) as u32
}

/// Whether generation `a` is newer than `b` (wrapping).
#[inline(always)]
pub(crate) const fn newer(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// The notify word.
pub(crate) struct AtomicNotify(AtomicU64Like);

impl AtomicNotify {
    /// The word itself, for the waker's CAS (`mailbox::wake`).
    #[inline(always)]
    pub(crate) fn word(&self) -> &AtomicU64Like {
        &self.0
    }

    crate::sync::maybe_const_fn! {
        /// A word for a task with no owner (`QUEUED` set: wakes go nowhere, wake rule 3).
        pub(crate) fn new_unowned() -> Self {
            AtomicNotify(AtomicU64Like::new(QUEUED))
        }
    }

    /// Owner, after claiming an unowned task: open it to wakes (wake rule 6's inverse).
    /// Wakes merged while it had no owner were for runs that are over.
    /// Returns whether a join announced itself meanwhile (wake rule 8).
    pub(crate) fn open(&self) -> bool {
        // Release: pairs with the waker's Acquire (its load, or its CAS) in `wake_by_gen`,
        // which then sees the claim's `owner` store made before this. A swap, not a store:
        // every write to the word is a read-modify-write, so its modification order is
        // the order in which they read it (wake rule 4's merges rely on it, and loom models RMW
        // atomicity against RMWs only: tokio-rs/loom#254).
        let was = self.0.swap(0, Ordering::Release);
        debug_assert!(was & QUEUED != 0, "keel bug: opening a task that had an owner");
        was & JOIN != 0
    }

    /// Owner, after popping the task off its inbox (wake rule 5). Returns the woken generation,
    /// whether the node came from a foreign attach, and whether a join announced itself
    /// (wake rule 8).
    pub(crate) fn take(&self) -> (u32, bool, bool) {
        // Acquire: pairs with the waker's (or attacher's) Release, so whatever it wrote
        // before waking (or the body it placed) is visible to the owner and the task.
        // Release: pairs with the next waker's Acquire CAS (wake rule 5): this pop's writes to
        // the node (the stub linked into its `next`) happen before that waker clears
        // `next` to push it again. Without it the owner's link can land last and leave
        // the node pointing at the stub that points at it: a cycle, the task taken
        // forever (loom: `loom_wake`'s Release-CAS twins).
        let word = self.0.swap(0, Ordering::AcqRel);
        (gen_of(word), word & ATTACH != 0, word & JOIN != 0)
    }

    /// A foreign attacher that claimed an unowned task (QUEUED set since its release):
    /// mark the coming push as an attach, keeping whatever wakers merged (wake rule 4).
    pub(crate) fn mark_attach(&self) {
        // Release: publishes the placed body and local fields to the owner's `take`.
        self.0.fetch_or(ATTACH, Ordering::Release);
    }

    /// Owner, after popping the task off its inbox: whether the node came from a foreign
    /// attach (remote rule 2), before `take`.
    #[inline(always)]
    pub(crate) fn attach_pending(&self) -> bool {
        // Relaxed: the attacher's `mark_attach` came before its push, which our pop
        // acquired; wakers keep the bit (wake rule 4) and only `take` clears it.
        self.0.load(Ordering::Relaxed) & ATTACH != 0
    }

    /// Owner: give the task up (wake rule 6). Fails if a wake is in flight to the owner.
    pub(crate) fn close(&self, generation: u32) -> bool {
        let closed = (generation as u64) << 32 | QUEUED;
        // The word is 0 whenever QUEUED is clear (wake rules 4 and 5), so one CAS from 0 decides.
        // AcqRel on success: the caller's following `owner` store must not be seen first.
        // Relaxed on failure: the caller drains its inbox before trying again.
        self.0.compare_exchange(0, closed, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_rule_4_newer_wraps() {
        assert!(newer(1, 0));
        assert!(newer(0, u32::MAX));
        assert!(!newer(5, 5));
        assert!(!newer(u32::MAX, 0));
    }
}
