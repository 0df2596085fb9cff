//! The ring driver's backend: the kernel's io_uring, or keel's epoll engine that performs
//! the same SQEs in user space where io_uring is switched off (`epoll/engine`). Everything
//! else in `ring/` (slots, kept results, cancels, deadlines, drains) runs unchanged above
//! either; this file is the one place that tells them apart.
//!
//! Kernel rules (cited as "kernel rule N"):
//! 1. The SQ and CQ calls mean what io_uring's mean on both backends: `push` copies an
//!    SQE or says the SQ is full; `enter` submits what is queued and waits for
//!    `min_complete` CQEs or the deadline; `fill` takes CQEs oldest first.
//! 2. What only a kernel ring has (registered buffers and files, provided-buffer rings,
//!    MSG_RING, worker-pool settings, polled i/o) is asked for through `Kernel::uring`:
//!    on the epoll backend it is `None` and the caller returns its typed "not on this
//!    driver" error (`not_on_epoll`).
//! 3. The branch on the backend is the only cost the ring's own path pays for the
//!    second one: one predictable branch per push, enter and fill (and per drain, whose
//!    emptiness test comes first: `RingDriver::drain`). The hottest push (a
//!    status block's direct operation, `submit.rs`) matches on the backend itself, so the
//!    ring's SQE is built right before its copy, as without a second backend.
//! 4. A ring's descriptor is registered with the thread that made it (the driver is not
//!    `Send`, so that thread is the only one that enters it), and unregistered when the
//!    driver goes (`Drop`), before the ring is closed: a registration left behind would
//!    keep the ring alive until the thread exits.
#![allow(unsafe_code)] // pushing SQEs and entering the ring are unsafe in the io-uring crate

use crate::epoll::engine::Engine;
use io_uring::{EnterFlags, IoUring, cqueue, squeue, types};
use keel_core::Instant;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, RawFd};

/// Which backend a ring driver runs on ([`RingDriver::backend`](super::RingDriver::backend)).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The kernel's io_uring.
    Ring,
    /// keel's epoll engine (`epoll/engine`): io_uring's operations performed on readiness
    /// (sockets, pipes) and on a small pool of blocking threads (files).
    Epoll,
}

impl Backend {
    /// The backend's name in log lines and debugger output: "io_uring" or "epoll".
    pub fn name(self) -> &'static str {
        match self {
            Backend::Ring => "io_uring",
            Backend::Epoll => "epoll",
        }
    }
}

/// The ring driver's backend (module doc).
#[allow(clippy::large_enum_variant)] // the ring inline: boxing it would add a load to every push and reap
pub(crate) enum Kernel {
    /// The ring and, if its descriptor is registered with this thread
    /// (`IORING_REGISTER_RING_FDS`, kernel rule 4), the index enters name instead.
    Uring(IoUring, Option<u32>),
    Epoll(Box<Engine>),
}

/// The typed refusal of a ring-only feature on the epoll backend (kernel rule 2).
pub(crate) fn not_on_epoll(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{what} needs io_uring, and this driver runs on the epoll backend (RingDriver::backend)"),
    )
}

