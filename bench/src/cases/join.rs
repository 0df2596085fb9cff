//! `join`: start a trivial task and wait for its result from another task, one at a
//! time (ns per spawn + join). Goal: keel at most 0.15x tokio.
//!
//! Both in the same shape: one long-lived parent task spawns a trivial child and awaits
//! its result, `iters` times.
//!
//! - keel: the parent is a future task; each iteration `spawn`s the child slot's next
//!   run (`async { 1 }`, spawn rule 1: an attach from inside the run loop) and `join`s
//!   it: the join links in the child's list of waiters, the child runs, and its end
//!   writes the result into the parent's join and wakes it (join rule 3: the
//!   same-executor path). One attach and two resumes per op.
//! - tokio: current-thread runtime; inside one `block_on`, `spawn` a trivial future and
//!   await its `JoinHandle` (one spawn, two polls per op).
//!
//! What decided keel's time was not its instruction count (521 per op by callgrind before,
//! 490 after) but three stalled store-to-load forwards per op, which `perf record -e
//! cpu-clock` put under half of the op's samples: the run loop copied the staged
//! `TaskResult` (built by an out-of-line call with stores of other widths) into the
//! waiter's node, the parent's body moved each new `Join` into its state through a
//! stack copy that spanned the `TaskHandle`'s padding, and read the joined result back
//! the same way. The result now travels as the record's words (join rule 6) and `Join`
//! has no padding: keel went from 40 ns to 24 ns per op on a quiet machine (tokio 240 ns),
//! and in five interleaved pairs under load (average 2.6) from a median of 59 ns to 34 ns,
//! 0.171x to 0.090x tokio.
use crate::goals::{Goal, Op};
use crate::harness::{Case, Impl, Timed, Unit};
use keel_core::join::join;
use keel_core::spawn::spawn;
use keel_core::{TaskError, TaskSlot};
use std::cell::Cell;
use std::rc::Rc;
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
    let child = super::create_task(child_slot, "join-child")?;
    let parent = super::create_task(parent_slot, "join-parent")?;
    let last = Rc::new(Cell::new(child));
    let l = last.clone();
    let parent = ex
        .attach(parent, async move {
            let mut child = l.get();
            let mut sum = 0u64;
            for _ in 0..iters {
                child = spawn(child, async { 1u64 }).await.map_err(|_| TaskError::Failed(1))?;
                sum += join(child).await.map_err(|_| TaskError::Failed(2))??;
            }
            l.set(child);
            Ok::<u64, TaskError>(sum)
        })
        .map_err(|e| format!("attach: {e}"))?;
    let start = Instant::now();
    while ex.attached() > 0 {
        ex.run(usize::MAX, None).map_err(|e| format!("run: {e}"))?;
    }
    let elapsed = start.elapsed();
    match ex.result(parent) {
        Ok(Some(Ok(sum))) if sum == iters => {}
        other => return Err(format!("the parent ended with {other:?}, not {iters} joined results")),
    }
    super::destroy_task(ex, last.get())?;
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
