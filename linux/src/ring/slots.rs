//! Operation slots: where the ring driver keeps each operation it has submitted until
//! its completion is reaped, so the kernel never writes into memory that was handed
//! back and a stale completion can never reach a reused slot.
//!
//! Rules (cited as "slot rule N"):
//! 1. `user_data` = `generation << 32 | index`; index < 2^31. A slot's generation grows
//!    every time it is freed (wrapping below 2^30), so a completion whose generation does
//!    not match its slot is stale and is dropped (counted).
//! 2. `user_data` values with bit 63 set are the driver's own (cancel requests), those
//!    with bit 62 set are direct operations (`direct.rs`); no slot can produce either
//!    (rule 1 keeps generations below 2^30).
//! 3. A slot holds the operation's owned buffer (if any) until its completion arrives;
//!    then either the task's token is told (and the slot freed), or, for operations whose
//!    result the future takes itself, the slot keeps result and buffer until `take`.
//! 4. A slot holds the descriptor its operation names (`RingDriver::hold_fd`, fd rule 1 in
//!    `fd.rs`) until the operation's last CQE is reaped or the slot is freed, whichever
//!    comes first; a slot whose operation is an `IORING_OP_CLOSE` of that descriptor marks
//!    it closed when its CQE says the kernel closed it (any result but `ECANCELED`).
//! 5. Slots are allocated at driver creation; the free list is a stack of indices, so
//!    alloc and free are O(1) and allocate nothing.

use crate::buf::RawBuf;
use keel_core::driver::IoToken;

/// Tag bit for the driver's own SQEs (rule 2).
pub(crate) const INTERNAL: u64 = 1 << 63;
/// `user_data` of cancel requests.
pub(crate) const CANCEL_TAG: u64 = INTERNAL | 1;
/// `user_data` of the read kept armed on the unpark eventfd.
pub(crate) const EVENTFD_TAG: u64 = INTERNAL | 2;
/// `user_data` of the close the driver submits for a direct descriptor nobody will take.
pub(crate) const CLOSE_TAG: u64 = INTERNAL | 3;
// `INTERNAL | 4`: `unpark::UNPARK_TAG`, the CQEs other threads post to unpark.
/// `user_data` tag of a slot operation's linked timer (deadline rule 2): `LINK_TIMER |
/// user_data of the operation`. Bits 62 and 63 together: no slot (rule 1), direct
/// operation (bit 63 clear) or other internal tag (small constants) has both.
pub(crate) const LINK_TIMER: u64 = INTERNAL | (1 << 62);

/// Where a slot operation's linked timer is (deadline rules 2-3 in the `deadline` module).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum LinkTimer {
    /// The operation has no deadline.
    None,
    /// The timer's CQE has not been reaped.
    Armed,
    /// The timer's CQE was reaped with this result (`-ETIME`: it fired).
    Ended(i32),
}
// `INTERNAL | 1 << 61 | key`: `transfer::op::ARRIVAL`, a descriptor another ring sent.

/// Results a multishot slot keeps in place before spilling (completion rule 2).
pub(crate) const MULTI_Q: usize = 16;

/// A fixed FIFO of (result, CQE flags) kept in a multishot slot (completion rule 1).
#[derive(Debug, Default)]
pub(crate) struct ResultQ {
    items: [(i32, u32); MULTI_Q],
    head: u8,
    len: u8,
}

impl ResultQ {
    pub(crate) fn is_full(&self) -> bool {
        self.len as usize == MULTI_Q
    }
    pub(crate) fn push(&mut self, item: (i32, u32)) -> bool {
        if self.is_full() {
            return false;
        }
        self.items[(self.head as usize + self.len as usize) % MULTI_Q] = item;
        self.len += 1;
        true
    }
    pub(crate) fn pop(&mut self) -> Option<(i32, u32)> {
        if self.len == 0 {
            return None;
        }
        let it = self.items[self.head as usize];
        self.head = ((self.head as usize + 1) % MULTI_Q) as u8;
        self.len -= 1;
        Some(it)
    }
}

#[derive(Debug)]
pub(crate) enum SlotState {
    Free,
    /// Submitted (or queued in the SQ); the completion goes to `token`.
    InFlight,
    /// Completed; the future has not taken the result yet (rule 3).
    /// Result and CQE flags (flags: for multishot and buffer-select operations).
    #[allow(dead_code)]
    Done(i32, u32),
    /// The future was dropped while in flight: free on completion (rule 3).
    Abandoned,
}

