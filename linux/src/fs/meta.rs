//! File metadata and names through the ring: `statx`, `unlinkat`, `renameat2` and
//! `mkdirat` (`IORING_OP_STATX`, `UNLINKAT`, `RENAMEAT`, `MKDIRAT`), for fibers
//! ([`FiberMeta`]) and futures (`fs::statx`, `fs::fstatx`, `fs::unlink`, `fs::rename`,
//! `fs::mkdir` and the `_at` forms, in `meta_future.rs`).
//!
//! Rules (cited as "meta rule N"):
//! 1. **Paths** are taken as `open` takes them ([`PathArg`]: `&str`, `&Path`, `&CStr`, ...)
//!    and resolved against the working directory (`AT_FDCWD`), or, in the `_at` forms,
//!    against an open directory (a [`File`] opened with `OFlags::DIRECTORY`, or
//!    `OFlags::PATH`); absolute ones as they are. A path holding a NUL byte is `EINVAL`
//!    before anything is submitted. The kernel resolves the directory's descriptor number
//!    when the operation runs in its worker pool, after submission: so the directory stays
//!    open until the completion is reaped (rule 3), else a number closed and reused
//!    meanwhile would name another directory.
//! 2. **Flags are typed**: rustix's [`AtFlags`], [`StatxFlags`], [`RenameFlags`] and
//!    [`Mode`]. `unlink` accepts only `AtFlags::REMOVEDIR` (unlinkat(2) knows no other
//!    flag): any other bit is `EINVAL` before submission (a MISUSE row).
//! 3. **Memory**: a fiber's call borrows the path and the `statx` buffer on its stack and
//!    returns only after the completion is reaped (fs module doc); a future copies the
//!    path(s), and the `statx` buffer, into one owned buffer that the slot keeps until the
//!    kernel is done (`slot_op.rs`), so a future dropped in flight leaves nothing the
//!    kernel may still write; that buffer also holds a reference to each directory an
//!    `_at` form names (fd rule 1), so dropping the directory's `File`, or `close` on it,
//!    meanwhile closes its descriptor only once the completion is reaped (fd rule 3). A
//!    fiber's call borrows the directory's `File` until it returns (fd rule 2). These
//!    operations yield no descriptor: nothing to give back when one is abandoned (a rename
//!    or unlink the kernel carried out stays done).
//! 4. **Cancellation**: the kernel runs these in its worker pool (io-wq) and they are not
//!    interruptible once started: a cancelled task's call returns the operation's own
//!    result (done, or `ECANCELED` if the cancel took first).
//!
//! Each call is described apart from the driver by its directory, path(s), flags and mode (the
//! arguments of the syscall of the same name); the ring driver encodes them in one SQE
//! (`*_sqe` below). These calls have no readiness to wait for: a driver without io_uring
//! makes the syscall itself (the kernel's worker pool does the same here, meta rule 4).
#![allow(unsafe_code)] // SQEs that point at paths and a statx buffer that outlive the operation

use super::{FiberFs, File, cwd};
use crate::flags::{Mode, PathArg};
use crate::ring::RingOp;
use io_uring::{opcode, squeue, types};
use keel_core::{Errno, Fiber};
use rustix::fs::{AtFlags, RenameFlags, Statx, StatxFlags};
use std::ffi::CStr;
use std::os::fd::RawFd;

