//! The future forms of [`FiberMeta`](super::FiberMeta)'s calls (meta rules in `meta.rs`):
//! the path(s), and for `statx` the result buffer, travel in one owned buffer that the
//! driver slot keeps until the kernel is done, so a future dropped in flight leaves
//! nothing behind that the kernel may still write.
#![allow(unsafe_code)] // SQEs that point into an owned buffer the slot keeps

use super::meta::{fstatx_sqe, mkdir_sqe, rename_sqe, statx_sqe, unlink_flags, unlink_sqe, zeroed_statx};
use super::{File, OwnedOp};
use crate::buf::RawBuf;
use crate::flags::{Mode, PathArg};
use crate::ring::RingOp;
use keel_core::Errno;
use rustix::fs::{AtFlags, RenameFlags, Statx, StatxFlags};

/// `path` NUL-terminated, appended to `bytes` (meta rule 1); its offset in `bytes`.
fn push_path(bytes: &mut Vec<u8>, path: impl PathArg) -> Result<usize, Errno> {
    let c = path.as_cow_c_str().map_err(|e| Errno(e.raw_os_error()))?;
    let at = bytes.len();
    bytes.extend_from_slice(c.to_bytes_with_nul());
    Ok(at)
}

/// `statx(AT_FDCWD, path, flags, mask, &buf)`, see statx(2): the future form of
/// [`FiberMeta::statx`](super::FiberMeta::statx).
pub async fn statx(path: impl PathArg, flags: AtFlags, mask: StatxFlags) -> Result<Statx, Errno> {
    const N: usize = core::mem::size_of::<Statx>();
    let mut bytes = vec![0u8; N]; // the kernel writes the statx here (byte-wise: no alignment needed)
    push_path(&mut bytes, path)?;
    let raw = RawBuf::from_vec(bytes);
    let e = statx_sqe(raw.ptr().wrapping_add(N), flags, mask, raw.ptr().cast());
    // SAFETY: the SQE references only `raw` (the path after the statx area), kept by the
    // slot until completion.
    let (res, raw) = OwnedOp::new(unsafe { RingOp::owned(e, Some(raw)) }).await;
    res?;
    let bytes = raw.map(|r| r.into_vec(N)).ok_or(Errno::EIO)?;
    let mut out = zeroed_statx();
    // SAFETY: `bytes` holds `N` bytes the kernel wrote as a `struct statx` (`Statx` is its
    // `repr(C)` form, any bit pattern valid); copied byte-wise into an aligned value.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), (&mut out as *mut Statx).cast::<u8>(), N) };
    Ok(out)
}

/// `statx(fd, "", AT_EMPTY_PATH, mask, &buf)`: the future form of
/// [`FiberMeta::fstatx`](super::FiberMeta::fstatx); the operation holds the file open until
/// it completes (fd rule 1).
pub async fn fstatx(file: &File, mask: StatxFlags) -> Result<Statx, Errno> {
    const N: usize = core::mem::size_of::<Statx>();
    let raw = RawBuf::from_vec(vec![0u8; N]);
    let e = fstatx_sqe(file.fd(), mask, raw.ptr().cast());
    // SAFETY: the SQE references only `raw` and a static empty path; the slot keeps `raw`
    // until completion.
    let (res, raw) = OwnedOp::new(unsafe { RingOp::owned(e, Some(raw)) }).holding(Some(&file.fd)).await;
    res?;
    let bytes = raw.map(|r| r.into_vec(N)).ok_or(Errno::EIO)?;
    let mut out = zeroed_statx();
    // SAFETY: as in `statx`: `N` bytes the kernel wrote as a `struct statx`.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), (&mut out as *mut Statx).cast::<u8>(), N) };
    Ok(out)
}

/// `unlinkat(AT_FDCWD, path, flags)`, see unlinkat(2): the future form of
/// [`FiberMeta::unlink`](super::FiberMeta::unlink); a flag but `REMOVEDIR` is `EINVAL`.
pub async fn unlink(path: impl PathArg, flags: AtFlags) -> Result<(), Errno> {
    let flags = unlink_flags(flags)?;
    let mut bytes = Vec::new();
    push_path(&mut bytes, path)?;
    let raw = RawBuf::from_vec(bytes);
    let e = unlink_sqe(raw.ptr(), flags);
    // SAFETY: the SQE references only `raw`, kept by the slot until completion.
    OwnedOp::new(unsafe { RingOp::owned(e, Some(raw)) }).await.0.map(drop)
}

/// `renameat2(AT_FDCWD, from, AT_FDCWD, to, flags)`, see rename(2): the future form of
/// [`FiberMeta::rename`](super::FiberMeta::rename).
pub async fn rename(from: impl PathArg, to: impl PathArg, flags: RenameFlags) -> Result<(), Errno> {
    let mut bytes = Vec::new();
    push_path(&mut bytes, from)?;
    let at = push_path(&mut bytes, to)?;
    let raw = RawBuf::from_vec(bytes);
    let e = rename_sqe(raw.ptr(), raw.ptr().wrapping_add(at), flags);
    // SAFETY: the SQE references only `raw` (both paths), kept by the slot until completion.
    OwnedOp::new(unsafe { RingOp::owned(e, Some(raw)) }).await.0.map(drop)
}

/// `mkdirat(AT_FDCWD, path, mode)`, see mkdir(2): the future form of
/// [`FiberMeta::mkdir`](super::FiberMeta::mkdir).
pub async fn mkdir(path: impl PathArg, mode: Mode) -> Result<(), Errno> {
    let mut bytes = Vec::new();
    push_path(&mut bytes, path)?;
    let raw = RawBuf::from_vec(bytes);
    let e = mkdir_sqe(raw.ptr(), mode);
    // SAFETY: the SQE references only `raw`, kept by the slot until completion.
    OwnedOp::new(unsafe { RingOp::owned(e, Some(raw)) }).await.0.map(drop)
}
