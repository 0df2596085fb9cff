//! A C function as a fiber body, and the calls it makes on its own task: `yield`,
//! `suspend_for`.
//!
//! Body rules (cited as "body rule N"):
//! 1. While a task's C function runs (between its suspensions), this thread's `CURRENT`
//!    names that task's storage and the storage's `fiber` names its `Fiber`; around each
//!    suspension and after the function returns, `CURRENT` is cleared. So a task-side
//!    call checks `CURRENT == task`: a call naming another task, or made outside any task
//!    body (another thread, the executor's caller), gets `-KEEL_ENOTINTASK` and never
//!    switches a stack that is not running.
//! 2. `keel_executor_run` and `keel_executor_destroy` save `CURRENT` and put it back when
//!    they return, so a task body that runs or destroys another executor (nested) finds
//!    itself current again.
//! 3. The function's return value maps to the run's result: `>= 0` succeeds with it,
//!    `-1..=-KEEL_ERRNO_MAX` fails with it, anything else fails with `-KEEL_EBADRESULT`.
//!    A panic in keel during the run (caught by keel-linux's fiber catcher) ends it as
//!    `-KEEL_EPANICKED`.

use crate::result::{
    KEEL_EBADRESULT, KEEL_EFPCONTROL, KEEL_ENOTINTASK, KEEL_EPANICKED, KEEL_ERRNO_MAX, err, guard, keel_result,
};
use crate::task::{TaskStorage, keel_task, task_of};
use core::cell::Cell;
use core::ffi::c_void;
use core::ptr::null;
use core::sync::atomic::Ordering;
use keel_core::{Fiber, TaskError, TaskResult};

/// A task's function: runs on the task's fiber, returns the run's result (`>= 0`, or a
/// negated errno). It may unwind only as a Rust panic (`C-unwind`, for task functions
/// written in Rust): the run then ends as `-KEEL_EPANICKED`.
pub type keel_task_fn = Option<unsafe extern "C-unwind" fn(task: keel_task, user: *mut c_void) -> i64>;

std::thread_local! {
    static CURRENT: Cell<*const TaskStorage> = const { Cell::new(null()) };
}

#[inline]
pub(crate) fn save_current() -> *const TaskStorage {
    CURRENT.with(Cell::get)
}

#[inline]
pub(crate) fn restore_current(t: *const TaskStorage) {
    CURRENT.with(|c| c.set(t));
}

/// The fiber body for run `task` of `t`: calls `f(task, user)` (body rules 1 and 3).
pub(crate) fn body_for(
    t: &'static TaskStorage,
    task: keel_task,
    f: unsafe extern "C-unwind" fn(keel_task, *mut c_void) -> i64,
    user: *mut c_void,
) -> impl FnOnce(&mut Fiber) -> TaskResult + 'static {
    move |fib: &mut Fiber| {
        t.fiber.store(fib, Ordering::Relaxed);
        restore_current(t);
        // SAFETY: `f` is the caller's task function with the argument it gave (the
        // documented contract of `keel_task_attach`).
        let r = unsafe { f(task, user) };
        restore_current(null());
        t.fiber.store(core::ptr::null_mut(), Ordering::Relaxed);
        let r = if r >= 0 {
            Ok(r as u64)
        } else if r >= -KEEL_ERRNO_MAX {
            Err(TaskError::Failed(r))
        } else {
            Err(TaskError::Failed(-KEEL_EBADRESULT))
        };
        t.returned.set(Some(task_result_code(r).unwrap_or_else(|e| e)));
        r
    }
}

/// A run's result as a C result (body rule 3).
pub(crate) fn task_result_code(r: TaskResult) -> Result<i64, i64> {
    match r {
        Ok(v) => Ok(v.min(i64::MAX as u64) as i64),
        Err(TaskError::Failed(c)) => Err(c),
        Err(TaskError::Cancelled) => Err(err(libc::ECANCELED)),
        Err(TaskError::Panicked(_)) => Err(-KEEL_EPANICKED),
        Err(TaskError::FpControlChanged { .. }) => Err(-KEEL_EFPCONTROL),
        Err(_) => Err(err(libc::EIO)),
    }
}

/// The running task named by `task`, with its fiber (body rule 1).
///
/// Fast path: `CURRENT`, when not null, names a live task's storage (body rule 1), so a handle
/// whose storage is `CURRENT` needs no null or alignment test before its generation is
/// compared (a live task's generation is never 0). Any other handle takes
/// [`not_running`], which tells a stale handle (`-ESTALE`) from a live one that is not
/// running (`-KEEL_ENOTINTASK`), as the full checks in that order would.
#[inline(always)]
pub(crate) fn running(task: keel_task) -> Result<(&'static TaskStorage, &'static mut Fiber), i64> {
    let cur = save_current();
    if cur.is_null() || !core::ptr::eq(cur, task.storage.cast::<TaskStorage>()) {
        return Err(not_running(task));
    }
    // SAFETY: body rule 1: `CURRENT` names a live task's storage while its function runs,
    // and the storage outlives the run (task rule 1: an attached task is not destroyed).
    let t = unsafe { &*cur };
    // Acquire: pairs with init's Release store, as in `task_of`.
    if t.live_gen.load(core::sync::atomic::Ordering::Acquire) != task.generation {
        return Err(err(libc::ESTALE));
    }
    let f = t.fiber.load(Ordering::Relaxed);
    if f.is_null() {
        return Err(-KEEL_ENOTINTASK);
    }
    // SAFETY: body rule 1: the fiber is live while its function runs, and only this
    // call uses it now (the function is inside this call).
    Ok((t, unsafe { &mut *f }))
}

