//! `RingDriver`: the state of one io_uring driver and its `Driver` implementation (the
//! rules are in the `ring` module doc). The work is split by responsibility, one file
//! each, all `impl RingDriver`:
//!
//! - `config.rs`: the configuration, the counters, and creating the ring;
//! - `submit.rs`: SQEs in (direct or slot operations), the room left, descriptor holds;
//! - `cancel.rs`: the cancel queue (cancel rules 1-4) and the cancel of everything;
//! - `abandon.rs`: values that let go of their operations (shared rule 2) and results
//!   nobody takes (completion rule 3);
//! - `enter.rs`: `io_uring_enter` (reap, park) and the unpark eventfd's armed read;
//! - `complete.rs`: routing each CQE to its token, slot or queue (completion rules 1-5);
//! - `teardown.rs`: the driver's `Drop` (shared rule 4).
//!
//! Invariants of the state below:
//! - Only the creating thread touches it (`_not_send`): with SINGLE_ISSUER and
//!   DEFER_TASKRUN only that thread may submit and reap.
//! - Field order: `ring` is declared (so dropped) before `shared` and `eventfd_buf`, so
//!   the ring goes before the memory the kernel may write.
//! - `tail_linked` is true while the newest SQE in the SQ has `IOSQE_IO_LINK`; the driver
//!   then pushes none of its own SQEs (they would join the task's chain).
//! - `pending_cancels` holds at most one entry per operation that may be in flight
//!   (cancel rules 2-3), so it stays within its capacity (`RingConfig::slots`).
//! - `pending_closes` holds fixed-file indices a result nobody took left installed, to be
//!   closed once no chain is open: at most one per slot, so within its capacity.
//! - Each `spill` entry names a multishot slot whose `spilled` counts it (completion rule 2).
#![allow(unsafe_code)] // the `Driver` impl is an unsafe trait; `submit_capacity` reads the SQ's shared view

use super::direct::{DIRECT, Direct};
use super::kernel::{Backend, Kernel};
use super::op::RingOp;
use super::pair::is_pair;
use super::setup::RingFlags;
use super::shared::Shared;
use super::slots::{INTERNAL, Slots};
use super::unpark::{self, UnparkKind};
use crate::clock::monotonic_now;
use io_uring::types;
use keel_core::driver::IoToken;
use keel_core::{Driver, Errno, Instant, IoResult, OpId, Park};
use std::io;
use std::marker::PhantomData;
use std::rc::Rc;

use super::config::RingStats;

/// The io_uring driver. Not `Send`: with SINGLE_ISSUER and DEFER_TASKRUN only the
/// creating thread may submit and reap.
pub struct RingDriver {
    pub(super) ring: Kernel,
    pub(super) flags: RingFlags,
    pub(super) slots: Slots,
    /// Status-block operations with no slot (`direct.rs`).
    pub(super) direct: Direct,
    /// Linked send-and-successor pairs that post one CQE (`pair.rs`).
    pub(super) pairs: super::pair::Pairs,
    pub(super) pending_cancels: Vec<u64>,
    /// Fixed-file indices to close through the ring once `tail_linked` is false.
    pub(super) pending_closes: Vec<u32>,
    /// The newest SQE in the SQ has `IOSQE_IO_LINK`: an SQE pushed now would join its
    /// chain, so the driver's own SQEs wait until the SQ has been submitted.
    pub(super) tail_linked: bool,
    pub(super) inject: Option<(u32, i32)>,
    pub(super) rt_allowed: bool,
    /// What values outliving a poll hold instead of a pointer to the driver: the
    /// abandoned-operation queue, the provided-buffer ring and the registered buffers
    /// (`shared.rs`); after `ring`,
    /// so the ring's memory outlives the kernel's use of it (field order).
    pub(crate) shared: Rc<Shared>,
    /// Multishot results that did not fit their slot's queue, oldest first (completion rule 2).
    pub(super) spill: Vec<(u64, i32, u32)>,
    /// Spill entries results without a provided buffer may take (completion rule 2); the
    /// rest of the spill list's capacity is kept for results that hold one.
    pub(super) spill_plain_max: usize,
    pub(super) stats: RingStats,
    pub(super) record: Vec<u64>,
    /// How other threads unpark the executor (park rule 3, `unpark.rs`).
    pub(super) unpark_kind: UnparkKind,
    /// An unparker was handed out: another thread may end a park, so a park with nothing
    /// in flight and no deadline is not a stall.
    pub(super) unparker_given: bool,
    /// The unpark eventfd (`UnparkKind::Eventfd` only) and the buffer its armed read fills.
    pub(super) eventfd: Option<std::os::fd::OwnedFd>,
    pub(super) eventfd_buf: Box<u64>,
    pub(super) eventfd_rearm: bool,
    /// The read on the unpark eventfd is in the ring (its CQE not reaped yet).
    pub(super) eventfd_armed: bool,
    /// The driver is being dropped: the eventfd read is not re-armed.
    pub(super) closing: bool,
    pub(super) _not_send: PhantomData<*const ()>,
}

