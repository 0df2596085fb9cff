//! File i/o from a task's function, on its executor's ring. Each call builds its SQE,
//! suspends the task until that operation completes (keel-linux's `FiberFs::run_op`:
//! a cancelled task's operation is cancelled and still waited for), and returns the
//! result. Descriptors are plain `int`s the C program owns: keel neither dups nor
//! closes them except in `keel_file_close`.
//!
//! Thread safety of every call: only from inside the task's own function (body rule 1).
//! Errors of every call: `-ESTALE`, `-KEEL_ENOTINTASK`, `-EOPNOTSUPP` (the executor has no
//! ring), `-ECANCELED` (the task is cancelled), `-EFAULT` (a NULL buffer or path with a
//! nonzero length), or the operation's own negated errno.

use crate::body::{running, suspend};
use crate::result::{buf_len, err, guard, keel_result};
use crate::task::keel_task;
use core::ffi::{c_char, c_int, c_void};
use io_uring::{opcode, squeue, types};
use keel_core::Fiber;
use keel_linux::flags::raw;
use keel_linux::{FiberFs, RingDriver, RingOp};

/// A rejected argument's errno as a `keel_result`.
pub(crate) fn neg(e: keel_core::Errno) -> i64 {
    err(e.0)
}

/// Runs `entry` for the running task `task`; `prio`: carry the task's I/O priority.
///
/// # Safety
/// What `entry` points at stays valid until this returns (it returns after the
/// operation's completion: `run_op`).
pub(crate) unsafe fn run(task: keel_task, entry: squeue::Entry, prio: bool) -> Result<i64, i64> {
    let (t, fib) = running(task)?;
    let rt = fib.with_driver::<RingDriver, _>(|d| d.realtime_ioprio()).ok_or(err(libc::EOPNOTSUPP))?;
    // SAFETY: the caller keeps what the entry points at valid until completion.
    let mut op = unsafe { RingOp::from_entry(entry) };
    if prio {
        let p = fib.priorities().io;
        op = op.with_priority(p, rt).unwrap_or_else(|op| op);
    }
    suspend(t, fib, |f: &mut Fiber| f.run_op(op)).map(|n| n as i64).map_err(|e| -(e.0 as i64))
}

/// `openat2(AT_FDCWD, path, {flags | O_CLOEXEC, mode})` through the ring; returns the
/// descriptor, which the caller owns (close it with `keel_file_close` or `close(2)`).
/// `-EINVAL` for a flag bit that is no `O_*` flag or a mode above `07777`
/// (keel-linux's `flags::raw` conversions), before anything is submitted.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_file_open(task: keel_task, path: *const c_char, flags: c_int, mode: u32) -> keel_result {
    guard(|| {
        if path.is_null() {
            return Err(err(libc::EFAULT));
        }
        let how = keel_linux::fs::open_how(raw::oflags(flags).map_err(neg)?, raw::mode(mode).map_err(neg)?);
        let e = opcode::OpenAt2::new(types::Fd(libc::AT_FDCWD), path, &how).build();
        // SAFETY: `path` (caller) and `how` outlive `run`, which returns after completion.
        unsafe { run(task, e, false) }
    })
}

/// `pread(fd, buf, len, offset)` through the ring; returns the bytes read.
///
/// # Safety
/// `buf` is NULL with `len` 0, or `len` writable bytes nothing else uses until this returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_file_read(
    task: keel_task,
    fd: c_int,
    buf: *mut c_void,
    len: usize,
    offset: u64,
) -> keel_result {
    guard(|| {
        let len = buf_len(buf, len)?;
        let e = opcode::Read::new(types::Fd(fd), buf.cast(), len).offset(offset).build();
        // SAFETY: `buf` is the caller's until `run` returns, after the completion.
        unsafe { run(task, e, true) }
    })
}

/// `pwrite(fd, buf, len, offset)` through the ring; returns the bytes written.
///
/// # Safety
/// `buf` is NULL with `len` 0, or `len` readable bytes that stay valid until this returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_file_write(
    task: keel_task,
    fd: c_int,
    buf: *const c_void,
    len: usize,
    offset: u64,
) -> keel_result {
    guard(|| {
        let len = buf_len(buf, len)?;
        let e = opcode::Write::new(types::Fd(fd), buf.cast(), len).offset(offset).build();
        // SAFETY: as in `keel_file_read`; the kernel only reads `buf`.
        unsafe { run(task, e, true) }
    })
}

