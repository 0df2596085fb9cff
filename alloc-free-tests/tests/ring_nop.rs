//! NOP submit and complete through io_uring (`RingDriver`, default ring: SINGLE_ISSUER
//! and DEFER_TASKRUN where the kernel has them), three ways, 1,000,000 each in its own
//! window (a fourth, waiting with a timeout, is `ring_nop_timed.rs`):
//!
//! 1. a fiber: `initiate(RingOp::nop())` with an `IoStatus` pinned on its stack, then
//!    `suspend_until_completed_io`;
//! 2. a future doing the same with `keel_core::initiate` and
//!    `keel_core::suspend_until_completed_io`;
//! 3. a future awaiting `keel_linux::fs::nop()` (an owned operation: the driver slot
//!    keeps the result for the future to take).
//!
//! Each cycle is one SQE, one `io_uring_enter` (the run loop submits and reaps in one
//! enter), one CQE routed to the task, one resumption: 0.5-0.8 µs here, so the
//! million cycles fit the ~3 s budget per window without being cut. Skipped, loudly,
//! where io_uring is unavailable.

use core::pin::pin;
use keel_alloc_free_tests::{CYCLES, Progress, WARM_UP, measure_progress, ring_or_skip, skip, task};
use keel_core::{Executor, Fiber, FiberAttrs, IoStatus, RegionStacks, TaskError};
use keel_linux::{RingConfig, RingDriver, RingOp};

/// Completed NOPs of the task being measured.
static DONE: Progress = Progress::new();

const N: u64 = WARM_UP + CYCLES;

#[test]
fn nop_submit_and_complete_through_the_ring_allocate_nothing() {
    let what = ["ring nop (fiber, IoStatus)", "ring nop (future, IoStatus)", "ring nop (future, fs::nop)"];
    let Some(ring) = ring_or_skip(what[0], RingConfig::default()) else {
        for w in &what[1..] {
            skip(w, "io_uring is unavailable here");
        }
        return;
    };
    let stacks = RegionStacks::new(Vec::leak(vec![0u8; 64 * 1024 + 16]), 64 * 1024, 0).expect("region stacks");
    let ex = pin!(Executor::with_stacks(ring, stacks, keel_linux::panic::config()).unwrap());
    let ex = ex.into_ref();

    let fiber = ex
        .attach_fiber(
            task::<1024>("nop-fiber"),
            FiberAttrs { stack_size: 64 * 1024, ..FiberAttrs::DEFAULT },
            |f: &mut Fiber| {
                let st = pin!(IoStatus::new());
                for _ in 0..N {
                    if f.initiate::<RingDriver>(st.as_ref(), RingOp::nop()).is_err() {
                        return Err(TaskError::Failed(1));
                    }
                    if f.suspend_until_completed_io(1)? != 1 || st.result() != Some(Ok(0)) {
                        return Err(TaskError::Failed(2));
                    }
                    DONE.one();
                }
                Ok(1)
            },
        )
        .unwrap_or_else(|e| panic!("attach_fiber: {e}"));
    measure_progress(ex, &DONE, what[0]);
    assert_eq!(ex.result(fiber), Ok(Some(Ok(1))));

    let status = ex
        .attach(task::<1024>("nop-status"), async {
            let st = pin!(IoStatus::new());
            for _ in 0..N {
                if keel_core::initiate::<RingDriver>(st.as_ref(), RingOp::nop()).await.is_err() {
                    return Err(TaskError::Failed(1));
                }
                if keel_core::suspend_until_completed_io(1).await? != 1 || st.result() != Some(Ok(0)) {
                    return Err(TaskError::Failed(2));
                }
                DONE.one();
            }
            Ok(2)
        })
        .unwrap_or_else(|e| panic!("attach: {e}"));
    measure_progress(ex, &DONE, what[1]);
    assert_eq!(ex.result(status), Ok(Some(Ok(2))));

    let owned = ex
        .attach(task::<1024>("nop-owned"), async {
            for _ in 0..N {
                if keel_linux::fs::nop().await != Ok(0) {
                    return Err(TaskError::Failed(3));
                }
                DONE.one();
            }
            Ok(3)
        })
        .unwrap_or_else(|e| panic!("attach: {e}"));
    measure_progress(ex, &DONE, what[2]);
    assert_eq!(ex.result(owned), Ok(Some(Ok(3))));

    let st = ex.with_driver(|d| d.stats()).unwrap();
    assert_eq!((st.completed, st.stale), (3 * N, 0), "{st:?}");
}
