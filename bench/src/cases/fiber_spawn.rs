//! `fiber_spawn`: start a stackful task whose body returns at once and run it to
//! completion, one at a time (ns per task).
//!
//! - keel: one task created once; each iteration attaches a fiber (its stack taken from
//!   the executor's spare pool) with the handle the previous attach returned, then
//!   `run`s it to completion, which puts the stack back in the pool. One untimed warm-up
//!   iteration first creates the one stack; the trial fails unless the timed ones all
//!   reused it (pool statistics).
//! - corosensei: each iteration creates a `Coroutine` on a fresh default stack (mmap'd,
//!   with a guard page) and resumes it to completion (dropping it unmaps the stack).
//! - corosensei-reused: as corosensei, but every coroutine runs on the same
//!   `DefaultStack`, taken back with `into_stack` after it completes.
//! - corosensei-scoped: corosensei's fastest shape of this call, its own "coroutine
//!   call" benchmark: a `ScopedCoroutine::with_stack(&mut stack, ..)` over one borrowed
//!   `DefaultStack`, resumed to completion inside `scope` (no stack moved in or out).
//! - may: inside a may coroutine on may's one worker, spawn a child coroutine (from may's
//!   pool) and join it ([`super::may_peer`]).

use crate::goals::{Goal, Op};
use crate::harness::{Case, Impl, Timed, Unit};
use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult, ScopedCoroutine, Yielder};
use keel_core::{Fiber, TaskSlot};
use std::time::Instant;

/// The case.
pub const CASE: Case = Case {
    name: "fiber_spawn",
    unit: Unit::NsPerOp,
    impls: &[
        Impl { name: "keel", run: keel },
        Impl { name: "corosensei", run: corosensei },
        Impl { name: "corosensei-reused", run: corosensei_reused },
        Impl { name: "corosensei-scoped", run: corosensei_scoped },
        Impl { name: "may", run: super::may_peer::fiber_spawn },
    ],
};

/// The goals of this module's cases (see `crate::goals`).
pub const GOALS: &[Goal] = &[Goal::vs("fiber_spawn", "keel", "corosensei-scoped", Op::AtMost, 3.0)];

std::thread_local! {
    /// This thread's task slot for the case (created and destroyed by every trial).
    static SLOT: &'static TaskSlot = Box::leak(Box::new(TaskSlot::new()));
}

fn keel(iters: u64) -> Timed {
    let ex = core::pin::pin!(super::keel_fiber_executor(1)?);
    let ex = ex.into_ref();
    let mut h = super::create_task(SLOT.with(|s| *s), "fiber_spawn")?;
    let spawn = |h| {
        let h = ex.attach_fiber(h, super::FIBER_ATTRS, |_: &mut Fiber| 1u64).map_err(|e| format!("attach: {e}"))?;
        ex.run(usize::MAX, None).map_err(|e| format!("run: {e}"))?;
        Ok::<_, String>(h)
    };
    h = spawn(h)?;
    let start = Instant::now();
    for _ in 0..iters {
        h = spawn(h)?;
    }
    let elapsed = start.elapsed();
    let completed = ex.stats().completed;
    if completed != iters + 1 {
        return Err(format!("{completed} of {} runs completed", iters + 1));
    }
    match ex.result(h) {
        Ok(Some(Ok(1))) => {}
        other => return Err(format!("the last run ended with {other:?}")),
    }
    let st = ex.stack_stats();
    if st.created != 1 || st.reused != iters || st.in_use != 0 {
        return Err(format!("stacks not reused from the pool: {st:?} after {iters} runs"));
    }
    super::destroy_task(ex, h)?;
    Ok(elapsed)
}

/// Runs `co` to completion; it must return 1 without suspending.
fn finish(co: &mut Coroutine<(), (), u64, DefaultStack>) -> Result<(), String> {
    match co.resume(()) {
        CoroutineResult::Return(1) => Ok(()),
        other => Err(format!("the coroutine ended with {other:?}")),
    }
}

fn corosensei(iters: u64) -> Timed {
    let start = Instant::now();
    for _ in 0..iters {
        let mut co = Coroutine::new(|_: &Yielder<(), ()>, ()| 1u64);
        finish(&mut co)?;
    }
    Ok(start.elapsed())
}

fn corosensei_reused(iters: u64) -> Timed {
    let mut stack = DefaultStack::default();
    let start = Instant::now();
    for _ in 0..iters {
        let mut co = Coroutine::with_stack(stack, |_: &Yielder<(), ()>, ()| 1u64);
        finish(&mut co)?;
        stack = co.into_stack();
    }
    Ok(start.elapsed())
}

fn corosensei_scoped(iters: u64) -> Timed {
    let mut stack = DefaultStack::default();
    let start = Instant::now();
    for i in 0..iters {
        let co = ScopedCoroutine::<u64, (), u64, _>::with_stack(&mut stack, |_: &Yielder<u64, ()>, input| input + 1);
        match co.scope(|mut co| co.resume(std::hint::black_box(i))) {
            CoroutineResult::Return(r) if r == i + 1 => {}
            other => return Err(format!("the scoped coroutine ended with {other:?}")),
        }
    }
    Ok(start.elapsed())
}
