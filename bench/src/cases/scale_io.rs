//! The i/o scaling curve: `nop_q{1,64,1024}` (ops/s): N keel fiber tasks, each with one
//! NOP in flight at a time (initiate, `suspend_until_completed_io`, check `Ok(0)`, k
//! times, k = ceil(iters / N)), so N NOPs are in flight and the run loop's one
//! `io_uring_enter` per pass submits and reaps up to N. The executor is a
//! `RingDriver` (the default flags: SINGLE_ISSUER, DEFER_TASKRUN, COOP_TASKRUN,
//! SUBMIT_ALL where the kernel has them) sized for N (`entries` and `slots` at least N),
//! its stacks from `MmapStacks`; a fresh one per trial. Each task yields once before its
//! loop, and that first slice of every task (its stack's first page faults) runs
//! before the clock starts. The time is the run loop's,
//! scaled from the k * N operations done to `iters`.

use super::scale::{rounds, scaled};
use crate::goals::Curve;
use crate::harness::{Case, Impl, Timed, Unit};
use core::pin::pin;
use keel_core::{Config, Executor, Fiber, IoStatus, TaskAttrs, TaskError, TaskSlot};
use keel_linux::{MmapStacks, RingConfig, RingDriver, RingOp};
use std::time::Instant;

/// One NOP in flight.
pub const NOP_Q1: Case =
    Case { name: "nop_q1", unit: Unit::OpsPerSec, impls: &[Impl { name: "keel", run: keel::<1> }] };
/// 64 in flight.
pub const NOP_Q64: Case =
    Case { name: "nop_q64", unit: Unit::OpsPerSec, impls: &[Impl { name: "keel", run: keel::<64> }] };
/// 1,024 in flight.
pub const NOP_Q1024: Case =
    Case { name: "nop_q1024", unit: Unit::OpsPerSec, impls: &[Impl { name: "keel", run: keel::<1024> }] };

/// The curve.
pub const CURVES: &[Curve] = &[Curve {
    name: "nop_q",
    size: "tasks in flight",
    imp: "keel",
    points: &[(1, "nop_q1"), (64, "nop_q64"), (1024, "nop_q1024")],
}];

/// Body bytes of the slots (a fiber's body record takes 136).
const BODY: usize = 160;

std::thread_local! {
    /// This thread's slots for the case (created and destroyed by every trial).
    static SLOTS: Vec<&'static TaskSlot<BODY>> =
        (0..1024).map(|_| &*Box::leak(Box::new(TaskSlot::new()))).collect();
}

/// One task's loop: `k` NOPs, one at a time; returns how many completed `Ok(0)`.
fn body(k: u64) -> impl FnOnce(&mut Fiber) -> Result<u64, TaskError> + 'static {
    move |f: &mut Fiber| {
        // The first slice, before the clock starts, touches the fresh stack.
        f.yield_now()?;
        let st = pin!(IoStatus::new());
        let mut good = 0;
        for _ in 0..k {
            if f.initiate::<RingDriver>(st.as_ref(), RingOp::nop()).is_err() {
                return Err(TaskError::Failed(-1));
            }
            while f.suspend_until_completed_io(1)? == 0 {}
            match st.result() {
                Some(Ok(0)) => good += 1,
                other => return Err(TaskError::Failed(if other.is_none() { -3 } else { -2 })),
            }
        }
        Ok(good)
    }
}

fn keel<const N: u64>(iters: u64) -> Timed {
    let k = rounds(iters, N, u64::MAX);
    let n = N as u32;
    let cfg =
        RingConfig { entries: n.max(256), cq_entries: (2 * n).max(1024), slots: n.max(1024), ..RingConfig::default() };
    let driver = RingDriver::new(cfg).map_err(|e| format!("ring driver: {e}"))?;
    let stacks = MmapStacks::new().map_err(|e| format!("stacks: {e}"))?;
    let ex = Executor::with_stacks(driver, stacks, Config { max_spare_stacks: N as usize, ..Config::default() })
        .map_err(|e| e.to_string())?;
    let ex = pin!(ex);
    let ex = ex.into_ref();
    let mut hs = Vec::with_capacity(N as usize);
    for s in SLOTS.with(|s| s[..N as usize].to_vec()) {
        let h = s.create(TaskAttrs { name: "nop_q", ..TaskAttrs::default() }).map_err(|e| format!("create: {e}"))?;
        hs.push(ex.attach_fiber(h, super::FIBER_ATTRS, body(k)).map_err(|e| format!("attach: {e}"))?);
    }
    // Every task runs its first slice (up to its yield) before the clock starts.
    let mut started = 0;
    while started < N as usize {
        started += ex.run(N as usize - started, None).map_err(|e| format!("run: {e}"))?;
    }
    let start = Instant::now();
    while ex.attached() > 0 {
        ex.run(usize::MAX, None).map_err(|e| format!("run: {e}"))?;
    }
    let elapsed = start.elapsed();
    for h in hs {
        match ex.result(h) {
            Ok(Some(Ok(got))) if got == k => {}
            other => return Err(format!("a task ended with {other:?} (expected Ok({k}))")),
        }
        ex.destroy(h).map_err(|e| format!("destroy: {e}"))?;
    }
    let st = ex.with_driver(|d| d.stats()).map_err(|e| format!("driver stats: {e}"))?;
    if st.completed != k * N || st.stale != 0 {
        return Err(format!("ring reaped {} CQEs ({} stale) for {} NOPs", st.completed, st.stale, k * N));
    }
    Ok(scaled(elapsed, k * N, iters))
}