#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) generation: u32,
    pub(crate) state: SlotState,
    pub(crate) token: Option<IoToken>,
    /// Keep the result for `take` instead of telling the token and freeing (rule 3).
    pub(crate) keep: bool,
    pub(crate) buf: Option<RawBuf>,
    /// The operation yields a descriptor: if abandoned, close what it opens.
    pub(crate) yields_fd: bool,
    /// The descriptor it yields is a fixed-file index (closed through the ring).
    pub(crate) yields_fixed: bool,
    /// It yields a fixed-file index written into its owned buffer, not in its result
    /// (`IORING_OP_FILES_UPDATE` with `IORING_FILE_INDEX_ALLOC`: transfer rule 1); an
    /// abandoned one's index is closed through the ring.
    pub(crate) index_in_buf: bool,
    /// Multishot (completion rule 1): results queue in `q` (then the driver's spill).
    pub(crate) multi: bool,
    /// It selects a provided buffer (`IOSQE_BUFFER_SELECT`): a completion without one
    /// hands a turn on (pbuf rule 3).
    pub(crate) select: bool,
    pub(crate) q: ResultQ,
    /// Results of this slot waiting in the driver's spill list (completion rule 2).
    pub(crate) spilled: u32,
    /// Its status block went away (io_status rule 4): give back what it yields.
    pub(crate) orphaned: bool,
    /// The final CQE (no F_MORE) of a multishot op has arrived.
    pub(crate) ended: bool,
    /// The driver cancelled this multishot op because its queue filled (completion rule 2).
    pub(crate) throttled: bool,
    /// A non-multishot op's first CQE had F_MORE (SEND_ZC): its result, held until the
    /// notification (completion rule 4).
    pub(crate) first: Option<(i32, u32)>,
    /// The descriptor the operation names, held until its last CQE (rule 4).
    pub(crate) fd: Option<crate::fd::SharedFd>,
    /// The operation closes `fd` (`IORING_OP_CLOSE`, rule 4).
    pub(crate) closes: bool,
    /// The registered buffer of an abandoned fixed operation, released when the slot is
    /// freed (shared rule 2, regbuf rule 5).
    pub(crate) fixed: Option<crate::regbuf::FixedBuf>,
    /// The deadline's `IORING_OP_LINK_TIMEOUT` (deadline rule 2).
    pub(crate) timer: LinkTimer,
    /// The operation's final (result, flags), held while its timer's CQE is still due
    /// (deadline rule 3).
    pub(crate) held: Option<(i32, u32)>,
    /// The timer's absolute expiry, which its SQE points at: the slot table is allocated
    /// once and never moves (rule 5), so the address holds until the slot is freed.
    pub(crate) ts: io_uring::types::Timespec,
}

impl Slot {
    /// The operation's last CQE, with result `res`, was reaped: let go of its descriptor
    /// (rule 4), marking it closed if this was a close the kernel carried out.
    #[inline(always)]
    pub(crate) fn release_fd(&mut self, res: i32) {
        if let Some(fd) = self.fd.take() {
            if self.closes && res != -keel_core::Errno::ECANCELED.0 {
                fd.mark_closed();
            }
            drop(fd);
        }
    }
}

impl Slot {
    /// Whether the kernel may still post a completion for this slot's operation (an
    /// `ASYNC_CANCEL` for it can still do something: the `ring` module's cancel rule 3).
    pub(crate) fn cancellable(&self) -> bool {
        match self.state {
            SlotState::InFlight | SlotState::Abandoned => !(self.multi && self.ended) && self.held.is_none(),
            SlotState::Done(..) | SlotState::Free => false,
        }
    }
}

pub(crate) struct Slots {
    slots: Vec<Slot>,
    free: Vec<u32>,
    pub(crate) in_flight: usize,
    pub(crate) stale: u64,
}

impl Slots {
    pub(crate) fn new(n: u32) -> Self {
        let slots = (0..n)
            .map(|_| Slot {
                generation: 0,
                state: SlotState::Free,
                token: None,
                keep: false,
                buf: None,
                yields_fd: false,
                yields_fixed: false,
                index_in_buf: false,
                multi: false,
                select: false,
                q: ResultQ::default(),
                spilled: 0,
                orphaned: false,
                ended: false,
                throttled: false,
                first: None,
                fd: None,
                closes: false,
                fixed: None,
                timer: LinkTimer::None,
                held: None,
                ts: io_uring::types::Timespec::new(),
            })
            .collect();
        Slots { slots, free: (0..n).rev().collect(), in_flight: 0, stale: 0 }
    }

