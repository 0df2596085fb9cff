//! Readiness waits from a task's function (keel-linux's `FiberReady::poll`, ready rules
//! 1-3): any descriptor, keel's or not (an eventfd, a timerfd, a pipe).
//!
//! Thread safety: only from inside the task's own function (body rule 1).

use crate::body::{running, suspend};
use crate::fs::neg;
use crate::result::{err, guard, keel_result};
use crate::task::keel_task;
use core::ffi::c_int;
use core::time::Duration;
use keel_core::Fiber;
use keel_linux::RingDriver;
use keel_linux::flags::raw;
use keel_linux::ready::FiberReady;

/// `poll(&(struct pollfd){fd, events}, 1, timeout)` through the ring
/// (`IORING_OP_POLL_ADD`): suspends the task until `fd` has one of `events` (`POLL*`
/// bits, or `POLLERR`, `POLLHUP`, `POLLNVAL`, which are always reported) and returns the
/// ready mask (> 0). `timeout_ns` < 0 waits without a timeout; 0 asks whether `fd` is
/// ready now. Errors: `-ETIME` (the timeout passed first), `-ECANCELED` (the task was
/// cancelled and the descriptor was not ready before the cancel took), `-EINVAL` (an
/// event bit that is no `POLL*` flag), `-EBADF` (a negative `fd`), `-ESTALE`,
/// `-KEEL_ENOTINTASK`, `-EOPNOTSUPP` (the executor has no ring). `fd` stays the caller's:
/// it must stay open until this returns (closing it meanwhile does not end the wait: the
/// kernel holds the file; the timeout or a cancel does).
#[unsafe(no_mangle)]
pub extern "C" fn keel_poll(task: keel_task, fd: c_int, events: c_int, timeout_ns: i64) -> keel_result {
    guard(|| {
        let events = raw::poll_flags(events).map_err(neg)?;
        if fd < 0 {
            return Err(err(libc::EBADF));
        }
        let (t, fib) = running(task)?;
        fib.with_driver::<RingDriver, _>(|_| ()).ok_or(err(libc::EOPNOTSUPP))?;
        let timeout = u64::try_from(timeout_ns).ok().map(Duration::from_nanos);
        // SAFETY: the caller keeps `fd` open until this returns (the doc), and it is not -1.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        suspend(t, fib, |f: &mut Fiber| f.poll(fd, events, timeout))
            .map(|m| i64::from(keel_linux::ready::poll_bits(m)))
            .map_err(|e| err(e.0))
    })
}
