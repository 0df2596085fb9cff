//! `RingDriver`: the `Driver` implementation (see the module doc of `ring`).
#![allow(unsafe_code)] // pushing SQEs and entering the ring are unsafe in the io-uring crate

use super::direct::{self, DIRECT, Direct};
use super::op::RingOp;
use super::setup::{self, RingFlags};
use super::shared::Shared;
use super::slots::{CANCEL_TAG, CLOSE_TAG, EVENTFD_TAG, INTERNAL, SlotState, Slots};
use super::unpark::{self, UNPARK_TAG, UnparkKind, UnparkMode};
use crate::buf::RawBuf;
use crate::clock::monotonic_now;
use io_uring::{EnterFlags, IoUring, cqueue, opcode, types};
use keel_core::driver::IoToken;
use keel_core::{Driver, Errno, Instant, IoResult, OpId, Park};
use std::io;
use std::marker::PhantomData;
use std::rc::Rc;

/// How the ring is made.
#[derive(Copy, Clone, Debug)]
pub struct RingConfig {
    /// SQ entries (a power of two; the kernel rounds up).
    pub entries: u32,
    /// CQ entries (at least `entries`).
    pub cq_entries: u32,
    /// Operation slots: the most operations in flight at once.
    pub slots: u32,
    /// Registered buffers (0: none) and their size.
    pub registered_buffers: u16,
    /// Bytes per registered buffer.
    pub registered_buffer_size: usize,
    /// Slots in the ring's fixed-file table (0: none); `FiberFs::open_direct` installs
    /// descriptors there.
    pub registered_files: u32,
    /// Keep the `off` field of the first this-many SQEs submitted (tests read the
    /// submission order from it); 0: keep nothing.
    pub record_submissions: usize,
    /// How other threads unpark the executor (`Auto`: MsgRing where the kernel has it,
    /// else the eventfd; see `ring/unpark.rs`).
    pub unpark: UnparkMode,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            entries: 256,
            cq_entries: 1024,
            slots: 1024,
            registered_buffers: 0,
            registered_buffer_size: 4096,
            registered_files: 0,
            record_submissions: 0,
            unpark: UnparkMode::Auto,
        }
    }
}

/// Ring counters.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct RingStats {
    /// `io_uring_enter` calls.
    pub enters: u64,
    /// Enters that failed with EAGAIN, EBUSY or EINTR (their SQEs were kept and retried).
    pub enter_retries: u64,
    /// SQEs prepared.
    pub submitted: u64,
    /// CQEs reaped.
    pub completed: u64,
    /// CQEs for slots that had been reused or freed (dropped).
    pub stale: u64,
    /// Extra enters made to flush an overflowed CQ.
    pub overflow_flushes: u64,
    /// Extra enters a reap made because the kernel had left completion work pending
    /// (`IORING_SQ_TASKRUN`; the `ring` module doc, Batching).
    pub reap_follow_ups: u64,
    /// Multishot results that did not fit their slot's queue and went to the spill list
    /// (driver rule 2).
    pub multishot_spilled: u64,
    /// Multishot operations the driver cancelled because their queue filled (rule 2).
    pub multishot_throttled: u64,
    /// Multishot results dropped because the spill list was full too (rule 2: a
    /// descriptor is closed, a provided buffer goes back to the ring).
    pub multishot_lost: u64,
    /// SEND_ZC notifications (`IORING_CQE_F_NOTIF`) received (rule 4).
    pub zc_notifs: u64,
}

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
/// 16-31) on a multishot op's last result when the driver itself ended the op (driver
/// rule 2): the task should re-arm it rather than treat the ECANCELED as its own.
pub(crate) const KEEL_REARM: u32 = 1 << 15;

/// The most extra enters one reap makes to fetch completion work the kernel left
/// pending: each runs up to 20 completions, so with the first enter this covers a burst
/// of 260, the default `reap_batch` (256).
const REAP_FOLLOW_UPS: u32 = 12;

