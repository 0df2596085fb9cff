//! Completion routing: each CQE goes to the token, slot or queue its `user_data` names
//! (the `ring` module doc, Completions), and the values that keep results take them here.
//! Invariants:
//! - A direct `user_data` (bit 62, not bit 63) carries its token: no table lookup
//!   (direct rules 2 and 4); its queued cancel, if any, is dropped (direct rule 5).
//! - A slot `user_data` whose generation is not the slot's is stale: counted, and the
//!   provided buffer it names, if any, given back (slot rule 1, completion rule 3).
//! - A token is told once per CQE of a multishot (completion rule 1), once at the end of any
//!   other operation; a kept result waits in its slot for `take_full` (slot rule 3).
//! - Multishot results are taken in CQE order: the slot's queue, then its spill entries
//!   (completion rules 1-2); received data is never dropped.
//! - CQEs are copied out in batches of 32, at most `max` per drain: bounded.

use super::direct::DIRECT;
use super::driver::RingDriver;
use super::slots::{EVENTFD_TAG, INTERNAL, LINK_TIMER, LinkTimer, SlotState};
use super::unpark::UNPARK_TAG;
use crate::buf::RawBuf;
use io_uring::cqueue;
use keel_core::driver::IoToken;
use keel_core::{Errno, IoResult, OpId};

/// What a multishot slot has for its task ([`RingDriver::take_multi`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum MultiNext {
    /// One result and its CQE flags; without `IORING_CQE_F_MORE` it was the last (the
    /// slot is freed).
    Item(i32, u32),
    /// Nothing yet.
    Pending,
    /// The slot is not (or no longer) this operation's.
    Gone,
}

/// A flag keel sets (never the kernel: its CQE flags use bits 0-4 and the buffer id bits
/// 16-31) on a multishot op's last result when the driver itself ended the op (completion
/// completion rule 2): the task should re-arm it rather than treat the ECANCELED as its own.
pub(crate) const KEEL_REARM: u32 = 1 << 15;

impl RingDriver {
    /// Points the wake token of slot operation `id` at `task` (wake-token rule 3 in the
    /// `ring` module doc): its value is waited on in `task` now (moved to another task,
    /// or to a later run of its own). Nothing for an operation that ended, was abandoned or
    /// orphaned. A store: called by a value each time it finds its operation not done.
    #[inline(always)]
    pub(crate) fn rewake(&mut self, id: OpId, task: keel_core::TaskHandle) {
        if let Some(slot) = self.slots.get(id.0)
            && matches!(slot.state, SlotState::InFlight)
            && !slot.orphaned
        {
            slot.token = Some(IoToken::wake(task));
        }
    }

    /// Takes the raw result, the CQE flags (buffer id for buffer selection) and the buffer
    /// of a kept operation once it has completed (`slot_op::SlotOp`).
    pub(crate) fn take_full(&mut self, id: OpId) -> Option<(i32, u32, Option<RawBuf>)> {
        let slot = self.slots.get(id.0)?;
        let SlotState::Done(res, flags) = slot.state else { return None };
        let buf = self.slots.free(id.0);
        Some((res, flags, buf))
    }

    /// The next result of a multishot operation, in CQE order (completion rule 1).
    pub(crate) fn take_multi(&mut self, id: OpId) -> MultiNext {
        let Some(slot) = self.slots.get(id.0) else { return MultiNext::Gone };
        if !slot.multi {
            return MultiNext::Gone;
        }
        let item = if let Some(queued) = slot.q.pop() {
            Some(queued)
        } else if slot.spilled > 0 {
            slot.spilled -= 1;
            let at = self.spill.iter().position(|e| e.0 == id.0).expect("keel bug: spilled count without entries");
            let (_, res, flags) = self.spill.remove(at);
            Some((res, flags))
        } else if slot.ended {
            // The final CQE was lost to a full spill list (completion rule 2): end it as throttled.
            Some((-Errno::ECANCELED.0, KEEL_REARM))
        } else {
            None
        };
        match item {
            Some((res, flags)) => {
                if flags & cqueue_more() == 0 {
                    drop(self.slots.free(id.0));
                }
                MultiNext::Item(res, flags)
            }
            None => MultiNext::Pending,
        }
    }

    /// Drains up to `max` CQEs, copying them out in batches so the CQ head is published
    /// (and the tail read) once per batch rather than once per CQE. Inline: a drain of an
    /// empty CQ (the reap's first, before its enter, usually) pays no call.
    #[inline(always)]
    pub(super) fn drain<F: FnMut(IoToken, IoResult)>(&mut self, max: usize, sink: &mut F) -> usize {
        if self.ring.cq_is_empty() {
            return 0;
        }
        self.drain_batches(max, sink)
    }

