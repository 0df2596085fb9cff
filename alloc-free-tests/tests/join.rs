//! Same-thread joins, each 1,000,000 times in its own window: a future task joins a
//! child that runs after it (the join links in the child's waiters; the child's end
//! writes the result into it and wakes it: join rule 3); a fiber does the same (its
//! stack from the spare pool, created before the window); a future joins a run that
//! completed already (the record's read, join rule 2).

use core::pin::pin;
use keel_alloc_free_tests::{CYCLES, WARM_UP, Window, assert_alloc_free};
use keel_core::join::join;
use keel_core::{Config, Executor, Fiber, FiberAttrs, Priorities, Priority, TaskAttrs, TaskHandle, TaskSlot};
use keel_linux::{MmapStacks, SleepDriver};

fn task(cpu: Priority, name: &'static str) -> TaskHandle {
    let slot: &'static TaskSlot = Box::leak(Box::new(TaskSlot::new()));
    slot.create(TaskAttrs { priority: Priorities { cpu, io: Priority::Normal }, name }).expect("a fresh slot")
}

#[test]
fn joins_of_futures_and_fibers_allocate_nothing() {
    let stacks = MmapStacks::new().expect("mmap stacks");
    let ex = pin!(Executor::with_stacks(SleepDriver::new(), stacks, Config::default()).unwrap());
    let ex = ex.into_ref();
    // The parent runs first (higher priority) and waits, or last (lower) and finds it.
    let mut child = task(Priority::Normal, "child");
    let mut first = task(Priority::High, "waits");
    let mut fiber = task(Priority::High, "fiber");
    let mut last = task(Priority::Low, "finds");
    let mut cycle = |i: u64, kind: u8| {
        let c = ex.attach(child, async move { i }).unwrap_or_else(|e| panic!("attach: {e}"));
        child = c;
        let parent = match kind {
            0 => {
                first =
                    ex.attach(first, async move { join(c).await.unwrap_or(Ok(0)) }).unwrap_or_else(|e| panic!("{e}"));
                first
            }
            1 => {
                fiber = ex
                    .attach_fiber(
                        fiber,
                        FiberAttrs { stack_size: 16 * 1024, ..FiberAttrs::DEFAULT },
                        move |f: &mut Fiber| f.join(c, None).unwrap_or(Ok(0)),
                    )
                    .unwrap_or_else(|e| panic!("{e}"));
                fiber
            }
            _ => {
                last = ex.attach(last, async move { join(c).await.unwrap_or(Ok(0)) }).unwrap_or_else(|e| panic!("{e}"));
                last
            }
        };
        while ex.attached() > 0 {
            ex.run(usize::MAX, None).unwrap_or_else(|e| panic!("run: {e}"));
        }
        assert_eq!(ex.result(parent), Ok(Some(Ok(i))));
    };
    for (kind, what) in
        [(0u8, "join that waits (future)"), (1, "join that waits (fiber)"), (2, "join of a completed run")]
    {
        for i in 0..WARM_UP {
            cycle(i, kind);
        }
        let before = ex.stats().resumed;
        let w = Window::open();
        for i in 0..CYCLES {
            cycle(i, kind);
        }
        let counts = w.close();
        // Three resumes a cycle when the parent waits (parent, child, parent), two when
        // it finds the result: the join took the path the window is named for.
        let per = if kind == 2 { 2 } else { 3 };
        assert_eq!(ex.stats().resumed - before, per * CYCLES, "{what}: not the path the window names");
        assert_alloc_free(what, CYCLES, &counts);
    }
}