/// The io_uring driver. Not `Send`: with SINGLE_ISSUER and DEFER_TASKRUN only the
/// creating thread may submit and reap.
pub struct RingDriver {
    ring: IoUring,
    flags: RingFlags,
    slots: Slots,
    /// Status-block operations with no slot (`direct.rs`).
    direct: Direct,
    pending_cancels: Vec<u64>,
    /// The newest SQE in the SQ has `IOSQE_IO_LINK`: an SQE pushed now would join its
    /// chain, so the driver's own SQEs wait until the SQ has been submitted.
    tail_linked: bool,
    inject: Option<(u32, i32)>,
    rt_allowed: bool,
    /// What values outliving a poll hold instead of a pointer to the driver: the
    /// abandoned-operation queue, the provided-buffer ring and the registered buffers
    /// (`shared.rs`); after `ring`,
    /// so the ring's memory outlives the kernel's use of it (field order).
    pub(crate) shared: Rc<Shared>,
    /// Multishot results that did not fit their slot's queue, oldest first (rule 2).
    spill: Vec<(u64, i32, u32)>,
    /// Spill entries results without a provided buffer may take (rule 2); the rest of the
    /// spill list's capacity is kept for results that hold one.
    spill_plain_max: usize,
    stats: RingStats,
    record: Vec<u64>,
    /// How other threads unpark the executor (park rule 3, `unpark.rs`).
    unpark_kind: UnparkKind,
    /// An unparker was handed out: another thread may end a park, so a park with nothing
    /// in flight and no deadline is not a stall.
    unparker_given: bool,
    /// The unpark eventfd (`UnparkKind::Eventfd` only) and the buffer its armed read fills.
    eventfd: Option<std::os::fd::OwnedFd>,
    eventfd_buf: Box<u64>,
    eventfd_rearm: bool,
    /// The read on the unpark eventfd is in the ring (its CQE not reaped yet).
    eventfd_armed: bool,
    /// The driver is being dropped: the eventfd read is not re-armed.
    closing: bool,
    _not_send: PhantomData<*const ()>,
}

