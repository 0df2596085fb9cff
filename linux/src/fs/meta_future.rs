//! The future forms of [`FiberMeta`](super::FiberMeta)'s calls (meta rules in `meta.rs`):
//! the path(s), for `statx` the result buffer, and a reference to each directory an `_at`
//! form names travel in one owned box that the driver slot keeps until the kernel is done,
//! so a future dropped in flight leaves nothing behind that the kernel may still write or
//! resolve (meta rules 1 and 3).
#![allow(unsafe_code)] // SQEs that point into an owned buffer the slot keeps

use super::meta::{dir_fd, fstatx_sqe, mkdir_sqe, rename_sqe, statx_sqe, unlink_flags, unlink_sqe, zeroed_statx};
use super::{File, OwnedOp};
use crate::buf::RawBuf;
use crate::fd::SharedFd;
use crate::flags::{Mode, PathArg};
use crate::ring::RingOp;
use io_uring::squeue;
use keel_core::Errno;
use rustix::fs::{AtFlags, RenameFlags, Statx, StatxFlags};

const STATX: usize = core::mem::size_of::<Statx>();

/// What one operation keeps in its slot until its completion is reaped (meta rule 3): the
/// bytes the SQE points into, and the directories it names (fd rule 1).
struct Kept {
    bytes: Vec<u8>,
    _dirs: [Option<SharedFd>; 2],
}

/// `path` NUL-terminated, appended to `bytes` (meta rule 1); its offset in `bytes`.
fn push_path(bytes: &mut Vec<u8>, path: impl PathArg) -> Result<usize, Errno> {
    let c = path.as_cow_c_str().map_err(|e| Errno(e.raw_os_error()))?;
    let at = bytes.len();
    bytes.extend_from_slice(c.to_bytes_with_nul());
    Ok(at)
}

/// Runs the SQE `sqe` makes from the address of `bytes`, with `bytes` and `dirs` kept by the
/// slot until the kernel is done (meta rule 3); `bytes` back after a success.
async fn run_kept(
    bytes: Vec<u8>,
    dirs: [Option<&File>; 2],
    sqe: impl FnOnce(*mut u8) -> squeue::Entry,
) -> Result<Vec<u8>, Errno> {
    let mut kept = Box::new(Kept { bytes, _dirs: dirs.map(|d| d.map(|f| f.fd.clone())) });
    // The heap bytes stay where they are when the box moves into the slot.
    let e = sqe(kept.bytes.as_mut_ptr());
    // SAFETY: the SQE references only `kept.bytes` (paths, statx area) and the descriptors of
    // `kept`'s directories, all kept by the slot until the completion is reaped.
    let op = unsafe { RingOp::owned(e, Some(RawBuf::from_box(kept))) };
    let (res, raw) = OwnedOp::new(op).await;
    res?;
    // SAFETY: the slot gives back the `RawBuf` made from a `Box<Kept>` above.
    let kept = raw.and_then(|r| unsafe { r.into_box::<Kept>() }).ok_or(Errno::EIO)?;
    Ok(kept.bytes)
}

/// The `statx` the kernel wrote at the start of `bytes`.
fn statx_from(bytes: &[u8]) -> Statx {
    let mut out = zeroed_statx();
    // SAFETY: `bytes` starts with `STATX` bytes (zeroed, then written by the kernel as a
    // `struct statx`; `Statx` is its `repr(C)` form, any bit pattern valid), copied byte-wise
    // into an aligned value.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), (&mut out as *mut Statx).cast::<u8>(), STATX) };
    out
}

async fn statx_in(dir: Option<&File>, path: impl PathArg, flags: AtFlags, mask: StatxFlags) -> Result<Statx, Errno> {
    let mut bytes = vec![0u8; STATX]; // the kernel writes the statx here (byte-wise: no alignment needed)
    push_path(&mut bytes, path)?;
    let fd = dir_fd(dir);
    let bytes = run_kept(bytes, [dir, None], |p| statx_sqe(fd, p.wrapping_add(STATX), flags, mask, p.cast())).await?;
    Ok(statx_from(&bytes))
}

async fn unlink_in(dir: Option<&File>, path: impl PathArg, flags: AtFlags) -> Result<(), Errno> {
    let flags = unlink_flags(flags)?;
    let mut bytes = Vec::new();
    push_path(&mut bytes, path)?;
    let fd = dir_fd(dir);
    run_kept(bytes, [dir, None], |p| unlink_sqe(fd, p, flags)).await.map(drop)
}

