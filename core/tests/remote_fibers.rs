//! Fibers attached from other threads (`ExecutorHandle::attach_fiber`,
//! `Dispatcher::submit_fiber`; fiber rule 8): placed without a stack, given one from
//! the owner's pool at their first resume, on the owner's thread.

mod common;
use common::*;
use core::pin::pin;
use core::time::Duration;
use keel_core::sim::SimDriver;
use keel_core::{
    AttachError, CancelOutcome, Config, Dispatcher, Executor, Fiber, FiberAttrs, HandleSlot, NoIo, Priority,
    RegionStacks,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const STACK: usize = 32 * 1024;
const ATTRS: FiberAttrs = FiberAttrs { stack_size: STACK, ..FiberAttrs::DEFAULT };

fn region(stacks: usize) -> RegionStacks {
    let mem: &'static mut [u8] = Vec::leak(vec![0u8; stacks * (STACK + 4096) + 64]);
    RegionStacks::new(mem, STACK, 4096).unwrap()
}

fn handle_slot() -> &'static HandleSlot {
    Box::leak(Box::new(HandleSlot::new()))
}

/// Counts its drops: tells whether a closure that never ran was dropped, once.
struct Drops(Arc<AtomicU64>);

impl Drop for Drops {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A fiber body that yields `n` times and sleeps, then adds its sum to `out`.
fn yields_then_adds(out: &Arc<AtomicU64>, n: u64) -> impl FnOnce(&mut Fiber) -> keel_core::TaskResult + Send + 'static {
    let out = out.clone();
    move |f: &mut Fiber| {
        let mut acc = 0;
        for i in 0..n {
            f.yield_now()?;
            acc += i;
        }
        f.sleep(Duration::from_millis(3))?;
        out.fetch_add(acc, Ordering::Relaxed);
        Ok(acc)
    }
}

/// Fiber rule 8: a fiber attached from another thread suspends (yields, sleeps) like a
/// local one; its stack comes from the owner's pool at its first resume and goes back at
/// its end; the task is released at completion (remote rule 4) and can be attached again.
#[test]
fn fiber_rule_8_a_fiber_attached_from_another_thread_suspends_and_returns_its_stack() {
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(4), Config::default()).unwrap());
    let ex = ex.into_ref();
    let handle = ex.handle(handle_slot()).unwrap();
    let out = Arc::new(AtomicU64::new(0));
    let t = task(Priority::Normal, "remote fiber");
    let run = std::thread::scope(|s| {
        s.spawn(|| handle.attach_fiber(t, ATTRS, yields_then_adds(&out, 10)).map_err(|_| "refused").unwrap())
            .join()
            .unwrap()
    });
    assert_eq!(ex.stack_stats().in_use, 0, "a stack was taken before the owner ran the fiber");
    run_all_until(ex, || out.load(Ordering::Relaxed) == 45);
    assert_eq!(ex.attached(), 0);
    let st = ex.stack_stats();
    assert_eq!((st.created, st.in_use, st.spares), (1, 0, 1), "the stack did not go back to the pool");
    // Released at completion: another thread attaches the next run, which reuses the spare.
    std::thread::scope(|s| {
        s.spawn(|| handle.attach_fiber(run, ATTRS, yields_then_adds(&out, 3)).map_err(|_| "not released").unwrap())
            .join()
            .unwrap()
    });
    run_all_until(ex, || out.load(Ordering::Relaxed) == 48);
    assert_eq!(ex.stack_stats().created, 1, "the second run did not reuse the pooled stack");
}