/// Metadata and name operations for fiber tasks (meta rules in the module doc). Each doc
/// opens with the C form.
pub trait FiberMeta {
    /// `statx(AT_FDCWD, path, flags, mask, &buf)`, see statx(2): `mask` says which fields
    /// are wanted (`StatxFlags::BASIC_STATS`, `SIZE`, ...), the result's `stx_mask` which
    /// the filesystem filled.
    fn statx(&mut self, path: impl PathArg, flags: AtFlags, mask: StatxFlags) -> Result<Statx, Errno>;
    /// `statx(fd, "", AT_EMPTY_PATH, mask, &buf)`: the metadata of an open file (fstat(2)'s
    /// job); the file stays borrowed until the call returns.
    fn fstatx(&mut self, file: &File, mask: StatxFlags) -> Result<Statx, Errno>;
    /// `unlinkat(AT_FDCWD, path, flags)`, see unlinkat(2): a file, or with
    /// `AtFlags::REMOVEDIR` an empty directory. Any other flag is `EINVAL` (meta rule 2).
    fn unlink(&mut self, path: impl PathArg, flags: AtFlags) -> Result<(), Errno>;
    /// `renameat2(AT_FDCWD, from, AT_FDCWD, to, flags)`, see rename(2) (`NOREPLACE`,
    /// `EXCHANGE`, `WHITEOUT`).
    fn rename(&mut self, from: impl PathArg, to: impl PathArg, flags: RenameFlags) -> Result<(), Errno>;
    /// `mkdirat(AT_FDCWD, path, mode)`, see mkdir(2).
    fn mkdir(&mut self, path: impl PathArg, mode: Mode) -> Result<(), Errno>;
    /// `statx(dir, path, flags, mask, &buf)`: [`statx`](Self::statx) with `path` relative
    /// to the open directory `dir` (meta rule 1; with `AtFlags::EMPTY_PATH` and an empty
    /// path, `dir` itself).
    fn statx_at(&mut self, dir: &File, path: impl PathArg, flags: AtFlags, mask: StatxFlags) -> Result<Statx, Errno>;
    /// `unlinkat(dir, path, flags)`: [`unlink`](Self::unlink) relative to `dir`.
    fn unlink_at(&mut self, dir: &File, path: impl PathArg, flags: AtFlags) -> Result<(), Errno>;
    /// `renameat2(from_dir, from, to_dir, to, flags)`: [`rename`](Self::rename) with each
    /// path relative to its directory (the same `File` may be both).
    fn rename_at(
        &mut self,
        from_dir: &File,
        from: impl PathArg,
        to_dir: &File,
        to: impl PathArg,
        flags: RenameFlags,
    ) -> Result<(), Errno>;
    /// `mkdirat(dir, path, mode)`: [`mkdir`](Self::mkdir) relative to `dir`.
    fn mkdir_at(&mut self, dir: &File, path: impl PathArg, mode: Mode) -> Result<(), Errno>;
}

/// Runs `f` with `path` as a NUL-terminated string (meta rule 1).
pub(super) fn with_c<T>(path: impl PathArg, f: impl FnOnce(&CStr) -> Result<T, Errno>) -> Result<T, Errno> {
    path.into_with_c_str(|c| Ok(f(c))).map_err(|e| Errno(e.raw_os_error()))?
}

/// Meta rule 2: unlinkat(2) takes `AT_REMOVEDIR` and nothing else.
pub(super) fn unlink_flags(flags: AtFlags) -> Result<i32, Errno> {
    if !AtFlags::REMOVEDIR.contains(flags) {
        return Err(Errno::EINVAL);
    }
    Ok(flags.bits() as i32)
}

/// `statx(fd, "", AT_EMPTY_PATH, mask, buf)`: the open file itself.
pub(super) fn fstatx_sqe(fd: RawFd, mask: StatxFlags, buf: *mut Statx) -> squeue::Entry {
    statx_sqe(fd, c"".as_ptr().cast(), AtFlags::EMPTY_PATH, mask, buf)
}

/// `statx(dir, path, flags, mask, buf)` (`dir`: a directory's descriptor or `AT_FDCWD`).
pub(super) fn statx_sqe(
    dir: RawFd,
    path: *const u8,
    flags: AtFlags,
    mask: StatxFlags,
    buf: *mut Statx,
) -> squeue::Entry {
    opcode::Statx::new(types::Fd(dir), path.cast(), buf.cast::<types::statx>())
        .flags(flags.bits() as i32)
        .mask(mask.bits())
        .build()
}

/// `unlinkat(dir, path, flags)`, `flags` checked by [`unlink_flags`].
pub(super) fn unlink_sqe(dir: RawFd, path: *const u8, flags: i32) -> squeue::Entry {
    opcode::UnlinkAt::new(types::Fd(dir), path.cast()).flags(flags).build()
}

/// `renameat2(dirs[0], from, dirs[1], to, flags)`.
pub(super) fn rename_sqe(dirs: [RawFd; 2], from: *const u8, to: *const u8, flags: RenameFlags) -> squeue::Entry {
    opcode::RenameAt::new(types::Fd(dirs[0]), from.cast(), types::Fd(dirs[1]), to.cast()).flags(flags.bits()).build()
}

/// `mkdirat(dir, path, mode)`.
pub(super) fn mkdir_sqe(dir: RawFd, path: *const u8, mode: Mode) -> squeue::Entry {
    opcode::MkDirAt::new(types::Fd(dir), path.cast()).mode(mode.bits() as libc::mode_t).build()
}

/// The descriptor a path is resolved against (meta rule 1): `dir`'s, or the working
/// directory's.
pub(super) fn dir_fd(dir: Option<&File>) -> RawFd {
    dir.map_or_else(cwd, File::fd)
}

