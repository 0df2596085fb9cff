//! Fiber tasks on keel's asm switch, with stacks carved from a region (no mmap).

mod common;
use common::*;
use core::pin::{Pin, pin};
use core::time::Duration;
use keel_core::sim::{SimDriver, SimOp};
use keel_core::{
    AttachError, CancelOutcome, Cancelled, Config, Executor, Fiber, FiberAttrs, IoStatus, Priority, RegionStacks,
    SuspendReason, SwitcherKind, TaskError, TaskState, rt,
};

const STACK: usize = 32 * 1024;

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

fn config() -> Config {
    Config { fiber_panics: Some(catch), ..Config::default() }
}

const ATTRS: FiberAttrs = FiberAttrs { stack_size: STACK, ..FiberAttrs::DEFAULT };

#[test]
fn a_fiber_yields_sleeps_and_returns_a_result() {
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(4), config()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach_fiber(task(Priority::Normal, "f"), ATTRS, |f: &mut Fiber| {
            let mut acc = 0u64;
            for i in 0..10 {
                f.yield_now()?;
                acc += i;
            }
            f.sleep(Duration::from_millis(7))?;
            assert_eq!(f.now().as_nanos(), 7_000_000);
            Ok(acc)
        })
        .unwrap();
    assert_eq!(ex.switcher(t), Ok(Some(SwitcherKind::Fiber)));
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(45))));
    let st = ex.stack_stats();
    assert_eq!((st.created, st.in_use, st.spares), (1, 0, 1));
}

#[test]
fn fibers_and_futures_interleave_with_yields_and_timers_results_checked() {
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(64), config()).unwrap());
    let ex = ex.into_ref();
    let log = Log::default();
    let mut runs = Vec::new();
    for i in 0..64u64 {
        let l = log.clone();
        let h = if i % 2 == 0 {
            ex.attach_fiber(task(Priority::Normal, "fib"), ATTRS, move |f: &mut Fiber| {
                for k in 0..5 {
                    if k % 2 == 0 { f.yield_now()? } else { f.sleep(Duration::from_micros(i * 10))? }
                }
                l.push(format!("fiber {i}"));
                Ok(i * 3)
            })
        } else {
            ex.attach(task(Priority::Normal, "fut"), async move {
                for k in 0..5 {
                    if k % 2 == 0 { rt::yield_now().await? } else { rt::sleep(Duration::from_micros(i * 10)).await? }
                }
                l.push(format!("future {i}"));
                Ok(i * 3)
            })
            .map_err(|e| e.split().0.with_body(()))
            .map_err(|_| unreachable!())
        }
        .unwrap();
        runs.push(h);
    }
    run_all!(ex);
    for (i, h) in runs.into_iter().enumerate() {
        assert_eq!(ex.result(h), Ok(Some(Ok(i as u64 * 3))));
    }
    assert_eq!(log.take().len(), 64);
}

#[test]
fn fiber_rule_1_a_stack_goes_back_to_the_pool_after_its_fiber_exits_and_is_reused() {
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(2), config()).unwrap());
    let ex = ex.into_ref();
    let mut h = task(Priority::Normal, "reuse");
    for i in 0..1000u64 {
        h = ex
            .attach_fiber(h, ATTRS, move |f: &mut Fiber| {
                f.yield_now()?;
                Ok(i)
            })
            .unwrap();
        run_all!(ex);
        assert_eq!(ex.result(h), Ok(Some(Ok(i))));
    }
    let st = ex.stack_stats();
    assert_eq!(st.created, 1, "{st:?}");
    assert_eq!(st.reused, 999);
    assert_eq!(st.high_water, 1);
}

#[test]
fn pool_rule_2_spares_beyond_the_maximum_go_back_to_the_provider() {
    let cfg = Config { max_spare_stacks: 2, ..config() };
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(8), cfg).unwrap());
    let ex = ex.into_ref();
    for _ in 0..5 {
        ex.attach_fiber(task(Priority::Normal, "s"), ATTRS, |f: &mut Fiber| f.yield_now()).unwrap();
    }
    run_all!(ex);
    let st = ex.stack_stats();
    assert_eq!((st.created, st.high_water, st.spares, st.released), (5, 5, 2, 3), "{st:?}");
}