impl Kernel {
    /// Which backend this is.
    #[inline(always)]
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Kernel::Uring(..) => Backend::Ring,
            Kernel::Epoll(_) => Backend::Epoll,
        }
    }

    /// Whether enters name the ring by its registered index (kernel rule 4).
    pub(crate) fn ring_fd_registered(&self) -> bool {
        matches!(self, Kernel::Uring(_, Some(_)))
    }

    /// The kernel ring, for what only it has (kernel rule 2).
    #[inline(always)]
    pub(crate) fn uring(&self) -> Option<&IoUring> {
        match self {
            Kernel::Uring(r, _) => Some(r),
            Kernel::Epoll(_) => None,
        }
    }

    /// Pushes the SQE `build` makes, if the SQ has room (`build` is not called otherwise);
    /// whether it went in. Inlined into the submission path, so the SQE is built straight
    /// before the copy (`submit.rs`).
    ///
    /// # Safety
    /// As for any SQE: the memory it names stays valid until its CQE has been taken.
    #[inline(always)]
    pub(crate) unsafe fn push_built(&mut self, build: impl FnOnce() -> squeue::Entry) -> bool {
        match self {
            Kernel::Uring(r, _) => {
                let mut sq = r.submission();
                if sq.is_full() {
                    return false;
                }
                let entry = build();
                // SAFETY: the caller's contract; room was checked on this view.
                unsafe { sq.push(&entry) }.is_ok()
            }
            Kernel::Epoll(e) => {
                if e.sq_len() == e.sq_capacity() {
                    return false;
                }
                let entry = build();
                // SAFETY: the caller's contract.
                unsafe { e.push(&entry) }
            }
        }
    }

    /// Pushes `entry`; whether the SQ had room.
    ///
    /// # Safety
    /// As for [`push_built`](Self::push_built).
    #[inline(always)]
    pub(crate) unsafe fn push(&mut self, entry: &squeue::Entry) -> bool {
        // SAFETY: the caller's contract.
        unsafe { self.push_built(|| entry.clone()) }
    }

    /// The SQ's size and the SQEs queued in it, from one view of it.
    #[inline(always)]
    pub(crate) fn sq_state(&mut self) -> (usize, usize) {
        match self {
            Kernel::Uring(r, _) => {
                let sq = r.submission();
                (sq.capacity(), sq.len())
            }
            Kernel::Epoll(e) => (e.sq_capacity(), e.sq_len()),
        }
    }

    /// SQEs queued and not yet submitted.
    #[inline(always)]
    pub(crate) fn sq_len(&mut self) -> usize {
        match self {
            Kernel::Uring(r, _) => r.submission().len(),
            Kernel::Epoll(e) => e.sq_len(),
        }
    }

    /// Free SQ entries, from a shared view (no `&mut`: `Driver::submit_capacity`).
    #[inline(always)]
    pub(crate) fn sq_room(&self) -> usize {
        match self {
            Kernel::Uring(r, _) => {
                // SAFETY: the driver is single-threaded and no `SubmissionQueue` view is alive.
                let sq = unsafe { r.submission_shared() };
                sq.capacity() - sq.len()
            }
            Kernel::Epoll(e) => e.sq_capacity() - e.sq_len(),
        }
    }

    /// Whether the kernel left completion work pending (`IORING_SQ_TASKRUN`); the engine
    /// never does.
    #[inline(always)]
    pub(crate) fn taskrun(&mut self) -> bool {
        match self {
            Kernel::Uring(r, _) => r.submission().taskrun(),
            Kernel::Epoll(_) => false,
        }
    }

    /// Whether CQEs overflowed into the kernel (NODROP); the engine's CQ grows instead.
    #[inline(always)]
    pub(crate) fn cq_overflow(&mut self) -> bool {
        match self {
            Kernel::Uring(r, _) => r.submission().cq_overflow(),
            Kernel::Epoll(_) => false,
        }
    }

    /// Whether no CQE waits to be taken.
    #[inline(always)]
    pub(crate) fn cq_is_empty(&mut self) -> bool {
        match self {
            Kernel::Uring(r, _) => r.completion().is_empty(),
            Kernel::Epoll(e) => e.cq_is_empty(),
        }
    }

    /// Takes up to `out.len()` CQEs, oldest first.
    #[inline(always)]
    pub(crate) fn fill<'a>(&mut self, out: &'a mut [MaybeUninit<cqueue::Entry>]) -> &'a mut [cqueue::Entry] {
        match self {
            Kernel::Uring(r, _) => r.completion().fill(out),
            Kernel::Epoll(e) => e.fill(out),
        }
    }

    /// Submits what is queued without waiting or reaping.
    pub(crate) fn submit_only(&mut self) {
        match self {
            Kernel::Uring(r, reg) => {
                let to_submit = r.submission().len() as u32;
                let _ = raw_enter(r, *reg, to_submit, 0, 0, None);
            }
            Kernel::Epoll(e) => {
                let _ = e.enter(0, None);
            }
        }
    }

    /// One enter: submit what is queued, reap (GETEVENTS), and wait for `min_complete`
    /// CQEs until `deadline` (absolute, `CLOCK_MONOTONIC`; `None`: no deadline).
    pub(crate) fn enter(&mut self, min_complete: u32, deadline: Option<Instant>) -> io::Result<()> {
        match self {
            Kernel::Uring(r, reg) => {
                let to_submit = r.submission().len() as u32;
                let flags = EnterFlags::GETEVENTS.bits();
                match deadline {
                    Some(d) if min_complete > 0 => {
                        let ns = d.as_nanos();
                        let ts = types::Timespec::new().sec(ns / 1_000_000_000).nsec((ns % 1_000_000_000) as u32);
                        let args = GeteventsArg {
                            sigmask: 0,
                            sigmask_sz: 0,
                            min_wait_usec: 0,
                            ts: &ts as *const types::Timespec as u64,
                        };
                        let flags = flags | EnterFlags::EXT_ARG.bits() | EnterFlags::ABS_TIMER.bits();
                        raw_enter(r, *reg, to_submit, min_complete, flags, Some(&args))
                    }
                    _ => raw_enter(r, *reg, to_submit, min_complete, flags, None),
                }
            }
            Kernel::Epoll(e) => e.enter(min_complete, deadline),
        }
    }

    /// Kernel rule 4: registers the ring's descriptor with this thread, so enters name its
    /// index instead (the kernel then skips the descriptor lookup on each). Best effort: a
    /// kernel before 5.18, or a thread with all 16 of its slots taken, keeps the descriptor.
    pub(crate) fn register_ring_fd(&mut self) {
        let Kernel::Uring(r, reg @ None) = self else { return };
        let mut up = RsrcUpdate { offset: u32::MAX, resv: 0, data: r.as_raw_fd() as u64 };
        // SAFETY: one `io_uring_rsrc_update` the kernel reads and writes (nr_args 1), live
        // across the call.
        let n = unsafe {
            libc::syscall(libc::SYS_io_uring_register, r.as_raw_fd(), IORING_REGISTER_RING_FDS, &raw mut up, 1u32)
        };
        if n == 1 {
            *reg = Some(up.offset);
        }
    }

    /// The SQ's size as set up.
    pub(crate) fn sq_entries(&self) -> u32 {
        match self {
            Kernel::Uring(r, _) => r.params().sq_entries(),
            Kernel::Epoll(e) => e.sq_capacity() as u32,
        }
    }

    /// The CQ's size as set up (the engine's grows past it and never drops).
    pub(crate) fn cq_entries(&self) -> u32 {
        match self {
            Kernel::Uring(r, _) => r.params().cq_entries(),
            Kernel::Epoll(e) => e.cq_capacity() as u32,
        }
    }

    /// Whether a CQ overflow keeps its CQEs (`IORING_FEAT_NODROP`; always, for the engine).
    pub(crate) fn nodrop(&self) -> bool {
        match self {
            Kernel::Uring(r, _) => r.params().is_feature_nodrop(),
            Kernel::Epoll(_) => true,
        }
    }

    /// The ring's descriptor, or the engine's epoll instance's.
    pub(crate) fn raw_fd(&self) -> RawFd {
        match self {
            Kernel::Uring(r, _) => r.as_raw_fd(),
            Kernel::Epoll(e) => e.raw_fd(),
        }
    }

    /// Whether opcode `code` is performed (the kernel's probe: one syscall, cold).
    pub(crate) fn has_opcode(&self, code: u8) -> bool {
        match self {
            Kernel::Uring(r, _) => {
                let mut probe = io_uring::Probe::new();
                r.submitter().register_probe(&mut probe).is_ok() && probe.is_supported(code)
            }
            Kernel::Epoll(_) => Engine::supports(code),
        }
    }

    /// Cancels every operation on descriptor `fd`, waiting at most 100 ms
    /// (`IORING_REGISTER_SYNC_CANCEL`, or the engine's own). Cold.
    pub(crate) fn sync_cancel_fd(&mut self, fd: RawFd) {
        const WAIT: core::time::Duration = core::time::Duration::from_millis(100);
        match self {
            Kernel::Uring(r, _) => {
                let ts = types::Timespec::from(WAIT);
                let _ = r.submitter().register_sync_cancel(Some(ts), types::CancelBuilder::fd(types::Fd(fd)).all());
            }
            Kernel::Epoll(e) => e.sync_cancel_fd(fd, WAIT),
        }
    }
}

