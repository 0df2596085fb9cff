//! `c_yield`: a C task body yields to its executor N times through keel's C API, beside
//! the Rust fiber doing the same (ns per yield).
//!
//! - keel-c: one task made with `keel_task_create` (64 KiB stack) on a ring-less
//!   `keel_executor_create` executor, its function (`keel_bench_c_yield` in
//!   `bench/c/bodies.c`) looping `keel_task_yield`; `keel_executor_run` until nothing is
//!   attached. The executor must count one resume per yield plus the first, and the
//!   run's result must be N.
//! - keel-c-inline: the same, its function (`keel_bench_c_yield_inline`) looping
//!   `keel_task_yield_inline`, the header's inline form: two calls into keel that return
//!   before and after the switch, and keel's suspend sequence inlined into the loop.
//! - keel: the `fiber_yield` case's keel impl (a Rust body looping `Fiber::yield_now`,
//!   which inlines the switch into the body).
//! - keel-outline: the same Rust body, each yield made through a `#[inline(never)]`
//!   function around `Fiber::yield_now`: the out-of-line call alone, without the C API.
//!
//! Where the C impls' extra time goes (callgrind, `bench/callgrind-per-op.sh -n 20000
//! --impl IMPL c_yield`; time as medians of five interleaved `--quick` runs on a 2.45 GHz
//! AMD EPYC VM with two other builds running):
//!
//! | impl | instructions/yield | ns/yield |
//! |---|---|---|
//! | keel | 142 | 12.5 |
//! | keel-c-inline | 234 | 20.5 |
//! | keel-outline | 164 | 30 |
//! | keel-c | 186 | 35 |
//!
//! 1. **The out-of-line call across the switch: about +18 ns for +22 instructions.**
//!    keel's switch pairs the executor's `call` into the fiber with the fiber's `ret` out
//!    of it, so an inlined yield keeps the CPU's return stack buffer (RSB) in step: no
//!    return is mispredicted. With the switch inside a callee, every round trip has one
//!    unmatched return on each side: after the resume, `keel_task_yield` returns to the
//!    C loop while the RSB's top is the executor's resume site (mispredicted), and the
//!    next switch out returns to the executor while the RSB's top is the C loop's call
//!    site (mispredicted). Two return mispredicts per yield, about 20 cycles each: the
//!    keel-outline impl, a Rust body with no C in it, pays the same. No code inside
//!    `keel_task_yield` can avoid them.
//! 2. **The inline form removes them: +8 ns over `fiber_yield` for +92 instructions.**
//!    `keel_task_yield_inline` calls `keel_task_yield_begin` (the checks of
//!    `keel_task_yield`, the yield marked, `CURRENT` cleared, the fiber's register block
//!    returned), switches with keel's own suspend sequence in the C function's frame
//!    (`asm` in keel.h), and once resumed calls `keel_task_yield_end` (the handle, that
//!    the caller runs on the task's own stack with no task current, `CURRENT` set, the
//!    cancel flag). Both calls return before the switch, so every `ret` meets its `call`.
//!    The instructions it adds (two calls' prologues and checks, the loop's state kept in
//!    memory across an asm block that clobbers every register) cost less than the two
//!    mispredicts they remove.
//! 3. **The C API's checks in `keel_task_yield`: about +5 ns for +22 instructions.** The
//!    prologue and epilogue that save the six callee-saved registers the switch clobbers
//!    (an inlined yield saves them once per body, not per yield), the handle's generation
//!    compare (task rule 1), the `CURRENT` compare and its clear and set around the
//!    switch (body rule 1: three TLS accesses, each one `%fs`-relative instruction in an
//!    executable linked with `libkeel.a` or this rlib; in `libkeel.so` one
//!    `__tls_get_addr` call per yield serves all three), the mapping of the result, and
//!    the C loop itself. The boundary guard (`catch_unwind`) costs nothing on this path:
//!    `Fiber::yield_now` cannot panic, so no landing pad is reached.
//!
//! So a C body yields within the +16 ns goal over `fiber_yield` through
//! `keel_task_yield_inline` (+8 ns here); `keel_task_yield`, the form other languages'
//! FFIs call, stays at about +22 ns, over it by the two return mispredicts.
use super::c_api;
use crate::harness::{Case, Impl, Timed, Unit};

/// The case.
pub const CASE: Case = Case {
    name: "c_yield",
    unit: Unit::NsPerOp,
    impls: &[
        Impl { name: "keel-c", run: keel_c },
        Impl { name: "keel-c-inline", run: keel_c_inline },
        super::fiber_yield::KEEL,
        Impl { name: "keel-outline", run: super::fiber_yield::keel_outline },
    ],
};

fn keel_c(iters: u64) -> Timed {
    yields(iters, c_api::keel_bench_c_yield)
}

fn keel_c_inline(iters: u64) -> Timed {
    yields(iters, c_api::keel_bench_c_yield_inline)
}

fn yields(iters: u64, body: c_api::Body) -> Timed {
    let mut args = c_api::Args { iters, fd: -1 };
    let (elapsed, stats) = c_api::run(0, body, &mut args)?;
    // One resume per yield plus the first: anything else means keel_task_yield did not yield.
    if stats.resumed != iters + 1 {
        return Err(format!("{} resumes for {iters} yields", stats.resumed));
    }
    Ok(elapsed)
}
