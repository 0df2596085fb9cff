//! `yield`: one task yields to its executor N times (ns per yield).
//!
//! - keel: a future task looping `rt::yield_now().await`; `run(usize::MAX, None)` until
//!   it has completed.
//! - keel-acct: the same on an executor with time accounting
//!   (`with_accounting::<TscAccounting>()`: one `rdtsc` per resumption).
//! - tokio: one spawned task looping `tokio::task::yield_now().await` on a
//!   current-thread runtime.
//! - tokio-wake: the same task yielding by waking itself and returning `Pending` once
//!   ([`WakeYield`]): tokio's cheapest yield. `yield_now` defers its wake until the
//!   scheduler has polled its driver (a `park_yield`, which reads the clock: about 45%
//!   of tokio's yield in a cpu-clock profile here), while a self-wake goes straight to
//!   the back of the run queue, as keel's yield does.
//!
//! Both times include starting and finishing the one task, which is noise at N yields.

use crate::goals::{Goal, Op};
use crate::harness::{Case, Impl, Timed, Unit};
use keel_core::{Accounting, NoAccounting, TaskError, TaskSlot, TscAccounting, rt};
use std::time::Instant;

/// The case.
pub const CASE: Case = Case {
    name: "yield",
    unit: Unit::NsPerOp,
    impls: &[
        Impl { name: "keel", run: keel::<NoAccounting> },
        Impl { name: "keel-acct", run: keel::<TscAccounting> },
        TOKIO,
        TOKIO_WAKE,
    ],
};

/// The goals of this module's cases (see `crate::goals`).
pub const GOALS: &[Goal] = &[Goal::vs("yield", "keel", "tokio-wake", Op::AtMost, 0.08)];

/// The tokio impl (shared with `fiber_yield`).
pub(super) const TOKIO: Impl = Impl { name: "tokio", run: tokio };

/// The tokio-wake impl (shared with `fiber_yield`).
pub(super) const TOKIO_WAKE: Impl = Impl { name: "tokio-wake", run: tokio_wake };

std::thread_local! {
    /// This thread's task slot for the case (created and destroyed by every trial).
    static SLOT: &'static TaskSlot = Box::leak(Box::new(TaskSlot::new()));
}

fn keel<A: Accounting>(iters: u64) -> Timed {
    let ex = core::pin::pin!(super::keel_executor()?.with_accounting::<A>());
    let ex = ex.into_ref();
    let h = super::create_task(SLOT.with(|s| *s), "yield")?;
    let body = async move {
        for _ in 0..iters {
            rt::yield_now().await?;
        }
        Ok::<(), TaskError>(())
    };
    let h = ex.attach(h, body).map_err(|e| format!("attach: {e}"))?;
    let start = Instant::now();
    while ex.attached() > 0 {
        ex.run(usize::MAX, None).map_err(|e| format!("run: {e}"))?;
    }
    let elapsed = start.elapsed();
    // One resume per yield plus the last: anything else means yield_now did not yield.
    let resumed = ex.stats().resumed;
    if resumed != iters + 1 {
        return Err(format!("{resumed} resumes for {iters} yields"));
    }
    match ex.result(h) {
        Ok(Some(Ok(_))) => {}
        other => return Err(format!("task ended with {other:?}")),
    }
    ex.destroy(h).map_err(|e| format!("destroy: {e}"))?;
    Ok(elapsed)
}

fn tokio(iters: u64) -> Timed {
    let rt = super::tokio_runtime()?;
    rt.block_on(async move {
        let start = Instant::now();
        let task = tokio::spawn(async move {
            for _ in 0..iters {
                tokio::task::yield_now().await;
            }
        });
        task.await.map_err(|e| format!("join: {e}"))?;
        Ok(start.elapsed())
    })
}

fn tokio_wake(iters: u64) -> Timed {
    let rt = super::tokio_runtime()?;
    rt.block_on(async move {
        let start = Instant::now();
        let task = tokio::spawn(async move {
            for _ in 0..iters {
                WakeYield(false).await;
            }
        });
        task.await.map_err(|e| format!("join: {e}"))?;
        Ok(start.elapsed())
    })
}

/// A yield by hand: `Pending` once, after waking its own task, then ready.
pub(super) struct WakeYield(pub(super) bool);

impl std::future::Future for WakeYield {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}
