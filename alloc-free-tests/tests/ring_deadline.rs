//! NOPs with a deadline through io_uring (`keel_linux::deadline`): each cycle opens a
//! deadline scope, submits the NOP linked to its `IORING_OP_LINK_TIMEOUT` (two SQEs in one
//! submission), reaps the NOP's CQE and the timer's `ECANCELED` (the slot joins the two,
//! deadline rules 1-3) and closes the scope, two ways, 1,000,000 each in its own window:
//!
//! 1. a fiber: `FiberDeadline::within(d, |f| f.nop())`;
//! 2. a future: `deadline::within(d, fs::nop()).await`.
//!
//! A scope's entry goes into the thread's scope list, whose capacity the warm-up grew
//! (scope rule 1), so the window allocates nothing. Skipped, loudly, where io_uring is
//! unavailable.

use core::pin::pin;
use core::time::Duration;
use keel_alloc_free_tests::{CYCLES, Progress, WARM_UP, measure_progress, ring_or_skip, skip, task};
use keel_core::{Executor, Fiber, FiberAttrs, RegionStacks, TaskError};
use keel_linux::RingConfig;
use keel_linux::deadline::{self, Deadline, FiberDeadline};
use keel_linux::fs::FiberFs;

/// Completed NOPs of the task being measured.
static DONE: Progress = Progress::new();

const N: u64 = WARM_UP + CYCLES;

#[test]
fn a_deadline_nop_allocates_nothing() {
    let what = ["ring nop with a deadline (fiber, within)", "ring nop with a deadline (future, within)"];
    let Some(ring) = ring_or_skip(what[0], RingConfig::default()) else {
        skip(what[1], "io_uring is unavailable here");
        return;
    };
    let stacks = RegionStacks::new(Vec::leak(vec![0u8; 64 * 1024 + 16]), 64 * 1024, 0).expect("region stacks");
    let ex = pin!(Executor::with_stacks(ring, stacks, keel_linux::panic::config()).unwrap());
    let ex = ex.into_ref();
    let far = || Deadline::after(Duration::from_secs(3600));

    let fiber = ex
        .attach_fiber(
            task::<1024>("deadline-fiber"),
            FiberAttrs { stack_size: 64 * 1024, ..FiberAttrs::DEFAULT },
            move |f: &mut Fiber| {
                for _ in 0..N {
                    if f.within(far(), |f| f.nop()) != Ok(0) {
                        return Err(TaskError::Failed(1));
                    }
                    DONE.one();
                }
                Ok(1)
            },
        )
        .unwrap_or_else(|e| panic!("attach_fiber: {e}"));
    measure_progress(ex, &DONE, what[0]);
    assert_eq!(ex.result(fiber), Ok(Some(Ok(1))));

    let future = ex
        .attach(task::<1024>("deadline-future"), async move {
            for _ in 0..N {
                if deadline::within(far(), keel_linux::fs::nop()).await != Ok(0) {
                    return Err(TaskError::Failed(2));
                }
                DONE.one();
            }
            Ok(2)
        })
        .unwrap_or_else(|e| panic!("attach: {e}"));
    measure_progress(ex, &DONE, what[1]);
    assert_eq!(ex.result(future), Ok(Some(Ok(2))));

    let st = ex.with_driver(|d| d.stats()).unwrap();
    assert_eq!((st.completed, st.stale, st.deadlines_fired), (4 * N, 0, 0), "two CQEs per NOP: {st:?}");
}
