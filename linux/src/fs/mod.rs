//! File i/o on the ring, two ways:
//!
//! - **Fibers** ([`FiberFs`], implemented for `keel_core::Fiber`): blocking-style calls
//!   with borrowed buffers. Each pins an `IoStatus` on the fiber's stack, initiates the
//!   operation and suspends until *that* operation completes. If the task is cancelled
//!   meanwhile, the operation is cancelled and still waited for, so the kernel never
//!   writes into a stack frame that has been left.
//! - **Futures** (the `async fn`s here): buffers passed by ownership and returned with
//!   the result (as monoio and tokio-uring do). The operation and its buffer live in a
//!   driver slot (`ring/slots.rs`), not in the future: a future dropped with its operation
//!   in flight cancels it, and the slot keeps the buffer until the completion arrives; an
//!   abandoned open closes the descriptor it gets. A future whose task is cancelled
//!   cancels its operation and still returns its completion (`slot_op.rs`): data the kernel
//!   read before the cancel took is returned, not lost. Nothing is allocated per operation
//!   but `open`'s path and a vectored set's `iovec` table (`buf.rs`).
//!
//! A [`File`] stays open while an operation naming it is queued or in flight (fd rules in
//! `fd.rs`): a future's operation holds a reference until its completion is reaped, a
//! fiber's call borrows the `File` until then. [`close`] and [`FiberFs::close`] cancel the
//! descriptor's operations first (`ASYNC_CANCEL` with `CANCEL_FD | CANCEL_ALL`, as
//! `close_socket` does) and the descriptor is closed whatever they return.
//!
//! File metadata and names ([`FiberMeta`]: statx, unlinkat, renameat2, mkdirat, and their
//! futures [`statx`], [`fstatx`], [`unlink`], [`rename`], [`mkdir`]; relative to an open
//! directory: [`statx_at`], [`unlink_at`], [`rename_at`], [`mkdir_at`]): meta rules in
//! `meta.rs`.
//!
//! Registered buffers (`RingConfig::registered_buffers`, `regbuf.rs`): a claim is a
//! [`FixedBuf`], which the fixed operations take (fibers by reference, futures by value);
//! dropping it releases the buffer to the oldest waiter, however its holder ends.
//!
//! Every fiber call has a future twin of the same name and arguments (buffers by value
//! where the fiber borrows them; direct descriptors in `direct.rs`), and the reverse; the
//! README's "Fibers and futures" table lists both columns.
//!
//! Each call's doc opens with its C form. Read and write carry the task's I/O priority in
//! the SQE; nothing else does (`ring/op.rs`).
#![allow(unsafe_code)] // building SQEs that point at buffers; each use says why the buffer outlives the op

use crate::fd::{Fd, SharedFd};
pub use crate::regbuf::FixedBuf;
use crate::ring::RingOp;
use io_uring::types;
use keel_core::Priority;
use std::os::fd::RawFd;

mod close;
mod direct;
mod fiber;
mod future;
mod meta;
mod meta_future;
mod multishot;
mod rw;

pub use crate::flags::{FallocateFlags, Mode, OFlags, PathArg, SyncFileRangeFlags};
pub use crate::rw_flags::RwFlags;
pub(crate) use close::{close_fiber, close_fixed_fiber, close_fixed_shared, close_shared, run_to_end};
pub use direct::{close_direct, open_direct, read_direct, write_direct};
pub use fiber::FiberFs;
pub(crate) use fiber::{claim_on, collect_on, fixed_check};
pub(crate) use future::fixed_op;
pub use future::{
    ClaimBuffer, OwnedOp, claim_buffer, close, fallocate, fdatasync, fsync, nop, open, read, read_fixed, readv,
    release_buffer, sync_file_range, try_claim_buffer, write, write_fixed, writev,
};
pub use meta::FiberMeta;
pub use meta_future::{fstatx, mkdir, mkdir_at, rename, rename_at, statx, statx_at, unlink, unlink_at};
pub use multishot::{FiberReadMulti, ReadMultiOp, end_read, next_read, read_multi};
/// Flags and the result of the metadata calls ([`FiberMeta`], `meta.rs`), rustix's types.
pub use rustix::fs::{AtFlags, RenameFlags, Statx, StatxFlags};
pub use rw::{FiberRw, read_flags, write_flags};

/// An open file descriptor, shared with the future operations that name it (fd rule 1 in
/// `fd.rs`: it stays open until every one of them has completed, so its number is never
/// reused under a queued SQE). Close it with `close` (through the ring, cancelling its
/// operations first); dropping it closes it with `close(2)` once no operation holds it.
/// `!Send`: it belongs to the executor's thread (as in tokio-uring and monoio).
#[derive(Debug)]
pub struct File {
    fd: SharedFd,
}

