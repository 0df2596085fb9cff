//! The rest of the server surface from a task's function, on its executor's ring (as
//! `fs.rs` and `net.rs`: each call builds its SQE and suspends the task until the
//! operation completes): file metadata and names (statx, unlinkat, renameat2, mkdirat, each
//! relative to the working directory or, in the `_at` forms, to an open directory),
//! sendmsg/recvmsg (datagram addresses, `SCM_RIGHTS`), a signalfd read, and the cap on the
//! kernel's worker pool of an executor's thread (keel-linux's `fs/meta.rs`, `net/msg.rs`,
//! `signal.rs`, `ring/iowq.rs`).
//!
//! Thread safety: only from inside the task's own function (body rule 1), except
//! `keel_executor_set_iowq_max_workers` (the executor's thread, executor rule 2).
//! Errors of every task call: `-ESTALE`, `-KEEL_ENOTINTASK`, `-EOPNOTSUPP` (no ring),
//! `-ECANCELED`, `-EFAULT` (a NULL pointer where one is needed), `-EINVAL` (a flag keel
//! checks), `-EBADF` (a negative directory descriptor other than `AT_FDCWD`), or the
//! operation's own negated errno.

use crate::executor::{Inner, exec_of, keel_executor};
use crate::fs::run;
use crate::result::{err, guard, keel_result};
use crate::task::keel_task;
use core::ffi::{c_char, c_int, c_void};
use io_uring::{opcode, types};

/// A directory descriptor for the `_at` calls: `AT_FDCWD` or a descriptor (`-EBADF` for any
/// other negative number, before anything is submitted).
fn dir(dirfd: c_int) -> Result<types::Fd, i64> {
    if dirfd < 0 && dirfd != libc::AT_FDCWD {
        return Err(err(libc::EBADF));
    }
    Ok(types::Fd(dirfd))
}

/// `statx(AT_FDCWD, path, flags, mask, out)` through the ring; `out` is a `struct statx`
/// (`<sys/stat.h>` with `_GNU_SOURCE`, or `<linux/stat.h>`), filled on success.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or a writable `struct statx`
/// nothing else uses until this returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_file_statx(
    task: keel_task,
    path: *const c_char,
    flags: c_int,
    mask: u32,
    out: *mut c_void,
) -> keel_result {
    // SAFETY: the caller's contract, as `keel_file_statx_at`'s.
    unsafe { keel_file_statx_at(task, libc::AT_FDCWD, path, flags, mask, out) }
}

/// `statx(dirfd, path, flags, mask, out)` through the ring: `path` relative to the open
/// directory `dirfd` (or `AT_FDCWD`; an absolute path ignores it; `AT_EMPTY_PATH` with ""
/// is `dirfd` itself). `dirfd` must stay open until this returns, as for every call here.
///
/// # Safety
/// As `keel_file_statx`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_file_statx_at(
    task: keel_task,
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mask: u32,
    out: *mut c_void,
) -> keel_result {
    guard(|| {
        if path.is_null() || out.is_null() {
            return Err(err(libc::EFAULT));
        }
        let e = opcode::Statx::new(dir(dirfd)?, path, out.cast()).flags(flags).mask(mask).build();
        // SAFETY: `path` and `out` are the caller's until `run` returns, after completion.
        unsafe { run(task, e, false) }
    })
}

/// `unlinkat(AT_FDCWD, path, flags)` through the ring: a file, or with `AT_REMOVEDIR` an
/// empty directory; any other flag is `-EINVAL` before anything is submitted.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_file_unlink(task: keel_task, path: *const c_char, flags: c_int) -> keel_result {
    // SAFETY: the caller's contract, as `keel_file_unlink_at`'s.
    unsafe { keel_file_unlink_at(task, libc::AT_FDCWD, path, flags) }
}

/// `unlinkat(dirfd, path, flags)` through the ring: `keel_file_unlink` relative to the
/// open directory `dirfd` (or `AT_FDCWD`).
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_file_unlink_at(
    task: keel_task,
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
) -> keel_result {
    guard(|| {
        if path.is_null() {
            return Err(err(libc::EFAULT));
        }
        if flags & !libc::AT_REMOVEDIR != 0 {
            return Err(err(libc::EINVAL));
        }
        let e = opcode::UnlinkAt::new(dir(dirfd)?, path).flags(flags).build();
        // SAFETY: `path` is the caller's until `run` returns.
        unsafe { run(task, e, false) }
    })
}

