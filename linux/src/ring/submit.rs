//! Submission: an operation's SQE goes into the SQ, either direct (a status block's
//! plain operation: its `user_data` carries the completion token, direct rules 1-3) or
//! into a slot (everything else, slot rules 1-4). Invariants:
//! - An operation is accepted only if `room()` (free slots less direct operations in
//!   flight, direct rule 3) and the SQ both have room; a refused operation stays with
//!   the caller (`op` is left `Some`).
//! - The SQE is copied once, from where the initiator built it, eight bytes at a time
//!   (`reload_by_words`); `submitted` records it and notes whether it opens a link chain.
//! - A slot operation's descriptor hold (`hold_fd`, slot rule 4) is set in the same poll
//!   as the submission, before any enter.
#![allow(unsafe_code)] // pushing SQEs is unsafe in the io-uring crate; reading SQE fields by offset

use super::direct;
use super::driver::RingDriver;
use super::kernel::Kernel;
use super::op::RingOp;
use super::slots::LINK_TIMER;
use io_uring::opcode;
use keel_core::driver::IoToken;
use keel_core::{Errno, OpId};

impl RingDriver {
    /// Submits `op` (taken on success): direct if its token packs and it is plain
    /// (direct rule 1), else in a slot. Inlined into the initiator, so the SQE is copied
    /// from where it was just built.
    #[inline(always)]
    pub(super) fn submit_op(&mut self, op: &mut Option<RingOp>, token: IoToken) -> Result<OpId, Errno> {
        let Some(ring_op) = op.as_mut() else { return Err(Errno::EINVAL) };
        if self.room() == 0 {
            return Err(Errno::EBUSY);
        }
        let code = ring_op.entry.get_opcode() as u8;
        if let Some(bits) = token.pack()
            && ring_op.buf.is_none()
            && ring_op.meta == 0
            && direct::is_direct_sqe(&ring_op.entry)
        {
            // Kernel rule 3: the ring's arm is the SQ push written out here, so the SQE is
            // built right before the copy and nothing stands between them.
            let ud = match &mut self.ring {
                Kernel::Uring(ring, _) => {
                    let mut sq = ring.submission();
                    if sq.is_full() {
                        return Err(Errno::EBUSY);
                    }
                    let ud = self.direct.start(bits);
                    let entry = reload_by_words(&ring_op.entry).user_data(ud);
                    // SAFETY: the operation's memory stays valid until its completion is
                    // reaped (the `RingOp` constructors' contracts; a direct op owns no buffer).
                    unsafe { sq.push(&entry) }.expect("checked room above");
                    ud
                }
                Kernel::Epoll(engine) => push_direct_on_engine(engine, &mut self.direct, bits, &ring_op.entry)?,
            };
            self.submitted(op);
            return Ok(OpId(ud));
        }
        self.submit_slot(op, token, code)
    }

    /// How many more operations may go in flight (direct rule 3): free slots less the
    /// direct operations in flight.
    #[inline(always)]
    pub(super) fn room(&self) -> usize {
        self.slots.free_count().saturating_sub(self.direct.in_flight)
    }

    /// Operations in flight, of both kinds.
    pub(super) fn ops_in_flight(&self) -> usize {
        self.slots.in_flight + self.direct.in_flight
    }

    /// Bookkeeping after an SQE was queued: the submission record, the count; takes the op.
    #[inline(always)]
    fn submitted(&mut self, op: &mut Option<RingOp>) {
        if let Some(ring_op) = op.as_ref() {
            // SAFETY: `Entry` is `#[repr(C)]` around `io_uring_sqe`, whose `flags` is byte 1.
            self.tail_linked = unsafe { (&ring_op.entry as *const _ as *const u8).add(1).read() } & IOSQE_IO_LINK != 0;
        }
        if self.record.len() < self.record.capacity()
            && let Some(ring_op) = op.as_ref()
        {
            // SAFETY: `Entry` is `#[repr(C)]` around `io_uring_sqe`, whose `off` is the u64
            // at byte offset 8; we only read it.
            self.record
                .push(unsafe { ((&ring_op.entry as *const _ as *const u8).add(8) as *const u64).read_unaligned() });
        }
        *op = None;
        self.stats.submitted += 1;
    }