    /// [`drain`](Self::drain) of a CQ with something in it.
    #[inline(never)]
    fn drain_batches<F: FnMut(IoToken, IoResult)>(&mut self, max: usize, sink: &mut F) -> usize {
        const BATCH: usize = 32;
        let mut drained = 0;
        while drained < max {
            let mut buf = [const { core::mem::MaybeUninit::<cqueue::Entry>::uninit() }; BATCH];
            let want = (max - drained).min(BATCH);
            let cqes = self.ring.fill(&mut buf[..want]);
            let got = cqes.len();
            self.stats.completed += got as u64;
            drained += got;
            for cqe in cqes.iter() {
                self.complete(cqe.clone(), sink);
            }
            if got < want {
                break;
            }
        }
        drained
    }

    #[inline(always)]
    fn complete<F: FnMut(IoToken, IoResult)>(&mut self, cqe: cqueue::Entry, sink: &mut F) {
        let ud = cqe.user_data();
        if ud & (INTERNAL | DIRECT) == DIRECT {
            if !self.pending_cancels.is_empty() {
                self.pending_cancels.retain(|&c| c != ud); // direct rule 5
            }
            let token = self.direct.complete(ud);
            sink(token, to_result(cqe.result()));
            return;
        }
        if super::pair::is_pair(ud) {
            self.complete_pair(ud, cqe.result(), sink);
            return;
        }
        self.complete_slot(cqe, sink);
    }

    /// A CQE of a slot operation or of the driver's own.
    fn complete_slot<F: FnMut(IoToken, IoResult)>(&mut self, cqe: cqueue::Entry, sink: &mut F) {
        let ud = cqe.user_data();
        if ud == EVENTFD_TAG {
            self.eventfd_armed = false;
            self.arm_eventfd();
            return;
        }
        if ud == UNPARK_TAG {
            return; // a MsgRing unpark: it has done its work by ending the wait
        }
        if ud & LINK_TIMER == LINK_TIMER {
            self.complete_link_timer(ud & !LINK_TIMER, cqe.result(), sink);
            return;
        }
        if crate::transfer::is_arrival(ud) {
            // Transfer rule 4: a descriptor another executor sent lands in the inbox.
            crate::transfer::arrived(&self.shared, ud, cqe.result());
            return;
        }
        let (mut res, mut flags) = (cqe.result(), cqe.flags());
        if !self.pending_cancels.is_empty() && !cqueue::more(flags) {
            self.pending_cancels.retain(|&c| c != ud); // cancel rule 3: its op has ended
        }
        if let (Some(_), Some(mut p)) = (cqueue::buffer_select(flags), self.pbuf()) {
            p.note_taken(); // completion rule 5: the kernel handed a buffer out
        }
        if cqueue::buffer_select(flags).is_none()
            && res != -libc::ENOBUFS
            && self.slots.get(ud).is_some_and(|s| s.select)
            && let Some(mut p) = self.pbuf()
        {
            // Pbuf rule 3: a buffer-selecting receive ended without taking a buffer (the
            // peer reset or closed, a cancel, an error); it may have held the turn a
            // returned buffer handed it, so the turn goes on to the next waiter.
            p.pass_unused_turn();
        }
        let Some(slot) = self.slots.get(ud) else {
            if ud & super::slots::INTERNAL == 0 {
                self.slots.stale += 1;
            }
            self.dispose(false, false, res, flags);
            return;
        };
        if slot.multi {
            self.complete_multi(ud, res, flags, sink);
            return;
        }
        if cqueue::notif(flags) {
            // Completion rule 4: the notification ends a SEND_ZC; its result is the first CQE's.
            self.stats.zc_notifs += 1;
            (res, flags) = slot.first.take().unwrap_or((res, flags & !cqueue_more()));
            flags &= !cqueue_more();
        } else if cqueue::more(flags) {
            // Completion rule 4: a first CQE with F_MORE (SEND_ZC): hold the result, keep the slot
            // (and the buffer) until the notification.
            slot.first = Some((res, flags));
            return;
        }
        match slot.timer {
            LinkTimer::None => {}
            LinkTimer::Armed => {
                // Deadline rule 3: the operation ends with its timer's CQE, still due.
                slot.held = Some((res, flags));
                return;
            }
            LinkTimer::Ended(t) => res = crate::deadline::outcome(res, t),
        }
        self.finish_slot(ud, res, flags, sink);
    }