/// `renameat2(AT_FDCWD, from, AT_FDCWD, to, flags)` through the ring (`RENAME_NOREPLACE`,
/// `RENAME_EXCHANGE`, `RENAME_WHITEOUT`).
///
/// # Safety
/// `from` and `to` are NULL or NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_file_rename(
    task: keel_task,
    from: *const c_char,
    to: *const c_char,
    flags: u32,
) -> keel_result {
    // SAFETY: the caller's contract, as `keel_file_rename_at`'s.
    unsafe { keel_file_rename_at(task, libc::AT_FDCWD, from, libc::AT_FDCWD, to, flags) }
}

/// `renameat2(from_dirfd, from, to_dirfd, to, flags)` through the ring: `keel_file_rename`
/// with each path relative to its open directory (or `AT_FDCWD`).
///
/// # Safety
/// `from` and `to` are NULL or NUL-terminated strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_file_rename_at(
    task: keel_task,
    from_dirfd: c_int,
    from: *const c_char,
    to_dirfd: c_int,
    to: *const c_char,
    flags: u32,
) -> keel_result {
    guard(|| {
        if from.is_null() || to.is_null() {
            return Err(err(libc::EFAULT));
        }
        let e = opcode::RenameAt::new(dir(from_dirfd)?, from, dir(to_dirfd)?, to).flags(flags).build();
        // SAFETY: both paths are the caller's until `run` returns.
        unsafe { run(task, e, false) }
    })
}

/// `mkdirat(AT_FDCWD, path, mode)` through the ring; `-EINVAL` for a mode above `07777`.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_file_mkdir(task: keel_task, path: *const c_char, mode: u32) -> keel_result {
    // SAFETY: the caller's contract, as `keel_file_mkdir_at`'s.
    unsafe { keel_file_mkdir_at(task, libc::AT_FDCWD, path, mode) }
}

/// `mkdirat(dirfd, path, mode)` through the ring: `keel_file_mkdir` relative to the open
/// directory `dirfd` (or `AT_FDCWD`).
///
/// # Safety
/// `path` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_file_mkdir_at(
    task: keel_task,
    dirfd: c_int,
    path: *const c_char,
    mode: u32,
) -> keel_result {
    guard(|| {
        if path.is_null() {
            return Err(err(libc::EFAULT));
        }
        let mode = keel_linux::flags::raw::mode(mode).map_err(crate::fs::neg)?;
        let e = opcode::MkDirAt::new(dir(dirfd)?, path).mode(mode.bits()).build();
        // SAFETY: `path` is the caller's until `run` returns.
        unsafe { run(task, e, false) }
    })
}

/// `sendmsg(fd, msg, flags | MSG_NOSIGNAL)` through the ring; returns the bytes sent.
/// `msg` may carry an address (`msg_name`) and `SCM_RIGHTS` descriptors (`msg_control`),
/// which stay the caller's. `-EINVAL` for a flag that is no `MSG_*` flag of send(2).
///
/// # Safety
/// `msg` is NULL or a valid `struct msghdr` whose buffers, address and control stay valid
/// and unused by anything else until this returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_socket_sendmsg(
    task: keel_task,
    fd: c_int,
    msg: *const libc::msghdr,
    flags: c_int,
) -> keel_result {
    guard(|| {
        if msg.is_null() {
            return Err(err(libc::EFAULT));
        }
        let flags = keel_linux::flags::raw::send_flags(flags).map_err(crate::fs::neg)?;
        let flags = (flags | keel_linux::flags::SendFlags::NOSIGNAL).bits();
        let e = opcode::SendMsg::new(types::Fd(fd), msg).flags(flags).build();
        // SAFETY: `msg` and what it points at are the caller's until `run` returns.
        unsafe { run(task, e, false) }
    })
}

