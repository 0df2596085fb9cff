//! The provided-buffer ring (`IORING_REGISTER_PBUF_RING`, see
//! io_uring_register_buf_ring(3)): one per executor, registered with
//! [`RingDriver::enable_provided_buffers`](crate::RingDriver::enable_provided_buffers). A
//! receive that selects a buffer (`IOSQE_BUFFER_SELECT`, buffer group 0) lets the kernel
//! pick one when data arrives, so an idle connection holds no buffer at all.
//!
//! Rules (cited as "pbuf rule N"):
//! 1. Memory: `count` buffers of `size` bytes and a ring of `count` 16-byte `io_uring_buf`
//!    entries (page-aligned), allocated once at registration. The `PbufRing` lives in the
//!    driver's shared state (shared rule 3 in `ring/shared.rs`): freed after the ring and
//!    after the last `ProvidedBuf` pointing into it, or never if the driver's `Drop` could
//!    not confirm the kernel was done (shared rule 4). `count` is a power of two, at most
//!    32768.
//! 2. Ownership of a buffer: in the ring (the kernel may pick it) -> picked (a CQE with
//!    `IORING_CQE_F_BUFFER` names it; counted by `note_taken`) -> handed to a task as a
//!    [`ProvidedBuf`](crate::net::ProvidedBuf) -> given back (`give_back`: written at the
//!    tail, the tail published with a Release store the kernel's acquire load pairs with).
//!    A result nobody takes (abandoned op, stale CQE) gives its buffer back at once
//!    (completion rule 3). So `in_use` = picked and not yet given back.
//! 3. Exhaustion: a receive that finds the ring empty completes with `ENOBUFS` (counted in
//!    `exhausted`). The task then asks how many buffers the kernel can still hand out
//!    (`available`, below): none, and it waits (bounded FIFO of waiting tasks, sized at
//!    registration, `waitq.rs`) to be woken when a buffer comes back; some (given back
//!    since), and it re-arms at once. It never fails for it (a full queue: it re-arms).
//!    Each buffer given back hands the turn to the oldest waiter (waitq rule 2), which
//!    re-arms its receive; the kernel, not keel, picks which receive gets the buffer. One
//!    turn per buffer is enough: a task waits only after `ENOBUFS`, which the kernel posts
//!    only when data was there to receive, so the woken waiter's receive takes the buffer
//!    at once (or, if another receive took it first, the buffer was used and the waiter,
//!    finding none, waits again). A waiter cancelled or dropped leaves the queue, and one
//!    that had been handed the turn but had not run yet passes it to the next waiter (waitq
//!    rule 3). A woken waiter's receive may still end without taking the buffer: its
//!    peer reset or closed in the meantime (a reset discards the data that made it wait),
//!    or it was cancelled. So every buffer-selecting receive that completes without a
//!    buffer (other than with `ENOBUFS`) passes a turn on too (`pass_unused_turn`); a turn
//!    that reaches a waiter with nothing to take only makes it look and wait again. So a
//!    buffer coming back always reaches a live waiter that can use it.
//! 4. `available` is the kernel's own count: the published tail minus the kernel's head,
//!    read with `IORING_REGISTER_PBUF_STATUS` (Linux 6.8+; one syscall, only on the
//!    exhaustion path and in statistics). `count - in_use` is not that: it also counts
//!    buffers the kernel has picked for CQEs not reaped yet. Kernels without PBUF_STATUS
//!    get `count - in_use` (an upper bound: a re-arm may meet `ENOBUFS` once more).
//! 5. Single-threaded: only the executor's thread touches it (the driver and every
//!    `ProvidedBuf` are `!Send`).
#![allow(unsafe_code)] // the ring is memory shared with the kernel; registering it is unsafe

use crate::waitq::{Left, Ticket, WaitQueue};
use io_uring::IoUring;
use keel_core::TaskHandle;
use std::alloc::Layout;
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

/// Provided-buffer counters.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct PbufStats {
    /// Buffers in the ring set.
    pub count: u16,
    /// Bytes per buffer.
    pub size: u32,
    /// Buffers the kernel has picked and nobody has given back yet (pbuf rule 2).
    pub in_use: u16,
    /// Receives that found the ring empty (`ENOBUFS`, pbuf rule 3).
    pub exhausted: u64,
    /// Buffers given back.
    pub returned: u64,
    /// Buffers in the ring that the kernel can still hand out (pbuf rule 4).
    pub available: u16,
}

