//! Same-thread attach, run and complete: one future task on the simulated driver,
//! re-attached with the handle of its previous run (attach, `run(usize::MAX, None)`,
//! the run completes, its result is read), 1,000,000 times in the window.

use core::pin::pin;
use keel_alloc_free_tests::{CYCLES, WARM_UP, Window, assert_alloc_free, task};
use keel_core::{Config, Executor, sim::SimDriver};

#[test]
fn attach_run_and_complete_allocate_nothing() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let mut h = task::<256>("attach");
    let mut cycle = |i: u64| {
        h = ex.attach(h, async move { i }).unwrap_or_else(|e| panic!("attach: {e}"));
        assert_eq!(ex.run(usize::MAX, None), Ok(1));
        assert_eq!(ex.result(h), Ok(Some(Ok(i))));
    };
    for i in 0..WARM_UP {
        cycle(i);
    }
    let w = Window::open();
    for i in 0..CYCLES {
        cycle(i);
    }
    let counts = w.close();
    assert_eq!(ex.stats().completed, WARM_UP + CYCLES);
    assert_alloc_free("attach+run+complete", CYCLES, &counts);
}