impl Drop for Kernel {
    /// Kernel rule 4: the ring's registration goes before the ring.
    fn drop(&mut self) {
        if let Kernel::Uring(r, Some(index)) = self {
            let up = RsrcUpdate { offset: *index, resv: 0, data: 0 };
            // SAFETY: as in `register_ring_fd`; the kernel only reads `up`.
            unsafe {
                libc::syscall(
                    libc::SYS_io_uring_register,
                    r.as_raw_fd(),
                    IORING_UNREGISTER_RING_FDS,
                    &raw const up,
                    1u32,
                )
            };
        }
    }
}

/// `IORING_REGISTER_RING_FDS` and its inverse (include/uapi/linux/io_uring.h).
const IORING_REGISTER_RING_FDS: libc::c_uint = 20;
const IORING_UNREGISTER_RING_FDS: libc::c_uint = 21;
/// `IORING_ENTER_REGISTERED_RING`.
const IORING_ENTER_REGISTERED_RING: u32 = 1 << 4;

/// `struct io_uring_rsrc_update`.
#[repr(C)]
struct RsrcUpdate {
    offset: u32,
    resv: u32,
    data: u64,
}

/// `struct io_uring_getevents_arg`.
#[repr(C)]
struct GeteventsArg {
    sigmask: u64,
    sigmask_sz: u32,
    min_wait_usec: u32,
    ts: u64,
}

/// `io_uring_enter` on `ring`, through its registered index if it has one (kernel rule
/// 4); `arg` is the extended argument (`IORING_ENTER_EXT_ARG` in `flags`).
fn raw_enter(
    ring: &IoUring,
    registered: Option<u32>,
    to_submit: u32,
    min_complete: u32,
    flags: u32,
    arg: Option<&GeteventsArg>,
) -> io::Result<()> {
    let (fd, flags) = match registered {
        Some(index) => (index as libc::c_int, flags | IORING_ENTER_REGISTERED_RING),
        None => (ring.as_raw_fd(), flags),
    };
    let (ptr, size) = match arg {
        Some(a) => (a as *const GeteventsArg as *const libc::c_void, core::mem::size_of::<GeteventsArg>()),
        None => (core::ptr::null(), 0),
    };
    // SAFETY: the ring's own descriptor or registered index; `arg`, when given, is a
    // `struct io_uring_getevents_arg` whose `ts` points at a timespec live across the call
    // (the caller's), flagged with EXT_ARG; no signal mask.
    let r = unsafe { libc::syscall(libc::SYS_io_uring_enter, fd, to_submit, min_complete, flags, ptr, size) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}
