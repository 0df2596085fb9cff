//! `keel_executor_post`: handing a task to an executor from any thread.
//!
//! The function goes to the executor through keel-core's `ExecutorHandle::attach_fiber`
//! (remote rules in keel-core's mailbox): it runs on a fiber whose stack the executor
//! takes from its pool when it first runs it, so it may suspend like an attached task
//! (handover rules in `task/handover.rs`). Its result is published with the
//! Release/Acquire pair of dispatch rule 2, and the executor releases the task once it
//! completes.

use super::{exec_anywhere, keel_executor};
use crate::body::keel_task_fn;
use crate::result::{err, guard, keel_result};
use crate::task::handover::hand_over;
use crate::task::settle::settle;
use crate::task::{REMOTE_DONE, REMOTE_QUEUED, keel_task, task_of};
use core::ffi::c_void;
use core::sync::atomic::Ordering;
use keel_core::AttachError;

/// Posts `fn(task, user)` to run once on the executor's thread, from any thread; a parked
/// executor is woken. The function runs on a fiber of the task's switcher and stack size
/// (the stack taken from the executor's pool when it first runs) and may call
/// `keel_task_yield`, `keel_task_suspend_for` and the i/o calls with `task`, as an
/// attached function does. Read its result with `keel_task_result` (`-EINPROGRESS` until
/// then; `-ECANCELED` if it never ran: its executor was destroyed first, or no stack could
/// be mapped for it); the task is unowned again after.
///
/// Ownership: `user` stays the caller's until the run completes. Thread safety: any
/// thread (the task must be unowned and used by one thread at a time). Errors: `-ESTALE`
/// (either handle, or the executor is being destroyed), `-EINVAL` (`fn` NULL), `-EBUSY`
/// (the task is owned by an executor, or posted or dispatched and not done).
#[unsafe(no_mangle)]
pub extern "C" fn keel_executor_post(
    ex: keel_executor,
    task: keel_task,
    f: keel_task_fn,
    user: *mut c_void,
) -> keel_result {
    guard(|| {
        let s = exec_anywhere(ex)?;
        let t = task_of(task)?;
        let f = f.ok_or(err(libc::EINVAL))?;
        t.not_dispatched()?;
        if t.owned_anywhere() {
            return Err(err(libc::EBUSY));
        }
        let run = t.unowned_run().ok_or(err(libc::EBUSY))?;
        let handle = s.remote.ok_or(err(libc::ESTALE))?;
        // Settle rule 2: a task whose last run was remote may not be released yet.
        let was = t.remote.load(Ordering::Acquire);
        // Relaxed: the attach's own Release publishes the task (and this) to the executor;
        // stored before, as the body may run (and store `REMOTE_DONE`) at once.
        t.remote.store(REMOTE_QUEUED, Ordering::Relaxed);
        let posted = settle(was == REMOTE_DONE, || {
            hand_over(&handle, t, run, task, f, user, |e| match e {
                AttachError::Stale(()) | AttachError::ExecutorGone(()) => err(libc::ESTALE),
                _ => err(libc::EBUSY),
            })
        });
        match posted {
            Ok(run) => {
                t.set_run(run);
                Ok(0)
            }
            Err(e) => {
                // Relaxed: as above; nothing was handed over.
                t.remote.store(was, Ordering::Relaxed);
                Err(e)
            }
        }
    })
}
