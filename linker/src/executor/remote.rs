//! `keel_executor_post`: handing a task to an executor from any thread.
//!
//! keel-core attaches fibers only on the executor's own thread; from another thread it
//! takes a future through an `ExecutorHandle` (remote rules in keel-core's mailbox). So a
//! posted C function runs to completion on the executor's thread without suspending (as a
//! dispatched one: dispatch rules 1-2 in `dispatch.rs`): its result is published with the
//! same Release/Acquire pair, and the executor releases the task once it completes.

use super::{exec_anywhere, keel_executor};
use crate::body::keel_task_fn;
use crate::dispatch::Sendable;
use crate::result::{err, guard, keel_result};
use crate::task::settle::settle;
use crate::task::{REMOTE_DONE, REMOTE_QUEUED, keel_task, task_of};
use core::ffi::c_void;
use core::sync::atomic::Ordering;
use keel_core::AttachError;

/// Posts `fn(task, user)` to run once on the executor's thread, from any thread; a parked
/// executor is woken. The function runs to completion: `keel_task_yield` and the other
/// suspension calls return `-KEEL_ENOTINTASK` inside it. Read its result with
/// `keel_task_result` (`-EINPROGRESS` until then); the task is unowned again after.
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
            let cap = Sendable(t, user, task);
            handle.attach(run, async move { cap.run(f) }).map_err(|e| match e {
                AttachError::Stale(_) | AttachError::ExecutorGone(_) => err(libc::ESTALE),
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