impl RingDriver {
    /// The set-up flags the kernel accepted.
    pub fn flags(&self) -> RingFlags {
        self.flags
    }

    /// How other threads unpark this driver's executor (`RingConfig::unpark`, probed).
    pub fn unpark_kind(&self) -> UnparkKind {
        self.unpark_kind
    }

    /// Whether the kernel keeps CQEs that overflow the CQ (`IORING_FEAT_NODROP`) rather
    /// than dropping them; without it a CQ overflow could lose completions.
    pub fn cq_nodrop(&self) -> bool {
        self.ring.nodrop()
    }

    /// Whether High I/O priority maps to the realtime class (CAP_SYS_NICE or
    /// CAP_SYS_ADMIN); without it keel uses best-effort level 0.
    pub fn realtime_ioprio(&self) -> bool {
        self.rt_allowed
    }

    /// Counters.
    pub fn stats(&self) -> RingStats {
        RingStats { stale: self.slots.stale, ..self.stats }
    }

    /// SQ entries.
    pub fn sq_entries(&self) -> u32 {
        self.ring.sq_entries()
    }

    /// Whether enters name the ring by an index registered with this thread
    /// (`IORING_REGISTER_RING_FDS`: the kernel skips the descriptor lookup on each; a
    /// kernel before 5.18 or a thread with all 16 slots taken keeps the descriptor).
    pub fn ring_fd_registered(&self) -> bool {
        self.ring.ring_fd_registered()
    }

    /// Which backend performs the operations: the kernel's io_uring, or the epoll engine
    /// where io_uring is unavailable (`RingConfig::backend`).
    pub fn backend(&self) -> Backend {
        self.ring.backend()
    }

    /// The `off` fields of the SQEs submitted so far (up to `record_submissions`), in
    /// submission order.
    pub fn recorded_submissions(&self) -> &[u64] {
        &self.record
    }

    /// Test hook: the next `n` enters fail with `errno` (EAGAIN, EBUSY or EINTR) without
    /// reaching the kernel, as a loaded kernel would make them.
    pub fn inject_enter_errors(&mut self, n: u32, errno: Errno) {
        self.inject = Some((n, errno.0));
    }