impl RingDriver {
    /// Creates the ring on this thread (expensive: syscalls and allocation, once).
    pub fn new(cfg: RingConfig) -> io::Result<Self> {
        if cfg.entries == 0 || cfg.slots == 0 || cfg.slots > 1 << 30 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "entries and slots must be at least 1 (and slots below 2^30); use SleepDriver for an executor with no ring",
            ));
        }
        let (mut ring, flags) = setup::build(cfg.entries, cfg.cq_entries)?;
        // Probed on this ring while it is fresh (nothing submitted, CQ empty): `unpark.rs`.
        let unpark_kind = match cfg.unpark {
            UnparkMode::Auto if unpark::msg_ring_works(&mut ring) => UnparkKind::MsgRing,
            UnparkMode::Auto | UnparkMode::Eventfd => UnparkKind::Eventfd,
        };
        let eventfd = match unpark_kind {
            UnparkKind::Eventfd => Some(rustix::event::eventfd(
                0,
                rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
            )?),
            UnparkKind::MsgRing => None,
        };
        if !ring.params().is_feature_nodrop() {
            eprintln!("keel: this kernel lacks IORING_FEAT_NODROP: a CQ overflow could lose completions");
        }
        let registered = crate::regbuf::Registered::new(&ring, cfg.registered_buffers, cfg.registered_buffer_size)?;
        if cfg.registered_files > 0 {
            ring.submitter().register_files_sparse(cfg.registered_files)?;
        }
        let rt_allowed = setup::realtime_ioprio_allowed();
        static SAID: std::sync::Once = std::sync::Once::new();
        if !rt_allowed {
            SAID.call_once(|| eprintln!("keel: no CAP_SYS_NICE or CAP_SYS_ADMIN: High I/O priority uses the best-effort class, level 0, not the realtime class"));
        }
        Ok(RingDriver {
            ring,
            flags,
            slots: Slots::new(cfg.slots),
            direct: Direct::new(cfg.slots as usize),
            pending_cancels: Vec::with_capacity(cfg.slots as usize),
            tail_linked: false,
            inject: None,
            rt_allowed,
            shared: {
                let shared = Rc::new(Shared::new(cfg.slots as usize));
                shared.set_regbuf(registered);
                shared
            },
            spill: Vec::with_capacity(2 * cfg.cq_entries.max(cfg.entries) as usize),
            spill_plain_max: 2 * cfg.cq_entries.max(cfg.entries) as usize,
            stats: RingStats::default(),
            record: Vec::with_capacity(cfg.record_submissions),
            unpark_kind,
            unparker_given: false,
            eventfd,
            eventfd_buf: Box::new(0),
            eventfd_rearm: false,
            eventfd_armed: false,
            closing: false,
            _not_send: PhantomData,
        })
    }

    /// The set-up flags the kernel accepted.
    pub fn flags(&self) -> RingFlags {
        self.flags
    }

    /// How other threads unpark this driver's executor (`RingConfig::unpark`, probed).
    pub fn unpark_kind(&self) -> UnparkKind {
        self.unpark_kind
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
        self.ring.params().sq_entries()
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
        self.shared.set_pbuf(crate::pbuf::PbufRing::new(&self.ring, count, size, 0)?);
        // Rule 2: a result holding a provided buffer always fits in the spill list.
        self.spill.reserve_exact((self.spill_plain_max + count as usize).saturating_sub(self.spill.len()));
        Ok(())
    }

    /// Provided-buffer statistics (`None` if not enabled); `available` asks the kernel
    /// (pbuf rule 5: one syscall).
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
        let ts = types::Timespec::new().nsec(100_000_000);
        let _ = self.ring.submitter().register_sync_cancel(Some(ts), types::CancelBuilder::fd(types::Fd(fd)).all());
    }

    /// As `sync_cancel_fd` for a fixed-file index, then removes the index from the table
    /// (`IORING_REGISTER_FILES_UPDATE` with -1): the close of a direct descriptor whose
    /// task can no longer start ring operations. Cold.
    pub(crate) fn sync_close_fixed(&mut self, index: u32) -> Result<(), Errno> {
        let ts = types::Timespec::new().nsec(100_000_000);
        let _ =
            self.ring.submitter().register_sync_cancel(Some(ts), types::CancelBuilder::fd(types::Fixed(index)).all());
        match self.ring.submitter().register_files_update(index, &[-1]) {
            Ok(_) => Ok(()),
            Err(e) => Err(Errno(e.raw_os_error().unwrap_or(libc::EIO))),
        }
    }

    /// Slot rule 4: slot operation `id`, just submitted, holds `fd` until its last CQE
    /// (`closes`: it is the `IORING_OP_CLOSE` of `fd`). Called by the submitter in the same
    /// poll as the submission, before any enter, so the hold covers the SQE's whole life;
    /// kept off the SQE path so that operations naming no descriptor pay nothing for it.
    pub(crate) fn hold_fd(&mut self, id: OpId, fd: crate::fd::SharedFd, closes: bool) {
        if let Some(s) = self.slots.get(id.0) {
            s.closes = closes;
            s.fd = Some(fd);
        }
    }

    /// Slot operation `id`, abandoned, uses registered buffer `buf`: the slot keeps it
    /// until it is freed (shared rule 2, regbuf rule 5). A slot that is gone completed
    /// already: `buf` is released at once.
    fn hold_fixed(&mut self, id: OpId, buf: crate::regbuf::FixedBuf) {
        if let Some(s) = self.slots.get(id.0) {
            s.fixed = Some(buf);
        }
    }

    /// Abandons queued operation `id`, with the registered buffer it uses if any (shared
    /// rule 2). Out of line: abandoning is off the hot path.
    #[inline(never)]
    fn abandon_queued(&mut self, id: OpId) {
        if let Some(buf) = self.shared.take_abandoned_fixed(id) {
            self.hold_fixed(id, buf);
        }
        self.abandon(id);
    }

    /// Abandons the operations values let go of since the last call (shared rule 2).
    #[inline(always)]
    fn take_abandoned(&mut self) {
        while let Some(id) = self.shared.next_abandoned() {
            self.abandon_queued(id);
        }
    }

    /// Points the wake token of slot operation `id` at `task` (wake-token rule 3 in the
    /// `ring` module doc): its value is waited on in `task` now (moved to another task,
    /// or to a later run of its own). Nothing for an operation that ended, was abandoned or
    /// orphaned. A store: called by a value each time it finds its operation not done.
    #[inline(always)]
    pub(crate) fn rewake(&mut self, id: OpId, task: keel_core::TaskHandle) {
        if let Some(s) = self.slots.get(id.0)
            && matches!(s.state, SlotState::InFlight)
            && !s.orphaned
        {
            s.token = Some(IoToken::wake(task));
        }
    }

    /// Takes the raw result, the CQE flags (buffer id for buffer selection) and the buffer
    /// of a kept operation once it has completed (`kept::Kept`).
    pub(crate) fn take_full(&mut self, id: OpId) -> Option<(i32, u32, Option<RawBuf>)> {
        let s = self.slots.get(id.0)?;
        let SlotState::Done(res, flags) = s.state else { return None };
        let buf = self.slots.free(id.0);
        Some((res, flags, buf))
    }

    /// The next result of a multishot operation, in CQE order (rule 1).
    pub(crate) fn take_multi(&mut self, id: OpId) -> MultiNext {
        let Some(s) = self.slots.get(id.0) else { return MultiNext::Gone };
        if !s.multi {
            return MultiNext::Gone;
        }
        let item = if let Some(it) = s.q.pop() {
            Some(it)
        } else if s.spilled > 0 {
            s.spilled -= 1;
            let i = self.spill.iter().position(|e| e.0 == id.0).expect("keel bug: spilled count without entries");
            let (_, r, f) = self.spill.remove(i);
            Some((r, f))
        } else if s.ended {
            // The final CQE was lost to a full spill list (rule 2): end it as throttled.
            Some((-libc::ECANCELED, KEEL_REARM))
        } else {
            None
        };
        match item {
            Some((r, f)) => {
                if f & cqueue_more() == 0 {
                    drop(self.slots.free(id.0));
                }
                MultiNext::Item(r, f)
            }
            None => MultiNext::Pending,
        }
    }

    /// Gives back what a result nobody will take holds (rule 3): a descriptor is closed
    /// (a fixed-file index through the ring), a provided buffer goes back to its ring.
    fn dispose(&mut self, yields_fd: bool, yields_fixed: bool, res: i32, flags: u32) {
        if yields_fd && res >= 0 {
            if yields_fixed {
                let e = opcode::Close::new(types::Fixed(res as u32)).build().user_data(CLOSE_TAG);
                // SAFETY: a close SQE references no memory. If the SQ is full the index
                // stays installed until the ring goes (cold, documented in rule 3).
                let _ = unsafe { self.ring.submission().push(&e) };
            } else {
                // SAFETY: the kernel opened it for this operation and nothing else knows it.
                unsafe { rustix::io::close(res) };
            }
        }
        if let (Some(bid), Some(mut p)) = (io_uring::cqueue::buffer_select(flags), self.pbuf()) {
            p.give_back(bid);
        }
    }

    /// A kept operation's future went away: cancel it; its slot (and buffer) is freed when
    /// the completion arrives (never before: the kernel may still use the buffer).
    pub(crate) fn abandon(&mut self, id: OpId) {
        let Some(s) = self.slots.get(id.0) else { return };
        let (yfd, yfx) = (s.yields_fd, s.yields_fixed);
        if s.multi {
            // Rule 3: queued results are given back now; the op is cancelled and its slot
            // freed at its final CQE (or now, if that has arrived).
            let ended = s.ended;
            let mut queued = [(0i32, 0u32); super::slots::MULTI_Q];
            let mut n = 0;
            while let Some(it) = s.q.pop() {
                queued[n] = it;
                n += 1;
            }
            if s.spilled > 0 {
                s.spilled = 0;
                let mut i = 0;
                while i < self.spill.len() {
                    if self.spill[i].0 == id.0 {
                        let (_, r, f) = self.spill.remove(i);
                        self.dispose(yfd, yfx, r, f);
                    } else {
                        i += 1;
                    }
                }
            }
            for &(r, f) in &queued[..n] {
                self.dispose(yfd, yfx, r, f);
            }
            if ended {
                drop(self.slots.free(id.0));
            } else if let Some(s) = self.slots.get(id.0) {
                s.state = SlotState::Abandoned;
                self.cancel(id);
            }
            return;
        }
        match s.state {
            SlotState::InFlight => {
                s.state = SlotState::Abandoned;
                self.cancel(id);
            }
            SlotState::Done(res, flags) => {
                drop(self.slots.free(id.0));
                self.dispose(yfd, yfx, res, flags);
            }
            SlotState::Abandoned | SlotState::Free => {}
        }
    }

    /// How many more operations may go in flight (direct rule 3): free slots less the
    /// direct operations in flight.
    #[inline(always)]
    fn room(&self) -> usize {
        self.slots.free_count().saturating_sub(self.direct.in_flight)
    }

    /// Operations in flight, of both kinds.
    fn ops_in_flight(&self) -> usize {
        self.slots.in_flight + self.direct.in_flight
    }

    /// Bookkeeping after an SQE was queued: the submission record, the count; takes the op.
    #[inline(always)]
    fn submitted(&mut self, op: &mut Option<RingOp>) {
        if let Some(r) = op.as_ref() {
            // SAFETY: `Entry` is `#[repr(C)]` around `io_uring_sqe`, whose `flags` is byte 1.
            self.tail_linked = unsafe { (&r.entry as *const _ as *const u8).add(1).read() } & IOSQE_IO_LINK != 0;
        }
        if self.record.len() < self.record.capacity()
            && let Some(r) = op.as_ref()
        {
            // SAFETY: `Entry` is `#[repr(C)]` around `io_uring_sqe`, whose `off` is the u64
            // at byte offset 8; we only read it.
            self.record.push(unsafe { ((&r.entry as *const _ as *const u8).add(8) as *const u64).read_unaligned() });
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
        let Some(r) = op.as_mut() else { return Err(Errno::EINVAL) };
        let yields_fd =
            matches!(code, opcode::OpenAt::CODE | opcode::OpenAt2::CODE | opcode::Accept::CODE | opcode::Socket::CODE);
        // SAFETY: `Entry` is `#[repr(C)]` around `io_uring_sqe`, whose `file_index` (a u32
        // union member) is at byte offset 44; we only read it. Non-zero: the result is a
        // fixed-file index, not a descriptor.
        let yields_fixed =
            yields_fd && unsafe { ((&r.entry as *const _ as *const u8).add(44) as *const u32).read_unaligned() } != 0;
        let mut sq = self.ring.submission();
        if sq.is_full() {
            return Err(Errno::EBUSY);
        }
        let ud = self.slots.alloc(Some(token), r.keep, r.buf.take()).expect("room() counts free slots");
        r.entry.set_user_data(ud);
        let entry = reload_by_words(&r.entry);
        // SAFETY: the operation's memory stays valid until its completion is reaped: the
        // `RingOp` constructors' contracts, and owned buffers sit in the slot until then.
        unsafe { sq.push(&entry) }.expect("checked room above");
        drop(sq);
        if let Some(s) = self.slots.get(ud) {
            s.yields_fd = yields_fd;
            s.yields_fixed = yields_fixed;
            s.multi = r.multi;
        }
        self.submitted(op);
        Ok(OpId(ud))
    }

    /// Keeps a read armed on the unpark eventfd (re-armed after each completion), if
    /// this driver unparks through one.
    fn arm_eventfd(&mut self) {
        use std::os::fd::AsRawFd;
        let Some(fd) = &self.eventfd else { return };
        if self.closing {
            return; // the driver is going (`Drop`): the read stays unarmed
        }
        let buf: *mut u64 = &mut *self.eventfd_buf;
        let e = opcode::Read::new(types::Fd(fd.as_raw_fd()), buf.cast(), 8).build().user_data(EVENTFD_TAG);
        // SAFETY: the buffer is boxed in the driver, which outlives the ring's use of it
        // (the ring is dropped first: field order).
        self.eventfd_rearm = unsafe { self.ring.submission().push(&e) }.is_err();
        self.eventfd_armed |= !self.eventfd_rearm;
    }

    /// Cancel rule 4: the queue is full (only with cancels for operations that are not
    /// in flight: the kernel's `user_data`s the driver cannot check, or an SQ that would
    /// not take them). Moves what it can into the SQ, submits the SQ to make room, drops
    /// requests for slot operations that have ended; never drops a live request: as a last
    /// resort the queue grows (cold, allocates).
    #[cold]
    fn make_cancel_room(&mut self) {
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
        let slots = &mut self.slots;
        self.pending_cancels.retain(|&c| c & DIRECT != 0 || slots.get(c).is_some_and(|s| s.cancellable()));
        if self.pending_cancels.len() == self.pending_cancels.capacity() {
            self.pending_cancels.reserve(self.pending_cancels.len());
        }
    }

    /// Moves queued cancel requests into the SQ while there is room.
    fn flush_cancels(&mut self) {
        if self.tail_linked && (self.eventfd_rearm || !self.pending_cancels.is_empty()) && !self.submit_queued() {
            return; // retried at the next enter, which submits the chain first
        }
        if self.eventfd_rearm {
            self.arm_eventfd();
        }
        while let Some(&target) = self.pending_cancels.last() {
            let e = opcode::AsyncCancel::new(target).build().user_data(CANCEL_TAG);
            // SAFETY: a cancel SQE references no memory.
            if unsafe { self.ring.submission().push(&e) }.is_err() {
                return;
            }
            self.pending_cancels.pop();
        }
    }

    /// Submits the SQ without reaping (cold: only to end a task's open link chain before
    /// the driver pushes its own SQEs). Whether the SQ is empty afterwards.
    #[cold]
    fn submit_queued(&mut self) -> bool {
        let to_submit = self.ring.submission().len() as u32;
        if self.inject.is_none() {
            // SAFETY: no extended argument, no flags: a plain submission.
            let _ = unsafe { self.ring.submitter().enter::<libc::sigset_t>(to_submit, 0, 0, None) };
        }
        let empty = self.ring.submission().is_empty();
        if empty {
            self.tail_linked = false;
        }
        empty
    }

    /// One `io_uring_enter`: submit what is queued, reap (GETEVENTS), wait for
    /// `min_complete` until `deadline` (absolute, CLOCK_MONOTONIC).
    fn enter(&mut self, min_complete: u32, deadline: Option<Instant>) -> io::Result<()> {
        self.flush_cancels();
        if let Some((n, errno)) = self.inject {
            self.inject = if n > 1 { Some((n - 1, errno)) } else { None };
            self.stats.enter_retries += 1;
            return Ok(()); // SQEs stay queued: the next enter submits them
        }
        self.stats.enters += 1;
        let r = match deadline {
            Some(d) if min_complete > 0 => {
                let ns = d.as_nanos();
                let ts = types::Timespec::new().sec(ns / 1_000_000_000).nsec((ns % 1_000_000_000) as u32);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring
                    .submitter()
                    .submit_with_args_and_flags(min_complete as usize, &args, EnterFlags::ABS_TIMER)
                    .map(drop)
            }
            _ => {
                let to_submit = self.ring.submission().len() as u32;
                // SAFETY: no extended argument; the flags are plain GETEVENTS.
                unsafe {
                    self.ring.submitter().enter::<libc::sigset_t>(
                        to_submit,
                        min_complete,
                        EnterFlags::GETEVENTS.bits(),
                        None,
                    )
                }
                .map(drop)
            }
        };
        if self.tail_linked && self.ring.submission().is_empty() {
            self.tail_linked = false; // the kernel ended the chain with the submission
        }
        match r {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EBUSY | libc::EINTR | libc::ETIME)) => {
                if e.raw_os_error() != Some(libc::ETIME) {
                    self.stats.enter_retries += 1;
                }
                Ok(())
            }
            other => other,
        }
    }

    /// Drains up to `max` CQEs, copying them out in batches so the CQ head is published
    /// (and the tail read) once per batch rather than once per CQE.
    fn drain<F: FnMut(IoToken, IoResult)>(&mut self, max: usize, sink: &mut F) -> usize {
        const BATCH: usize = 32;
        let mut n = 0;
        while n < max {
            let mut buf = [const { core::mem::MaybeUninit::<cqueue::Entry>::uninit() }; BATCH];
            let want = (max - n).min(BATCH);
            let mut cq = self.ring.completion();
            let cqes = cq.fill(&mut buf[..want]);
            drop(cq);
            let got = cqes.len();
            self.stats.completed += got as u64;
            n += got;
            for cqe in cqes.iter() {
                self.complete(cqe.clone(), sink);
            }
            if got < want {
                break;
            }
        }
        n
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
        let (mut res, mut flags) = (cqe.result(), cqe.flags());
        if !self.pending_cancels.is_empty() && !cqueue::more(flags) {
            self.pending_cancels.retain(|&c| c != ud); // cancel rule 3: its op has ended
        }
        if let (Some(_), Some(mut p)) = (cqueue::buffer_select(flags), self.pbuf()) {
            p.note_taken(); // rule 5: the kernel handed a buffer out
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
            // Rule 4: the notification ends a SEND_ZC; its result is the first CQE's.
            self.stats.zc_notifs += 1;
            (res, flags) = slot.first.take().unwrap_or((res, flags & !cqueue_more()));
            flags &= !cqueue_more();
        } else if cqueue::more(flags) {
            // Rule 4: a first CQE with F_MORE (SEND_ZC): hold the result, keep the slot
            // (and the buffer) until the notification.
            slot.first = Some((res, flags));
            return;
        }
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
                let (token, orphaned, yfd, yfx) = (slot.token, slot.orphaned, slot.yields_fd, slot.yields_fixed);
                drop(self.slots.free(ud));
                if let Some(t) = token {
                    sink(t, to_result(res));
                }
                if orphaned {
                    self.dispose(yfd, yfx, res, flags);
                }
            }
            SlotState::Abandoned => {
                // Nobody will ever see this result: give back what it holds (rule 3).
                let (yfd, yfx) = (slot.yields_fd, slot.yields_fixed);
                drop(self.slots.free(ud));
                self.dispose(yfd, yfx, res, flags);
            }
            SlotState::Done(..) | SlotState::Free => self.slots.stale += 1,
        }
    }

    /// One CQE of a multishot operation (rules 1-3).
    fn complete_multi(&mut self, ud: u64, res: i32, flags: u32, sink: &mut dyn FnMut(IoToken, IoResult)) {
        let more = cqueue::more(flags);
        let Some(slot) = self.slots.get(ud) else { return };
        let (yfd, yfx) = (slot.yields_fd, slot.yields_fixed);
        if matches!(slot.state, SlotState::Abandoned) {
            if !more {
                drop(self.slots.free(ud));
            }
            self.dispose(yfd, yfx, res, flags);
            return;
        }
        let mut flags = flags;
        if !more {
            if slot.throttled && res == -libc::ECANCELED {
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
            // Rule 2: results holding a provided buffer are at most the ring's count, and
            // the spill list keeps that much room for them beyond what the others may take.
            let limit =
                if cqueue::buffer_select(flags).is_some() { self.spill.capacity() } else { self.spill_plain_max };
            if self.spill.len() < limit.min(self.spill.capacity()) {
                self.spill.push((ud, res, flags));
                self.stats.multishot_spilled += 1;
                if let Some(s) = self.slots.get(ud) {
                    s.spilled += 1;
                }
            } else {
                self.stats.multishot_lost += 1;
                self.dispose(yfd, yfx, res, flags);
            }
        }
        if !more {
            self.slots.in_flight -= 1; // the kernel is done with it (slot rule 5)
            if let Some(s) = self.slots.get(ud) {
                s.release_fd(res); // slot rule 4
            }
        }
        if throttle {
            self.stats.multishot_throttled += 1;
            self.cancel(OpId(ud));
        }
        if let Some(t) = token {
            sink(t, to_result(res));
        }
    }
}

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
const IOSQE_IO_LINK: u8 = 1 << 2;

