//! A fiber switch: one fiber on keel's asm switch, on a guarded mmap'd stack
//! (`MmapStacks`, created before the window), looping `Fiber::yield_now` on the
//! real-clock `SleepDriver`; each cycle is a switch out to the executor and back in.
//! 1,000,000 yields in the window.

use core::pin::pin;
use keel_alloc_free_tests::{CYCLES, WARM_UP, Window, assert_alloc_free, run_items, run_to_end, task};
use keel_core::{Executor, Fiber, FiberAttrs};
use keel_linux::{MmapStacks, SleepDriver};

#[test]
fn a_fiber_switch_allocates_nothing() {
    let stacks = MmapStacks::new().expect("mmap stacks");
    let ex = pin!(Executor::with_stacks(SleepDriver::new(), stacks, keel_linux::panic::config()).unwrap());
    let ex = ex.into_ref();
    let h = ex
        .attach_fiber(
            task::<1024>("fiber-yield"),
            FiberAttrs { stack_size: 64 * 1024, ..FiberAttrs::DEFAULT },
            |f: &mut Fiber| {
                for _ in 0..WARM_UP + CYCLES {
                    f.yield_now()?;
                }
                Ok(3)
            },
        )
        .unwrap_or_else(|e| panic!("attach_fiber: {e}"));
    run_items(ex, WARM_UP);
    let before = ex.stats().resumed;
    let w = Window::open();
    run_to_end(ex);
    let counts = w.close();
    assert_eq!(ex.stats().resumed - before, CYCLES + 1);
    assert_eq!(ex.result(h), Ok(Some(Ok(3))));
    assert_alloc_free("fiber switch (yield)", CYCLES, &counts);
}