    /// Submits an operation that takes a slot (everything not direct).
    #[inline(never)]
    fn submit_slot(&mut self, op: &mut Option<RingOp>, token: IoToken, code: u8) -> Result<OpId, Errno> {
        // Shared rule 2: what values let go of is given back before a new operation may
        // need it (a fixed-file index, a slot).
        self.take_abandoned();
        let Some(ring_op) = op.as_mut() else { return Err(Errno::EINVAL) };
        let yields_fd = matches!(
            code,
            opcode::OpenAt::CODE
                | opcode::OpenAt2::CODE
                | opcode::Accept::CODE
                | opcode::Socket::CODE
                | opcode::FixedFdInstall::CODE
        );
        // SAFETY: `Entry` is `#[repr(C)]` around `io_uring_sqe`, whose `file_index` (a u32
        // union member) is at byte offset 44; we only read it. Non-zero: the result is a
        // fixed-file index, not a descriptor.
        let yields_fixed = yields_fd
            && unsafe { ((&ring_op.entry as *const _ as *const u8).add(44) as *const u32).read_unaligned() } != 0;
        let (sq_capacity, sq_len) = self.ring.sq_state();
        // SAFETY: `Entry` is `#[repr(C)]` around `io_uring_sqe`, whose `flags` is byte 1.
        let sqe_flags = unsafe { (&ring_op.entry as *const _ as *const u8).add(1).read() };
        let chained = sqe_flags & IOSQE_IO_LINK != 0;
        let selects = sqe_flags & IOSQE_BUFFER_SELECT != 0;
        // Deadline rule 1: the operation and its timer take two SQEs, both or neither.
        let own = if ring_op.deadline_ns().is_some() { 2 } else { 1 };
        if own > sq_capacity {
            return Err(Errno::EINVAL); // a one-entry SQ never has room for the pair (MISUSE.md)
        }
        if (own == 2 || chained) && self.flags.iopoll {
            // Iopoll rule 2: no LINK_TIMEOUT on a polled ring, and no chain whose
            // successor could then be refused.
            return Err(crate::errno::EOPNOTSUPP);
        }
        // An operation that links to a successor (opening a chain, or continuing one a task
        // left open) also keeps room for that successor and the successor's timer: the
        // core admits a pair (`Fiber::initiate_pair`) on room for two operations, and the
        // second must then go in whatever deadline it carries.
        let need = if chained { own + 2 } else { own };
        if need > sq_capacity {
            // An SQ of 2 or 3 entries cannot hold a chain's head with room for a successor
            // with a deadline (MISUSE.md): the pair goes one by one.
            return Err(Errno::EINVAL);
        }
        if sq_capacity - sq_len < need {
            return Err(Errno::EBUSY);
        }
        let ud = self.slots.alloc(Some(token), ring_op.keep(), ring_op.buf.take()).expect("room() counts free slots");
        ring_op.entry.set_user_data(ud);
        let entry = match ring_op.deadline_ns() {
            None => reload_by_words(&ring_op.entry),
            Some(_) => reload_by_words(&ring_op.entry).flags(io_uring::squeue::Flags::IO_LINK),
        };
        // SAFETY: the operation's memory stays valid until its completion is reaped: the
        // `RingOp` constructors' contracts, and owned buffers sit in the slot until then.
        let pushed = unsafe { self.ring.push(&entry) };
        assert!(pushed, "keel bug: the SQ had room for the operation");
        if let Some(at) = ring_op.deadline_ns() {
            let ts = self.slots.arm_timer(ud, crate::deadline::abs_timespec(keel_core::Instant::from_nanos(at)));
            let mut timer = opcode::LinkTimeout::new(ts).flags(io_uring::types::TimeoutFlags::ABS).build();
            timer = timer.user_data(LINK_TIMER | ud);
            if chained {
                timer = timer.flags(io_uring::squeue::Flags::IO_LINK); // the caller's chain goes on after it
            }
            // SAFETY: the timer's timespec is in the slot, which stays allocated (and the
            // table unmoved) until the operation's last CQE, the timer's included, is reaped
            // (deadline rule 2, slot rule 5).
            let pushed = unsafe { self.ring.push(&timer) };
            assert!(pushed, "keel bug: the SQ had room for the operation and its timer");
        }
        if let Some(slot) = self.slots.get(ud) {
            slot.yields_fd = yields_fd;
            slot.yields_fixed = yields_fixed;
            slot.index_in_buf = code == opcode::FilesUpdate::CODE;
            slot.multi = ring_op.multi();
            slot.select = selects;
        }
        self.submitted(op);
        self.tail_linked = chained; // the pair's own link ends at its timer
        Ok(OpId(ud))
    }

