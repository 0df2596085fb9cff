//! The calls on a task's runs: `attach`, `cancel`, `result`, `destroy` (task rules in
//! `mod.rs`).

use super::{
    FREE, KEEL_SWITCHER_UCONTEXT, REMOTE_DONE, REMOTE_NONE, REMOTE_QUEUED, TaskStorage, keel_task, link, next_of,
    task_here, unlink,
};
use crate::body::{body_for, keel_task_fn, running, task_result_code};
use crate::executor::{ExecStorage, exec_of, keel_executor, with_ex};
use crate::result::{KEEL_ENOTINTASK, err, guard, keel_result};
use core::ffi::c_void;
use core::sync::atomic::Ordering;
use keel_core::{AttachError, CancelError, DestroyError, Fiber, FiberAttrs, SpawnError, TaskHandle};

/// Attaches the task to the executor as its next run: `fn(task, user)` runs on a fiber
/// (the task's stack), may call `keel_task_yield`, `keel_task_suspend_for` and the i/o
/// calls with this task, and returns the run's result (`>= 0`, or a negated errno).
/// Cheap: no allocation (the stack comes from the executor's spare pool once warm).
///
/// Ownership: `user` stays the caller's; it must stay valid until the run completes.
/// `fn` must not unwind (C++ exceptions) or `longjmp` out. Thread safety: the executor's
/// thread (from another thread, `keel_executor_post`). Errors: `-ESTALE` (either
/// handle), `-KEEL_EWRONGTHREAD`, `-EINVAL` (`fn` NULL), `-EBUSY` (attached already, or a
/// run on another executor or thread not released yet), an errno if no stack could be
/// mapped.
#[unsafe(no_mangle)]
pub extern "C" fn keel_task_attach(
    ex: keel_executor,
    task: keel_task,
    f: keel_task_fn,
    user: *mut c_void,
) -> keel_result {
    guard(|| attach_to(exec_of(ex)?, task, f, user, None))
}

/// Attaches `child` to the executor of the running task `task` as its next run, from
/// inside `task`'s own function: as `keel_task_attach` on that executor, without naming
/// it (keel-core's `Fiber::spawn_fiber`, spawn rules). `child` runs once `task` suspends
/// (yields, waits, joins), by its priority; join it with `keel_task_join`.
///
/// Ownership and `fn`'s duties: as `keel_task_attach`. Thread safety: only from inside
/// `task`'s own function. Errors: `-KEEL_ENOTINTASK` (`task` is not the running task),
/// `-ESHUTDOWN` (the executor is being destroyed: `task` is unwinding a cancel), and
/// `keel_task_attach`'s: `-ESTALE`, `-KEEL_EWRONGTHREAD`, `-EINVAL` (`fn` NULL),
/// `-EBUSY` (`child` attached already, `task` itself among them, or a run on another
/// executor not released yet), an errno if no stack could be mapped.
#[unsafe(no_mangle)]
pub extern "C" fn keel_task_spawn(
    task: keel_task,
    child: keel_task,
    f: keel_task_fn,
    user: *mut c_void,
) -> keel_result {
    guard(|| {
        let (t, fib) = running(task)?;
        let s = t.exec.get();
        if s.is_null() {
            return Err(-KEEL_ENOTINTASK);
        }
        // SAFETY: a listed task's executor is live (executor rule 3); `task` runs on it.
        let s = unsafe { &*s };
        attach_to(s, child, f, user, Some(fib))
    })
}

