//! `c_yield`: a C task body yields to its executor N times through keel's C API, beside
//! the Rust fiber doing the same (ns per yield).
//!
//! - keel-c: one task made with `keel_task_create` (64 KiB stack) on a ring-less
//!   `keel_executor_create` executor, its function (`keel_bench_c_yield` in
//!   `bench/c/bodies.c`) looping `keel_task_yield`; `keel_executor_run` until nothing is
//!   attached. The executor must count one resume per yield plus the first, and the
//!   run's result must be N.
//! - keel: the `fiber_yield` case's keel impl (a Rust body looping `Fiber::yield_now`,
//!   which inlines the switch into the body).
//! - keel-outline: the same Rust body, each yield made through a `#[inline(never)]`
//!   function around `Fiber::yield_now`: the out-of-line call alone, without the C API.
//!
//! Where keel-c's extra time goes (callgrind, `bench/callgrind-per-op.sh -n 20000`; time
//! as medians of interleaved runs on a 2.45 GHz AMD EPYC VM, quiet minutes):
//!
//! | impl | instructions/yield | ns/yield |
//! |---|---|---|
//! | keel | 142 | 12 |
//! | keel-outline | 164 | 31 |
//! | keel-c | 186 | 35-36 |
//!
//! 1. **The out-of-line call across the switch: about +19 ns for +22 instructions.**
//!    keel's switch pairs the executor's `call` into the fiber with the fiber's `ret` out
//!    of it, so an inlined yield keeps the CPU's return stack buffer (RSB) in step: no
//!    return is mispredicted. With the switch inside a callee, every round trip has one
//!    unmatched return on each side: after the resume, `keel_task_yield` returns to the
//!    C loop while the RSB's top is the executor's resume site (mispredicted), and the
//!    next switch out returns to the executor while the RSB's top is the C loop's call
//!    site (mispredicted). Two return mispredicts per yield, about 20 cycles each: the
//!    keel-outline impl, a Rust body with no C in it, pays the same. No code inside
//!    `keel_task_yield` can avoid them; only a switch protocol that does not pair the
//!    executor's call with the fiber's return could (keel-core's switch).
//! 2. **The C API's checks: about +5 ns for +22 instructions.** The prologue and
//!    epilogue that save the six callee-saved registers the switch clobbers (an inlined
//!    yield saves them once per body, not per yield), the handle's generation compare
//!    (task rule 1), the `CURRENT` compare and its clear and set around the switch (body
//!    rule 1: three TLS accesses, each one `%fs`-relative instruction in an executable
//!    linked with `libkeel.a` or this rlib; in `libkeel.so` one `__tls_get_addr` call
//!    per yield serves all three), the mapping of the result, and the C loop itself. The boundary
//!    guard (`catch_unwind`) costs nothing on this path: `Fiber::yield_now` cannot
//!    panic, so no landing pad is reached. `running` compares `CURRENT` first (it names
//!    only live storage), which drops the null and alignment tests from the fast path
//!    (192 instructions per yield before it, 186 after).
//!
//! So keel-c's cost over `fiber_yield` (about +24 ns here) is over the +16 ns goal by the
//! return mispredicts, whose price depends on the CPU; the C API's own part is about
//! 5 ns.
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
