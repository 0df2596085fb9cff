//! `semaphore_handoff`: two tasks pass one permit back and forth N times (ns per
//! hand-off). Goal: keel at most 0.25x tokio.
//!
//! Both tasks loop `let p = sem.acquire().await; drop(p);`. They queue on a semaphore
//! with no permit, then one permit is added: from then on each drop hands the permit to
//! the other task, which is queued (no barging: the dropping task's next `acquire`
//! queues behind it), so every hand-off is a wake and a switch to the other task.
//!
//! - keel: `wait::LocalSemaphore` (the same-thread flavour: no atomics) on a keel
//!   executor, two future tasks; `run(usize::MAX, None)` until both completed.
//! - keel-shared: the same with `wait::Semaphore` (the cross-thread flavour: a spin lock
//!   and `TaskHandle::wake`).
//! - tokio: `tokio::sync::Semaphore` (fair, FIFO) on a current-thread runtime, two
//!   spawned tasks; the main task yields once so both queue before the permit is added.

use crate::goals::{Goal, Op};
use crate::harness::{Case, Impl, Timed, Unit};
use keel_core::wait::{Flavour, Local, Semaphore, Shared};
use keel_core::{TaskError, TaskSlot};
use std::rc::Rc;
use std::time::Instant;

/// The case.
pub const CASE: Case = Case {
    name: "semaphore_handoff",
    unit: Unit::NsPerOp,
    impls: &[
        Impl { name: "keel", run: keel::<Local> },
        Impl { name: "keel-shared", run: keel::<Shared> },
        Impl { name: "tokio", run: tokio },
    ],
};

/// The goals of this module's cases (see `crate::goals`).
pub const GOALS: &[Goal] = &[Goal::vs("semaphore_handoff", "keel", "tokio", Op::AtMost, 0.25)];

std::thread_local! {
    /// This thread's two task slots for the case (created and destroyed by every trial).
    static SLOTS: [&'static TaskSlot; 2] = [Box::leak(Box::new(TaskSlot::new())), Box::leak(Box::new(TaskSlot::new()))];
}

/// Iterations per task: `iters` hand-offs in all.
fn per_task(iters: u64) -> u64 {
    iters.div_ceil(2)
}

fn keel<F: Flavour>(iters: u64) -> Timed {
    let ex = core::pin::pin!(super::keel_executor()?);
    let ex = ex.into_ref();
    let sem: Rc<Semaphore<F>> = Rc::new(Semaphore::new(0));
    let n = per_task(iters);
    let mut runs = Vec::new();
    for slot in SLOTS.with(|s| *s) {
        let h = super::create_task(slot, "handoff")?;
        let sem = sem.clone();
        let body = async move {
            for _ in 0..n {
                let permit = sem.acquire().await.map_err(TaskError::from)?;
                drop(permit);
            }
            Ok::<(), TaskError>(())
        };
        runs.push(ex.attach(h, body).map_err(|e| format!("attach: {e}"))?);
    }
    ex.run(2, None).map_err(|e| format!("run: {e}"))?;
    if sem.waiters() != 2 {
        return Err(format!("{} waiters queued, not 2", sem.waiters()));
    }
    let start = Instant::now();
    sem.add_permits(1);
    while ex.attached() > 0 {
        ex.run(usize::MAX, None).map_err(|e| format!("run: {e}"))?;
    }
    let elapsed = start.elapsed();
    // One resume per hand-off, plus the two first polls and the last task's return.
    let resumed = ex.stats().resumed;
    if resumed > 2 * n + 3 {
        return Err(format!("{resumed} resumes for {} hand-offs", 2 * n));
    }
    for run in runs {
        match ex.result(run) {
            Ok(Some(Ok(_))) => {}
            other => return Err(format!("task ended with {other:?}")),
        }
        super::destroy_task(ex, run)?;
    }
    if sem.available_permits() != 1 {
        return Err(format!("{} permits left, not 1", sem.available_permits()));
    }
    Ok(elapsed)
}

fn tokio(iters: u64) -> Timed {
    let rt = super::tokio_runtime()?;
    let n = per_task(iters);
    rt.block_on(async move {
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let sem = sem.clone();
                tokio::spawn(async move {
                    for _ in 0..n {
                        drop(sem.acquire().await.expect("never closed"));
                    }
                })
            })
            .collect();
        // Both tasks run once and queue on the empty semaphore.
        tokio::task::yield_now().await;
        let start = Instant::now();
        sem.add_permits(1);
        for t in tasks {
            t.await.map_err(|e| format!("join: {e}"))?;
        }
        let elapsed = start.elapsed();
        if sem.available_permits() != 1 {
            return Err(format!("{} permits left, not 1", sem.available_permits()));
        }
        Ok(elapsed)
    })
}