/// `recvmsg(fd, msg, flags | MSG_CMSG_CLOEXEC)` through the ring; returns the bytes
/// received and, as recvmsg(2), updates `msg_namelen`, `msg_controllen` and `msg_flags`
/// (`MSG_TRUNC`, `MSG_CTRUNC`). Descriptors received with `SCM_RIGHTS` are the caller's
/// (close-on-exec): close them. `-EINVAL` for a flag that is no `MSG_*` flag of recv(2).
///
/// # Safety
/// `msg` is NULL or a valid `struct msghdr` whose buffers, address and control are
/// writable and unused by anything else until this returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_socket_recvmsg(
    task: keel_task,
    fd: c_int,
    msg: *mut libc::msghdr,
    flags: c_int,
) -> keel_result {
    guard(|| {
        if msg.is_null() {
            return Err(err(libc::EFAULT));
        }
        let flags = keel_linux::flags::raw::recv_flags(flags).map_err(crate::fs::neg)?;
        let flags = flags.bits() | libc::MSG_CMSG_CLOEXEC as u32;
        let e = opcode::RecvMsg::new(types::Fd(fd), msg).flags(flags).build();
        // SAFETY: `msg` and what it points at are the caller's until `run` returns.
        unsafe { run(task, e, false) }
    })
}

/// Waits for a signal: one `read(sfd, info, sizeof(struct signalfd_siginfo))` through the
/// ring on a signalfd the caller made (`signalfd(2)` without `SFD_NONBLOCK`, its signals
/// blocked first in every thread: keel-linux's signal rules 1-2). Fills `info` (a
/// `struct signalfd_siginfo`) and returns its size. A wait cancelled before a signal came
/// consumes none.
///
/// # Safety
/// `info` is NULL or a writable `struct signalfd_siginfo` unused by anything else until
/// this returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_signal_wait(task: keel_task, sfd: c_int, info: *mut c_void) -> keel_result {
    guard(|| {
        if info.is_null() {
            return Err(err(libc::EFAULT));
        }
        let len = core::mem::size_of::<libc::signalfd_siginfo>() as u32;
        let e = opcode::Read::new(types::Fd(sfd), info.cast(), len).offset(u64::MAX).build();
        // SAFETY: `info` is the caller's until `run` returns.
        unsafe { run(task, e, false) }
    })
}

/// Caps the kernel's worker pool of the executor's thread at `bounded` and `unbounded`
/// threads (`IORING_REGISTER_IOWQ_MAX_WORKERS`; 0 leaves one as it is); writes the limits
/// before to `old` (NULL: not wanted). The pool is the thread's: every executor on it
/// shares it (keel-linux's iowq rules). `-EOPNOTSUPP` for an executor without a ring,
/// `-EBUSY` from inside one of its tasks (its driver is in use),
/// `-ESTALE`, `-KEEL_EWRONGTHREAD`.
///
/// # Safety
/// `old` is NULL or two writable `uint32_t`s.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_executor_set_iowq_max_workers(
    ex: keel_executor,
    bounded: u32,
    unbounded: u32,
    old: *mut u32,
) -> keel_result {
    guard(|| {
        let s = exec_of(ex)?;
        let prev = match s.inner() {
            Inner::Ring(x) => {
                // SAFETY: executor rule 1: the executor never moves out of its storage.
                let e = unsafe { core::pin::Pin::new_unchecked(x) };
                e.with_driver(|d| d.set_iowq_max_workers([bounded, unbounded]))
            }
            Inner::RingAcct(x) => {
                // SAFETY: as above.
                let e = unsafe { core::pin::Pin::new_unchecked(x) };
                e.with_driver(|d| d.set_iowq_max_workers([bounded, unbounded]))
            }
            Inner::Sleep(_) | Inner::SleepAcct(_) => return Err(err(libc::EOPNOTSUPP)),
        };
        let prev = prev.map_err(|_| err(libc::EBUSY))?.map_err(crate::fs::neg)?;
        if !old.is_null() {
            // SAFETY: the caller's two `uint32_t`s.
            unsafe { core::ptr::copy_nonoverlapping(prev.as_ptr(), old, 2) };
        }
        Ok(0)
    })
}
