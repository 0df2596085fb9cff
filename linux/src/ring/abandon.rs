//! Letting go: a value that held an operation (a kept operation's future, a multishot,
//! a status block's orphan) goes away, and what its results hold is given back.
//! Invariants:
//! - Abandoning is queued by the value (shared rule 2) and done here at the start of
//!   every reap, park and slot submission (`take_abandoned`), so a value's `Drop` never
//!   needs the driver.
//! - An abandoned operation in flight is cancelled and keeps its slot, its buffers and
//!   its registered buffer until its final CQE: nothing the kernel may write is freed.
//! - A result nobody will take is given back (completion rule 3, `dispose`): a descriptor is
//!   closed, a fixed-file index closed through the ring, a provided buffer returned.
#![allow(unsafe_code)] // closing a descriptor the kernel opened; pushing a CLOSE SQE

use super::driver::RingDriver;
use super::slots::{CLOSE_TAG, SlotState};
use io_uring::{opcode, types};
use keel_core::OpId;

impl RingDriver {
    /// Slot operation `id`, abandoned, uses registered buffer `buf`: the slot keeps it
    /// until it is freed (shared rule 2, regbuf rule 5). A slot that is gone completed
    /// already: `buf` is released at once.
    pub(super) fn hold_fixed(&mut self, id: OpId, buf: crate::regbuf::FixedBuf) {
        if let Some(slot) = self.slots.get(id.0) {
            slot.fixed = Some(buf);
        }
    }

    /// Abandons queued operation `id`, with the registered buffer it uses if any (shared
    /// rule 2). Out of line: abandoning is off the hot path.
    #[inline(never)]
    pub(super) fn abandon_queued(&mut self, id: OpId) {
        if let Some(buf) = self.shared.take_abandoned_fixed(id) {
            self.hold_fixed(id, buf);
        }
        self.abandon(id);
    }

    /// Abandons the operations values let go of since the last call (shared rule 2), and
    /// closes the fixed-file indices whose handles went away (transfer rule 6).
    #[inline(always)]
    pub(super) fn take_abandoned(&mut self) {
        if self.shared.any_abandoned() {
            self.take_abandoned_cold();
        }
    }

    #[inline(never)]
    fn take_abandoned_cold(&mut self) {
        while let Some(id) = self.shared.next_abandoned() {
            self.abandon_queued(id);
        }
        // Bounded: one entry per dropped handle, each an index of the table. Not while a
        // task's link chain is open (the CLOSE would join it): then at the next call.
        if self.tail_linked {
            self.shared.keep_closing_queued();
            return;
        }
        while let Some(index) = self.shared.next_closing() {
            self.dispose(true, true, index as i32, 0);
        }
    }

    /// An `IORING_OP_CLOSE` of fixed-file `index`, its CQE ignored.
    pub(super) fn push_fixed_close(&mut self, index: u32) -> bool {
        let e = opcode::Close::new(types::Fixed(index)).build().user_data(CLOSE_TAG);
        // SAFETY: a close SQE references no memory. If the SQ is full the index stays
        // installed until the ring goes (cold, documented in completion rule 3).
        unsafe { self.ring.push(&e) }
    }

    /// Gives back what a result nobody will take holds (completion rule 3): a descriptor is closed
    /// (a fixed-file index through the ring), a provided buffer goes back to its ring.
    pub(super) fn dispose(&mut self, yields_fd: bool, yields_fixed: bool, res: i32, flags: u32) {
        if yields_fd && res >= 0 {
            if yields_fixed {
                if self.tail_linked {
                    // A task's link chain is open: the CLOSE would join it (and take the
                    // place of the operation the chain was built for). `flush_cancels`
                    // pushes it once the chain is submitted.
                    self.pending_closes.push(res as u32);
                } else {
                    self.push_fixed_close(res as u32);
                }
            } else {
                crate::epoll::note_closed(res); // close-log rule 1 (epoll/engine/closes.rs)
                // SAFETY: the kernel opened it for this operation and nothing else knows it.
                unsafe { rustix::io::close(res) };
            }
        }
        if let (Some(bid), Some(mut p)) = (io_uring::cqueue::buffer_select(flags), self.pbuf()) {
            p.give_back(bid);
        }
    }

    /// A freed slot's owned buffer that holds a fixed-file index nobody will take (a
    /// registration whose future went away: `Slot::index_in_buf`, transfer rule 1): the
    /// index is closed through the ring (completion rule 3). `res` is the operation's
    /// result: the count of descriptors it installed.
    pub(super) fn dispose_index_buf(&mut self, index_in_buf: bool, res: i32, buf: Option<crate::buf::RawBuf>) {
        let Some(buf) = buf.filter(|b| index_in_buf && res == 1 && b.len() >= 4) else { return };
        // SAFETY: the buffer holds at least 4 initialised bytes (its length), which the
        // kernel overwrote with the installed index; the slot is freed, so nothing else
        // reads or writes it.
        let index = unsafe { (buf.ptr() as *const i32).read_unaligned() };
        if index >= 0 {
            self.dispose(true, true, index, 0);
        }
    }

    /// A kept operation's future went away: cancel it; its slot (and buffer) is freed when
    /// the completion arrives (never before: the kernel may still use the buffer).
    pub(crate) fn abandon(&mut self, id: OpId) {
        let Some(slot) = self.slots.get(id.0) else { return };
        let (yields_fd, yields_fixed, index_in_buf) = (slot.yields_fd, slot.yields_fixed, slot.index_in_buf);
        if slot.multi {
            // Completion rule 3: queued results are given back now; the op is cancelled and
            // its slot freed at its final CQE (or now, if that has arrived).
            let ended = slot.ended;
            let mut queued = [(0i32, 0u32); super::slots::MULTI_Q];
            let mut count = 0;
            while let Some(result) = slot.q.pop() {
                queued[count] = result;
                count += 1;
            }
            if slot.spilled > 0 {
                slot.spilled = 0;
                let mut at = 0;
                while at < self.spill.len() {
                    if self.spill[at].0 == id.0 {
                        let (_, res, flags) = self.spill.remove(at);
                        self.dispose(yields_fd, yields_fixed, res, flags);
                    } else {
                        at += 1;
                    }
                }
            }
            for &(res, flags) in &queued[..count] {
                self.dispose(yields_fd, yields_fixed, res, flags);
            }
            if ended {
                drop(self.slots.free(id.0));
            } else if let Some(slot) = self.slots.get(id.0) {
                slot.state = SlotState::Abandoned;
                self.queue_cancel(id);
            }
            return;
        }
        match slot.state {
            SlotState::InFlight => {
                slot.state = SlotState::Abandoned;
                self.queue_cancel(id);
            }
            SlotState::Done(res, flags) => {
                let buf = self.slots.free(id.0);
                self.dispose_index_buf(index_in_buf, res, buf);
                self.dispose(yields_fd, yields_fixed, res, flags);
            }
            SlotState::Abandoned | SlotState::Free => {}
        }
    }
}
