//! Fiber rule 9 (the run loop resumes a fiber on keel's own switch inline, and finishes one
//! that exits there through its vtable's `exited`) at the ends of a fiber's run: a fiber
//! that panics, one cancelled between two inline resumes, and one that exits in an inline
//! resume while other tasks (a fiber and a future) join it. Each joiner sees the run's
//! result once, and the stacks come back to the pool (reused by the next fibers).

mod common;
use common::*;
use core::pin::pin;
use keel_core::join::join;
use keel_core::sim::SimDriver;
use keel_core::{Config, Executor, Fiber, FiberAttrs, Priority, RegionStacks, TaskError, TaskHandle, TaskResult};
use std::cell::Cell;
use std::rc::Rc;

const STACK: usize = 32 * 1024;
const ATTRS: FiberAttrs = FiberAttrs { stack_size: STACK, ..FiberAttrs::DEFAULT };

fn region(stacks: usize) -> RegionStacks {
    let mem: &'static mut [u8] = Vec::leak(vec![0u8; stacks * (STACK + 4096) + 64]);
    RegionStacks::new(mem, STACK, 4096).unwrap()
}

fn catch(body: &mut dyn FnMut()) -> Result<(), &'static str> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).map_err(|p| match p.downcast_ref::<&'static str>() {
        Some(s) => *s,
        None => "a fiber panicked with a non-static message",
    })
}

type Handles = Rc<Cell<Option<TaskHandle>>>;

/// Runs a fiber `body` (after 3 yields, so its last resumes are inline) with a fiber and a
/// future joining it, on an executor of 3 stacks, twice in a row (the second round reuses
/// the stacks the first gave back); returns what each joiner saw, per round, and the run's
/// own result. `cancel_after`: the test cancels the fiber after that many items.
fn joined(
    body: fn(&mut Fiber) -> TaskResult,
    cancel_after: Option<usize>,
) -> Vec<(TaskResult, TaskResult, TaskResult)> {
    let ex = pin!(
        Executor::with_stacks(SimDriver::new(), region(3), Config { fiber_panics: Some(catch), ..Config::default() })
            .unwrap()
    );
    let ex = ex.into_ref();
    let mut out = Vec::new();
    for _ in 0..2 {
        let target: Handles = Rc::default();
        let seen: Rc<Cell<(Option<TaskResult>, Option<TaskResult>)>> = Rc::default();
        let (t, s) = (target.clone(), seen.clone());
        ex.attach_fiber(task(Priority::Normal, "fiber joiner"), ATTRS, move |f: &mut Fiber| {
            let r = f.join(t.get().expect("attached first"), None).expect("a join");
            let (_, b) = s.get();
            s.set((Some(r), b));
            Ok(0)
        })
        .unwrap();
        let (t, s) = (target.clone(), seen.clone());
        ex.attach(task(Priority::Normal, "future joiner"), async move {
            let r = join(t.get().expect("attached first")).await.expect("a join");
            let (a, _) = s.get();
            s.set((a, Some(r)));
            Ok(0)
        })
        .unwrap();
        let h = ex
            .attach_fiber(task(Priority::Normal, "joined"), ATTRS, move |f: &mut Fiber| {
                for _ in 0..3 {
                    f.yield_now()?;
                }
                body(f)
            })
            .unwrap();
        target.set(Some(h));
        if let Some(n) = cancel_after {
            assert_eq!(ex.run(n, None), Ok(n));
            ex.cancel(h).unwrap();
        }
        run_all!(ex);
        assert_eq!(ex.attached(), 0);
        assert_eq!(ex.stack_stats().in_use, 0, "every stack back in the pool");
        let own = ex.result(h).unwrap().expect("completed");
        let (a, b) = seen.get();
        out.push((a.expect("the fiber joiner saw the result"), b.expect("the future joiner saw it"), own));
    }
    out
}

#[test]
fn fiber_rule_9_a_fiber_that_exits_inline_hands_its_result_to_every_joiner() {
    for (a, b, own) in joined(|_| Ok(42), None) {
        assert_eq!((a, b, own), (Ok(42), Ok(42), Ok(42)));
    }
}

#[test]
fn fiber_rule_9_a_fiber_that_panics_in_an_inline_resume_hands_the_panic_to_every_joiner() {
    fn boom(_: &mut Fiber) -> TaskResult {
        if std::hint::black_box(true) {
            panic!("inline boom");
        }
        Ok(0)
    }
    for (a, b, own) in joined(boom, None) {
        let p = Err(TaskError::Panicked("inline boom"));
        assert_eq!((a, b, own), (p, p, p));
    }
}

#[test]
fn fiber_rule_9_a_fiber_cancelled_between_inline_resumes_ends_cancelled_for_every_joiner() {
    fn forever(f: &mut Fiber) -> TaskResult {
        loop {
            f.yield_now()?;
        }
    }
    // Four items: both joiners suspended on their joins, then the fiber started and resumed.
    for (a, b, own) in joined(forever, Some(4)) {
        let c = Err(TaskError::Cancelled);
        assert_eq!((a, b, own), (c, c, c));
    }
}