/// `struct io_uring_buf_status` (include/uapi/linux/io_uring.h), the argument of
/// `IORING_REGISTER_PBUF_STATUS`: the kernel fills `head` for `buf_group`.
#[repr(C)]
struct BufStatus {
    buf_group: u32,
    head: u32,
    resv: [u32; 8],
}

pub(crate) struct PbufRing {
    ring: *mut u8,
    layout: Layout,
    bufs: Box<[u8]>,
    size: u32,
    count: u16,
    tail: u16,
    bgid: u16,
    in_use: u16,
    exhausted: u64,
    returned: u64,
    waiters: WaitQueue,
    /// The io_uring's descriptor, for `IORING_REGISTER_PBUF_STATUS` (the ring outlives
    /// this: it is dropped first, and nothing here uses the descriptor in `Drop`).
    ring_fd: std::os::fd::RawFd,
    /// Whether the kernel has `IORING_REGISTER_PBUF_STATUS` (pbuf rule 4).
    has_status: bool,
}

impl PbufRing {
    pub(crate) fn new(ring: &IoUring, count: u16, size: u32, bgid: u16) -> io::Result<Self> {
        let mut me = Self::with_memory(count, size, bgid, std::os::fd::AsRawFd::as_raw_fd(ring))?;
        // SAFETY: the ring memory is page-aligned, `count` entries long, and lives until
        // `Drop`, after the io_uring is gone (pbuf rule 1).
        unsafe { ring.submitter().register_buf_ring_with_flags(me.ring as u64, count, bgid, 0)? };
        me.fill();
        Ok(me)
    }

    /// The memory of a ring set (pbuf rule 1), not registered with any ring: the fuzz
    /// harness (`pbuf_fuzz.rs`) plays the kernel's side itself.
    #[cfg(any(test, keel_fuzz))]
    pub(crate) fn unregistered(count: u16, size: u32) -> io::Result<Self> {
        let mut me = Self::with_memory(count, size, 0, -1)?;
        me.has_status = false;
        me.fill();
        Ok(me)
    }

