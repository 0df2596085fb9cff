//! Direct descriptors (a [`FixedFile`]: an index in the ring's fixed-file table) for
//! future tasks: the future forms of `FiberFs::open_direct`, `read_direct`,
//! `write_direct` and `close_direct`, with buffers passed by ownership as in `future.rs`
//! (`slot_op.rs`: a future dropped in flight cancels its operation and the slot keeps the
//! buffer until the completion; a cancelled task's future returns its completion).
//!
//! An index is not a process descriptor: no `File` count holds it (`net::FixedSocket`
//! alike). An operation the kernel has taken holds the file itself, so closing the index
//! under a read in flight does not free anything the read uses; `close_direct` cancels
//! the index's operations first (net rule 1) and frees the index whatever it returns. An
//! `open_direct` dropped in flight whose open completes anyway has its index closed
//! through the ring (completion rule 3), as `accept_direct`'s.
#![allow(unsafe_code)] // SQEs that point into owned buffers the slot keeps

use super::future::{OwnedOp, io_priority, open_op};
use super::{FixedFile, close_fixed_shared, prio_op};
use crate::buf::RawBuf;
use crate::flags::{Mode, OFlags, PathArg};
use crate::ring::RingOp;
use io_uring::{opcode, types};
use keel_core::Errno;

/// `openat2` straight into the ring's fixed-file table (`IORING_FILE_INDEX_ALLOC`; needs
/// `RingConfig::registered_files`): the future form of
/// [`FiberFs::open_direct`](super::FiberFs::open_direct). `O_CLOEXEC` is left out (the
/// kernel refuses it for a direct descriptor, which no `exec` inherits anyway).
pub async fn open_direct(path: impl PathArg, flags: OFlags, mode: Mode) -> Result<FixedFile, Errno> {
    let how = types::OpenHow::new().flags((flags - OFlags::CLOEXEC).bits() as u64).mode(mode.bits() as u64);
    let op = open_op(path, how, Some(types::DestinationSlot::auto_target()))?;
    OwnedOp::new(op).await.0.map(|index| FixedFile { index })
}

/// `pread` on a direct descriptor (the future form of
/// [`FiberFs::read_direct`](super::FiberFs::read_direct)): reads up to `buf.capacity()`
/// bytes; the buffer comes back with its length set to what was read.
pub async fn read_direct(file: &FixedFile, buf: Vec<u8>, offset: u64) -> (Result<u32, Errno>, Vec<u8>) {
    let (p, rt) = io_priority().await;
    let raw = RawBuf::from_vec(buf);
    let cap = raw.capacity().min(u32::MAX as usize) as u32;
    let e = opcode::Read::new(types::Fixed(file.index), raw.ptr(), cap).offset(offset).build();
    // SAFETY: the SQE references only `raw`, kept by the slot until completion.
    let (res, raw) = OwnedOp::new(prio_op(unsafe { RingOp::owned(e, Some(raw)) }, p, rt)).await;
    let len = *res.as_ref().unwrap_or(&0) as usize;
    (res, raw.map(|r| r.into_vec(len)).unwrap_or_default())
}

/// `pwrite` on a direct descriptor (the future form of
/// [`FiberFs::write_direct`](super::FiberFs::write_direct)); the buffer comes back
/// unchanged.
pub async fn write_direct(file: &FixedFile, buf: Vec<u8>, offset: u64) -> (Result<u32, Errno>, Vec<u8>) {
    let (p, rt) = io_priority().await;
    let raw = RawBuf::from_vec(buf);
    let len = raw.len().min(u32::MAX as usize) as u32;
    let e = opcode::Write::new(types::Fixed(file.index), raw.ptr(), len).offset(offset).build();
    // SAFETY: as in `read_direct`.
    let (res, raw) = OwnedOp::new(prio_op(unsafe { RingOp::owned(e, Some(raw)) }, p, rt)).await;
    let len = raw.as_ref().map(|r| r.len()).unwrap_or(0);
    (res, raw.map(|r| r.into_vec(len)).unwrap_or_default())
}

/// Cancels the direct descriptor's operations, then closes it through the ring (the
/// future form of [`FiberFs::close_direct`](super::FiberFs::close_direct)); it is closed
/// whatever this returns: in a cancelled task synchronously (`IORING_REGISTER_SYNC_CANCEL`,
/// then the index is removed from the table). Only outside a keel task (`EPERM`: no ring
/// to reach) does the index stay until the ring goes.
pub async fn close_direct(file: FixedFile) -> Result<(), Errno> {
    close_fixed_shared(file.index).await
}
