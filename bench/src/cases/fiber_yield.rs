//! `fiber_yield`: a fiber task yields to its executor N times, through the whole path:
//! queue, pick, switch (ns per yield).
//!
//! - keel: one fiber task on keel's asm switch (64 KiB stack from a region) looping
//!   `Fiber::yield_now`; `run(usize::MAX, None)` until it has completed.
//! - keel-acct: the same on an executor with time accounting
//!   (`with_accounting::<TscAccounting>()`: one `rdtsc` per resumption).
//! - keel-fp-save: the keel impl with `FiberAttrs::save_fp_control` (the fiber keeps
//!   its own MXCSR and x87 control word across suspensions: fiber rule 7).
//! - tokio, tokio-wake: the `yield` case's tokio impls (one spawned task looping
//!   `tokio::task::yield_now().await`, or yielding by waking itself), since tokio has no
//!   stackful tasks.
//! - may: a may coroutine on may's one worker looping `may::coroutine::yield_now()`
//!   ([`super::may_peer`]).
//!
//! Both times include starting and finishing the one task, which is noise at N yields.

use crate::goals::{Goal, Op};
use crate::harness::{Case, Impl, Timed, Unit};
use keel_core::{Accounting, Fiber, FiberAttrs, NoAccounting, TaskSlot, TscAccounting};
use std::time::Instant;

/// The case.
pub const CASE: Case = Case {
    name: "fiber_yield",
    unit: Unit::NsPerOp,
    impls: &[
        KEEL,
        Impl { name: "keel-acct", run: keel::<TscAccounting> },
        Impl { name: "keel-fp-save", run: keel_fp_save },
        TOKIO,
        super::yield_::TOKIO_WAKE,
        Impl { name: "may", run: super::may_peer::fiber_yield },
    ],
};

/// The goals of this module's cases (see `crate::goals`).
pub const GOALS: &[Goal] = &[Goal::vs("fiber_yield", "keel", "may", Op::AtMost, 0.35)];

/// The keel impl (shared with `c_yield`).
pub(super) const KEEL: Impl = Impl { name: "keel", run: keel::<NoAccounting> };

/// The `yield` case's tokio impl, shared.
const TOKIO: Impl = super::yield_::TOKIO;

std::thread_local! {
    /// This thread's task slot for the case (created and destroyed by every trial).
    static SLOT: &'static TaskSlot = Box::leak(Box::new(TaskSlot::new()));
}

fn keel<A: Accounting>(iters: u64) -> Timed {
    run::<A, false>(iters, super::FIBER_ATTRS)
}

fn keel_fp_save(iters: u64) -> Timed {
    run::<NoAccounting, false>(iters, FiberAttrs { save_fp_control: true, ..super::FIBER_ATTRS })
}

/// The keel impl with each yield made through an out-of-line call (`c_yield`'s
/// `keel-outline`).
pub(super) fn keel_outline(iters: u64) -> Timed {
    run::<NoAccounting, true>(iters, super::FIBER_ATTRS)
}

/// `Fiber::yield_now` behind a call that is never inlined: the switch then sits in a
/// callee, as it does for a C body calling `keel_task_yield`.
#[inline(never)]
fn yield_outline(f: &mut Fiber) -> Result<(), keel_core::Cancelled> {
    f.yield_now()
}

/// `OUTLINE`: yield through [`yield_outline`] instead of inline.
fn run<A: Accounting, const OUTLINE: bool>(iters: u64, attrs: FiberAttrs) -> Timed {
    let ex = core::pin::pin!(super::keel_fiber_executor(1)?.with_accounting::<A>());
    let ex = ex.into_ref();
    let h = super::create_task(SLOT.with(|s| *s), "fiber_yield")?;
    let body = move |f: &mut Fiber| {
        for _ in 0..iters {
            if OUTLINE {
                yield_outline(f)?;
            } else {
                f.yield_now()?;
            }
        }
        Ok(iters)
    };
    let h = ex.attach_fiber(h, attrs, body).map_err(|e| format!("attach: {e}"))?;
    let start = Instant::now();
    while ex.attached() > 0 {
        ex.run(usize::MAX, None).map_err(|e| format!("run: {e}"))?;
    }
    let elapsed = start.elapsed();
    // One resume per yield plus the first: anything else means yield_now did not yield.
    let resumed = ex.stats().resumed;
    if resumed != iters + 1 {
        return Err(format!("{resumed} resumes for {iters} yields"));
    }
    match ex.result(h) {
        Ok(Some(Ok(n))) if n == iters => {}
        other => return Err(format!("task ended with {other:?}")),
    }
    ex.destroy(h).map_err(|e| format!("destroy: {e}"))?;
    Ok(elapsed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn shares_the_yield_tokio_impl() {
        assert_eq!(super::TOKIO.name, "tokio");
    }
}