#[test]
fn out_of_stacks_and_too_small_are_typed_errors_that_hand_the_body_back() {
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(1), config()).unwrap());
    let ex = ex.into_ref();
    let a = ex.attach_fiber(task(Priority::Normal, "a"), ATTRS, |f: &mut Fiber| f.wait()).unwrap();
    let b = task(Priority::Normal, "b");
    let err = ex.attach_fiber(b, ATTRS, |_: &mut Fiber| 7u64).unwrap_err();
    assert!(matches!(err, AttachError::NoStack { .. }), "{err:?}");
    let body = err.into_body();
    assert!(matches!(
        ex.attach_fiber(b, FiberAttrs { stack_size: 100, ..FiberAttrs::DEFAULT }, body),
        Err(AttachError::StackTooSmall { min: 4096, .. })
    ));
    // A future-only executor has no stacks at all.
    let plain = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    assert!(matches!(
        plain.into_ref().attach_fiber(task(Priority::Normal, "c"), ATTRS, |_: &mut Fiber| 1u64),
        Err(AttachError::NoStack { .. })
    ));
    ex.run(1, None).unwrap();
    ex.wake(a);
    run_all!(ex);
    // The stack came back: now b fits.
    let b = ex.attach_fiber(b, ATTRS, |_: &mut Fiber| 7u64).unwrap();
    run_all!(ex);
    assert_eq!(ex.result(b), Ok(Some(Ok(7))));
}

#[test]
fn wake_rule_1_a_fiber_woken_while_running_is_queued_once_and_while_ready_it_is_a_no_op() {
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(2), config()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach_fiber(task(Priority::Normal, "w"), ATTRS, |f: &mut Fiber| {
            let me = f.task();
            me.wake();
            me.wake();
            f.wait()?; // the wakes came while running: back after one pass
            f.wait()?;
            Ok(2)
        })
        .unwrap();
    assert_eq!(ex.run(1, None), Ok(1));
    assert_eq!(ex.state(t), Ok(TaskState::Suspended(SuspendReason::Wait)));
    assert_eq!(ex.run(1, None), Ok(1)); // the inbox wake resumes it; it waits again
    assert_eq!(ex.state(t), Ok(TaskState::Suspended(SuspendReason::Wait)));
    assert_eq!(ex.stats().ready, [0, 0, 0], "queued twice");
    ex.wake(t);
    assert_eq!(ex.state(t), Ok(TaskState::Ready));
    ex.wake(t); // ready: a no-op
    t.wake();
    assert_eq!(ex.stats().ready, [0, 1, 0]);
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(2))));
}

#[test]
fn fiber_rule_2_cancelling_started_fibers_resumes_them_with_cancelled() {
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(4), config()).unwrap());
    let ex = ex.into_ref();
    let seen = std::rc::Rc::new(std::cell::Cell::new(0));
    let body = |s: std::rc::Rc<std::cell::Cell<u32>>, kind: u32| {
        move |f: &mut Fiber| -> keel_core::TaskResult {
            let r = match kind {
                0 => f.yield_now(),
                1 => f.sleep(Duration::from_secs(5)),
                _ => f.wait(),
            };
            if r == Err(Cancelled) {
                s.set(s.get() + 1);
                assert_eq!(f.yield_now(), Err(Cancelled));
            }
            r?;
            Ok(1)
        }
    };
    let ready = ex.attach_fiber(task(Priority::Normal, "r"), ATTRS, body(seen.clone(), 0)).unwrap();
    let timer = ex.attach_fiber(task(Priority::Normal, "t"), ATTRS, body(seen.clone(), 1)).unwrap();
    let wait = ex.attach_fiber(task(Priority::Normal, "w"), ATTRS, body(seen.clone(), 2)).unwrap();
    let fresh = ex.attach_fiber(task(Priority::Normal, "n"), ATTRS, body(seen.clone(), 2)).unwrap();
    assert_eq!(ex.cancel(fresh), Ok(CancelOutcome::Completed));
    ex.run(3, None).unwrap();
    assert_eq!(ex.state(ready), Ok(TaskState::Ready));
    assert_eq!(ex.cancel(ready), Ok(CancelOutcome::Resumes));
    assert_eq!(ex.cancel(timer), Ok(CancelOutcome::Resumes));
    assert_eq!(ex.cancel(wait), Ok(CancelOutcome::Resumes));
    run_all!(ex);
    assert_eq!(seen.get(), 3);
    for h in [ready, timer, wait, fresh] {
        assert_eq!(ex.result(h), Ok(Some(Err(TaskError::Cancelled))));
    }
    assert_eq!(ex.now().as_nanos(), 0);
    let st = ex.stack_stats();
    assert_eq!(st.in_use, 0, "{st:?}");
}