    /// The CQE of slot operation `ud`'s linked timer (deadline rules 2-3): the operation
    /// ends here if its own CQE came first.
    #[cold]
    fn complete_link_timer<F: FnMut(IoToken, IoResult)>(&mut self, ud: u64, timer_res: i32, sink: &mut F) {
        let Some(slot) = self.slots.get(ud) else {
            self.slots.stale += 1; // keel bug if ever: a slot is not freed while its timer is due
            return;
        };
        slot.timer = LinkTimer::Ended(timer_res);
        let held = slot.held.take();
        match timer_res {
            r if r == -Errno::ETIME.0 => self.stats.deadlines_fired += 1,
            r if r == -crate::errno::EALREADY.0 || r == -Errno::ENOENT.0 => self.stats.deadlines_uncancellable += 1,
            _ => {}
        }
        if let Some((res, flags)) = held {
            self.finish_slot(ud, crate::deadline::outcome(res, timer_res), flags, sink);
        }
    }

    /// The final completion of slot operation `ud` (all its CQEs reaped): its result to
    /// its token or its slot, or given back if nobody will take it.
    fn finish_slot<F: FnMut(IoToken, IoResult)>(&mut self, ud: u64, res: i32, flags: u32, sink: &mut F) {
        let Some(slot) = self.slots.get(ud) else { return };
        slot.release_fd(res); // slot rule 4: the kernel is done with the descriptor
        match slot.state {
            SlotState::InFlight if slot.keep => {
                let token = slot.token;
                self.slots.mark_done(ud, res, flags);
                if let Some(t) = token {
                    sink(t, to_result(res));
                }
            }
            SlotState::InFlight => {
                let (token, orphaned, yields_fd, yields_fixed) =
                    (slot.token, slot.orphaned, slot.yields_fd, slot.yields_fixed);
                drop(self.slots.free(ud));
                if let Some(t) = token {
                    sink(t, to_result(res));
                }
                if orphaned {
                    self.dispose(yields_fd, yields_fixed, res, flags);
                }
            }
            SlotState::Abandoned => {
                // Nobody will ever see this result: give back what it holds (completion rule 3).
                let (yields_fd, yields_fixed, index_in_buf) = (slot.yields_fd, slot.yields_fixed, slot.index_in_buf);
                let buf = self.slots.free(ud);
                self.dispose_index_buf(index_in_buf, res, buf);
                self.dispose(yields_fd, yields_fixed, res, flags);
            }
            SlotState::Done(..) | SlotState::Free => self.slots.stale += 1,
        }
    }

    /// One CQE of a multishot operation (completion rules 1-3).
    fn complete_multi(&mut self, ud: u64, res: i32, flags: u32, sink: &mut dyn FnMut(IoToken, IoResult)) {
        let more = cqueue::more(flags);
        let Some(slot) = self.slots.get(ud) else { return };
        let (yields_fd, yields_fixed) = (slot.yields_fd, slot.yields_fixed);
        if matches!(slot.state, SlotState::Abandoned) {
            if !more {
                drop(self.slots.free(ud));
            }
            self.dispose(yields_fd, yields_fixed, res, flags);
            return;
        }
        let mut flags = flags;
        if !more {
            if slot.throttled && res == -Errno::ECANCELED.0 {
                flags |= KEEL_REARM;
            }
            slot.ended = true;
        }
        let pushed = slot.spilled == 0 && slot.q.push((res, flags));
        let throttle = more && !slot.throttled && (!pushed || slot.q.is_full());
        if throttle {
            slot.throttled = true;
        }
        let token = slot.token;
        if !pushed {
            // Completion rule 2: results holding a provided buffer are at most the ring's
            // count, and the spill list keeps that much room for them beyond what the
            // others may take.
            let limit =
                if cqueue::buffer_select(flags).is_some() { self.spill.capacity() } else { self.spill_plain_max };
            if self.spill.len() < limit.min(self.spill.capacity()) {
                self.spill.push((ud, res, flags));
                self.stats.multishot_spilled += 1;
                if let Some(slot) = self.slots.get(ud) {
                    slot.spilled += 1;
                }
            } else {
                self.stats.multishot_lost += 1;
                self.dispose(yields_fd, yields_fixed, res, flags);
            }
        }
        if !more {
            self.slots.in_flight -= 1; // the kernel is done with it (completion rule 1)
            if let Some(slot) = self.slots.get(ud) {
                slot.release_fd(res); // slot rule 4
            }
        }
        if throttle {
            self.stats.multishot_throttled += 1;
            self.queue_cancel(OpId(ud));
        }
        if let Some(t) = token {
            sink(t, to_result(res));
        }
    }
}

/// `IORING_CQE_F_MORE` (include/uapi/linux/io_uring.h; the crate keeps `sys` private).
pub(crate) const fn cqueue_more() -> u32 {
    1 << 1
}

pub(crate) fn to_result(res: i32) -> IoResult {
    if res < 0 { Err(Errno(-res)) } else { Ok(res as u32) }
}