    /// How many slots the table has.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn free_count(&self) -> usize {
        self.free.len()
    }

    /// The `user_data` of every slot in use (for the driver's `Drop`).
    pub(crate) fn in_use(&self) -> Vec<u64> {
        let live = |s: &&Slot| !matches!(s.state, SlotState::Free);
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| live(s))
            .map(|(i, s)| ((s.generation as u64) << 32) | i as u64)
            .collect()
    }

    /// Takes a free slot; returns its `user_data` (rule 1).
    pub(crate) fn alloc(&mut self, token: Option<IoToken>, keep: bool, buf: Option<RawBuf>) -> Option<u64> {
        let i = self.free.pop()?;
        let s = &mut self.slots[i as usize];
        s.yields_fd = false;
        s.yields_fixed = false;
        s.index_in_buf = false;
        s.multi = false;
        s.q = ResultQ::default();
        s.spilled = 0;
        s.ended = false;
        s.orphaned = false;
        s.throttled = false;
        s.first = None;
        s.closes = false;
        s.timer = LinkTimer::None;
        s.held = None;
        s.state = SlotState::InFlight;
        s.token = token;
        s.keep = keep;
        s.buf = buf;
        self.in_flight += 1;
        Some(((s.generation as u64) << 32) | i as u64)
    }

    /// Arms the deadline of slot `user_data` (just allocated) at `ts`: the address its
    /// `IORING_OP_LINK_TIMEOUT` SQE points at, valid until the slot is freed (rule 5).
    pub(crate) fn arm_timer(
        &mut self,
        user_data: u64,
        ts: io_uring::types::Timespec,
    ) -> *const io_uring::types::Timespec {
        let s = &mut self.slots[(user_data & 0xFFFF_FFFF) as usize];
        s.ts = ts;
        s.timer = LinkTimer::Armed;
        &s.ts
    }

    /// The slot a `user_data` names, if it is current (rule 1).
    pub(crate) fn get(&mut self, user_data: u64) -> Option<&mut Slot> {
        if user_data & INTERNAL != 0 {
            return None;
        }
        let (i, g) = ((user_data & 0xFFFF_FFFF) as usize, (user_data >> 32) as u32);
        match self.slots.get_mut(i) {
            Some(s) if s.generation == g && !matches!(s.state, SlotState::Free) => Some(s),
            _ => None,
        }
    }

    /// Frees the slot of `user_data`, returning its buffer.
    pub(crate) fn free(&mut self, user_data: u64) -> Option<RawBuf> {
        let i = (user_data & 0xFFFF_FFFF) as usize;
        let s = &mut self.slots[i];
        if matches!(s.state, SlotState::InFlight | SlotState::Abandoned) && !(s.multi && s.ended) {
            self.in_flight -= 1;
        }
        s.state = SlotState::Free;
        s.token = None;
        // Rule 4: an operation whose slot is freed before its last CQE was reaped (the
        // driver is going, or a multishot's results were taken) lets go here.
        drop(s.fd.take());
        drop(s.fixed.take()); // the kernel is done with it: released (regbuf rule 5, shared rule 2)
        // A planted bug for the fuzz target `ring_slots` (off in every normal build): slot
        // 0 keeps its generation, so its stale completions reach the next allocation.
        if !(cfg!(keel_planted = "ring_slots") && i == 0) {
            s.generation = (s.generation + 1) & 0x3FFF_FFFF;
        }
        self.free.push(i as u32);
        s.buf.take()
    }

    /// A completion arrived for a current slot: mark it done (for `take`) without
    /// freeing it (only if it was in flight).
    pub(crate) fn mark_done(&mut self, user_data: u64, res: i32, flags: u32) {
        if let Some(s) = self.get(user_data)
            && matches!(s.state, SlotState::InFlight)
        {
            s.state = SlotState::Done(res, flags);
            self.in_flight -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_rule_1_a_stale_user_data_never_reaches_a_reused_slot() {
        let mut s = Slots::new(2);
        let a = s.alloc(None, false, None).unwrap();
        assert!(s.get(a).is_some());
        s.free(a);
        let b = s.alloc(None, false, None).unwrap();
        assert_eq!(a & 0xFFFF_FFFF, b & 0xFFFF_FFFF, "LIFO reuse of the same index");
        assert_ne!(a, b);
        assert!(s.get(a).is_none(), "the old user_data must be stale");
        assert!(s.get(b).is_some());
        assert!(s.get(CANCEL_TAG).is_none());
        let _c = s.alloc(None, false, None).unwrap();
        assert!(s.alloc(None, false, None).is_none());
        assert_eq!(s.in_flight, 2);
    }
}
