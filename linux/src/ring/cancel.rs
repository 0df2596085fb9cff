//! The cancel queue (cancel rules 1-4 in the `ring` module doc) and the cancel of every
//! operation (`Driver::cancel_all`). Invariants:
//! - A cancel for an operation that may still complete is never dropped: it waits in
//!   `pending_cancels` until it is in the SQ (cancel rule 1), at once or at the next enter.
//! - At most one entry per operation (cancel rule 2), and only for live ones (cancel rule
//!   3), so the queue stays within the capacity it was given at creation; growing it
//!   (cancel rule 4) is cold and only for cancels the driver cannot check.
//! - No cancel SQE goes in while a task's link chain is open (`tail_linked`): the SQ is
//!   submitted first, or the cancel waits for the next enter.
#![allow(unsafe_code)] // pushing SQEs is unsafe in the io-uring crate

use super::direct::DIRECT;
use super::driver::RingDriver;
use super::pair::is_pair;
use super::slots::{CANCEL_TAG, INTERNAL};
use io_uring::{opcode, types};
use keel_core::OpId;

impl RingDriver {
    /// Queues an `ASYNC_CANCEL` for `id` (cancel rules in the `ring` module doc: never
    /// lost, at most one queued per operation).
    pub(super) fn queue_cancel(&mut self, id: OpId) {
        if id.0 & INTERNAL != 0 || self.pending_cancels.contains(&id.0) {
            return; // cancel rule 2: one queued cancel per operation is enough
        }
        if is_pair(id.0) {
            if !self.pairs.cancellable(id.0) {
                return; // cancel rule 3 (pair rule 6)
            }
        } else if id.0 & DIRECT == 0 && !self.slots.get(id.0).is_some_and(|s| s.cancellable()) {
            return; // cancel rule 3: it has ended; nothing to cancel
        }
        if self.pending_cancels.len() == self.pending_cancels.capacity() {
            self.make_cancel_room();
        }
        self.pending_cancels.push(id.0);
        self.flush_cancels();
    }

    /// Cancel rule 4: the queue is full (only with cancels for operations that are not
    /// in flight: the kernel's `user_data`s the driver cannot check, or an SQ that would
    /// not take them). Moves what it can into the SQ, submits the SQ to make room, drops
    /// requests for slot operations that have ended; never drops a live request: as a last
    /// resort the queue grows (cold, allocates).
    #[cold]
    pub(super) fn make_cancel_room(&mut self) {
        self.flush_cancels();
        if self.pending_cancels.len() < self.pending_cancels.capacity() {
            return;
        }
        if self.submit_queued() {
            self.flush_cancels();
        }
        if self.pending_cancels.len() < self.pending_cancels.capacity() {
            return;
        }
        let (slots, pairs) = (&mut self.slots, &mut self.pairs);
        self.pending_cancels.retain(|&c| {
            c & DIRECT != 0
                || if is_pair(c) { pairs.cancellable(c) } else { slots.get(c).is_some_and(|s| s.cancellable()) }
        });
        if self.pending_cancels.len() == self.pending_cancels.capacity() {
            self.pending_cancels.reserve(self.pending_cancels.len());
        }
    }

    /// Moves queued cancel requests into the SQ while there is room. With nothing queued
    /// (no cancel, no fixed close, no eventfd re-arm) there is nothing to do: tested here,
    /// inline, so an enter with none (the usual one) pays no call.
    #[inline(always)]
    pub(super) fn flush_cancels(&mut self) {
        if self.eventfd_rearm || !self.pending_cancels.is_empty() || !self.pending_closes.is_empty() {
            self.flush_queued();
        }
    }

    /// [`flush_cancels`](Self::flush_cancels) with something queued.
    #[inline(never)]
    fn flush_queued(&mut self) {
        if self.tail_linked && !self.submit_queued() {
            return; // retried at the next enter, which submits the chain first
        }
        while let Some(&index) = self.pending_closes.last() {
            if !self.push_fixed_close(index) {
                return;
            }
            self.pending_closes.pop();
        }
        if self.eventfd_rearm {
            self.arm_eventfd();
        }
        while let Some(&target) = self.pending_cancels.last() {
            let e = opcode::AsyncCancel::new(target).build().user_data(CANCEL_TAG);
            // SAFETY: a cancel SQE references no memory.
            if !unsafe { self.ring.push(&e) } {
                return;
            }
            self.pending_cancels.pop();
        }
    }

    /// `IORING_ASYNC_CANCEL_ANY`: every operation in the ring (queued ones are submitted
    /// first), for the executor's final drain.
    pub(super) fn cancel_everything(&mut self) {
        self.take_abandoned();
        crate::transfer::clear_waiters(&self.shared); // transfer rule 5: nothing waits past the end
        if self.ops_in_flight() == 0 {
            return;
        }
        self.submit_queued();
        let all = opcode::AsyncCancel2::new(types::CancelBuilder::any()).build().user_data(CANCEL_TAG);
        // SAFETY: a cancel SQE references no memory.
        if !unsafe { self.ring.push(&all) } {
            self.submit_queued();
            // SAFETY: as above.
            let _ = unsafe { self.ring.push(&all) };
        }
    }
}
