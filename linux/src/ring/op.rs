//! What the ring driver submits: a prepared SQE plus whatever the operation owns.
//!
//! The SQE's `ioprio` field means an I/O priority only for read and write opcodes
//! (Read, Write, Readv, Writev, ReadFixed, WriteFixed); for send, recv, accept and the
//! rest the kernel reads it as op flags. So a priority is set only through the builders
//! here that make those opcodes ([`RingOp::with_priority`] refuses any other opcode), and
//! no other path writes the field (a bug in the C executor keel re-creates).
#![allow(unsafe_code)] // constructors that trust the caller's buffers are `unsafe fn`s

use crate::buf::RawBuf;
use io_uring::{opcode, squeue};
use keel_core::Priority;

/// An operation for the ring driver.
#[derive(Debug)]
pub struct RingOp {
    pub(crate) entry: squeue::Entry,
    pub(crate) buf: Option<RawBuf>,
    /// `KEEP` (the result is kept for the submitter to take), `MULTI` (multishot: completes
    /// more than once, completion rules 1-3 in `ring/mod.rs`), `PAIR_HEAD` (a send that
    /// may go in as the head of a skip pair, `pair.rs`) and, from bit
    /// `DEADLINE_SHIFT` up, a deadline in nanoseconds on `CLOCK_MONOTONIC` (0: none; the
    /// `deadline` module: the SQE goes in linked to an `IORING_OP_LINK_TIMEOUT` at that
    /// instant, both in one submission, deadline rule 1). One word: the operation is
    /// copied on the submission path and returned by value in refusals.
    pub(crate) meta: u64,
}

/// `RingOp::meta`: the result is kept for the submitter.
const KEEP: u64 = 1;
/// `RingOp::meta`: multishot.
const MULTI: u64 = 2;
/// `RingOp::meta`: a `MSG_WAITALL` send that may head a skip pair (pair rule 1).
const PAIR_HEAD: u64 = 4;
/// `RingOp::meta`: where the deadline's nanoseconds start (61 bits: 73 years of uptime).
const DEADLINE_SHIFT: u32 = 3;

/// ioprio class values (linux/ioprio.h).
const IOPRIO_CLASS_RT: u16 = 1;
const IOPRIO_CLASS_BE: u16 = 2;
const IOPRIO_CLASS_SHIFT: u16 = 13;

/// Opcodes whose `ioprio` field is an I/O priority.
const PRIORITY_OPCODES: [u8; 6] = [
    opcode::Read::CODE,
    opcode::Write::CODE,
    opcode::Readv::CODE,
    opcode::Writev::CODE,
    opcode::ReadFixed::CODE,
    opcode::WriteFixed::CODE,
];

/// The ioprio value for a keel priority: High uses the realtime class when the process
/// may (`rt_allowed`), else best-effort level 0; Normal best-effort 4; Low best-effort 7.
pub fn ioprio_for(p: Priority, rt_allowed: bool) -> u16 {
    match p {
        Priority::High if rt_allowed => (IOPRIO_CLASS_RT << IOPRIO_CLASS_SHIFT) | 4,
        Priority::High => IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT,
        Priority::Normal => (IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT) | 4,
        Priority::Low => (IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT) | 7,
    }
}

/// Whether `opcode`'s `ioprio` field carries an I/O priority.
pub fn opcode_takes_priority(code: u8) -> bool {
    PRIORITY_OPCODES.contains(&code)
}

impl RingOp {
    /// A no-op.
    pub fn nop() -> Self {
        RingOp { entry: opcode::Nop::new().build(), buf: None, meta: 0 }
    }

    /// A no-op whose result the driver keeps for a future to take.
    pub fn nop_owned() -> Self {
        RingOp { entry: opcode::Nop::new().build(), buf: None, meta: KEEP }
    }

    /// An operation from a prepared SQE whose memory the caller keeps valid.
    ///
    /// # Safety
    /// Every pointer in `entry` stays valid (and, for buffers the kernel writes, unused
    /// by anything else) until the operation's completion has been reaped.
    ///
    /// An `IOSQE_CQE_SKIP_SUCCESS` in `entry` is cleared (pair rule 7): keel completes
    /// each operation from its CQE, so a success that posted none would never complete.
    pub unsafe fn from_entry(entry: squeue::Entry) -> Self {
        let mut entry = entry;
        let p = &mut entry as *mut squeue::Entry as *mut u8;
        // SAFETY: `Entry` is `#[repr(C)]` around `io_uring_sqe`, whose `flags` is byte 1:
        // one bit of a byte we own is cleared.
        unsafe { *p.add(1) &= !super::pair::IOSQE_CQE_SKIP_SUCCESS };
        RingOp { entry, buf: None, meta: 0 }
    }

    /// An operation from a prepared SQE that reads into or writes from `buf`, which the
    /// driver keeps until the completion arrives; the result is kept for the submitter
    /// to take (owned-buffer futures).
    ///
    /// # Safety
    /// `entry`'s only memory reference is into `buf` (and any other pointer in it stays
    /// valid until completion).
    pub(crate) unsafe fn owned(entry: squeue::Entry, buf: Option<RawBuf>) -> Self {
        RingOp { entry, buf, meta: KEEP }
    }