    fn with_memory(count: u16, size: u32, bgid: u16, ring_fd: std::os::fd::RawFd) -> io::Result<Self> {
        if !count.is_power_of_two() || count > 32768 || size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "provided buffers: count must be a power of two up to 32768 and size at least 1",
            ));
        }
        let layout = Layout::from_size_align(count as usize * 16, 4096)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: non-zero size (count >= 1).
        let mem = unsafe { std::alloc::alloc_zeroed(layout) };
        if mem.is_null() {
            return Err(io::Error::from_raw_os_error(libc::ENOMEM));
        }
        let bufs = vec![0u8; count as usize * size as usize].into_boxed_slice();
        Ok(PbufRing {
            ring: mem,
            layout,
            bufs,
            size,
            count,
            tail: 0,
            bgid,
            in_use: 0,
            exhausted: 0,
            returned: 0,
            waiters: WaitQueue::with_capacity(4096),
            ring_fd,
            has_status: true,
        })
    }

    /// Puts every buffer in the ring and publishes the tail (at registration).
    fn fill(&mut self) {
        for bid in 0..self.count {
            self.put(bid);
        }
        self.publish();
    }

    /// Writes buffer `bid` at the tail (not yet published).
    fn put(&mut self, bid: u16) {
        let idx = (self.tail & (self.count - 1)) as usize;
        let addr = self.bufs.as_ptr() as u64 + bid as u64 * self.size as u64;
        // SAFETY: `idx < count`, so the 16-byte entry is inside the ring; the kernel reads
        // entries only up to the published tail, and this one is past it (pbuf rule 2).
        // `tail` shares entry 0's last two bytes (`resv`), which we never write here.
        unsafe {
            let e = self.ring.add(idx * 16);
            (e as *mut u64).write(addr);
            (e.add(8) as *mut u32).write(self.size);
            (e.add(12) as *mut u16).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes the tail (Release: pairs with the kernel's `smp_load_acquire` of it, so
    /// the entries written before are visible).
    fn publish(&mut self) {
        // SAFETY: offset 14 is `io_uring_buf_ring.tail`, a u16 inside the ring memory,
        // 2-aligned; the kernel only reads it.
        let tail = unsafe { &*(self.ring.add(14) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }

    /// A CQE named a buffer (pbuf rule 2).
    pub(crate) fn note_taken(&mut self) {
        self.in_use = self.in_use.saturating_add(1);
    }

    /// Puts `bid` back in the ring and hands the turn to the oldest waiter (pbuf rules 2-3).
    pub(crate) fn give_back(&mut self, bid: u16) {
        if bid >= self.count {
            return;
        }
        self.put(bid);
        self.publish();
        self.in_use = self.in_use.saturating_sub(1);
        self.returned += 1;
        self.pass_turn();
    }

    /// A buffer-selecting receive ended without a buffer (pbuf rule 3): the turn it may
    /// have held goes to the oldest waiter (a spurious turn is harmless: a waiter that
    /// finds no buffer waits again).
    pub(crate) fn pass_unused_turn(&mut self) {
        self.pass_turn();
    }

    /// Wakes the oldest waiter: it has the turn (waitq rule 2).
    fn pass_turn(&mut self) {
        if let Some((_, w)) = self.waiters.pop() {
            w.wake();
        }
    }

    /// A receive got `ENOBUFS` (pbuf rule 3).
    pub(crate) fn note_exhausted(&mut self) {
        self.exhausted += 1;
    }

    /// Buffers the kernel can still hand out: the published tail minus the kernel's head
    /// (pbuf rule 4), or `count - in_use` where the kernel cannot say.
    pub(crate) fn available(&mut self) -> u16 {
        if self.has_status {
            match self.kernel_head() {
                Ok(head) => return self.tail.wrapping_sub(head),
                Err(_) => self.has_status = false, // EINVAL: a kernel before 6.8
            }
        }
        self.count - self.in_use.min(self.count)
    }

    /// The kernel's head of this buffer ring (`IORING_REGISTER_PBUF_STATUS`).
    fn kernel_head(&self) -> rustix::io::Result<u16> {
        let mut st = BufStatus { buf_group: self.bgid as u32, head: 0, resv: [0; 8] };
        // SAFETY: the descriptor is the live io_uring this ring is registered with (the
        // driver owns both); the kernel writes only `head` of the status we pass, which
        // lives across the call.
        unsafe {
            let fd = std::os::fd::BorrowedFd::borrow_raw(self.ring_fd);
            rustix::io_uring::io_uring_register(
                fd,
                rustix::io_uring::IoringRegisterOp::RegisterPbufStatus,
                (&raw mut st).cast(),
                1,
            )?;
        }
        Ok(st.head as u16)
    }

    /// Queues a wait of `task` for a buffer to come back (pbuf rule 3); `None` if the
    /// queue is full.
    pub(crate) fn wait(&mut self, task: TaskHandle) -> Option<Ticket> {
        self.waiters.push(task)
    }

    /// Whether wait `t` has been handed the turn (a woken waiter still queued was woken
    /// spuriously: waitq rule 2); still queued, its wake goes to `me` (waitq rule 6).
    pub(crate) fn has_turn(&mut self, t: Ticket, me: Option<TaskHandle>) -> bool {
        !self.waiters.is_queued_for(t, me)
    }

    /// Ends wait `t` without using its turn: cancelled or dropped (waitq rule 3). A turn
    /// it had been handed goes to the next waiter.
    pub(crate) fn leave(&mut self, t: Ticket) {
        // A planted bug for the fuzz target `pbuf_ring` (off in every normal build): a
        // turn handed to a waiter that leaves is dropped, not passed on.
        if self.waiters.leave(t) == Left::HadTurn && !cfg!(keel_planted = "pbuf_ring") {
            self.pass_turn();
        }
    }

    /// Buffer `bid`'s first byte.
    pub(crate) fn ptr(&self, bid: u16) -> *const u8 {
        self.bufs[bid as usize * self.size as usize..].as_ptr()
    }

    pub(crate) fn bgid(&self) -> u16 {
        self.bgid
    }

    pub(crate) fn stats(&mut self) -> PbufStats {
        let available = self.available();
        PbufStats {
            count: self.count,
            size: self.size,
            in_use: self.in_use,
            exhausted: self.exhausted,
            returned: self.returned,
            available,
        }
    }
}

/// The provided-buffer ring's fuzz harness: the proptest twin in `make test`, and under
/// `--cfg keel_fuzz` the cargo-fuzz target `pbuf_ring` (fuzz/); not part of the API.
#[cfg(any(test, keel_fuzz))]
#[doc(hidden)]
#[path = "pbuf_fuzz.rs"]
pub mod fuzz;

impl Drop for PbufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the ring (and the kernel's use of
        // this memory) is gone (pbuf rule 1).
        unsafe { std::alloc::dealloc(self.ring, self.layout) };
    }
}