impl File {
    /// Wraps a descriptor this `File` will own (one allocation: the shared count). Safe
    /// code converts an [`OwnedFd`](std::os::fd::OwnedFd) instead (`File::from(owned)`,
    /// `owned.into()`), which proves the ownership.
    ///
    /// # Safety
    ///
    /// The caller owns `fd`: it is open, and nothing else closes it or wraps it as an
    /// owner (no `OwnedFd`, `std::fs::File`, other `File` or `Socket`), now or later. The
    /// `File` closes it when it and the last operation naming it are gone (fd rule 3), so a
    /// descriptor someone else also closes would be closed under them, and its number,
    /// reused by the next `open`, `socket` or `accept`, would receive their i/o. The same
    /// contract as `std::os::fd::FromRawFd`.
    ///
    /// ```compile_fail,E0133
    /// // Rejected: wrapping a descriptor is unsafe (stdin is not ours to close).
    /// let stdin = keel_linux::File::from_raw_fd(0);
    /// ```
    ///
    /// ```
    /// let owned: std::os::fd::OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    /// let f = keel_linux::File::from(owned); // safe: the OwnedFd proves ownership
    /// # drop(f);
    /// ```
    pub unsafe fn from_raw_fd(fd: RawFd) -> Self {
        File { fd: Fd::new(fd) }
    }

    /// The descriptor.
    pub fn fd(&self) -> RawFd {
        self.fd.raw()
    }

    /// Gives the descriptor up without closing it; the `File` comes back in `Err` while an
    /// operation still holds it (a future dropped mid-operation whose completion has not
    /// been reaped yet: run the executor, then try again; fd rule 4).
    pub fn into_raw_fd(self) -> Result<RawFd, Self> {
        Fd::try_into_raw(self.fd).map_err(|fd| File { fd })
    }

    /// [`into_raw_fd`](Self::into_raw_fd) as an [`OwnedFd`](std::os::fd::OwnedFd).
    pub fn into_owned_fd(self) -> Result<std::os::fd::OwnedFd, Self> {
        Fd::try_into_owned(self.fd).map_err(|fd| File { fd })
    }
}

impl From<std::os::fd::OwnedFd> for File {
    /// Takes the descriptor over (one allocation: the shared count).
    fn from(fd: std::os::fd::OwnedFd) -> Self {
        File { fd: Fd::from_owned(fd) }
    }
}

impl std::os::fd::AsRawFd for File {
    /// Lends the number; closing it is still the `File`'s (fd rule 3).
    fn as_raw_fd(&self) -> RawFd {
        self.fd.raw()
    }
}

impl std::os::fd::AsFd for File {
    /// Open for as long as the borrow: a live `File` holds the descriptor (fd rule 1), and
    /// only `close`, which takes the `File`, closes it through the ring.
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.borrowed()
    }
}

/// Registered-buffer mistakes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BufferError {
    /// The executor registered no buffers: set `RingConfig::registered_buffers`.
    NoneRegistered,
    /// Every buffer is claimed (from `try_claim_buffer`).
    AllClaimed,
    /// Too many tasks already wait for a buffer.
    WaitQueueFull,
    /// The task's executor is not on the ring driver (or the future is polled outside a
    /// keel task).
    NotOnRing,
    /// The task was cancelled while it waited for a buffer; it holds none.
    Cancelled,
    /// A [`ClaimBuffer`] future was polled in another executor's task than the one it
    /// queued in: await it where it started (its wait stays there until it is dropped).
    OtherExecutor,
}

impl std::fmt::Display for BufferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BufferError::NoneRegistered => f.write_str("no registered buffers: set RingConfig::registered_buffers"),
            BufferError::AllClaimed => f.write_str("every registered buffer is claimed: release one or wait"),
            BufferError::WaitQueueFull => f.write_str("too many tasks wait for a registered buffer"),
            BufferError::NotOnRing => f.write_str("the task's executor does not run the ring driver"),
            BufferError::Cancelled => f.write_str("the task was cancelled while waiting for a registered buffer"),
            BufferError::OtherExecutor => f.write_str("a registered-buffer claim was polled on another executor than the one it waits on: await it in the task that started it"),
        }
    }
}

fn fd(file: &File) -> types::Fd {
    types::Fd(file.fd.raw())
}

/// `AT_FDCWD`: paths relative to the working directory.
fn cwd() -> RawFd {
    use std::os::fd::AsRawFd;
    rustix::fs::CWD.as_raw_fd()
}

fn prio_op(op: RingOp, p: Priority, rt: bool) -> RingOp {
    op.with_priority(p, rt).unwrap_or_else(|op| op)
}

/// The `open_how` of `openat2` for `flags | O_CLOEXEC` and `mode`.
pub fn open_how(flags: OFlags, mode: Mode) -> types::OpenHow {
    types::OpenHow::new().flags((flags | OFlags::CLOEXEC).bits() as u64).mode(mode.bits() as u64)
}

/// A descriptor installed in the ring's fixed-file table (a direct descriptor). Close it
/// with `FiberFs::close_direct`; one never closed stays in the table until the ring goes.
#[derive(Debug, PartialEq, Eq)]
pub struct FixedFile {
    index: u32,
}

impl FixedFile {
    /// Its index in the fixed-file table.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Owns index `index` of the table (`transfer::FixedFd::into_file`).
    pub(crate) fn from_index(index: u32) -> Self {
        FixedFile { index }
    }
}
