//! `suspend_for` with the timer firing, on the simulated driver (virtual time: each
//! park jumps the clock to the next deadline, so a million sleeps take no real time).
//! Each cycle arms a timer, parks, fires it and resumes the task. Two windows of
//! 1,000,000 sleeps of 1 µs: a future task (`rt::sleep`), and a fiber (`Fiber::sleep`,
//! stack carved from a leaked region with `RegionStacks`).

use core::pin::pin;
use core::time::Duration;
use keel_alloc_free_tests::{CYCLES, WARM_UP, Window, assert_alloc_free, run_items, run_to_end, task};
use keel_core::{Config, Executor, Fiber, FiberAttrs, RegionStacks, TaskError, rt, sim::SimDriver};

const SLEEP: Duration = Duration::from_micros(1);

#[test]
fn a_sleep_whose_timer_fires_allocates_nothing() {
    let stacks = RegionStacks::new(Vec::leak(vec![0u8; 64 * 1024 + 16]), 64 * 1024, 0).expect("region stacks");
    let ex = pin!(Executor::with_stacks(SimDriver::new(), stacks, Config::default()).unwrap());
    let ex = ex.into_ref();
    let n = WARM_UP + CYCLES;
    for fiber in [false, true] {
        let h = if fiber {
            ex.attach_fiber(
                task::<1024>("sleep-fiber"),
                FiberAttrs { stack_size: 64 * 1024, ..FiberAttrs::DEFAULT },
                move |f: &mut Fiber| {
                    for _ in 0..n {
                        f.sleep(SLEEP)?;
                    }
                    Ok(2)
                },
            )
            .unwrap_or_else(|e| panic!("attach_fiber: {e}"))
        } else {
            ex.attach(task::<1024>("sleep-future"), async move {
                for _ in 0..n {
                    rt::sleep(SLEEP).await?;
                }
                Ok::<u64, TaskError>(1)
            })
            .unwrap_or_else(|e| panic!("attach: {e}"))
        };
        let t0 = ex.now().as_nanos();
        let fired = ex.stats().timers_fired;
        // The first item starts the task, which arms its first timer.
        run_items(ex, WARM_UP + 1);
        assert_eq!(ex.stats().timers_fired - fired, WARM_UP);
        let w = Window::open();
        run_to_end(ex);
        let counts = w.close();
        assert_eq!(ex.stats().timers_fired - fired, n);
        assert_eq!(ex.now().as_nanos() - t0, n * 1_000, "virtual time: one µs per sleep");
        assert_eq!(ex.result(h), Ok(Some(Ok(if fiber { 2 } else { 1 }))));
        let what = if fiber { "sleep 1us, timer fires (fiber)" } else { "sleep 1us, timer fires (future)" };
        assert_alloc_free(what, CYCLES, &counts);
    }
}