async fn rename_in(
    dirs: [Option<&File>; 2],
    from: impl PathArg,
    to: impl PathArg,
    flags: RenameFlags,
) -> Result<(), Errno> {
    let mut bytes = Vec::new();
    push_path(&mut bytes, from)?;
    let at = push_path(&mut bytes, to)?;
    let fds = dirs.map(dir_fd);
    run_kept(bytes, dirs, |p| rename_sqe(fds, p, p.wrapping_add(at), flags)).await.map(drop)
}

async fn mkdir_in(dir: Option<&File>, path: impl PathArg, mode: Mode) -> Result<(), Errno> {
    let mut bytes = Vec::new();
    push_path(&mut bytes, path)?;
    let fd = dir_fd(dir);
    run_kept(bytes, [dir, None], |p| mkdir_sqe(fd, p, mode)).await.map(drop)
}

/// `statx(AT_FDCWD, path, flags, mask, &buf)`, see statx(2): the future form of
/// [`FiberMeta::statx`](super::FiberMeta::statx).
pub async fn statx(path: impl PathArg, flags: AtFlags, mask: StatxFlags) -> Result<Statx, Errno> {
    statx_in(None, path, flags, mask).await
}

/// `statx(fd, "", AT_EMPTY_PATH, mask, &buf)`: the future form of
/// [`FiberMeta::fstatx`](super::FiberMeta::fstatx); the operation holds the file open until
/// it completes (fd rule 1).
pub async fn fstatx(file: &File, mask: StatxFlags) -> Result<Statx, Errno> {
    let fd = file.fd();
    let bytes = run_kept(vec![0u8; STATX], [Some(file), None], |p| fstatx_sqe(fd, mask, p.cast())).await?;
    Ok(statx_from(&bytes))
}

/// `unlinkat(AT_FDCWD, path, flags)`, see unlinkat(2): the future form of
/// [`FiberMeta::unlink`](super::FiberMeta::unlink); a flag but `REMOVEDIR` is `EINVAL`.
pub async fn unlink(path: impl PathArg, flags: AtFlags) -> Result<(), Errno> {
    unlink_in(None, path, flags).await
}

/// `renameat2(AT_FDCWD, from, AT_FDCWD, to, flags)`, see rename(2): the future form of
/// [`FiberMeta::rename`](super::FiberMeta::rename).
pub async fn rename(from: impl PathArg, to: impl PathArg, flags: RenameFlags) -> Result<(), Errno> {
    rename_in([None, None], from, to, flags).await
}

/// `mkdirat(AT_FDCWD, path, mode)`, see mkdir(2): the future form of
/// [`FiberMeta::mkdir`](super::FiberMeta::mkdir).
pub async fn mkdir(path: impl PathArg, mode: Mode) -> Result<(), Errno> {
    mkdir_in(None, path, mode).await
}

/// `statx(dir, path, flags, mask, &buf)`: the future form of
/// [`FiberMeta::statx_at`](super::FiberMeta::statx_at); the operation holds `dir` open until
/// it completes (meta rule 3).
pub async fn statx_at(dir: &File, path: impl PathArg, flags: AtFlags, mask: StatxFlags) -> Result<Statx, Errno> {
    statx_in(Some(dir), path, flags, mask).await
}

/// `unlinkat(dir, path, flags)`: the future form of
/// [`FiberMeta::unlink_at`](super::FiberMeta::unlink_at); a flag but `REMOVEDIR` is `EINVAL`.
pub async fn unlink_at(dir: &File, path: impl PathArg, flags: AtFlags) -> Result<(), Errno> {
    unlink_in(Some(dir), path, flags).await
}

/// `renameat2(from_dir, from, to_dir, to, flags)`: the future form of
/// [`FiberMeta::rename_at`](super::FiberMeta::rename_at); the operation holds both
/// directories open until it completes.
pub async fn rename_at(
    from_dir: &File,
    from: impl PathArg,
    to_dir: &File,
    to: impl PathArg,
    flags: RenameFlags,
) -> Result<(), Errno> {
    rename_in([Some(from_dir), Some(to_dir)], from, to, flags).await
}

/// `mkdirat(dir, path, mode)`: the future form of
/// [`FiberMeta::mkdir_at`](super::FiberMeta::mkdir_at).
pub async fn mkdir_at(dir: &File, path: impl PathArg, mode: Mode) -> Result<(), Errno> {
    mkdir_in(Some(dir), path, mode).await
}
