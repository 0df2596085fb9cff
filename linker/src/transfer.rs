//! Descriptor transfer from a task's function (keel-linux's `FiberTransfer`, transfer
//! rules in `linux/src/transfer/mod.rs`): put a descriptor into the ring's fixed-file
//! table, install one back as a descriptor, send one to another executor's ring and
//! receive it there. Indices are plain `int`s the C program owns, as descriptors are:
//! keel closes one only in `keel_fixed_close` and, once delivered, in `keel_fixed_send`.
//! The executor needs `keel_executor_attr::registered_files`.
//!
//! Thread safety: the `keel_fixed_*` calls and `keel_mailbox_get` only from inside the
//! task's own function (body rule 1); a `keel_mailbox` may be used by any thread and freed
//! by any thread once no call uses it.
//!
//! Errors: `-ENXIO` (no fixed-file table), `-ENFILE` (the table is full), `-EBADF` (a
//! descriptor or an index that holds nothing), `-ENOSPC` (the receiving ring's table is
//! full), `-EOWNERDEAD` (the receiving executor has gone), `-EINVAL` (a send to the
//! task's own ring, a negative index, a NULL mailbox), `-ENOSYS` (the kernel lacks the
//! operation), `-ETIME` (a receive's timeout
//! passed), `-ECANCELED`, `-ESTALE`,
//! `-KEEL_ENOTINTASK`, `-EOPNOTSUPP` (the executor has no ring).

use crate::body::{running, suspend};
use crate::executor::KEEL_NO_TIMEOUT;
use crate::result::{err, guard, keel_result};
use crate::task::keel_task;
use core::ffi::c_int;
use keel_core::Fiber;
use keel_linux::transfer::{FiberTransfer, FixedFd, Mailbox, TransferError};

/// Another executor's inbox (opaque): from `keel_mailbox_get`, freed with
/// `keel_mailbox_free`.
pub struct keel_mailbox(Mailbox);

/// A transfer error as a negated errno (the module doc).
fn code(e: TransferError) -> i64 {
    err(match e {
        TransferError::NoTable => libc::ENXIO,
        TransferError::TableFull => libc::ENFILE,
        TransferError::BadSlot | TransferError::BadDescriptor => libc::EBADF,
        TransferError::TargetTableFull => libc::ENOSPC,
        TransferError::TargetGone => libc::EOWNERDEAD,
        TransferError::SameExecutor | TransferError::WrongExecutor => libc::EINVAL,
        TransferError::Unsupported { .. } => libc::ENOSYS,
        TransferError::TimedOut => libc::ETIME,
        TransferError::Cancelled => libc::ECANCELED,
        TransferError::NotOnRing => libc::EOPNOTSUPP,
        TransferError::Os(e) => e.0,
        _ => libc::EIO,
    })
}

/// The index back to the C program without closing it.
fn release(f: FixedFd) -> i64 {
    i64::from(f.into_socket().index())
}

/// Runs `op` on the running task's fiber with index `index` as a `FixedFd`, which goes
/// back to the C program afterwards unless `op` consumed it.
fn with_index(task: keel_task, index: c_int, op: impl FnOnce(&mut Fiber, FixedFd) -> Result<i64, i64>) -> keel_result {
    guard(|| {
        let index = u32::try_from(index).map_err(|_| err(libc::EINVAL))?;
        let (t, fib) = running(task)?;
        // SAFETY: the C program owns its indices (the module doc); the handle goes back
        // to it (`release`) unless the call closed or sent the index.
        let fixed = unsafe { fib.adopt_index(index) }.map_err(code)?;
        suspend(t, fib, |f| op(f, fixed))
    })
}

/// Puts the open file of `fd` at a free index of the ring's fixed-file table
/// (`IORING_OP_FILES_UPDATE`) and returns the index; `fd` stays the caller's and may be
/// closed at once.
#[unsafe(no_mangle)]
pub extern "C" fn keel_fixed_register(task: keel_task, fd: c_int) -> keel_result {
    guard(|| {
        if fd < 0 {
            return Err(err(libc::EBADF));
        }
        let (t, fib) = running(task)?;
        // SAFETY: the caller keeps `fd` open until this returns, and it is not -1.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        suspend(t, fib, |f| f.register_fd(fd)).map(release).map_err(code)
    })
}

