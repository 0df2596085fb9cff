//! What an executor reports: counters (`keel_executor_get_stats`), time accounting
//! (`keel_executor_get_times`), the attached count and its storage size.

use super::{ExecStorage, exec_of, keel_executor, with_ex};
use crate::result::{err, guard, keel_result};
use crate::task::{keel_task, owned};

/// An executor's counters, from `keel_executor_get_stats`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct keel_executor_stats {
    /// Task resumptions (items of work that ran a task).
    pub resumed: u64,
    /// Task runs completed.
    pub completed: u64,
    /// Resumptions per CPU priority: high, normal, low.
    pub per_priority: [u64; 3],
    /// Timers that fired.
    pub timers_fired: u64,
    /// Operations submitted to the ring.
    pub io_submitted: u64,
    /// Completions reaped.
    pub io_completed: u64,
    /// Times the executor parked (waited for work).
    pub parks: u64,
    /// Tasks attached right now.
    pub attached: u64,
}

/// Copies the executor's counters into `*out`.
///
/// Thread safety: the executor's thread only. Errors: `-ESTALE`, `-KEEL_EWRONGTHREAD`,
/// `-EINVAL` (`out` NULL).
///
/// # Safety
/// `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_executor_get_stats(ex: keel_executor, out: *mut keel_executor_stats) -> keel_result {
    guard(|| {
        let s = exec_of(ex)?;
        if out.is_null() {
            return Err(err(libc::EINVAL));
        }
        let st = with_ex!(s.inner(), e => e.stats());
        let c = keel_executor_stats {
            resumed: st.resumed,
            completed: st.completed,
            per_priority: st.per_priority,
            timers_fired: st.timers_fired,
            io_submitted: st.io_submitted,
            io_completed: st.io_completed,
            parks: st.parks,
            attached: st.attached as u64,
        };
        // SAFETY: valid for a write (caller), checked non-null.
        unsafe { out.write(c) };
        Ok(0)
    })
}

/// The number of tasks attached to the executor right now.
///
/// Thread safety: the executor's thread only. Errors: `-ESTALE`, `-KEEL_EWRONGTHREAD`.
#[unsafe(no_mangle)]
pub extern "C" fn keel_executor_attached(ex: keel_executor) -> keel_result {
    guard(|| {
        let s = exec_of(ex)?;
        Ok(with_ex!(s.inner(), e => e.attached()) as i64)
    })
}

/// Which backend performs the executor's operations: `KEEL_BACKEND_RING` (io_uring) or
/// `KEEL_BACKEND_EPOLL` (`keel_executor_attr::backend`); 0 for an executor made without a
/// ring (`ring_entries` 0), which performs no i/o.
///
/// Thread safety: the executor's thread only. Errors: `-ESTALE`, `-KEEL_EWRONGTHREAD`,
/// `-EBUSY` (asked while the executor's driver is lent to other code).
#[unsafe(no_mangle)]
pub extern "C" fn keel_executor_backend(ex: keel_executor) -> keel_result {
    guard(|| {
        let s = exec_of(ex)?;
        Ok(match s.inner() {
            super::Inner::Ring(x) => {
                // SAFETY: executor rule 1: the executor never moves out of its storage.
                let e = unsafe { core::pin::Pin::new_unchecked(x) };
                backend_code(e.with_driver(|d| d.backend()).map_err(|_| err(libc::EBUSY))?)
            }
            super::Inner::RingAcct(x) => {
                // SAFETY: as above.
                let e = unsafe { core::pin::Pin::new_unchecked(x) };
                backend_code(e.with_driver(|d| d.backend()).map_err(|_| err(libc::EBUSY))?)
            }
            _ => 0,
        })
    })
}

fn backend_code(b: keel_linux::Backend) -> i64 {
    match b {
        keel_linux::Backend::Ring => i64::from(super::attr::KEEL_BACKEND_RING),
        keel_linux::Backend::Epoll => i64::from(super::attr::KEEL_BACKEND_EPOLL),
    }
}

/// `sizeof` keel's executor storage as this library was built (compare with
/// `KEEL_EXECUTOR_STORAGE_SIZE` to catch a header from another build).
#[unsafe(no_mangle)]
pub extern "C" fn keel_executor_storage_size() -> usize {
    core::mem::size_of::<ExecStorage>()
}

/// An executor's time accounting, from `keel_executor_get_times` (all 0 unless it was
/// made with `keel_executor_attr::accounting`).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct keel_executor_times {
    /// Nanoseconds spent in task code.
    pub task_ns: u64,
    /// Nanoseconds in the run loop itself (not tasks, not parked).
    pub loop_ns: u64,
    /// Nanoseconds parked, waiting for work.
    pub parked_ns: u64,
    /// Resumptions per CPU priority: high, normal, low.
    pub per_priority: [u64; 3],
    /// Operations submitted.
    pub submissions: u64,
    /// Completions reaped.
    pub completions: u64,
}

/// Copies the executor's time accounting into `*out`.
///
/// Thread safety: the executor's thread only. Errors: `-ESTALE`, `-KEEL_EWRONGTHREAD`,
/// `-EINVAL` (`out` NULL).
///
/// # Safety
/// `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_executor_get_times(ex: keel_executor, out: *mut keel_executor_times) -> keel_result {
    guard(|| {
        let s = exec_of(ex)?;
        if out.is_null() {
            return Err(err(libc::EINVAL));
        }
        let t = with_ex!(s.inner(), e => e.exec_times());
        let c = keel_executor_times {
            task_ns: t.task_ns,
            loop_ns: t.loop_ns,
            parked_ns: t.parked_ns,
            per_priority: t.per_priority,
            submissions: t.submissions,
            completions: t.completions,
        };
        // SAFETY: valid for a write (caller), checked non-null.
        unsafe { out.write(c) };
        Ok(0)
    })
}

/// A task's time accounting over its runs on its executor, from `keel_task_get_times`
/// (times 0 unless the executor accounts time).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default)]
pub struct keel_task_times {
    /// Nanoseconds running.
    pub running_ns: u64,
    /// Nanoseconds suspended.
    pub suspended_ns: u64,
    /// Nanoseconds ready but waiting for the executor.
    pub ready_wait_ns: u64,
    /// The longest single run between two suspensions.
    pub longest_run_ns: u64,
    /// Resumptions.
    pub resumptions: u64,
    /// Operations it initiated.
    pub io_initiated: u64,
    /// Its operations that completed.
    pub io_completed: u64,
}

/// Copies the task's time accounting into `*out`.
///
/// Thread safety: its executor's thread. Errors: `-ESTALE`, `-KEEL_EWRONGTHREAD`,
/// `-EINVAL` (`out` NULL, or the task is not owned by a live executor).
///
/// # Safety
/// `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_task_get_times(task: keel_task, out: *mut keel_task_times) -> keel_result {
    guard(|| {
        let (_, s, run) = owned(task)?;
        if out.is_null() {
            return Err(err(libc::EINVAL));
        }
        let t = with_ex!(s.inner(), e => e.task_times(run)).map_err(|_| err(libc::ESTALE))?;
        let c = keel_task_times {
            running_ns: t.running_ns,
            suspended_ns: t.suspended_ns,
            ready_wait_ns: t.ready_wait_ns,
            longest_run_ns: t.longest_run_ns,
            resumptions: t.resumptions,
            io_initiated: t.io_initiated,
            io_completed: t.io_completed,
        };
        // SAFETY: valid for a write (caller), checked non-null.
        unsafe { out.write(c) };
        Ok(0)
    })
}