    /// Slot rule 4: slot operation `id`, just submitted, holds `fd` until its last CQE
    /// (`closes`: it is the `IORING_OP_CLOSE` of `fd`). Called by the submitter in the same
    /// poll as the submission, before any enter, so the hold covers the SQE's whole life;
    /// kept off the SQE path so that operations naming no descriptor pay nothing for it.
    pub(crate) fn hold_fd(&mut self, id: OpId, fd: crate::fd::SharedFd, closes: bool) {
        if let Some(slot) = self.slots.get(id.0) {
            slot.closes = closes;
            slot.fd = Some(fd);
        }
    }
}

/// The direct push on the epoll engine (kernel rule 3: kept out of the ring's path).
#[cold]
#[inline(never)]
fn push_direct_on_engine(
    engine: &mut crate::epoll::engine::Engine,
    direct: &mut super::direct::Direct,
    bits: u64,
    entry: &io_uring::squeue::Entry,
) -> Result<u64, Errno> {
    if engine.sq_len() == engine.sq_capacity() {
        return Err(Errno::EBUSY);
    }
    let ud = direct.start(bits);
    // SAFETY: the operation's memory stays valid until its completion is reaped (the
    // `RingOp` constructors' contracts; a direct op owns no buffer).
    let pushed = unsafe { engine.push_as(entry, ud) };
    assert!(pushed, "keel bug: the engine's SQ had room");
    Ok(ud)
}

/// `IOSQE_BUFFER_SELECT` (include/uapi/linux/io_uring.h).
const IOSQE_BUFFER_SELECT: u8 = 1 << 5;

/// `entry` re-read eight bytes at a time. The SQE was usually built a moment ago on the
/// initiator's stack with stores of 8 or 16 bytes at 8-byte offsets; the crate's 16-byte
/// copy into the SQ then loads across two of those stores, which the CPU cannot forward
/// (a store-forwarding stall of ~15 cycles per load: measured as half of the NOP
/// path's user time). 8-byte loads always sit inside one store. Volatile, so the
/// compiler does not merge them back.
#[inline(always)]
fn reload_by_words(entry: &io_uring::squeue::Entry) -> io_uring::squeue::Entry {
    const WORDS: usize = core::mem::size_of::<io_uring::squeue::Entry>() / 8;
    const _: () = assert!(core::mem::size_of::<io_uring::squeue::Entry>() == 64);
    let p = entry as *const io_uring::squeue::Entry as *const u64;
    let mut w = [0u64; WORDS];
    for (i, word) in w.iter_mut().enumerate() {
        // SAFETY: `Entry` is a 64-byte, 8-aligned `#[repr(C)]` plain-data struct
        // (`io_uring_sqe`); word `i` < 8 lies inside it.
        *word = unsafe { p.add(i).read_volatile() };
    }
    // SAFETY: every bit pattern is a valid `io_uring_sqe` (integers and unions of them),
    // and the sizes match (asserted above).
    unsafe { core::mem::transmute::<[u64; WORDS], io_uring::squeue::Entry>(w) }
}

/// `IOSQE_IO_LINK` (include/uapi/linux/io_uring.h).
pub(super) const IOSQE_IO_LINK: u8 = 1 << 2;