    /// Registers a provided-buffer ring (`IORING_REGISTER_PBUF_RING`, group 0) of `count`
    /// buffers (a power of two, at most 32768) of `size` bytes each, for receives that
    /// select a buffer (`net`). Once, before the executor runs; allocates.
    pub fn enable_provided_buffers(&mut self, count: u16, size: u32) -> io::Result<()> {
        if self.shared.has_pbuf() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "the provided-buffer ring is already registered"));
        }
        let ring = self.ring.uring().ok_or_else(|| super::kernel::not_on_epoll("provided buffers"))?;
        self.shared.set_pbuf(crate::pbuf::PbufRing::new(ring, count, size, 0)?);
        // Completion rule 2: a result holding a provided buffer always fits in the spill list.
        self.spill.reserve_exact((self.spill_plain_max + count as usize).saturating_sub(self.spill.len()));
        Ok(())
    }

    /// Provided-buffer statistics (`None` if not enabled); `available` asks the kernel
    /// (pbuf rule 4: one syscall).
    pub fn provided_buffer_stats(&mut self) -> Option<crate::pbuf::PbufStats> {
        self.pbuf().map(|mut p| p.stats())
    }

    /// The provided-buffer ring, if registered (shared rule 3).
    #[inline(always)]
    pub(crate) fn pbuf(&self) -> Option<std::cell::RefMut<'_, crate::pbuf::PbufRing>> {
        self.shared.pbuf()
    }

    /// Cancels every operation on descriptor `fd` with `IORING_REGISTER_SYNC_CANCEL` (one
    /// syscall, waiting at most 100 ms for them): for a close whose task can no longer
    /// start ring operations (cancelled). Cold.
    pub(crate) fn sync_cancel_fd(&mut self, fd: std::os::fd::RawFd) {
        self.ring.sync_cancel_fd(fd)
    }

    /// The ring's descriptor (a transfer mailbox keeps a duplicate of it).
    pub(crate) fn ring_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the ring's descriptor is open while the driver (and so this borrow) lives.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.ring.raw_fd()) }
    }

    /// Whether the kernel has opcode `code` (`IORING_REGISTER_PROBE`: one syscall, cold;
    /// a kernel without the probe is taken to lack it).
    pub(crate) fn has_opcode(&self, code: u8) -> bool {
        self.ring.has_opcode(code)
    }

    /// Whether the ring has a fixed-file table (`IORING_REGISTER_FILES_UPDATE` of one
    /// `IORING_REGISTER_FILES_SKIP` entry: a no-op with a table, `ENXIO` without). Cold.
    pub(crate) fn has_file_table(&self) -> bool {
        const IORING_REGISTER_FILES_SKIP: i32 = -2;
        self.ring.uring().is_some_and(|r| r.submitter().register_files_update(0, &[IORING_REGISTER_FILES_SKIP]).is_ok())
    }

    /// Another thread may end a park from now on (a transfer mailbox was handed out): a
    /// park with nothing in flight and no deadline is no longer a stall.
    pub(crate) fn expect_remote_wakes(&mut self) {
        self.unparker_given = true;
    }

    /// As `sync_cancel_fd` for a fixed-file index, then removes the index from the table
    /// (`IORING_REGISTER_FILES_UPDATE` with -1): the close of a direct descriptor whose
    /// task can no longer start ring operations. Cold.
    pub(crate) fn sync_close_fixed(&mut self, index: u32) -> Result<(), Errno> {
        // No fixed-file table exists on the epoll backend (kernel rule 2).
        let Some(ring) = self.ring.uring() else { return Err(Errno::EBADF) };
        let ts = types::Timespec::new().nsec(100_000_000);
        let _ = ring.submitter().register_sync_cancel(Some(ts), types::CancelBuilder::fd(types::Fixed(index)).all());
        match ring.submitter().register_files_update(index, &[-1]) {
            Ok(_) => Ok(()),
            Err(e) => Err(Errno(e.raw_os_error().unwrap_or(libc::EIO))),
        }
    }
}

// SAFETY: the `Driver` contract (items 1-5 of its `# Safety`) holds: an accepted operation
// holds a slot (slot rules) whose token goes out once, with the slot's final CQE, and
// `retarget` rewrites it in place; user_data carries the slot index and generation, so a
// stale id or CQE does nothing; the slot keeps the operation's buffers until that CQE, and
// the driver's drop cancels and waits for every operation in flight before anything is
// freed (leaking what the kernel never finishes); the unparker (MSG_RING or an eventfd
// write) names the ring's or the eventfd's descriptor, which stay open while the driver
// lives.
unsafe impl Driver for RingDriver {
    type Op = RingOp;

    fn now(&self) -> Instant {
        monotonic_now()
    }

    fn submit(&mut self, op: RingOp, token: IoToken) -> Result<OpId, (RingOp, Errno)> {
        let mut op = Some(op);
        self.submit_from(&mut op, token).map_err(|e| (op.take().expect("refused operations stay in place"), e))
    }

    /// Copies the SQE once, straight from where the operation lies (`submit.rs`).
    #[inline(always)]
    fn submit_from(&mut self, op: &mut Option<RingOp>, token: IoToken) -> Result<OpId, Errno> {
        self.submit_op(op, token)
    }