/// `IORING_CQE_F_MORE` (include/uapi/linux/io_uring.h; the crate keeps `sys` private).
pub(crate) const fn cqueue_more() -> u32 {
    1 << 1
}

pub(crate) fn to_result(res: i32) -> IoResult {
    if res < 0 { Err(Errno(-res)) } else { Ok(res as u32) }
}

// SAFETY: driver rules 1-5 hold: an accepted operation holds a slot (slot rules) whose token
// goes out once, with the slot's final CQE, and `retarget` rewrites it in place; user_data
// carries the slot index and generation, so a stale id or CQE does nothing; the slot keeps
// the operation's buffers until that CQE, and the driver's drop cancels and waits for every
// operation in flight before anything is freed (leaking what the kernel never finishes);
// the unparker (MSG_RING or an eventfd write) names the ring's or the eventfd's descriptor,
// which stay open while the driver lives.
unsafe impl Driver for RingDriver {
    type Op = RingOp;

    fn now(&self) -> Instant {
        monotonic_now()
    }

    fn submit(&mut self, op: RingOp, token: IoToken) -> Result<OpId, (RingOp, Errno)> {
        let mut op = Some(op);
        self.submit_from(&mut op, token).map_err(|e| (op.take().expect("refused operations stay in place"), e))
    }

