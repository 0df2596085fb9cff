//! `join`: start a trivial task and wait for its result from another task, one at a
//! time (ns per spawn + join). Goal: keel at most 0.15x tokio.
//!
//! - keel: two tasks created once. Each iteration attaches the child (`async { 1 }`),
//!   then the parent at a higher priority with `join(child)` as its body, and `run`s
//!   both to completion: the parent runs first and waits (its join links in the child's
//!   list of waiters), the child runs and its end writes the result into the parent's
//!   join and wakes it, the parent returns it (join rule 3: the same-executor path).
//! - tokio: current-thread runtime; inside one `block_on`, `spawn` a trivial future and
//!   await its `JoinHandle` (the same as `spawn`'s tokio impl).
//!
//! On the project's 2-core machine under load (`--quick`): keel about 104 ns, tokio 259 to
//! 311 ns, so 0.34x to 0.40x: the goal is not met. keel's operation is two attaches and
//! three resumes (the join's own share: linking, the result record, one wake, about 150 of
//! the 1,053 instructions callgrind counts per op; `spawn`, one attach and one resume, is
//! 368), while tokio's is one spawn and two polls; keel has no spawn from inside a task,
//! which would save the parent's attach per op (tokio's parent is its `block_on` future).

use crate::goals::{Goal, Op};
use crate::harness::{Case, Impl, Timed, Unit};
use keel_core::join::join;
use keel_core::{Priorities, Priority, TaskAttrs, TaskSlot};
use std::time::Instant;

/// The case.
pub const CASE: Case = Case {
    name: "join",
    unit: Unit::NsPerOp,
    impls: &[Impl { name: "keel", run: keel }, Impl { name: "tokio", run: tokio }],
};

/// The goals of this module's cases (see `crate::goals`).
pub const GOALS: &[Goal] = &[Goal::vs("join", "keel", "tokio", Op::AtMost, 0.15)];

std::thread_local! {
    /// This thread's task slots for the case (created and destroyed by every trial).
    static SLOTS: (&'static TaskSlot, &'static TaskSlot) =
        (Box::leak(Box::new(TaskSlot::new())), Box::leak(Box::new(TaskSlot::new())));
}

fn keel(iters: u64) -> Timed {
    let ex = core::pin::pin!(super::keel_executor()?);
    let ex = ex.into_ref();
    let (child_slot, parent_slot) = SLOTS.with(|s| *s);
    let mut child = super::create_task(child_slot, "join-child")?;
    let high = Priorities { cpu: Priority::High, io: Priority::Normal };
    let mut parent =
        parent_slot.create(TaskAttrs { priority: high, name: "join-parent" }).map_err(|e| format!("create: {e}"))?;
    let mut sum = 0u64;
    let start = Instant::now();
    for _ in 0..iters {
        child = ex.attach(child, async { 1u64 }).map_err(|e| format!("attach: {e}"))?;
        let c = child;
        parent =
            ex.attach(parent, async move { join(c).await.unwrap_or(Ok(0)) }).map_err(|e| format!("attach: {e}"))?;
        ex.run(usize::MAX, None).map_err(|e| format!("run: {e}"))?;
        if let Ok(Some(Ok(v))) = ex.result(parent) {
            sum += v;
        }
    }
    let elapsed = start.elapsed();
    if sum != iters {
        return Err(format!("{sum} of {iters} joins returned the child's result"));
    }
    super::destroy_task(ex, child)?;
    super::destroy_task(ex, parent)?;
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