/// A stack below the minimum is refused at the attach, on the attaching thread, with the
/// closure handed back unrun.
#[test]
fn a_remote_fiber_with_a_too_small_stack_is_refused_with_its_body() {
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(1), Config::default()).unwrap());
    let ex = ex.into_ref();
    let handle = ex.handle(handle_slot()).unwrap();
    let dropped = Arc::new(AtomicU64::new(0));
    let guard = Drops(dropped.clone());
    let small = FiberAttrs { stack_size: 1024, ..FiberAttrs::DEFAULT };
    let refused = std::thread::scope(|s| {
        s.spawn(move || {
            match handle.attach_fiber(task(Priority::Normal, "small"), small, move |_: &mut Fiber| {
                drop(guard);
                0u64
            }) {
                Err(AttachError::StackTooSmall { body, min }) => Some((body, min)),
                _ => None,
            }
        })
        .join()
        .unwrap()
    });
    let (body, min) = refused.expect("a 1 KiB stack was accepted");
    assert_eq!(min, keel_core::fiber::MIN_STACK);
    assert_eq!(dropped.load(Ordering::Relaxed), 0, "the refused body was dropped instead of handed back");
    drop(body);
    assert_eq!(dropped.load(Ordering::Relaxed), 1);
    assert_eq!(ex.attached(), 0);
}

/// Fiber rule 8: an owner whose pool has no stack for the fiber completes the run with
/// `TaskError::NoStack`, without running it; the closure is dropped once and the executor
/// goes on.
#[test]
fn fiber_rule_8_a_remote_fiber_the_pool_has_no_stack_for_completes_without_running() {
    // No stack provider at all: every take fails.
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let handle = ex.handle(handle_slot()).unwrap();
    let (ran, dropped) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (r, guard) = (ran.clone(), Drops(dropped.clone()));
    std::thread::scope(|s| {
        s.spawn(move || {
            handle
                .attach_fiber(task(Priority::Normal, "stackless"), ATTRS, move |_: &mut Fiber| {
                    let _keep = guard;
                    r.fetch_add(1, Ordering::Relaxed);
                    0u64
                })
                .map_err(|_| "refused")
                .unwrap()
        })
        .join()
        .unwrap()
    });
    run_all_until(ex, || ex.stats().completed == 1);
    assert_eq!(ran.load(Ordering::Relaxed), 0, "a fiber without a stack ran");
    assert_eq!(dropped.load(Ordering::Relaxed), 1, "the unrun closure was not dropped exactly once");
    assert_eq!(ex.stats().completed, 1);
    assert_eq!(ex.attached(), 0);
    // The same failure seen through a local attach of the same shape says why, typed.
    let err = keel_core::TaskError::NoStack { errno: 12, wanted: STACK };
    assert!(err.to_string().contains("smaller stack_size"), "{err}");
}

/// Fiber rule 8: a remote fiber cancelled before its first resume is dropped without a
/// stack ever being taken; one cancelled after it started winds down through `Cancelled`.
#[test]
fn fiber_rule_8_a_remote_fiber_cancelled_before_it_ran_takes_no_stack() {
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(2), Config::default()).unwrap());
    let ex = ex.into_ref();
    let handle = ex.handle(handle_slot()).unwrap();
    let dropped = Arc::new(AtomicU64::new(0));
    let guard = Drops(dropped.clone());
    let started = Arc::new(AtomicU64::new(0));
    let s2 = started.clone();
    let (early, late) = std::thread::scope(|s| {
        s.spawn(|| {
            let early = handle
                .attach_fiber(task(Priority::Low, "early"), ATTRS, move |_: &mut Fiber| {
                    let _keep = guard;
                    7u64
                })
                .map_err(|_| "refused")
                .unwrap();
            let late = handle
                .attach_fiber(task(Priority::Low, "late"), ATTRS, move |f: &mut Fiber| {
                    s2.fetch_add(1, Ordering::Relaxed);
                    loop {
                        if f.sleep(Duration::from_secs(3600)).is_err() {
                            return 1u64;
                        }
                    }
                })
                .map_err(|_| "refused")
                .unwrap();
            (early, late)
        })
        .join()
        .unwrap()
    });
    // A local high-priority task takes the one item of this run: the pass drains the
    // inbox (both fibers become ready) and resumes it, not them.
    ex.attach(task(Priority::High, "gate"), async {
        keel_core::rt::yield_now().await?;
        Ok(0u64)
    })
    .unwrap();
    assert_eq!(ex.run(1, Some(Duration::ZERO)), Ok(1));
    assert_eq!(ex.cancel(early), Ok(CancelOutcome::Completed), "the queued remote fiber was not cancelled unstarted");
    run_all_until(ex, || started.load(Ordering::Relaxed) == 1);
    assert_eq!(dropped.load(Ordering::Relaxed), 1, "the cancelled, unrun closure was not dropped");
    assert_eq!(ex.stack_stats().created, 1, "a stack was taken for a fiber cancelled before it ran");
    assert_eq!(ex.cancel(late), Ok(CancelOutcome::Resumes));
    run_all!(ex);
    let st = ex.stack_stats();
    assert_eq!((st.in_use, st.spares), (0, 1));
}