#[test]
fn fiber_rule_3_a_panic_in_a_fiber_completes_the_task_with_an_error_naming_it() {
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(2), config()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach_fiber(task(Priority::Normal, "p"), ATTRS, |f: &mut Fiber| -> keel_core::TaskResult {
            f.yield_now()?;
            if std::hint::black_box(true) {
                panic!("fiber boom");
            }
            Ok(0)
        })
        .unwrap();
    let other = ex.attach(task(Priority::Low, "after"), async { 3u64 }).unwrap();
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Err(TaskError::Panicked("fiber boom")))));
    assert_eq!(ex.result(other), Ok(Some(Ok(3))));
    assert_eq!(ex.stack_stats().in_use, 0);
}

#[test]
fn fiber_io_status_blocks_on_its_own_stack() {
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(2), config()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach_fiber(task(Priority::Normal, "io"), ATTRS, |f: &mut Fiber| -> keel_core::TaskResult {
            let a = pin!(IoStatus::new());
            let b = pin!(IoStatus::new());
            f.initiate::<SimDriver>(a.as_ref(), SimOp::new(1).after(Duration::from_millis(2)).with_result(Ok(10)))
                .unwrap();
            f.initiate::<SimDriver>(b.as_ref(), SimOp::new(2).after(Duration::from_millis(1)).with_result(Ok(20)))
                .unwrap();
            let mut n = 0;
            while n < 2 {
                n += f.suspend_until_completed_io(4)?;
            }
            assert_eq!(f.suspend_until_completed_io(4), Ok(0));
            Ok((a.result().unwrap().unwrap() + b.result().unwrap().unwrap()) as u64)
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(30))));
}

#[test]
fn dropping_an_executor_with_suspended_fibers_is_safe() {
    let h;
    {
        let ex = pin!(Executor::with_stacks(SimDriver::new(), region(2), config()).unwrap());
        let ex = ex.into_ref();
        h = ex.attach_fiber(task(Priority::Normal, "left"), ATTRS, |f: &mut Fiber| f.wait()).unwrap();
        ex.run(1, None).unwrap();
        let _: Pin<&Executor<SimDriver, RegionStacks>> = ex;
    }
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let again = ex.attach(h, async { 1u64 }).unwrap();
    ex.run(1, None).unwrap();
    assert_eq!(ex.result(again), Ok(Some(Ok(1))));
}

/// A fiber that returns with i/o in flight (its status block on its own stack, orphaned
/// by the return) keeps its stack until that i/o has been reaped: the task drains, the
/// stack stays in use, and goes back to the pool only after the completion.
#[test]
fn fiber_rule_4_a_fiber_returning_with_io_in_flight_keeps_its_stack_until_it_is_reaped() {
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(2), config()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach_fiber(task(Priority::Normal, "leaves io"), ATTRS, |f: &mut Fiber| -> keel_core::TaskResult {
            let st = pin!(IoStatus::new());
            f.initiate::<SimDriver>(st.as_ref(), SimOp::new(1).after(Duration::from_millis(5))).unwrap();
            Ok(4)
        })
        .unwrap();
    assert_eq!(ex.run(1, None), Ok(1));
    assert_eq!(ex.state(t), Ok(TaskState::Draining));
    let st = ex.stack_stats();
    assert_eq!((st.in_use, st.spares), (1, 0), "the stack went back with i/o in flight: {st:?}");
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(4))));
    let st = ex.stack_stats();
    assert_eq!((st.in_use, st.spares), (0, 1), "{st:?}");
}

