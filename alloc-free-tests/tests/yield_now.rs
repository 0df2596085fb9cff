//! Yield: one future task looping `rt::yield_now().await` on the real-clock
//! `SleepDriver` (a yield never reads the clock), run until it completes; 1,000,000
//! yields in the window.

use core::pin::pin;
use keel_alloc_free_tests::{CYCLES, WARM_UP, Window, assert_alloc_free, run_items, run_to_end, task};
use keel_core::{Config, Executor, TaskError, rt};
use keel_linux::SleepDriver;

#[test]
fn yield_allocates_nothing() {
    let ex = pin!(Executor::new(SleepDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let body = async {
        for _ in 0..WARM_UP + CYCLES {
            rt::yield_now().await?;
        }
        Ok::<u64, TaskError>(7)
    };
    let h = ex.attach(task::<256>("yield"), body).unwrap_or_else(|e| panic!("attach: {e}"));
    run_items(ex, WARM_UP);
    let before = ex.stats().resumed;
    let w = Window::open();
    run_to_end(ex);
    let counts = w.close();
    // One resumption per yield, and the last one completes the run.
    assert_eq!(ex.stats().resumed - before, CYCLES + 1);
    assert_eq!(ex.result(h), Ok(Some(Ok(7))));
    assert_alloc_free("yield", CYCLES, &counts);
}
