//! Reusing a task after a run on another thread (posted or dispatched): settle rules.
//!
//! 1. A posted or dispatched function publishes its result (`REMOTE_DONE`) from inside
//!    its run, before keel's executor has completed and released the task (a release can
//!    also wait for a wake still in flight to it). Until the release, keel's claim of the
//!    task fails (`OwnedElsewhere`), which the C calls report as `-EBUSY`.
//! 2. So `attach`, `post`, `submit` and `destroy` of a task whose last run was remote
//!    retry that claim for a bounded time ([`SETTLE_TRIES`] yields of the calling
//!    thread), then give `-EBUSY` (try again later). Not on a hot path: a remote run's
//!    release is one executor pass away.
//! 3. `destroy` of such a task claims it through a ring-less executor of the calling
//!    thread's own (made on first need, one allocation per thread), so the task's storage
//!    is handed back only once no executor names it.

use super::{REMOTE_DONE, TaskStorage};
use crate::result::err;
use core::sync::atomic::Ordering;
use keel_core::{Config, DestroyError, Executor, TaskHandle};
use keel_linux::SleepDriver;
use std::pin::Pin;

/// Claim attempts before `-EBUSY` (settle rule 2).
pub(crate) const SETTLE_TRIES: u32 = 10_000;

/// Whether `t`'s last run was remote (settle rule 1).
pub(crate) fn was_remote(t: &TaskStorage) -> bool {
    // Acquire: pairs with the worker's Release of `REMOTE_DONE`.
    t.remote.load(Ordering::Acquire) == REMOTE_DONE
}

/// Runs `f`, and while the last run was remote (`remote`), again until it stops failing
/// with `-EBUSY` (settle rule 2).
pub(crate) fn settle<R>(remote: bool, mut f: impl FnMut() -> Result<R, i64>) -> Result<R, i64> {
    if !remote {
        return f();
    }
    for _ in 0..SETTLE_TRIES {
        match f() {
            Err(e) if e == err(libc::EBUSY) => std::thread::yield_now(),
            r => return r,
        }
    }
    f()
}

std::thread_local! {
    static CLAIMER: std::cell::OnceCell<Option<Pin<Box<Executor<SleepDriver>>>>> =
        const { std::cell::OnceCell::new() };
}

/// Settle rule 3: destroys the unowned run `run` through this thread's claimer.
pub(crate) fn destroy_unowned(run: TaskHandle) -> Result<(), i64> {
    settle(true, || {
        CLAIMER.with(|c| {
            let ex = c.get_or_init(|| Executor::new(SleepDriver::new(), Config::default()).ok().map(Box::pin));
            let ex = ex.as_ref().ok_or(err(libc::ENOMEM))?;
            ex.as_ref().destroy(run).map_err(|e| match e {
                DestroyError::Stale => err(libc::ESTALE),
                DestroyError::WakeInFlight | DestroyError::OwnedElsewhere | DestroyError::Attached => err(libc::EBUSY),
                _ => err(libc::EBUSY),
            })
        })
    })
}