    /// Copies the SQE once, straight from where the operation lies. A status block's
    /// plain operation goes direct (no slot: `direct.rs`); the rest take a slot.
    /// Inlined into the initiator, so the SQE is copied from where it was just built.
    #[inline(always)]
    fn submit_from(&mut self, op: &mut Option<RingOp>, token: IoToken) -> Result<OpId, Errno> {
        let Some(r) = op.as_mut() else { return Err(Errno::EINVAL) };
        if self.room() == 0 {
            return Err(Errno::EBUSY);
        }
        let code = r.entry.get_opcode() as u8;
        if let Some(bits) = token.pack()
            && r.buf.is_none()
            && !r.keep
            && !r.multi
            && direct::is_direct_sqe(&r.entry)
        {
            let mut sq = self.ring.submission();
            if sq.is_full() {
                return Err(Errno::EBUSY);
            }
            let ud = self.direct.start(bits);
            let entry = reload_by_words(&r.entry).user_data(ud);
            // SAFETY: the operation's memory stays valid until its completion is reaped
            // (the `RingOp` constructors' contracts; a direct op owns no buffer).
            unsafe { sq.push(&entry) }.expect("checked room above");
            drop(sq);
            self.submitted(op);
            return Ok(OpId(ud));
        }
        self.submit_slot(op, token, code)
    }