fn run_all_until<D: keel_core::Driver, S: keel_core::StackProvider>(
    ex: core::pin::Pin<&Executor<D, S>>,
    done: impl Fn() -> bool,
) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        match ex.run(16, Some(Duration::from_millis(1))) {
            Ok(_) | Err(keel_core::RunError::TimedOut) => {}
            Err(e) => panic!("run: {e}"),
        }
    }
    panic!("the condition never held");
}

/// Teardown: an executor dropped with remote fibers still in its inbox (never resumed)
/// drops their closures once and leaks nothing.
#[test]
fn an_executor_dropped_with_unrun_remote_fibers_drops_their_closures() {
    let dropped = Arc::new(AtomicU64::new(0));
    {
        let ex = pin!(Executor::with_stacks(SimDriver::new(), region(2), Config::default()).unwrap());
        let ex = ex.into_ref();
        let handle = ex.handle(handle_slot()).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..3 {
                    let guard = Drops(dropped.clone());
                    handle
                        .attach_fiber(task(Priority::Normal, "unrun"), ATTRS, move |_: &mut Fiber| {
                            let _keep = guard;
                            i as u64
                        })
                        .map_err(|_| "refused")
                        .unwrap();
                }
            })
            .join()
            .unwrap()
        });
    }
    assert_eq!(dropped.load(Ordering::Relaxed), 3);
}

/// A dispatched fiber runs on the worker that takes it, with a stack from that worker's
/// pool, and may suspend there.
#[test]
fn a_dispatched_fiber_suspends_on_its_worker() {
    let d: &'static Dispatcher = Box::leak(Box::new(Dispatcher::new()));
    if !Dispatcher::supported() {
        println!("skipped: this CPU has no cmpxchg16b, which the dispatcher needs");
        return;
    }
    let out = Arc::new(AtomicU64::new(0));
    for n in [4, 5, 6] {
        d.submit_fiber(task(Priority::Normal, "dispatched"), ATTRS, yields_then_adds(&out, n))
            .map_err(|_| "refused")
            .unwrap();
    }
    let worker = pin!(Executor::with_stacks(SimDriver::new(), region(4), Config::default()).unwrap());
    let worker = worker.into_ref();
    assert!(worker.serve(d));
    for _ in 0..10_000 {
        if d.remaining() == 0 {
            break;
        }
        let _ = worker.run(64, Some(Duration::from_millis(1)));
    }
    assert_eq!(d.remaining(), 0);
    assert_eq!(out.load(Ordering::Relaxed), 6 + 10 + 15);
    assert_eq!(worker.stack_stats().in_use, 0);
    // A worker with no stacks completes a dispatched fiber as NoStack, unrun.
    let bare = pin!(Executor::new(NoIo, Config::default()).unwrap());
    let bare = bare.into_ref();
    let ran = Arc::new(AtomicU64::new(0));
    let r = ran.clone();
    assert!(bare.serve(d));
    d.submit_fiber(task(Priority::Normal, "bare"), ATTRS, move |_: &mut Fiber| {
        r.fetch_add(1, Ordering::Relaxed);
        0u64
    })
    .map_err(|_| "refused")
    .unwrap();
    for _ in 0..1000 {
        if d.remaining() == 0 {
            break;
        }
        let _ = bare.run(8, Some(Duration::from_millis(1)));
    }
    assert_eq!(d.remaining(), 0, "the stackless dispatched fiber was stranded");
    assert_eq!(ran.load(Ordering::Relaxed), 0);
}
