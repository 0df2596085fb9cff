//! A fiber spawned from the spare pool: one task re-attached as a fiber with the
//! handle of its previous run, run to completion, its result read, 1,000,000 times in
//! the window. The first (warm-up) spawn creates the one stack (`MmapStacks`: an mmap
//! and the overflow registry); every later one takes it from the executor's spare pool
//! with no syscall, which the pool's counters confirm.

use core::pin::pin;
use keel_alloc_free_tests::{CYCLES, WARM_UP, Window, assert_alloc_free, task};
use keel_core::{Executor, Fiber, FiberAttrs};
use keel_linux::{MmapStacks, SleepDriver};

#[test]
fn a_fiber_spawned_from_the_spare_pool_allocates_nothing() {
    let stacks = MmapStacks::new().expect("mmap stacks");
    let ex = pin!(Executor::with_stacks(SleepDriver::new(), stacks, keel_linux::panic::config()).unwrap());
    let ex = ex.into_ref();
    let mut h = task::<1024>("fiber-spawn");
    let mut cycle = |i: u64| {
        h = ex
            .attach_fiber(h, FiberAttrs { stack_size: 64 * 1024, ..FiberAttrs::DEFAULT }, move |_: &mut Fiber| i)
            .unwrap_or_else(|e| panic!("attach_fiber: {e}"));
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
    let st = ex.stack_stats();
    assert_eq!((st.created, st.reused, st.in_use, st.spares), (1, WARM_UP + CYCLES - 1, 0, 1), "{st:?}");
    assert_alloc_free("fiber spawn from the spare pool", CYCLES, &counts);
}
