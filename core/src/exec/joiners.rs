//! The owner's half of a join: when a run completes, record its result for every thread
//! and hand it to the same-executor waiters (join rules 1-3, `task/join.rs`).

use crate::exec::sched::{Sched, hdr};
use crate::sync::Ordering;
use crate::task::header::{Header, SlotPtr};
use crate::task::join::Outcome;
use core::ptr::NonNull;

impl Sched {
    /// Join rules 2-3, at the end of a run (its result set): one Release fence and four
    /// stores, then one pop, one result write and one same-thread wake per waiter
    /// (bounded by the waiters). No atomic read-modify-write, no allocation.
    #[inline(always)]
    pub(crate) fn complete_joiners(&self, task: NonNull<Header>) {
        let trailer = task.trailer();
        let result = trailer.result.get().unwrap_or(Err(crate::error::TaskError::Cancelled));
        // Relaxed: owner-written generation.
        trailer.record.publish(hdr(task).generation.load(Ordering::Relaxed), Outcome::Done(result));
        while let Some(node) = trailer.joiners.pop_front() {
            // SAFETY: a linked node is alive and pinned (list rule 2, join rule 4).
            let node = unsafe { node.as_ref() };
            node.result.set(Some(result));
            if let Some(waiter) = node.waiter.take() {
                self.wake_local(waiter);
            }
        }
    }
}