    /// Queues an `ASYNC_CANCEL` for `id` (cancel rules in the `ring` module doc: never
    /// lost, at most one queued per operation).
    fn cancel(&mut self, id: OpId) {
        if id.0 & INTERNAL != 0 || self.pending_cancels.contains(&id.0) {
            return; // cancel rule 2: one queued cancel per operation is enough
        }
        if id.0 & DIRECT == 0 && !self.slots.get(id.0).is_some_and(|s| s.cancellable()) {
            return; // cancel rule 3: it has ended; nothing to cancel
        }
        if self.pending_cancels.len() == self.pending_cancels.capacity() {
            self.make_cancel_room();
        }
        self.pending_cancels.push(id.0);
        self.flush_cancels();
    }

    fn retarget(&mut self, id: OpId, token: IoToken) {
        if id.0 & DIRECT != 0 && id.0 & INTERNAL == 0 {
            self.direct.retarget(id.0, token);
        } else if let Some(s) = self.slots.get(id.0) {
            // Only a status block that went away retargets (io_status rule 4): nobody
            // will read the result, so what it yields is given back (rule 3).
            s.token = Some(token);
            s.orphaned = true;
        }
    }

    fn reap<F: FnMut(IoToken, IoResult)>(&mut self, max: usize, sink: &mut F) -> usize {
        self.take_abandoned();
        let mut n = self.drain(max, sink);
        if n < max {
            if let Err(e) = self.enter(0, None) {
                eprintln!("keel: io_uring_enter failed: {e}");
            }
            n += self.drain(max - n, sink);
            // The kernel ran only part of the pending completion work (`ring` module doc,
            // Batching): fetch the rest of the burst, a bounded number of times.
            let mut follow_ups = 0;
            while n < max && follow_ups < REAP_FOLLOW_UPS && self.ring.submission().taskrun() {
                follow_ups += 1;
                self.stats.reap_follow_ups += 1;
                if let Err(e) = self.enter(0, None) {
                    eprintln!("keel: io_uring_enter failed: {e}");
                    break;
                }
                n += self.drain(max - n, sink);
            }
        }
        // NODROP keeps overflowed CQEs in the kernel: flush them while the flag is set.
        let mut flushes = 0;
        while n < max && self.ring.submission().cq_overflow() && flushes < 64 {
            self.stats.overflow_flushes += 1;
            flushes += 1;
            if self.enter(0, None).is_err() {
                break;
            }
            n += self.drain(max - n, sink);
        }
        n
    }

