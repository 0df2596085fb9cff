//! `c_yield`: a C task body yields to its executor N times through keel's C API, beside
//! the Rust fiber doing the same (ns per yield).
//!
//! - keel-c: one task made with `keel_task_create` (64 KiB stack) on a ring-less
//!   `keel_executor_create` executor, its function (`keel_bench_c_yield` in
//!   `bench/c/bodies.c`) looping `keel_task_yield`; `keel_executor_run` until nothing is
//!   attached. The executor must count one resume per yield plus the first, and the
//!   run's result must be N.
//! - keel: the `fiber_yield` case's keel impl (a Rust body looping `Fiber::yield_now`).
//!
//! Where keel-c's extra time goes: see the explanation below the measurements.

use super::c_api;
use crate::harness::{Case, Impl, Timed, Unit};

/// The case.
pub const CASE: Case = Case {
    name: "c_yield",
    unit: Unit::NsPerOp,
    impls: &[
        Impl { name: "keel-c", run: keel_c },
        super::fiber_yield::KEEL,
        Impl { name: "keel-outline", run: super::fiber_yield::keel_outline },
    ],
};

fn keel_c(iters: u64) -> Timed {
    let mut args = c_api::Args { iters, fd: -1 };
    let (elapsed, stats) = c_api::run(0, c_api::keel_bench_c_yield, &mut args)?;
    // One resume per yield plus the first: anything else means keel_task_yield did not yield.
    if stats.resumed != iters + 1 {
        return Err(format!("{} resumes for {iters} yields", stats.resumed));
    }
    Ok(elapsed)
}
