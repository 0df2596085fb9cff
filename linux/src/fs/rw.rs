//! Reads and writes with per-operation flags (`RwFlags`, the `RWF_*` of preadv2(2)),
//! fibers ([`FiberRw`]) and futures ([`read_flags`], [`write_flags`]). Each is one
//! [`RwOp`](crate::rw_flags::RwOp) (rw rule 1) encoded as an SQE, carrying the task's I/O
//! priority as plain reads and writes do; lifetimes as for `read` and `write` (the `fs`
//! module doc).
#![allow(unsafe_code)] // SQEs that point at the caller's (fiber) or the slot's (future) buffer

use super::{File, OwnedOp, prio_op};
use crate::buf::RawBuf;
use crate::ring::{RingDriver, RingOp};
use crate::rw_flags::{RwFlags, RwKind, RwOp};
use keel_core::{Errno, Fiber};

/// Flagged reads and writes for fiber tasks.
pub trait FiberRw {
    /// `preadv2(fd, &(struct iovec){buf, len}, 1, offset, flags)`, see preadv2(2): as
    /// `FiberFs::read` with `RWF_*` flags (`NOWAIT`: `EAGAIN` rather than waiting).
    fn read_flags(&mut self, file: &File, buf: &mut [u8], offset: u64, flags: RwFlags) -> Result<u32, Errno>;
    /// `pwritev2(fd, &(struct iovec){buf, len}, 1, offset, flags)`, see pwritev2(2): as
    /// `FiberFs::write` with `RWF_*` flags (`APPEND`, `DSYNC`, `SYNC`, `NOWAIT`).
    fn write_flags(&mut self, file: &File, buf: &[u8], offset: u64, flags: RwFlags) -> Result<u32, Errno>;
}

fn rw_op(kind: RwKind, file: &File, len: usize, offset: u64, flags: RwFlags) -> RwOp {
    RwOp { kind, fd: file.fd(), offset, len: len.min(u32::MAX as usize) as u32, flags }
}

impl FiberRw for Fiber {
    fn read_flags(&mut self, file: &File, buf: &mut [u8], offset: u64, flags: RwFlags) -> Result<u32, Errno> {
        let e = rw_op(RwKind::Read, file, buf.len(), offset, flags).sqe(buf.as_mut_ptr());
        let (p, rt) = (self.priorities().io, self.with_driver::<RingDriver, _>(|d| d.realtime_ioprio()) == Some(true));
        // SAFETY: `buf` outlives `run_op`, which returns only after completion.
        super::FiberFs::run_op(self, prio_op(unsafe { RingOp::from_entry(e) }, p, rt))
    }

    fn write_flags(&mut self, file: &File, buf: &[u8], offset: u64, flags: RwFlags) -> Result<u32, Errno> {
        let e = rw_op(RwKind::Write, file, buf.len(), offset, flags).sqe(buf.as_ptr().cast_mut());
        let (p, rt) = (self.priorities().io, self.with_driver::<RingDriver, _>(|d| d.realtime_ioprio()) == Some(true));
        // SAFETY: as in `read_flags`; the kernel only reads `buf`.
        super::FiberFs::run_op(self, prio_op(unsafe { RingOp::from_entry(e) }, p, rt))
    }
}

/// `preadv2` with `RWF_*` flags: the future form of [`FiberRw::read_flags`], taking and
/// returning the buffer as [`read`](super::read) does.
pub async fn read_flags(file: &File, buf: Vec<u8>, offset: u64, flags: RwFlags) -> (Result<u32, Errno>, Vec<u8>) {
    let (p, rt) = super::future::io_priority().await;
    let raw = RawBuf::from_vec(buf);
    let e = rw_op(RwKind::Read, file, raw.capacity(), offset, flags).sqe(raw.ptr());
    // SAFETY: the SQE references only `raw`, kept by the slot until completion.
    let op = prio_op(unsafe { RingOp::owned(e, Some(raw)) }, p, rt);
    let (res, raw) = OwnedOp::new(op).holding(Some(&file.fd)).await;
    let len = *res.as_ref().unwrap_or(&0) as usize;
    (res, raw.map(|r| r.into_vec(len)).unwrap_or_default())
}

/// `pwritev2` with `RWF_*` flags: the future form of [`FiberRw::write_flags`]; the buffer
/// comes back unchanged.
pub async fn write_flags(file: &File, buf: Vec<u8>, offset: u64, flags: RwFlags) -> (Result<u32, Errno>, Vec<u8>) {
    let (p, rt) = super::future::io_priority().await;
    let raw = RawBuf::from_vec(buf);
    let e = rw_op(RwKind::Write, file, raw.len(), offset, flags).sqe(raw.ptr());
    // SAFETY: as in `read_flags`.
    let op = prio_op(unsafe { RingOp::owned(e, Some(raw)) }, p, rt);
    let (res, raw) = OwnedOp::new(op).holding(Some(&file.fd)).await;
    let len = raw.as_ref().map(|r| r.len()).unwrap_or(0);
    (res, raw.map(|r| r.into_vec(len)).unwrap_or_default())
}