/// The error for a handle that does not name `CURRENT`: stale or null (`-ESTALE`), else
/// not the running task (`-KEEL_ENOTINTASK`).
#[cold]
#[inline(never)]
fn not_running(task: keel_task) -> i64 {
    match task_of(task) {
        Err(e) => e,
        Ok(_) => -KEEL_ENOTINTASK,
    }
}

/// Runs a suspension point: `CURRENT` is cleared while the task is switched out (body
/// rule 1).
#[inline(always)]
pub(crate) fn suspend<R>(t: &'static TaskStorage, fib: &mut Fiber, op: impl FnOnce(&mut Fiber) -> R) -> R {
    restore_current(null());
    let r = op(fib);
    restore_current(t);
    r
}

/// Puts the calling task at the back of its priority's run queue.
///
/// Thread safety: only from inside the task's own function. Errors: `-ESTALE`,
/// `-KEEL_ENOTINTASK` (not the running task), `-ECANCELED` (the task is cancelled: return).
#[unsafe(no_mangle)]
pub extern "C" fn keel_task_yield(task: keel_task) -> keel_result {
    guard(|| {
        let (t, fib) = running(task)?;
        suspend(t, fib, |f| f.yield_now()).map(|()| 0).map_err(|_| err(libc::ECANCELED))
    })
}

/// Suspends the calling task for `ns` nanoseconds on the executor's clock.
///
/// Thread safety: only from inside the task's own function. Errors: as `keel_task_yield`.
#[unsafe(no_mangle)]
pub extern "C" fn keel_task_suspend_for(task: keel_task, ns: u64) -> keel_result {
    guard(|| {
        let (t, fib) = running(task)?;
        let d = core::time::Duration::from_nanos(ns);
        suspend(t, fib, |f| f.sleep(d)).map(|()| 0).map_err(|_| err(libc::ECANCELED))
    })
}

/// First half of `keel_task_yield_inline` (keel.h), which makes the switch itself, inlined
/// into the calling function, so that no call frame straddles it. Returns 0 with
/// `*regs` set: the caller switches now, on `*regs`, then calls `keel_task_yield_end`.
/// Returns 1 when this task cannot switch inline (the ucontext switcher, an
/// AddressSanitizer build): the yield has been made out of line already and no end call
/// follows. Use `keel_task_yield_inline`, not this.
///
/// Thread safety: only from inside the task's own function. Errors: as `keel_task_yield`
/// (`-ECANCELED` only after the out-of-line yield).
///
/// # Safety
/// `regs` is valid for a write. After 0, the caller switches out on `*regs` with keel's
/// x86_64 suspend sequence before any other keel call, then calls `keel_task_yield_end`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_task_yield_begin(task: keel_task, regs: *mut *mut c_void) -> keel_result {
    guard(|| {
        if regs.is_null() {
            return Err(err(libc::EINVAL));
        }
        let (t, fib) = running(task)?;
        // SAFETY: on `Some`, the caller switches on the regs (this function's contract).
        match unsafe { fib.begin_foreign_yield() } {
            Some(r) => {
                // Body rule 1: not current while switched out; `keel_task_yield_end` puts
                // it back.
                restore_current(null());
                // SAFETY: the caller's pointer, checked non-null.
                unsafe { regs.write(r.as_ptr().cast()) };
                Ok(0)
            }
            None => suspend(t, fib, |f| f.yield_now()).map(|()| 1).map_err(|_| err(libc::ECANCELED)),
        }
    })
}

/// Second half of `keel_task_yield_inline`, after the switch: the task is current again.
/// Returns 0, or `-ECANCELED` (the task is cancelled: return).
///
/// Thread safety: only from inside the task's own function, right after its inline
/// switch. Errors: `-ESTALE`, `-KEEL_ENOTINTASK` (no fiber: not inside a task function).
#[unsafe(no_mangle)]
pub extern "C" fn keel_task_yield_end(task: keel_task) -> keel_result {
    guard(|| {
        let t = task_of(task)?;
        let f = t.fiber.load(Ordering::Relaxed);
        // Body rule 1: between the halves no task is current; and the caller must be the
        // named task's function, on its stack (any other caller would make a task current
        // that is not running).
        // SAFETY: body rule 1: a non-null `fiber` is live while its task's function runs
        // (or is switched out inside it); it is only read here.
        if f.is_null() || !save_current().is_null() || !unsafe { &*f }.on_own_stack() {
            return Err(-KEEL_ENOTINTASK);
        }
        restore_current(t);
        // SAFETY: as above.
        if unsafe { &*f }.is_cancelled() { Err(err(libc::ECANCELED)) } else { Ok(0) }
    })
}
