//! `keel_task_join`: a task's function waits for another task's result (keel-core's
//! `Fiber::join`, join rules in `core/src/task/join.rs`).

use crate::body::{running, suspend, task_result_code};
use crate::executor::KEEL_NO_TIMEOUT;
use crate::result::{err, guard, keel_result};
use crate::task::{keel_task, task_here};
use keel_core::JoinError;

/// Waits until the latest run of `other` completes and returns its result as
/// `keel_task_result` reports it: the value its function returned (`>= 0`), or its error
/// (a negated errno it returned, `-ECANCELED` if it was cancelled, ...). Gives up after
/// `timeout_ns` nanoseconds (`KEEL_NO_TIMEOUT`: no limit, 0: only look).
///
/// Only from inside the function of `task` (a running task), for a task of the same
/// thread. Any number of tasks may join one run; each join is woken once, by its end.
/// Cancelling `task` ends the join (`-ECANCELED`) and leaves `other` alone. Errors:
/// `-ETIME` (the timeout passed), `-ECANCELED` (`task` was cancelled), `-EDEADLK` (`other`
/// is `task` itself), `-ENODATA` (`other` was never attached), `-ESTALE` (a stale handle,
/// or the run ended and the task was attached again before the join looked),
/// `-EBUSY` (`other` is submitted to a dispatcher), `-EAGAIN` (too many joins from other
/// executors wait for it), `-KEEL_ENOTINTASK`, `-KEEL_EWRONGTHREAD`.
#[unsafe(no_mangle)]
pub extern "C" fn keel_task_join(task: keel_task, other: keel_task, timeout_ns: u64) -> keel_result {
    guard(|| {
        let (t, fib) = running(task)?;
        let o = task_here(other)?;
        o.not_dispatched()?;
        let run = o.run.get().ok_or(err(libc::ENODATA))?;
        let timeout = (timeout_ns != KEEL_NO_TIMEOUT).then(|| core::time::Duration::from_nanos(timeout_ns));
        match suspend(t, fib, |f| f.join(run, timeout)) {
            Ok(r) => task_result_code(r),
            Err(JoinError::TimedOut) => Err(err(libc::ETIME)),
            Err(JoinError::Cancelled) => Err(err(libc::ECANCELED)),
            Err(JoinError::JoinSelf) => Err(err(libc::EDEADLK)),
            Err(JoinError::NeverAttached) => Err(err(libc::ENODATA)),
            Err(JoinError::TooManyWaiters) => Err(err(libc::EAGAIN)),
            Err(_) => Err(err(libc::ESTALE)),
        }
    })
}