    fn in_flight(&self) -> usize {
        self.ops_in_flight()
    }

    fn submit_capacity(&self) -> usize {
        // `submission()` needs `&mut`; compute from the shared view instead.
        // SAFETY: the driver is single-threaded and no `SubmissionQueue` view is alive.
        let sq = unsafe { self.ring.submission_shared() };
        (sq.capacity() - sq.len()).min(self.room())
    }

    fn unparker(&mut self, _park_word: *const u32) -> Option<keel_core::Unparker> {
        use std::os::fd::AsRawFd;
        self.unparker_given = true;
        // The eventfd exists exactly when `unpark_kind` is `Eventfd` (`new`).
        match &self.eventfd {
            Some(fd) => {
                let ctx = fd.as_raw_fd() as usize;
                self.arm_eventfd();
                Some(keel_core::Unparker { ctx, unpark: unpark::eventfd_unpark })
            }
            // The ring's descriptor stays open while any thread may unpark (park rule 4).
            None => Some(keel_core::Unparker { ctx: self.ring.as_raw_fd() as usize, unpark: unpark::msg_ring_unpark }),
        }
    }

    /// `IORING_ASYNC_CANCEL_ANY`: every operation in the ring (queued ones are submitted
    /// first), for the executor's final drain.
    fn cancel_all(&mut self) {
        self.take_abandoned();
        if self.ops_in_flight() == 0 {
            return;
        }
        self.submit_queued();
        let all = opcode::AsyncCancel2::new(types::CancelBuilder::any()).build().user_data(CANCEL_TAG);
        // SAFETY: a cancel SQE references no memory.
        if unsafe { self.ring.submission().push(&all) }.is_err() {
            self.submit_queued();
            // SAFETY: as above.
            let _ = unsafe { self.ring.submission().push(&all) };
        }
    }

