//! Handing a C function to keel from any thread, as a fiber (`keel_executor_post`,
//! `keel_dispatcher_submit`): the body that runs it on the executor's thread and
//! publishes its result through the task's atomics (dispatch rule 2), and the arming that
//! makes a body dropped unrun publish one too.
//!
//! Handover rules (cited as "handover rule N"):
//! 1. The function runs on a fiber of the task's switcher and stack size, whose stack
//!    the executor that runs it takes from its own pool at its first resume (keel-core's
//!    fiber rule 8): it may yield, sleep and do i/o on that executor like an attached
//!    task. Its result (or `-KEEL_EPANICKED`, `-KEEL_EBADRESULT`) is stored, then
//!    `REMOTE_DONE` (Release).
//! 2. `remote_armed` is set before the body goes to keel and cleared by whoever
//!    publishes: the body when its function returns, or its `Drop` if keel drops it
//!    unrun (cancelled before its first resume, its executor destroyed, no stack for
//!    it), which publishes `-ECANCELED`. An attach keel refuses hands the body back; it is
//!    disarmed first, so dropping it publishes nothing and the task's earlier state
//!    stands. So every handed-over run publishes exactly once, and `keel_task_result`
//!    never waits on a run that can no longer end.

use super::{KEEL_SWITCHER_UCONTEXT, REMOTE_DONE, TaskStorage, keel_task};
use crate::body::restore_current;
use crate::result::{KEEL_EBADRESULT, KEEL_EPANICKED, KEEL_ERRNO_MAX, err};
use core::ffi::c_void;
use core::sync::atomic::Ordering;
use keel_core::{AttachError, Dispatcher, ExecutorHandle, Fiber, FiberAttrs, TaskError, TaskHandle, TaskResult};
use keel_linux::ucontext::UcontextSwitch;

/// A C task function.
type CFn = unsafe extern "C-unwind" fn(keel_task, *mut c_void) -> i64;

/// What a handed-over body carries to the executor's thread: the task's storage, the
/// caller's argument and handle. Only the task's atomics (and, inside the run, its
/// `fiber` and the thread's `CURRENT`, body rule 1) are touched there.
struct Remote {
    t: *const TaskStorage,
    user: *mut c_void,
    task: keel_task,
}

// SAFETY: dispatch rule 2 and handover rule 2: on the executor's thread the body touches
// the task's atomics only (and `fiber`, an atomic), and `user` is the caller's, handed
// over by the contract of `post` and `submit`.
unsafe impl Send for Remote {}

impl Remote {
    fn storage(&self) -> &TaskStorage {
        // SAFETY: the task lives until its run has published (destroy refuses while
        // `REMOTE_QUEUED`), and publishing is the last thing either path does.
        unsafe { &*self.t }
    }

    /// Handover rule 1: runs the function on this fiber and publishes its result.
    fn run(self, fib: &mut Fiber, f: CFn) -> TaskResult {
        let t = self.storage();
        t.fiber.store(fib, Ordering::Relaxed);
        restore_current(t);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: the caller's function and argument (contract of post and submit).
            unsafe { f(self.task, self.user) }
        }));
        restore_current(core::ptr::null());
        t.fiber.store(core::ptr::null_mut(), Ordering::Relaxed);
        let r = match r {
            Ok(v) if v >= -KEEL_ERRNO_MAX => v,
            Ok(_) => -KEEL_EBADRESULT,
            Err(_) => -KEEL_EPANICKED,
        };
        self.publish(r);
        core::mem::forget(self);
        if r >= 0 { Ok(r as u64) } else { Err(TaskError::Failed(r)) }
    }

    /// Stores the result, then `REMOTE_DONE`, once (handover rule 2).
    fn publish(&self, r: i64) {
        let t = self.storage();
        // Relaxed: the flag is touched by the thread that holds the body (this one) and,
        // before the handover, by the submitter, whose attach published its store.
        t.remote_armed.store(false, Ordering::Relaxed);
        // Relaxed, then Release: dispatch rule 2 (the result before the state; pairs with
        // `keel_task_result`'s Acquire).
        t.remote_ret.store(r, Ordering::Relaxed);
        t.remote.store(REMOTE_DONE, Ordering::Release);
    }
}

impl Drop for Remote {
    /// Handover rule 2: a body dropped unrun publishes `-ECANCELED` if still armed.
    fn drop(&mut self) {
        // Relaxed: as in `publish`; a refused attach disarmed on this thread first.
        if self.storage().remote_armed.load(Ordering::Relaxed) {
            self.publish(err(libc::ECANCELED));
        }
    }
}

/// Where a run is handed over to: an executor's handle, or a dispatcher.
pub(crate) trait Target {
    /// `attach_fiber_with::<Sw>` or `submit_fiber_with::<Sw>`.
    fn hand<Sw, F>(&self, run: TaskHandle, attrs: FiberAttrs, body: F) -> Result<TaskHandle, AttachError<F>>
    where
        Sw: keel_core::FiberSwitch,
        F: FnOnce(&mut Fiber) -> TaskResult + Send + 'static;
}

impl Target for ExecutorHandle {
    fn hand<Sw, F>(&self, run: TaskHandle, attrs: FiberAttrs, body: F) -> Result<TaskHandle, AttachError<F>>
    where
        Sw: keel_core::FiberSwitch,
        F: FnOnce(&mut Fiber) -> TaskResult + Send + 'static,
    {
        self.attach_fiber_with::<Sw, F, TaskResult>(run, attrs, body)
    }
}

impl Target for &'static Dispatcher {
    fn hand<Sw, F>(&self, run: TaskHandle, attrs: FiberAttrs, body: F) -> Result<TaskHandle, AttachError<F>>
    where
        Sw: keel_core::FiberSwitch,
        F: FnOnce(&mut Fiber) -> TaskResult + Send + 'static,
    {
        self.submit_fiber_with::<Sw, F, TaskResult>(run, attrs, body)
    }
}

/// Hands run `run` of `t` over to `target` as a fiber running `f(task, user)`. On a
/// refusal the body comes back disarmed and is dropped (handover rule 2); the error is
/// mapped by `code`.
pub(crate) fn hand_over<T: Target>(
    target: &T,
    t: &'static TaskStorage,
    run: TaskHandle,
    task: keel_task,
    f: CFn,
    user: *mut c_void,
    code: impl Fn(&AttachError<()>) -> i64,
) -> Result<TaskHandle, i64> {
    let a = t.attrs.get();
    let attrs =
        FiberAttrs { stack_size: if a.stack_size == 0 { 64 * 1024 } else { a.stack_size }, ..FiberAttrs::DEFAULT };
    let cap = Remote { t, user, task };
    // Relaxed: published to the executor's thread by the attach's own Release.
    t.remote_armed.store(true, Ordering::Relaxed);
    let body = move |fib: &mut Fiber| cap.run(fib, f);
    let handed = if a.switcher == KEEL_SWITCHER_UCONTEXT {
        target.hand::<UcontextSwitch, _>(run, attrs, body)
    } else {
        target.hand::<keel_core::AsmSwitch, _>(run, attrs, body)
    };
    match handed {
        Ok(run) => Ok(run),
        Err(refused) => {
            // Relaxed: the body is back on this thread; dropped below, after this.
            t.remote_armed.store(false, Ordering::Relaxed);
            let (e, body) = refused.split();
            drop(body);
            Err(code(&e))
        }
    }
}