/// `keel_task_attach` of `task` to `s`, through the executor, or (`spawn`) through the
/// running fiber of a task of `s` (spawn rules).
fn attach_to(
    s: &'static ExecStorage,
    task: keel_task,
    f: keel_task_fn,
    user: *mut c_void,
    mut spawn: Option<&mut Fiber>,
) -> Result<i64, i64> {
    let t = task_here(task)?;
    let f = f.ok_or(err(libc::EINVAL))?;
    t.not_dispatched()?;
    let run = t.run.get().ok_or(err(libc::ESTALE))?;
    if !t.exec.get().is_null() && !core::ptr::eq(t.exec.get(), s) {
        // Task rule 3: give it up where it is (fails while attached there).
        // SAFETY: a task's executor is live while the task is listed (executor rule 3).
        let old = unsafe { &*t.exec.get() };
        with_ex!(old.inner(), e => e.release(run)).map_err(destroy_error)?;
        unlink(t);
    }
    let a = t.attrs.get();
    let fattrs =
        FiberAttrs { stack_size: if a.stack_size == 0 { 64 * 1024 } else { a.stack_size }, ..FiberAttrs::DEFAULT };
    let ucontext = a.switcher == KEEL_SWITCHER_UCONTEXT;
    t.returned.set(None);
    let run = super::settle::settle(super::settle::was_remote(t), || {
        let body = body_for(t, task, f, user);
        match spawn.as_deref_mut() {
            Some(fib) if ucontext => fib
                .spawn_fiber_with::<keel_linux::ucontext::UcontextSwitch, _, _>(run, fattrs, body)
                .map_err(spawn_error),
            Some(fib) => fib.spawn_fiber(run, fattrs, body).map_err(spawn_error),
            None if ucontext => {
                with_ex!(s.inner(), e => e.attach_fiber_with::<keel_linux::ucontext::UcontextSwitch, _, _>(run, fattrs, body).map_err(attach_error))
            }
            None => with_ex!(s.inner(), e => e.attach_fiber(run, fattrs, body).map_err(attach_error)),
        }
    })?;
    t.run.set(Some(run));
    t.attached_once.set(true);
    t.kept.set(None);
    // Relaxed: this thread's own state from here on (the dispatched run is over).
    t.remote.store(REMOTE_NONE, Ordering::Relaxed);
    if t.exec.get().is_null() {
        link(s, t);
    }
    Ok(0)
}

fn spawn_error<B>(e: SpawnError<B>) -> i64 {
    match e {
        SpawnError::Attach(e) => attach_error(e),
        SpawnError::TearingDown(_) => err(libc::ESHUTDOWN),
        _ => -KEEL_ENOTINTASK,
    }
}

fn attach_error<B>(e: AttachError<B>) -> i64 {
    match e {
        AttachError::Stale(_) | AttachError::ExecutorGone(_) => err(libc::ESTALE),
        AttachError::AlreadyAttached(_) | AttachError::OwnedElsewhere(_) => err(libc::EBUSY),
        AttachError::NoStack { errno, .. } => -(errno.0 as i64),
        _ => err(libc::EINVAL),
    }
}

fn destroy_error(e: DestroyError) -> i64 {
    match e {
        DestroyError::Stale => err(libc::ESTALE),
        DestroyError::Attached | DestroyError::OwnedElsewhere => err(libc::EBUSY),
        _ => err(libc::EAGAIN),
    }
}

/// The task's executor and latest run, on this thread; `-EINVAL` if it has never been
/// attached to a live executor.
pub(crate) fn owned(task: keel_task) -> Result<(&'static TaskStorage, &'static ExecStorage, TaskHandle), i64> {
    let t = task_here(task)?;
    let s = t.exec.get();
    if s.is_null() {
        return Err(err(libc::EINVAL));
    }
    let run = t.run.get().ok_or(err(libc::ESTALE))?;
    // SAFETY: a listed task's executor is live (executor rule 3).
    Ok((t, unsafe { &*s }, run))
}

