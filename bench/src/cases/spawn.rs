//! `spawn`: start a trivial task and run it to completion, one at a time (ns per task).
//!
//! - keel: one task created once; each iteration attaches an `async {}` body with the
//!   handle the previous attach returned, then `run`s it to completion.
//! - tokio: current-thread runtime; inside one `block_on`, `spawn` a trivial future and
//!   await its `JoinHandle`.

use crate::goals::{Goal, Op};
use crate::harness::{Case, Impl, Timed, Unit};
use keel_core::TaskSlot;
use std::time::Instant;

/// The case.
pub const CASE: Case = Case {
    name: "spawn",
    unit: Unit::NsPerOp,
    impls: &[Impl { name: "keel", run: keel }, Impl { name: "tokio", run: tokio }],
};

/// The goals of this module's cases (see `crate::goals`).
pub const GOALS: &[Goal] = &[Goal::vs("spawn", "keel", "tokio", Op::AtMost, 0.08)];

std::thread_local! {
    /// This thread's task slot for the case (created and destroyed by every trial).
    static SLOT: &'static TaskSlot = Box::leak(Box::new(TaskSlot::new()));
}

fn keel(iters: u64) -> Timed {
    let ex = core::pin::pin!(super::keel_executor()?);
    let ex = ex.into_ref();
    let mut h = super::create_task(SLOT.with(|s| *s), "spawn")?;
    let start = Instant::now();
    for _ in 0..iters {
        h = ex.attach(h, async {}).map_err(|e| format!("attach: {e}"))?;
        ex.run(usize::MAX, None).map_err(|e| format!("run: {e}"))?;
    }
    let elapsed = start.elapsed();
    let completed = ex.stats().completed;
    if completed != iters {
        return Err(format!("{completed} of {iters} runs completed"));
    }
    super::destroy_task(ex, h)?;
    Ok(elapsed)
}

fn tokio(iters: u64) -> Timed {
    let rt = super::tokio_runtime()?;
    rt.block_on(async move {
        let start = Instant::now();
        for _ in 0..iters {
            tokio::spawn(async {}).await.map_err(|e| format!("join: {e}"))?;
        }
        Ok(start.elapsed())
    })
}
