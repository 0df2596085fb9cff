//! The owner's half of a join: when a run completes, record its result for every thread
//! and hand it to the same-executor waiters (join rules 1-3, 6 and 7, `task/join.rs`).

use crate::exec::sched::{Sched, hdr};
use crate::sync::Ordering;
use crate::task::header::{Header, SlotPtr};
use core::ptr::NonNull;

impl Sched {
    /// Join rules 2-3 and 5, at the end of a run (its result staged when its body went):
    /// one Release store, then two tests (one per kind of waiter) unless joins wait:
    /// one pop, one result write and one same-thread wake per waiter (bounded by the
    /// waiters); a run that joins from other threads announced themselves to also wakes
    /// those (at most `CROSS_WAITERS`, each a wake from another thread or a futex wake:
    /// off the hot path). No atomic read-modify-write, no allocation.
    #[inline(always)]
    pub(crate) fn complete_joiners(&self, task: NonNull<Header>) {
        let trailer = task.trailer();
        // Relaxed: owner-written generation. The words were staged when the body went.
        trailer.record.seal(hdr(task).generation.load(Ordering::Relaxed));
        // Inlined: a join on this executor is the common waiter, and its wake is a pop,
        // a store and a same-thread wake (no call, no register spills).
        if !trailer.joiners.is_empty() {
            self.wake_joiners(task);
        }
        if trailer.record.cross_armed.get() {
            self.wake_cross(task);
        }
    }

    /// Join rule 5: joins from other threads announced themselves during this run (cold:
    /// they wake through atomics or a futex).
    #[cold]
    #[inline(never)]
    fn wake_cross(&self, task: NonNull<Header>) {
        let record = &task.trailer().record;
        record.cross_armed.set(false);
        record.wake_cross();
    }

    /// Join rules 3, 6 and 7: copies the run's result words into every same-executor
    /// waiter's node and wakes its task (the run that waits, if still ours).
    #[inline(always)]
    fn wake_joiners(&self, task: NonNull<Header>) {
        let trailer = task.trailer();
        while let Some(node) = trailer.joiners.pop_front() {
            // SAFETY: a linked node is alive and pinned (list rule 2, join rule 4).
            let node = unsafe { node.as_ref() };
            node.fill(&trailer.record);
            if let Some(waiter) = node.waiter.take() {
                let header = hdr(waiter);
                // Join rule 7: only the run that waits, in a slot this executor owns.
                // Acquire: pairs with the Release that published the owner (remote rule
                // 2). Relaxed generation: once the owner is us, only this thread writes it.
                if header.owner.load(Ordering::Acquire) == self.owner_id()
                    && header.generation.load(Ordering::Relaxed) == node.waiter_run()
                {
                    self.wake_local(waiter);
                }
            }
        }
    }

    /// Wake rule 8 and join rule 5: a join from another thread announced itself. Cold:
    /// wakes every registered entry (they look at the record again), and marks a run that
    /// is still attached so that its end wakes them again.
    #[cold]
    pub(crate) fn joins_announced(&self, task: NonNull<Header>) {
        let record = &task.trailer().record;
        record.wake_cross();
        if hdr(task).state.get().is_attached() {
            record.cross_armed.set(true);
        }
    }
}