/// Cancels the task's current run, whatever its state: one that never started completes
/// at once as cancelled; a started one is resumed and every keel call it makes returns
/// `-ECANCELED` (its i/o is cancelled; a completion that won the race is still reported).
///
/// Thread safety: the executor's thread. Errors: `-ESTALE`, `-KEEL_EWRONGTHREAD`,
/// `-EINVAL` (not attached), `-EALREADY` (completed already).
#[unsafe(no_mangle)]
pub extern "C" fn keel_task_cancel(task: keel_task) -> keel_result {
    guard(|| {
        #[cfg(not(keel_planted = "c_args"))]
        let (_, s, run) = owned(task)?;
        // A planted bug for the fuzz target `c_args` (off in every normal build): a cancel
        // through a stale or null handle gives -ENOENT, not -ESTALE.
        #[cfg(keel_planted = "c_args")]
        let (_, s, run) = owned(task).map_err(|e| if e == err(libc::ESTALE) { err(libc::ENOENT) } else { e })?;
        with_ex!(s.inner(), e => e.cancel(run)).map(|_| 0).map_err(|e| match e {
            CancelError::Stale => err(libc::ESTALE),
            CancelError::TooLate => err(libc::EALREADY),
            _ => err(libc::EINVAL),
        })
    })
}

/// The result of the task's latest run: the value its function returned (`>= 0`), or its
/// error: the negated errno it returned, `-ECANCELED`, `-KEEL_EPANICKED` (a panic inside
/// keel during the run), `-KEEL_EBADRESULT` (it returned a value below
/// `-KEEL_ERRNO_MAX`). `-EINPROGRESS` while it runs, `-ENODATA` if never attached.
///
/// Thread safety: the executor's thread (any thread if unowned). Errors: `-ESTALE`,
/// `-KEEL_EWRONGTHREAD`.
#[unsafe(no_mangle)]
pub extern "C" fn keel_task_result(task: keel_task) -> keel_result {
    guard(|| {
        let t = task_here(task)?;
        // Acquire: pairs with the worker's Release of `REMOTE_DONE`, publishing the result.
        match t.remote.load(Ordering::Acquire) {
            REMOTE_QUEUED => return Err(err(libc::EINPROGRESS)),
            REMOTE_DONE => {
                // Relaxed: published by the Acquire above.
                let r = t.remote_ret.load(Ordering::Relaxed);
                return if r < 0 { Err(r) } else { Ok(r) };
            }
            _ => {}
        }
        if let Some(kept) = t.kept.get() {
            return Ok(kept);
        }
        let (_, s, run) = match owned(task) {
            Ok(o) => o,
            Err(_) => return Err(err(libc::ENODATA)),
        };
        match with_ex!(s.inner(), e => e.result(run)) {
            Ok(Some(r)) => task_result_code(r),
            Ok(None) => Err(err(libc::EINPROGRESS)),
            Err(_) => Err(err(libc::ESTALE)),
        }
    })
}

/// Destroys the task: every handle to it is stale from now on; caller storage is the
/// caller's again.
///
/// Thread safety: the executor's thread (any thread if unowned). Errors: `-ESTALE`
/// (null, stale, destroyed already), `-KEEL_EWRONGTHREAD`, `-EBUSY` (attached: wait for
/// it, or cancel it and run the executor, first).
#[unsafe(no_mangle)]
pub extern "C" fn keel_task_destroy(task: keel_task) -> keel_result {
    guard(|| {
        let t = task_here(task)?;
        t.not_dispatched()?;
        if let Ok((_, s, run)) = owned(task) {
            with_ex!(s.inner(), e => e.destroy(run)).map_err(destroy_error)?;
            unlink(t);
        } else if super::settle::was_remote(t)
            && let Some(run) = t.run.get()
        {
            // Settle rule 3: no executor may still name it when its storage goes back.
            super::settle::destroy_unowned(run)?;
        }
        // Release: pairs with `task_of`'s Acquire; later calls see a dead task.
        t.live_gen.store(0, Ordering::Release);
        if t.allocated.get() {
            // SAFETY: allocated by `create` from this list; nothing lives in it now.
            unsafe { FREE.put((t as *const TaskStorage).cast_mut().cast(), next_of) };
        }
        Ok(0)
    })
}

/// `sizeof` keel's task storage as this library was built.
#[unsafe(no_mangle)]
pub extern "C" fn keel_task_storage_size() -> usize {
    core::mem::size_of::<TaskStorage>()
}