/// A cancelled fiber that ignores `Cancelled` and keeps calling suspension points still
/// switches out at each one (it is requeued behind its priority): one fiber per kind of
/// suspension point (yield, wait, sleep) loops on it; after the cancel, each resume of a
/// fiber runs exactly one suspension point, and `run(3, ..)` resumes each fiber once.
#[test]
fn fiber_rule_5_a_cancelled_fiber_that_ignores_cancelled_still_switches_out_at_each_suspension_point() {
    use std::cell::Cell;
    use std::rc::Rc;
    const CALLS: u32 = 1000;
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(3), config()).unwrap());
    let ex = ex.into_ref();
    let counts: Vec<Rc<Cell<u32>>> = (0..3).map(|_| Rc::default()).collect();
    let fibers: Vec<_> = counts
        .iter()
        .enumerate()
        .map(|(kind, c)| {
            let c = c.clone();
            ex.attach_fiber(task(Priority::Normal, "stubborn"), ATTRS, move |f: &mut Fiber| -> keel_core::TaskResult {
                // Bounded, so a suspension point that does not switch out shows as a count.
                while c.get() < CALLS {
                    c.set(c.get() + 1);
                    let _ = match kind {
                        0 => f.yield_now(),
                        1 => f.wait(),
                        _ => f.sleep(Duration::from_secs(1)),
                    };
                }
                Err(TaskError::Cancelled)
            })
            .unwrap()
        })
        .collect();
    assert_eq!(ex.run(3, None), Ok(3));
    for &t in &fibers {
        assert_eq!(ex.cancel(t), Ok(CancelOutcome::Resumes));
    }
    // A fiber cancelled inside `sleep` spends its first resume on the pass the cancel's
    // wake costs (fiber rule 5), so it counts one call fewer.
    let start: Vec<u32> = counts.iter().map(|c| c.get()).collect();
    for round in 0..5 {
        let before: Vec<u32> = counts.iter().map(|c| c.get()).collect();
        assert_eq!(ex.run(3, None), Ok(3), "a cancelled fiber kept the executor");
        for (kind, c) in counts.iter().enumerate() {
            let ran = c.get() - before[kind];
            assert!(ran <= 1, "round {round}: fiber {kind} ran {ran} suspension points in one resume");
        }
    }
    for (kind, c) in counts.iter().enumerate() {
        assert!(c.get() - start[kind] >= 4, "fiber {kind} was not resumed once per pass");
    }
    for &t in &fibers {
        ex.cancel(t).unwrap();
    }
    while ex.attached() > 0 {
        ex.run(64, None).unwrap();
    }
    for &t in &fibers {
        assert_eq!(ex.result(t), Ok(Some(Err(TaskError::Cancelled))));
    }
}

/// `trim` decommits spares pooled longer than the threshold, each once.
#[test]
fn pool_rule_4_trim_decommits_old_spares_once_each() {
    // Trimming configured (far off): spares are stamped with the clock when pooled.
    let trimming = Config { trim_spare_stacks_after: Some(Duration::from_secs(1 << 30)), ..config() };
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(2), trimming).unwrap());
    let ex = ex.into_ref();
    // Two hours of virtual time first, so that "older than an hour" is not every spare.
    ex.attach(task(Priority::Normal, "clock"), async {
        rt::sleep(Duration::from_secs(7200)).await?;
        Ok(0)
    })
    .unwrap();
    run_all!(ex);
    for _ in 0..2 {
        ex.attach_fiber(task(Priority::Normal, "f"), ATTRS, |f: &mut Fiber| -> keel_core::TaskResult {
            f.yield_now()?;
            Ok(0)
        })
        .unwrap();
    }
    run_all!(ex);
    assert_eq!(ex.stack_stats().spares, 2);
    ex.trim_stacks(Duration::from_secs(3600));
    assert_eq!(ex.stack_stats().decommitted, 0, "a fresh spare was decommitted");
    ex.trim_stacks(Duration::ZERO);
    assert_eq!(ex.stack_stats().decommitted, 2);
    ex.trim_stacks(Duration::ZERO);
    assert_eq!(ex.stack_stats().decommitted, 2, "a spare was decommitted twice");
}
