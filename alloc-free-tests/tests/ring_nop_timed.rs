//! NOP submit and complete through io_uring, waited for one at a time by a fiber with
//! `next_completed_io(Some(timeout))`: a timer armed and disarmed around every wait, the
//! completed block named; 1,000,000 cycles in one window. Skipped, loudly, where io_uring
//! is unavailable.

use core::pin::pin;
use keel_alloc_free_tests::{CYCLES, Progress, WARM_UP, measure_progress, ring_or_skip, task};
use keel_core::{Executor, Fiber, FiberAttrs, IoStatus, NextIo, RegionStacks, TaskError};
use keel_linux::{RingConfig, RingDriver, RingOp};

/// Completed NOPs of the task being measured.
static DONE: Progress = Progress::new();

const N: u64 = WARM_UP + CYCLES;

#[test]
fn nop_waited_with_next_completed_io_and_a_timeout_allocates_nothing() {
    let what = "ring nop (fiber, next_completed_io with a timeout)";
    let Some(ring) = ring_or_skip(what, RingConfig::default()) else { return };
    let stacks = RegionStacks::new(Vec::leak(vec![0u8; 64 * 1024 + 16]), 64 * 1024, 0).expect("region stacks");
    let ex = pin!(Executor::with_stacks(ring, stacks, keel_linux::panic::config()).unwrap());
    let ex = ex.into_ref();
    let timed = ex
        .attach_fiber(
            task::<1024>("nop-timed"),
            FiberAttrs { stack_size: 64 * 1024, ..FiberAttrs::DEFAULT },
            |f: &mut Fiber| {
                let st = pin!(IoStatus::new());
                for _ in 0..N {
                    if f.initiate::<RingDriver>(st.as_ref(), RingOp::nop()).is_err() {
                        return Err(TaskError::Failed(1));
                    }
                    match f.next_completed_io(Some(core::time::Duration::from_secs(10)))? {
                        NextIo::Completed(c) if c.is(&st) && c.result == Ok(0) => {}
                        _ => return Err(TaskError::Failed(4)),
                    }
                    DONE.one();
                }
                Ok(4)
            },
        )
        .unwrap_or_else(|e| panic!("attach_fiber: {e}"));
    measure_progress(ex, &DONE, what);
    assert_eq!(ex.result(timed), Ok(Some(Ok(4))));

    let st = ex.with_driver(|d| d.stats()).unwrap();
    assert_eq!((st.completed, st.stale), (N, 0), "{st:?}");
}
