//! `switch_mixed`: one executor alternating between a fiber task (keel's asm switch) and
//! a future task (the stackless switcher), so every pick switches kind (ns per switch).
//!
//! - keel: both tasks at the same priority loop `yield_now` N times; `run(usize::MAX,
//!   None)` until both have completed; the time is divided by 2 (2N switches, reported
//!   per switch). Includes starting and finishing the two tasks, noise at N yields.

use crate::harness::{Case, Impl, Timed, Unit};
use keel_core::{Fiber, TaskError, TaskSlot, rt};
use std::time::Instant;

/// The case.
pub const CASE: Case = Case { name: "switch_mixed", unit: Unit::NsPerOp, impls: &[Impl { name: "keel", run: keel }] };

std::thread_local! {
    /// This thread's task slots for the case, fiber and future (created and destroyed by
    /// every trial).
    static SLOTS: [&'static TaskSlot; 2] = [Box::leak(Box::new(TaskSlot::new())), Box::leak(Box::new(TaskSlot::new()))];
}

fn keel(iters: u64) -> Timed {
    let ex = core::pin::pin!(super::keel_fiber_executor(1)?);
    let ex = ex.into_ref();
    let [fiber_slot, future_slot] = SLOTS.with(|s| *s);
    let fiber = super::create_task(fiber_slot, "mixed_fiber")?;
    let future = super::create_task(future_slot, "mixed_future")?;
    let fiber_body = move |f: &mut Fiber| {
        for _ in 0..iters {
            f.yield_now()?;
        }
        Ok(iters)
    };
    let future_body = async move {
        for _ in 0..iters {
            rt::yield_now().await?;
        }
        Ok::<u64, TaskError>(iters)
    };
    let fiber = ex.attach_fiber(fiber, super::FIBER_ATTRS, fiber_body).map_err(|e| format!("attach fiber: {e}"))?;
    let future = ex.attach(future, future_body).map_err(|e| format!("attach future: {e}"))?;
    let start = Instant::now();
    while ex.attached() > 0 {
        ex.run(usize::MAX, None).map_err(|e| format!("run: {e}"))?;
    }
    let elapsed = start.elapsed();
    // Each task: one resume per yield plus the first.
    let resumed = ex.stats().resumed;
    if resumed != 2 * (iters + 1) {
        return Err(format!("{resumed} resumes for 2 x {iters} yields"));
    }
    for (h, kind) in [(fiber, "fiber"), (future, "future")] {
        match ex.result(h) {
            Ok(Some(Ok(n))) if n == iters => {}
            other => return Err(format!("the {kind} task ended with {other:?}")),
        }
        super::destroy_task(ex, h)?;
    }
    Ok(elapsed / 2)
}