    fn park(&mut self, deadline: Option<Instant>) -> Result<Park, Errno> {
        self.take_abandoned();
        // Stalled only if no other thread can end the wait either (no unparker handed out).
        if self.ops_in_flight() == 0 && deadline.is_none() && !self.unparker_given {
            return Ok(Park::Stalled);
        }
        if !self.ring.completion().is_empty() {
            if self.ops_in_flight() > 0 {
                return Ok(Park::Woke); // the run loop reaps them
            }
            // Nothing of the executor's is in flight, so the run loop does not reap: what
            // sits in the CQ is the driver's own (an unpark: the eventfd read's CQE or a
            // MsgRing CQE; cancels) or stale. Take it here (which re-arms the eventfd
            // read), or every later park would return at once and the executor would spin.
            let mut nothing = |_: IoToken, _: IoResult| {};
            self.drain(usize::MAX, &mut nothing);
        }
        match self.enter(1, deadline) {
            Ok(()) => Ok(Park::Woke),
            Err(e) => Err(Errno(e.raw_os_error().unwrap_or(libc::EIO))),
        }
    }
}

/// How long a dropped driver waits for the kernel to finish the operations it cancels
/// (`Drop`); what has not completed by then is leaked, never freed.
pub const DROP_WAIT: core::time::Duration = core::time::Duration::from_secs(2);

impl RingDriver {
    /// Cancels every operation in flight (`IORING_ASYNC_CANCEL_ANY`) and reaps until none
    /// is left or `DROP_WAIT` has passed; whether none is left. Completions go nowhere
    /// (the executor is gone or going); what they yield is given back (driver rule 3).
    fn quiesce(&mut self) -> bool {
        self.closing = true;
        self.inject = None;
        let mut nothing = |_: IoToken, _: IoResult| {};
        self.take_abandoned();
        let pending = |d: &Self| d.ops_in_flight() + d.eventfd_armed as usize;
        if pending(self) == 0 && self.ring.submission().is_empty() {
            return true;
        }
        // Queued SQEs go in first (and end an open link chain), then the cancel of all.
        self.submit_queued();
        let all = opcode::AsyncCancel2::new(types::CancelBuilder::any()).build().user_data(CANCEL_TAG);
        // SAFETY: a cancel SQE references no memory.
        let _ = unsafe { self.ring.submission().push(&all) };
        let deadline = monotonic_now().saturating_add(DROP_WAIT);
        loop {
            self.drain(usize::MAX, &mut nothing);
            if pending(self) == 0 {
                return true;
            }
            if monotonic_now() >= deadline {
                return false;
            }
            let _ = self.enter(1, Some(deadline));
        }
    }
}

impl Drop for RingDriver {
    /// Never frees memory the kernel may still write (shared rule 4): cancels every
    /// operation still in flight (values moved out of their tasks, a driver dropped with no
    /// executor, a fiber stack the executor leaked) and waits for their completions, at most
    /// `DROP_WAIT`; gives back what results nobody took hold (descriptors closed, buffers
    /// returned and freed); then the ring, its buffers and the provided-buffer ring go.
    /// If the kernel has not finished in time, the slots (with their buffers and held
    /// descriptors), the registered and provided buffers and the eventfd buffer are
    /// leaked, and one line says how many operations were left.
    fn drop(&mut self) {
        let quiet = self.quiesce();
        if quiet {
            // Results nobody took (a kept op's future moved out of its task, a multishot's
            // queue): give back what they hold (driver rule 3).
            for ud in self.slots.in_use() {
                self.abandon(OpId(ud));
            }
            self.spill.clear();
        } else {
            eprintln!(
                "keel: the ring driver was dropped with {} operations the kernel did not finish within {:?}: their memory is leaked",
                self.ops_in_flight(),
                DROP_WAIT
            );
            core::mem::forget(core::mem::replace(&mut self.slots, Slots::new(0)));
            core::mem::forget(Rc::clone(&self.shared));
            core::mem::forget(core::mem::replace(&mut self.eventfd_buf, Box::new(0)));
        }
        // Shared rule 4: later drops of values do nothing.
        self.shared.set_dead();
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