/// `fsync(fd)` through the ring: data and metadata durable.
#[unsafe(no_mangle)]
pub extern "C" fn keel_file_fsync(task: keel_task, fd: c_int) -> keel_result {
    // SAFETY: the entry points at no memory.
    guard(|| unsafe { run(task, opcode::Fsync::new(types::Fd(fd)).build(), false) })
}

/// `fdatasync(fd)` through the ring: the data durable.
#[unsafe(no_mangle)]
pub extern "C" fn keel_file_fdatasync(task: keel_task, fd: c_int) -> keel_result {
    let e = opcode::Fsync::new(types::Fd(fd)).flags(types::FsyncFlags::DATASYNC).build();
    // SAFETY: the entry points at no memory.
    guard(|| unsafe { run(task, e, false) })
}

/// `close(fd)` through the ring. The caller must have no other operation on `fd` in
/// flight (a task's own calls complete before they return, so only other tasks'
/// can be).
#[unsafe(no_mangle)]
pub extern "C" fn keel_file_close(task: keel_task, fd: c_int) -> keel_result {
    // SAFETY: the entry points at no memory.
    guard(|| unsafe { run(task, opcode::Close::new(types::Fd(fd)).build(), false) })
}

/// `preadv(fd, iov, iovcnt, offset)` through the ring; returns the bytes read.
///
/// # Safety
/// `iov` holds `iovcnt` `struct iovec`s whose buffers are writable and unused by anything
/// else until this returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_file_readv(
    task: keel_task,
    fd: c_int,
    iov: *const libc::iovec,
    iovcnt: c_int,
    offset: u64,
) -> keel_result {
    guard(|| {
        let iovcnt = iov_count(iov, iovcnt)?;
        let e = opcode::Readv::new(types::Fd(fd), iov, iovcnt).offset(offset).build();
        // SAFETY: the vectors and buffers are the caller's until `run` returns.
        unsafe { run(task, e, true) }
    })
}

/// `pwritev(fd, iov, iovcnt, offset)` through the ring; returns the bytes written.
///
/// # Safety
/// `iov` holds `iovcnt` `struct iovec`s whose buffers stay valid until this returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_file_writev(
    task: keel_task,
    fd: c_int,
    iov: *const libc::iovec,
    iovcnt: c_int,
    offset: u64,
) -> keel_result {
    guard(|| {
        let iovcnt = iov_count(iov, iovcnt)?;
        let e = opcode::Writev::new(types::Fd(fd), iov, iovcnt).offset(offset).build();
        // SAFETY: as in `keel_file_readv`; the kernel only reads the buffers.
        unsafe { run(task, e, true) }
    })
}

/// `sync_file_range(fd, offset, nbytes, flags)` through the ring; `-EINVAL` for a flag
/// bit that is no `SYNC_FILE_RANGE_*` flag.
#[unsafe(no_mangle)]
pub extern "C" fn keel_file_sync_range(
    task: keel_task,
    fd: c_int,
    offset: u64,
    nbytes: u32,
    flags: u32,
) -> keel_result {
    guard(|| {
        let flags = raw::sync_file_range_flags(flags).map_err(neg)?;
        let e = opcode::SyncFileRange::new(types::Fd(fd), nbytes).offset(offset).flags(flags.bits()).build();
        // SAFETY: the entry points at no memory.
        unsafe { run(task, e, false) }
    })
}

/// `fallocate(fd, mode, offset, len)` through the ring; `-EINVAL` for a mode bit that is
/// no `FALLOC_FL_*` flag.
#[unsafe(no_mangle)]
pub extern "C" fn keel_file_fallocate(task: keel_task, fd: c_int, mode: c_int, offset: u64, len: u64) -> keel_result {
    guard(|| {
        let mode = raw::fallocate_flags(mode).map_err(neg)?;
        let e = opcode::Fallocate::new(types::Fd(fd), len).offset(offset).mode(mode.bits() as c_int).build();
        // SAFETY: the entry points at no memory.
        unsafe { run(task, e, false) }
    })
}

/// An iovec array argument's count, as preadv(2) checks it: `-EINVAL` for a negative
/// count, `-EFAULT` for a null array of nonzero count.
fn iov_count(iov: *const libc::iovec, iovcnt: c_int) -> Result<u32, i64> {
    let count = u32::try_from(iovcnt).map_err(|_| err(libc::EINVAL))?;
    if iov.is_null() && count != 0 {
        return Err(err(libc::EFAULT));
    }
    Ok(count)
}
