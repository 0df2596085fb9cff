//! Spawning from inside a task (spawn rules, `core/src/exec/spawn.rs`), 1,000,000 times
//! in its own window for each parent kind: one long-lived parent spawns a child's next run
//! and joins it, per cycle, as a future (`spawn::spawn`) and as a fiber
//! (`Fiber::spawn`); the child slot is the executor's after its first run, so each spawn
//! is an attach of an owned task (no claim).

use core::pin::pin;
use keel_alloc_free_tests::{CYCLES, WARM_UP, Window, assert_alloc_free};
use keel_core::join::join;
use keel_core::spawn::spawn;
use keel_core::{Config, Executor, Fiber, FiberAttrs, TaskAttrs, TaskError, TaskHandle, TaskSlot, rt};
use keel_linux::{MmapStacks, SleepDriver};
use std::cell::Cell;
use std::rc::Rc;

fn task(name: &'static str) -> TaskHandle {
    let slot: &'static TaskSlot = Box::leak(Box::new(TaskSlot::new()));
    slot.create(TaskAttrs { name, ..TaskAttrs::default() }).expect("a fresh slot")
}

/// What the window counts: the parent's cycles, and whether it is inside the window.
#[derive(Clone, Default)]
struct Shared {
    done: Rc<Cell<u64>>,
    go: Rc<Cell<u64>>,
}

#[test]
fn spawn_and_join_from_a_future_and_a_fiber_allocate_nothing() {
    let stacks = MmapStacks::new().expect("mmap stacks");
    let ex = pin!(Executor::with_stacks(SleepDriver::new(), stacks, Config::default()).unwrap());
    let ex = ex.into_ref();
    for fiber in [false, true] {
        let what = if fiber { "spawn and join (fiber)" } else { "spawn and join (future)" };
        let s = Shared::default();
        let child = task("child");
        // The parent runs `go` cycles, then waits to be woken for the next batch.
        let parent = if fiber {
            let s = s.clone();
            ex.attach_fiber(
                task("fiber"),
                FiberAttrs { stack_size: 16 * 1024, ..FiberAttrs::DEFAULT },
                move |f: &mut Fiber| {
                    let mut c = child;
                    loop {
                        while s.done.get() < s.go.get() {
                            c = f.spawn(c, async { 1u64 }).map_err(|_| TaskError::Failed(1))?;
                            let got = f.join(c, None).map_err(|_| TaskError::Failed(2))??;
                            s.done.set(s.done.get() + got);
                        }
                        if f.wait().is_err() {
                            break;
                        }
                    }
                    Ok::<(), TaskError>(())
                },
            )
            .map_err(|e| e.to_string())
        } else {
            let s = s.clone();
            ex.attach(task("future"), async move {
                let mut c = child;
                loop {
                    while s.done.get() < s.go.get() {
                        c = spawn(c, async { 1u64 }).await.map_err(|_| TaskError::Failed(1))?;
                        let got = join(c).await.map_err(|_| TaskError::Failed(2))??;
                        s.done.set(s.done.get() + got);
                    }
                    if rt::wait().await.is_err() {
                        break;
                    }
                }
                Ok::<(), TaskError>(())
            })
            .map_err(|e| e.to_string())
        }
        .unwrap_or_else(|e| panic!("attach: {e}"));
        let batch = |n: u64| {
            s.go.set(s.go.get() + n);
            ex.wake(parent);
            while s.done.get() < s.go.get() {
                ex.run(usize::MAX, None).unwrap_or_else(|e| panic!("run: {e}"));
            }
        };
        batch(WARM_UP);
        let before = ex.stats().resumed;
        let w = Window::open();
        batch(CYCLES);
        let counts = w.close();
        // Two resumes a cycle (the child, the parent woken by its end), plus the wake.
        let resumed = ex.stats().resumed - before;
        assert!(resumed <= 2 * CYCLES + 1, "{what}: {resumed} resumes for {CYCLES} cycles");
        assert_eq!(s.done.get(), WARM_UP + CYCLES, "{what}: a spawned run's result went missing");
        assert_alloc_free(what, CYCLES, &counts);
        ex.cancel(parent).unwrap_or_else(|e| panic!("cancel: {e}"));
        while ex.attached() > 0 {
            ex.run(usize::MAX, None).unwrap_or_else(|e| panic!("run: {e}"));
        }
    }
}