/// A new descriptor for the file at `index` (`IORING_OP_FIXED_FD_INSTALL`, Linux 6.8,
/// else `-ENOSYS`), close-on-exec if `cloexec` is nonzero; the caller owns it. The index
/// stays.
#[unsafe(no_mangle)]
pub extern "C" fn keel_fixed_install(task: keel_task, index: c_int, cloexec: c_int) -> keel_result {
    with_index(task, index, |f, fixed| {
        let r = f.install_fd(&fixed, cloexec != 0);
        release(fixed);
        r.map(|fd| i64::from(std::os::fd::IntoRawFd::into_raw_fd(fd))).map_err(code)
    })
}

/// Cancels the index's operations, then closes it through the ring; it is closed
/// whatever this returns.
#[unsafe(no_mangle)]
pub extern "C" fn keel_fixed_close(task: keel_task, index: c_int) -> keel_result {
    with_index(task, index, |f, fixed| f.close_fd(fixed).map(|()| 0).map_err(code))
}

/// Sends the file at `index` to the ring of `to`, announced by `key`
/// (`IORING_OP_MSG_RING`, `IORING_MSG_SEND_FD`): the index's operations are cancelled
/// first, and once the target has the file the index here is closed (0). On an error
/// the index is still the caller's, except for `-EBADF` (it held nothing).
///
/// # Safety
/// `to` is NULL or a live mailbox from `keel_mailbox_get`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_fixed_send(
    task: keel_task,
    index: c_int,
    to: *const keel_mailbox,
    key: u32,
) -> keel_result {
    // SAFETY: the caller passes NULL or a live mailbox (the doc).
    let Some(to) = (unsafe { to.as_ref() }) else { return err(libc::EINVAL) };
    with_index(task, index, |f, fixed| match f.send_fd(fixed, &to.0, key) {
        Ok(()) => Ok(0),
        Err(e) => {
            e.fixed.map(release);
            Err(code(e.error))
        }
    })
}

/// Waits for a descriptor sent to this task's ring with `key` and returns its index
/// here; gives up after `timeout_ns` nanoseconds (`KEEL_NO_TIMEOUT`: no limit, 0: only
/// look) with `-ETIME`. Several tasks may wait for one key: arrivals go to them oldest
/// first, one each. A cancelled wait returns `-ECANCELED`; an arrival handed to it goes to
/// the next receive of its key.
#[unsafe(no_mangle)]
pub extern "C" fn keel_fixed_receive(task: keel_task, key: u32, timeout_ns: u64) -> keel_result {
    guard(|| {
        let (t, fib) = running(task)?;
        let timeout = (timeout_ns != KEEL_NO_TIMEOUT).then(|| core::time::Duration::from_nanos(timeout_ns));
        suspend(t, fib, |f| f.receive_fd(key, timeout)).map(release).map_err(code)
    })
}

/// Writes the mailbox of the running task's ring to `*out` (free it with
/// `keel_mailbox_free`); hand it to tasks of other executors, on any thread.
///
/// # Safety
/// `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_mailbox_get(task: keel_task, out: *mut *mut keel_mailbox) -> keel_result {
    guard(|| {
        if out.is_null() {
            return Err(err(libc::EINVAL));
        }
        let (_, fib) = running(task)?;
        let mb = fib.mailbox().map_err(code)?;
        // SAFETY: `out` is valid for a write (checked non-NULL; the caller's duty).
        unsafe { out.write(Box::into_raw(Box::new(keel_mailbox(mb)))) };
        Ok(0)
    })
}

/// Frees a mailbox from `keel_mailbox_get` (NULL: nothing). From any thread, once no call
/// uses it.
///
/// # Safety
/// `mailbox` is NULL or from `keel_mailbox_get`, not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_mailbox_free(mailbox: *mut keel_mailbox) {
    if !mailbox.is_null() {
        // SAFETY: from `Box::into_raw` in `keel_mailbox_get`, freed once (the caller's duty).
        drop(unsafe { Box::from_raw(mailbox) });
    }
}