    /// A multishot operation (accept or recv with `IORING_*_MULTISHOT`): every CQE while
    /// `IORING_CQE_F_MORE` is set is one result, queued in the slot in order for the task to
    /// take (completion rule 1).
    ///
    /// # Safety
    /// `entry` references no memory outside the driver (multishot recv selects provided
    /// buffers; multishot accept passes no address).
    pub(crate) unsafe fn multishot(entry: squeue::Entry) -> Self {
        RingOp { entry, buf: None, meta: KEEP | MULTI }
    }

    /// Links the next operation the same task submits after this one (`IOSQE_IO_LINK`):
    /// it starts only when this one has completed successfully.
    ///
    /// The kernel links SQEs of one submission only, in SQ order. No other task's SQE can
    /// come between the two: while a task waits for room, every later initiator waits
    /// behind it. But if the second initiate has to wait for room, the ring is entered
    /// before it goes in, and the kernel ends the chain at the first operation: the two then
    /// run unordered. A task that needs the order checks for room for both first
    /// (`Driver::submit_capacity() >= 2` through `Fiber::with_driver`) and initiates them
    /// back to back. The driver's own SQEs (cancels, the unpark read) never join an open
    /// chain: it submits the chain first. A linked operation left without a successor
    /// links whatever the executor's next initiator submits in the same pass.
    pub fn linked(mut self) -> Self {
        self.entry = self.entry.flags(squeue::Flags::IO_LINK);
        self
    }

    /// Sets the SQE's I/O priority. Only read/write opcodes take one (module doc); for
    /// any other the operation is returned unchanged in `Err`.
    pub fn with_priority(self, p: Priority, rt_allowed: bool) -> Result<Self, Self> {
        if !opcode_takes_priority(self.entry.get_opcode() as u8) {
            return Err(self);
        }
        Ok(self.with_ioprio_unchecked(ioprio_for(p, rt_allowed)))
    }

    fn with_ioprio_unchecked(mut self, ioprio: u16) -> Self {
        // The crate exposes `ioprio` only on the builders; set it in the raw SQE. The
        // layout of io_uring_sqe puts `ioprio` at byte offset 2 (u16).
        #[allow(unsafe_code)]
        // SAFETY: `squeue::Entry` is `#[repr(C)]` around `io_uring_sqe`, whose `ioprio`
        // is the u16 at offset 2 (include/uapi/linux/io_uring.h); we write only that field.
        unsafe {
            let p = &mut self.entry as *mut squeue::Entry as *mut u8;
            (p.add(2) as *mut u16).write_unaligned(ioprio);
        }
        self
    }

    /// The SQE's `ioprio` field (for tests that inspect prepared SQEs).
    pub fn ioprio(&self) -> u16 {
        #[allow(unsafe_code)]
        // SAFETY: as in `with_ioprio_unchecked`, reading the same field.
        unsafe {
            ((&self.entry as *const squeue::Entry as *const u8).add(2) as *const u16).read_unaligned()
        }
    }

    /// Whether the driver keeps the result for the submitter to take.
    #[inline(always)]
    pub(crate) fn keep(&self) -> bool {
        self.meta & KEEP != 0
    }

    /// Whether it is multishot.
    #[inline(always)]
    pub(crate) fn multi(&self) -> bool {
        self.meta & MULTI != 0
    }

    /// Marks a send of all its bytes (`MSG_WAITALL`) that links the next operation as one
    /// the driver may put in as the head of a skip pair (pair rule 1 in `pair.rs`); the
    /// driver checks the SQE itself and ignores the mark where it does not hold.
    pub(crate) fn pair_head(mut self) -> Self {
        self.meta |= PAIR_HEAD;
        self
    }

    /// Whether it is marked as a skip pair's head ([`RingOp::pair_head`]).
    #[inline(always)]
    pub(crate) fn is_pair_head(&self) -> bool {
        self.meta & PAIR_HEAD != 0
    }

    /// Its deadline in nanoseconds on `CLOCK_MONOTONIC`, if any.
    #[inline(always)]
    pub(crate) fn deadline_ns(&self) -> Option<u64> {
        let ns = self.meta >> DEADLINE_SHIFT;
        (ns != 0).then_some(ns)
    }

    /// Sets its deadline to `ns` (clamped to 1 ..= 2^61 - 1: 0 is long past, the top is
    /// 73 years of uptime).
    pub(crate) fn set_deadline_ns(&mut self, ns: u64) {
        let ns = ns.clamp(1, u64::MAX >> DEADLINE_SHIFT);
        self.meta = (self.meta & (KEEP | MULTI | PAIR_HEAD)) | (ns << DEADLINE_SHIFT);
    }

    /// The SQE's opcode.
    pub fn opcode(&self) -> u8 {
        self.entry.get_opcode() as u8
    }
}
