//! What the C-boundary cases (`c_yield`, `c_suspend_io`) share: their C task bodies
//! (`bench/c/bodies.c`, compiled by `build.rs` against `keel.h`) and one run of such a
//! body through keel's C API (`keel_c`, the keel-ffi crate), timed around the run loop.

use core::ffi::{c_int, c_void};
use keel_c::{
    KEEL_NO_TIMEOUT, keel_executor, keel_executor_attached, keel_executor_attr, keel_executor_create,
    keel_executor_destroy, keel_executor_get_stats, keel_executor_run, keel_executor_stats, keel_task,
    keel_task_attach, keel_task_attr, keel_task_create, keel_task_destroy, keel_task_result,
};
use std::time::{Duration, Instant};

/// What a C body is given (`struct keel_bench_args` in `bodies.c`).
#[repr(C)]
pub(super) struct Args {
    /// Operations to do.
    pub iters: u64,
    /// The descriptor the i/o body reads.
    pub fd: c_int,
}

/// A C task function.
pub(super) type Body = unsafe extern "C-unwind" fn(keel_task, *mut c_void) -> i64;

unsafe extern "C-unwind" {
    /// Yields `iters` times; returns `iters`.
    pub(super) fn keel_bench_c_yield(task: keel_task, user: *mut c_void) -> i64;
    /// Yields `iters` times through `keel_task_yield_inline`; returns `iters`.
    pub(super) fn keel_bench_c_yield_inline(task: keel_task, user: *mut c_void) -> i64;
    /// Reads one zero byte of `fd` `iters` times through a status block; returns `iters`.
    pub(super) fn keel_bench_c_suspend_io(task: keel_task, user: *mut c_void) -> i64;
}

fn check(what: &str, r: i64) -> Result<i64, String> {
    if r < 0 { Err(format!("{what}: {r}")) } else { Ok(r) }
}

/// Runs `body(task, args)` on a fresh C executor (`ring_entries` 0: no ring) until it
/// completes; its result must be `args.iters`. Returns the run loop's time and the
/// executor's counters.
pub(super) fn run(ring_entries: u32, body: Body, args: &mut Args) -> Result<(Duration, keel_executor_stats), String> {
    let null_ex = keel_executor { storage: core::ptr::null_mut(), generation: 0 };
    let null_task = keel_task { storage: core::ptr::null_mut(), generation: 0 };
    let (mut ex, mut task) = (null_ex, null_task);
    let ea = keel_executor_attr { ring_entries, ..Default::default() };
    let ta = keel_task_attr { stack_size: super::FIBER_STACK, ..Default::default() };
    // SAFETY: valid attributes and out pointers.
    check("keel_executor_create", unsafe { keel_executor_create(&ea, &mut ex) })?;
    // SAFETY: as above.
    check("keel_task_create", unsafe { keel_task_create(&ta, &mut task) })?;
    let iters = args.iters;
    check("keel_task_attach", keel_task_attach(ex, task, Some(body), (args as *mut Args).cast()))?;
    let start = Instant::now();
    while check("keel_executor_attached", keel_executor_attached(ex))? > 0 {
        check("keel_executor_run", keel_executor_run(ex, usize::MAX, KEEL_NO_TIMEOUT))?;
    }
    let elapsed = start.elapsed();
    let mut stats = keel_executor_stats::default();
    // SAFETY: a valid out pointer.
    check("keel_executor_get_stats", unsafe { keel_executor_get_stats(ex, &mut stats) })?;
    let result = keel_task_result(task);
    check("keel_task_destroy", keel_task_destroy(task))?;
    check("keel_executor_destroy", keel_executor_destroy(ex))?;
    if result != iters as i64 {
        return Err(format!("the C body ended with {result} (expected {iters})"));
    }
    Ok((elapsed, stats))
}