    /// A send that links a receive goes in as one skip pair where pair rule 1 holds.
    #[inline(always)]
    fn submit_pair_from(
        &mut self,
        first: &mut Option<RingOp>,
        first_token: IoToken,
        second: &mut Option<RingOp>,
        second_token: IoToken,
    ) -> Result<(OpId, OpId), Errno> {
        self.submit_pair(first, first_token, second, second_token)
    }

    /// Queues an `ASYNC_CANCEL` for `id` (`cancel.rs`: cancel rules 1-3).
    #[inline(always)]
    fn cancel(&mut self, id: OpId) {
        self.queue_cancel(id)
    }

    fn retarget(&mut self, id: OpId, token: IoToken) {
        if id.0 & DIRECT != 0 && id.0 & INTERNAL == 0 {
            self.direct.retarget(id.0, token);
        } else if is_pair(id.0) {
            self.pairs.retarget(id.0, token);
        } else if let Some(slot) = self.slots.get(id.0) {
            // Only a status block that went away retargets (io_status rule 4): nobody
            // will read the result, so what it yields is given back (completion rule 3).
            slot.token = Some(token);
            slot.orphaned = true;
        }
    }

    /// Drains the CQ, entering the kernel once plus bounded follow-ups (`enter.rs`).
    #[inline(always)]
    fn reap<F: FnMut(IoToken, IoResult)>(&mut self, max: usize, sink: &mut F) -> usize {
        self.reap_into(max, sink)
    }

    /// Operations in flight, plus tasks waiting for a descriptor from another ring
    /// (transfer rule 5: the arrival is a CQE, so while one waits the run loop reaps).
    fn in_flight(&self) -> usize {
        self.ops_in_flight() + self.shared.receivers()
    }

    fn debug_descriptor(&self) -> keel_core::DriverDebug {
        keel_core::DriverDebug {
            fd: self.ring.raw_fd(),
            sq_entries: self.ring.sq_entries(),
            cq_entries: self.ring.cq_entries(),
            op_slots: self.slots.capacity() as u32,
            // The executor holds this driver pinned from the first entry on, when this is
            // asked (`Driver::debug_descriptor`).
            in_flight: &raw const self.slots.in_flight,
            ..keel_core::DriverDebug::named(self.ring.backend().name())
        }
    }

    fn submit_capacity(&self) -> usize {
        self.ring.sq_room().min(self.room())
    }

    fn unparker(&mut self, _park_word: *const u32) -> Option<keel_core::Unparker> {
        self.unparker_given = true;
        // The eventfd exists exactly when `unpark_kind` is `Eventfd` (`new`).
        match &self.eventfd {
            Some(fd) => {
                let ctx = std::os::fd::AsRawFd::as_raw_fd(fd) as usize;
                self.arm_eventfd();
                Some(keel_core::Unparker { ctx, unpark: unpark::eventfd_unpark })
            }
            // The ring's descriptor stays open while any thread may unpark (park rule 4).
            None => Some(keel_core::Unparker { ctx: self.ring.raw_fd() as usize, unpark: unpark::msg_ring_unpark }),
        }
    }

    /// `IORING_ASYNC_CANCEL_ANY`, for the executor's final drain (`cancel.rs`).
    #[inline(always)]
    fn cancel_all(&mut self) {
        self.cancel_everything()
    }

    /// Enters the kernel until a completion, an unpark or `deadline` (`enter.rs`).
    #[inline(always)]
    fn park(&mut self, deadline: Option<Instant>) -> Result<Park, Errno> {
        self.park_until(deadline)
    }
}

/// The ring driver lent to a task's `with_driver` closure, mutably, for this crate's own
/// state in it (result slots, buffer rings, registered buffers, descriptor holds) and
/// cancels of the operations it keeps itself (keel-core driver rule 2). Every caller in
/// this crate keeps `DriverMut::get_mut`'s contract: it does not replace the driver,
/// calls none of the `Driver` methods the executor alone calls, and runs no other code
/// while the reference lives.
pub(crate) fn lent_mut<'a>(d: &'a mut keel_core::DriverMut<'_, RingDriver>) -> &'a mut RingDriver {
    // SAFETY: the callers keep the contract above (it is this crate's, stated once here).
    unsafe { d.get_mut() }
}
