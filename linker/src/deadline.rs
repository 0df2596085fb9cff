//! Deadlines and per-operation flags from a task's function (keel-linux's `deadline`
//! rules 1-4 and `rw_flags` rules 1-3).
//!
//! Thread safety: only from inside the task's own function (body rule 1).

use crate::body::{keel_task_fn, running};
use crate::fs::{neg, run};
use crate::result::{buf_len, err, guard, keel_result};
use crate::task::keel_task;
use core::ffi::{c_int, c_void};
use core::time::Duration;
use keel_linux::deadline::{self, Deadline};
use keel_linux::rw_flags::{RwFlags, RwKind, RwOp};

/// Runs `func(task, user)` with a deadline `timeout_ns` from now on every ring operation
/// the task submits inside it (`keel_file_*`, `keel_socket_*`, `keel_poll` without a
/// timeout, ...); an operation the deadline cancels returns `-ETIME` (the deadline won:
/// the kernel cancelled it; an operation that completed first, or that the kernel could
/// not cancel any more, returns its own result). Nested calls take the earliest
/// deadline. Returns what `func` returns. Errors: `-EFAULT` (a NULL `func`), `-ESTALE`,
/// `-KEEL_ENOTINTASK`.
///
/// # Safety
/// `func` is safe to call with `task` and `user` (as a task function is).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_within(
    task: keel_task,
    timeout_ns: u64,
    func: keel_task_fn,
    user: *mut c_void,
) -> keel_result {
    guard(|| {
        let f = func.ok_or(err(libc::EFAULT))?;
        let (_, fib) = running(task)?;
        let me = fib.task();
        let _scope = deadline::scope(me, Deadline::after(Duration::from_nanos(timeout_ns))); // closed on return
        // SAFETY: the caller's contract: `func` may be called with `task` and `user`.
        Ok(unsafe { f(task, user) })
    })
}

/// `preadv2(fd, &(struct iovec){buf, len}, 1, offset, flags)` through the ring; returns
/// the bytes read. `flags`: `RWF_NOWAIT` (`-EAGAIN` rather than waiting), `RWF_DSYNC`,
/// `RWF_SYNC`, `RWF_APPEND`; `-EINVAL` for `RWF_HIPRI` (polled i/o is a ring option, not
/// an operation's) or any other bit, before anything is submitted.
///
/// # Safety
/// `buf` is NULL with `len` 0, or `len` writable bytes nothing else uses until this returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_file_read_flags(
    task: keel_task,
    fd: c_int,
    buf: *mut c_void,
    len: usize,
    offset: u64,
    flags: c_int,
) -> keel_result {
    guard(|| {
        let flags = RwFlags::from_raw(flags).map_err(neg)?;
        let len = buf_len(buf, len)?;
        let e = RwOp { kind: RwKind::Read, fd, offset, len, flags }.sqe(buf.cast());
        // SAFETY: `buf` is the caller's until `run` returns, after the completion.
        unsafe { run(task, e, true) }
    })
}

/// `pwritev2(fd, &(struct iovec){buf, len}, 1, offset, flags)` through the ring; returns
/// the bytes written. Flags as for `keel_file_read_flags` (`RWF_APPEND`: at the end of
/// the file whatever `offset`).
///
/// # Safety
/// `buf` is NULL with `len` 0, or `len` readable bytes that stay valid until this returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_file_write_flags(
    task: keel_task,
    fd: c_int,
    buf: *const c_void,
    len: usize,
    offset: u64,
    flags: c_int,
) -> keel_result {
    guard(|| {
        let flags = RwFlags::from_raw(flags).map_err(neg)?;
        let len = buf_len(buf, len)?;
        let e = RwOp { kind: RwKind::Write, fd, offset, len, flags }.sqe(buf.cast_mut().cast());
        // SAFETY: as in `keel_file_read_flags`; the kernel only reads `buf`.
        unsafe { run(task, e, true) }
    })
}