/// An all-zero `Statx` for the kernel to fill.
pub(super) fn zeroed_statx() -> Statx {
    // SAFETY: `Statx` is `repr(C)` plain old data (integers and padding): all-zero is valid.
    unsafe { core::mem::MaybeUninit::<Statx>::zeroed().assume_init() }
}

/// The fiber forms, relative to `dir` (`None`: the working directory). Each borrows its
/// paths, buffer and directories until `run_op` returns, after the completion (meta rule 3,
/// fd rule 2).
fn statx_in(
    f: &mut Fiber,
    dir: Option<&File>,
    path: impl PathArg,
    flags: AtFlags,
    mask: StatxFlags,
) -> Result<Statx, Errno> {
    let mut buf = zeroed_statx();
    with_c(path, |p| {
        let e = statx_sqe(dir_fd(dir), p.as_ptr().cast(), flags, mask, &mut buf);
        // SAFETY: `p`, `buf` and `dir` outlive `run_op`, which returns only after completion.
        f.run_op(unsafe { RingOp::from_entry(e) })
    })?;
    Ok(buf)
}

fn unlink_in(f: &mut Fiber, dir: Option<&File>, path: impl PathArg, flags: AtFlags) -> Result<(), Errno> {
    let flags = unlink_flags(flags)?;
    with_c(path, |p| {
        // SAFETY: `p` and `dir` outlive `run_op`, which returns only after completion.
        f.run_op(unsafe { RingOp::from_entry(unlink_sqe(dir_fd(dir), p.as_ptr().cast(), flags)) })
    })
    .map(drop)
}

fn rename_in(
    f: &mut Fiber,
    dirs: [Option<&File>; 2],
    from: impl PathArg,
    to: impl PathArg,
    flags: RenameFlags,
) -> Result<(), Errno> {
    with_c(from, |from| {
        with_c(to, |to| {
            let e = rename_sqe(dirs.map(dir_fd), from.as_ptr().cast(), to.as_ptr().cast(), flags);
            // SAFETY: both paths and both directories outlive `run_op`, which returns only
            // after completion.
            f.run_op(unsafe { RingOp::from_entry(e) })
        })
    })
    .map(drop)
}

fn mkdir_in(f: &mut Fiber, dir: Option<&File>, path: impl PathArg, mode: Mode) -> Result<(), Errno> {
    with_c(path, |p| {
        // SAFETY: `p` and `dir` outlive `run_op`, which returns only after completion.
        f.run_op(unsafe { RingOp::from_entry(mkdir_sqe(dir_fd(dir), p.as_ptr().cast(), mode)) })
    })
    .map(drop)
}

impl FiberMeta for Fiber {
    fn statx(&mut self, path: impl PathArg, flags: AtFlags, mask: StatxFlags) -> Result<Statx, Errno> {
        statx_in(self, None, path, flags, mask)
    }

    fn fstatx(&mut self, file: &File, mask: StatxFlags) -> Result<Statx, Errno> {
        let mut buf = zeroed_statx();
        let e = fstatx_sqe(file.fd(), mask, &mut buf);
        // SAFETY: `buf` (and the static empty path) outlive `run_op`, which returns only after
        // completion; `file` is borrowed as long (fd rule 2).
        self.run_op(unsafe { RingOp::from_entry(e) })?;
        Ok(buf)
    }

    fn unlink(&mut self, path: impl PathArg, flags: AtFlags) -> Result<(), Errno> {
        unlink_in(self, None, path, flags)
    }

    fn rename(&mut self, from: impl PathArg, to: impl PathArg, flags: RenameFlags) -> Result<(), Errno> {
        rename_in(self, [None, None], from, to, flags)
    }

    fn mkdir(&mut self, path: impl PathArg, mode: Mode) -> Result<(), Errno> {
        mkdir_in(self, None, path, mode)
    }

    fn statx_at(&mut self, dir: &File, path: impl PathArg, flags: AtFlags, mask: StatxFlags) -> Result<Statx, Errno> {
        statx_in(self, Some(dir), path, flags, mask)
    }

    fn unlink_at(&mut self, dir: &File, path: impl PathArg, flags: AtFlags) -> Result<(), Errno> {
        unlink_in(self, Some(dir), path, flags)
    }

    fn rename_at(
        &mut self,
        from_dir: &File,
        from: impl PathArg,
        to_dir: &File,
        to: impl PathArg,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        rename_in(self, [Some(from_dir), Some(to_dir)], from, to, flags)
    }

    fn mkdir_at(&mut self, dir: &File, path: impl PathArg, mode: Mode) -> Result<(), Errno> {
        mkdir_in(self, Some(dir), path, mode)
    }
}
