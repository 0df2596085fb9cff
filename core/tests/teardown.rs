//! Body drops that panic, executor teardown (fibers unwound, leaks reported, panics
//! survived), and status blocks that outlive their run: the lifecycle's edges.

mod common;
use common::*;
use core::future::Future;
use core::pin::{Pin, pin};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use core::task::{Context, Poll};
use core::time::Duration;
use keel_core::sim::{SimDriver, SimOp};
use keel_core::{
    CancelOutcome, Cancelled, Config, Executor, Fiber, FiberAttrs, IoStatus, Priority, RegionStacks, TaskError,
    TaskHandle, TaskState, initiate, leaked_fibers, rt, suspend_until_completed_io,
};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

/// A future holding a heap buffer (so a second drop is a double free), counting its polls
/// and drops, whose `Drop` panics while `panic` is set (then clears it: it panics once).
struct Bomb {
    data: Vec<u8>,
    /// Pending this many polls (waking itself each time: a yield), then Ready.
    yields: u32,
    /// Pending without waking (suspended) instead of yielding.
    park: bool,
    counts: &'static Counts,
}

#[derive(Default)]
struct Counts {
    polls: AtomicUsize,
    drops: AtomicUsize,
    panic: AtomicBool,
}

impl Counts {
    fn new(panic: bool) -> &'static Counts {
        let c: &'static Counts = Box::leak(Box::default());
        c.panic.store(panic, Ordering::Relaxed);
        c
    }
    fn polls(&self) -> usize {
        self.polls.load(Ordering::Relaxed)
    }
    fn drops(&self) -> usize {
        self.drops.load(Ordering::Relaxed)
    }
}

impl Bomb {
    fn new(counts: &'static Counts) -> Bomb {
        Bomb::with(counts, 0, false)
    }
    fn with(counts: &'static Counts, yields: u32, park: bool) -> Bomb {
        Bomb { data: vec![7u8; 100], yields, park, counts }
    }
}

impl Future for Bomb {
    type Output = u64;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u64> {
        self.counts.polls.fetch_add(1, Ordering::Relaxed);
        if self.park {
            return Poll::Pending;
        }
        if self.yields > 0 {
            self.yields -= 1;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(self.data.len() as u64)
    }
}

impl Drop for Bomb {
    fn drop(&mut self) {
        self.counts.drops.fetch_add(1, Ordering::Relaxed);
        if self.counts.panic.swap(false, Ordering::Relaxed) {
            panic!("bomb");
        }
    }
}

fn sim() -> Config {
    Config::default()
}

/// The slot of `run` takes a new run on `ex` and completes it: it was left whole.
fn reusable<D: keel_core::Driver, S: keel_core::StackProvider>(ex: Pin<&Executor<D, S>>, run: TaskHandle) {
    let again = ex.attach(run, async { 41u64 }).expect("the slot takes a new run");
    run_all!(ex);
    assert_eq!(ex.result(again), Ok(Some(Ok(41))));
}

#[test]
fn body_rule_1_a_body_whose_drop_panics_after_ready_is_dropped_once_and_completes_as_panicked() {
    let ex = pin!(Executor::new(SimDriver::new(), sim()).unwrap());
    let ex = ex.into_ref();
    let c = Counts::new(true);
    let t = ex.attach(task(Priority::Normal, "bomb"), Bomb::new(c)).unwrap();
    let caught = catch_unwind(AssertUnwindSafe(|| ex.run(1, None)));
    assert!(caught.is_err(), "the Drop's panic propagates out of run");
    assert_eq!(c.drops(), 1, "the body is dropped exactly once");
    assert_eq!(ex.state(t), Ok(TaskState::Completed));
    assert_eq!(ex.result(t), Ok(Some(Err(TaskError::Panicked("the task body panicked while being dropped")))));
    assert_eq!(ex.attached(), 0);
    reusable(ex, t);
    assert_eq!(c.drops(), 1);
}

#[test]
fn body_rule_1_a_queued_body_whose_drop_panics_in_cancel_is_dropped_once_and_never_polled() {
    let ex = pin!(Executor::new(SimDriver::new(), sim()).unwrap());
    let ex = ex.into_ref();
    let c = Counts::new(true);
    let t = ex.attach(task(Priority::Normal, "bomb"), Bomb::with(c, 5, false)).unwrap();
    let polls = c.polls();
    let caught = catch_unwind(AssertUnwindSafe(|| ex.cancel(t)));
    assert!(caught.is_err(), "the Drop's panic propagates out of cancel");
    assert_eq!(c.drops(), 1, "the body is dropped exactly once");
    assert_eq!(ex.state(t), Ok(TaskState::Completed));
    assert_eq!(ex.result(t), Ok(Some(Err(TaskError::Panicked("the task body panicked while being dropped")))));
    assert_eq!(ex.attached(), 0);
    // Nothing is queued: the dropped body is never polled.
    assert!(ex.run(10, Some(Duration::from_millis(1))).is_err());
    assert_eq!(c.polls(), polls, "a dropped body was polled");
    reusable(ex, t);
    assert_eq!(c.drops(), 1);
}

/// A started body that is ready (woken) when cancelled is not dropped by `cancel` (its
/// body may hold a completion it has not seen yet): it is polled again, and its `Drop`
/// runs once, when it returns; a panic there propagates out of `run` as usual.
#[test]
fn a_ready_started_body_is_not_dropped_by_cancel_and_its_drop_panics_once_when_it_returns() {
    let ex = pin!(Executor::new(SimDriver::new(), sim()).unwrap());
    let ex = ex.into_ref();
    let c = Counts::new(true);
    let t = ex.attach(task(Priority::Normal, "bomb"), Bomb::with(c, 5, false)).unwrap();
    // One poll (it wakes itself through its waker): Ready in the run queue.
    assert_eq!(ex.run(1, None), Ok(1));
    ex.wake(t);
    assert_eq!(ex.state(t), Ok(TaskState::Ready));
    let polls = c.polls();
    assert_eq!(ex.cancel(t), Ok(CancelOutcome::Resumes));
    assert_eq!(c.drops(), 0, "cancel dropped a started body");
    assert_eq!(ex.state(t), Ok(TaskState::Ready));
    let caught = catch_unwind(AssertUnwindSafe(|| {
        while ex.attached() > 0 {
            ex.run(100, None).unwrap();
        }
    }));
    assert!(caught.is_err(), "the Drop's panic propagates out of run");
    assert!(c.polls() > polls, "the cancelled body was not polled again");
    assert_eq!(c.drops(), 1, "the body is dropped exactly once");
    assert_eq!(ex.result(t), Ok(Some(Err(TaskError::Panicked("the task body panicked while being dropped")))));
    reusable(ex, t);
    assert_eq!(c.drops(), 1);
}

#[test]
fn a_cancelled_body_whose_drop_does_not_panic_completes_as_cancelled() {
    let ex = pin!(Executor::new(SimDriver::new(), sim()).unwrap());
    let ex = ex.into_ref();
    let c = Counts::new(false);
    let t = ex.attach(task(Priority::Normal, "quiet"), Bomb::with(c, 5, false)).unwrap();
    assert_eq!(ex.cancel(t), Ok(CancelOutcome::Completed));
    assert_eq!(c.drops(), 1);
    assert_eq!(ex.result(t), Ok(Some(Err(TaskError::Cancelled))));
    reusable(ex, t);
}

#[test]
fn teardown_rule_5_an_executor_dropped_while_a_body_drop_panics_still_releases_every_task() {
    let counts: Vec<&'static Counts> = (0..5).map(|i| Counts::new(i == 2)).collect();
    let mut runs = Vec::new();
    let caught = catch_unwind(AssertUnwindSafe(|| {
        let ex = pin!(Executor::new(SimDriver::new(), sim()).unwrap());
        let ex = ex.into_ref();
        for (i, &c) in counts.iter().enumerate() {
            // Suspended, ready (yielding), suspended (the bomb), not started, sleeping.
            let body = match i {
                0 | 2 => Bomb::with(c, 0, true),
                1 => Bomb::with(c, 1000, false),
                _ => Bomb::new(c),
            };
            runs.push(ex.attach(task(Priority::Normal, "t"), body).unwrap());
        }
        assert_eq!(ex.run(3, None), Ok(3));
        let sleeper = ex
            .attach(task(Priority::Normal, "sleeper"), async {
                rt::sleep(Duration::from_secs(9)).await?;
                Ok(1)
            })
            .unwrap();
        runs.push(sleeper);
        assert_eq!(ex.run(2, None), Ok(2));
    }));
    assert!(caught.is_err(), "the Drop's panic propagates out of the executor's drop");
    for (i, c) in counts.iter().enumerate() {
        assert_eq!(c.drops(), 1, "body {i} dropped once");
    }
    // Every task was released: another executor claims each one (a task still naming the
    // freed executor would be `OwnedElsewhere`).
    let ex = pin!(Executor::new(SimDriver::new(), sim()).unwrap());
    let ex = ex.into_ref();
    for run in runs {
        reusable(ex, run);
    }
}

#[test]
fn io_status_rule_2_a_status_completed_but_never_taken_may_outlive_its_run() {
    let ex = pin!(Executor::new(SimDriver::new(), sim()).unwrap());
    let ex = ex.into_ref();
    let kept: Rc<Pin<Box<IoStatus>>> = Rc::new(Box::pin(IoStatus::new()));
    let k = kept.clone();
    let t = ex
        .attach(task(Priority::Normal, "leaves it"), async move {
            initiate::<SimDriver>(k.as_ref().as_ref(), SimOp::new(1).with_result(Ok(3))).await.unwrap();
            while k.result().is_none() {
                rt::yield_now().await?;
            }
            // Returns with the status on its completed list, never taken.
            Ok(1)
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
    assert_eq!(kept.result(), Some(Ok(3)));
    // The status goes now, after its run: it must not unlink itself from the task's list.
    drop(kept);
    // The task's lists are intact: the next run's completions are all there.
    let t = ex
        .attach(t, async {
            let (a, b) = (pin!(IoStatus::new()), pin!(IoStatus::new()));
            initiate::<SimDriver>(a.as_ref(), SimOp::new(2).after(Duration::from_millis(2))).await.unwrap();
            initiate::<SimDriver>(b.as_ref(), SimOp::new(3).after(Duration::from_millis(1))).await.unwrap();
            let mut n = 0;
            while n < 2 {
                n += suspend_until_completed_io(8).await?;
            }
            assert_eq!(suspend_until_completed_io(8).await, Ok(0));
            Ok(n as u64)
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(2))));
}

const STACK: usize = 32 * 1024;
const ATTRS: FiberAttrs = FiberAttrs { stack_size: STACK, ..FiberAttrs::DEFAULT };

fn region(stacks: usize) -> RegionStacks {
    let mem: &'static mut [u8] = Vec::leak(vec![0u8; stacks * (STACK + 4096) + 64]);
    RegionStacks::new(mem, STACK, 4096).unwrap()
}

/// Counts its drop: a destructor on a fiber's stack.
struct Guard(&'static AtomicUsize);
impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn a_fresh_fiber_whose_closure_drop_panics_in_cancel_gives_its_stack_back() {
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(2), sim()).unwrap());
    let ex = ex.into_ref();
    let c = Counts::new(true);
    let bomb = Bomb::new(c);
    let t = ex
        .attach_fiber(task(Priority::Normal, "fresh"), ATTRS, move |_: &mut Fiber| {
            let _keep = &bomb;
            1u64
        })
        .unwrap();
    assert_eq!(ex.stack_stats().in_use, 1);
    let caught = catch_unwind(AssertUnwindSafe(|| ex.cancel(t)));
    assert!(caught.is_err(), "the Drop's panic propagates out of cancel");
    assert_eq!(c.drops(), 1);
    assert_eq!(ex.result(t), Ok(Some(Err(TaskError::Panicked("the task body panicked while being dropped")))));
    assert_eq!(ex.stack_stats().in_use, 0, "the never-used stack went back");
    reusable(ex, t);
}

#[test]
fn teardown_rule_2_executor_drop_unwinds_started_fibers_and_leaks_one_that_ignores_cancelled() {
    static UNWOUND: AtomicUsize = AtomicUsize::new(0);
    static LOOPS: AtomicUsize = AtomicUsize::new(0);
    let before = leaked_fibers();
    let stubborn_id;
    {
        let ex = pin!(Executor::with_stacks(SimDriver::new(), region(8), sim()).unwrap());
        let ex = ex.into_ref();
        // Unwinds at once: sleeping, waiting, yielding, suspended on i/o.
        ex.attach_fiber(task(Priority::Normal, "sleeps"), ATTRS, |f: &mut Fiber| {
            let _g = Guard(&UNWOUND);
            f.sleep(Duration::from_secs(9))?;
            Ok(1)
        })
        .unwrap();
        ex.attach_fiber(task(Priority::Normal, "waits"), ATTRS, |f: &mut Fiber| {
            let _g = Guard(&UNWOUND);
            f.wait()?;
            Ok(1)
        })
        .unwrap();
        ex.attach_fiber(task(Priority::Normal, "yields"), ATTRS, |f: &mut Fiber| -> Result<(), Cancelled> {
            let _g = Guard(&UNWOUND);
            loop {
                f.yield_now()?;
            }
        })
        .unwrap();
        ex.attach_fiber(task(Priority::Normal, "io"), ATTRS, |f: &mut Fiber| {
            let _g = Guard(&UNWOUND);
            let st = pin!(IoStatus::new());
            f.initiate::<SimDriver>(st.as_ref(), SimOp::new(1).after(Duration::from_secs(60))).unwrap();
            while st.is_in_flight() {
                f.wait_io();
            }
            // Then keeps going, as code does: the next suspension point says Cancelled.
            f.sleep(Duration::from_secs(1))?;
            Ok(1)
        })
        .unwrap();
        // Ignores Cancelled for ever.
        let stubborn = ex
            .attach_fiber(task(Priority::Normal, "stubborn"), ATTRS, |f: &mut Fiber| -> u64 {
                let _g = Guard(&UNWOUND);
                loop {
                    LOOPS.fetch_add(1, Ordering::Relaxed);
                    let _ = f.yield_now();
                }
            })
            .unwrap();
        stubborn_id = stubborn.id();
        assert_eq!(ex.run(5, None), Ok(5));
        assert_eq!(ex.stack_stats().in_use, 5);
    }
    assert_eq!(UNWOUND.load(Ordering::Relaxed), 4, "the four fibers that honour Cancelled unwound");
    let after = leaked_fibers();
    assert_eq!(after.count, before.count + 1, "the stubborn fiber is reported");
    assert_eq!(after.last_id, stubborn_id);
    // It was resumed each round, then left alone: its loop is bounded by the rounds.
    let loops = LOOPS.load(Ordering::Relaxed);
    assert!(loops > 1 && loops <= 1 + keel_core::TEARDOWN_ROUNDS, "{loops} resumes of the stubborn fiber");
}

#[test]
fn teardown_rule_3_shutdown_reports_leaked_fibers_by_id_and_leaves_the_executor_usable() {
    static UNWOUND: AtomicUsize = AtomicUsize::new(0);
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(4), sim()).unwrap());
    let ex = ex.into_ref();
    let polite = ex
        .attach_fiber(task(Priority::Normal, "polite"), ATTRS, |f: &mut Fiber| {
            let _g = Guard(&UNWOUND);
            f.sleep(Duration::from_secs(9))?;
            Ok(1)
        })
        .unwrap();
    let stubborn = ex
        .attach_fiber(task(Priority::Normal, "stubborn"), ATTRS, |f: &mut Fiber| -> u64 {
            loop {
                let _ = f.wait();
            }
        })
        .unwrap();
    let fresh = ex.attach_fiber(task(Priority::Normal, "fresh"), ATTRS, |_: &mut Fiber| 1u64).unwrap();
    assert_eq!(ex.run(2, None), Ok(2));
    let report = ex.shutdown().unwrap();
    assert_eq!(report.cancelled, 3);
    assert_eq!(report.leaked_fibers, 1);
    assert_eq!(report.leaked_ids[0], stubborn.id());
    assert_eq!(report.leaked_ids[1], 0);
    assert_eq!(UNWOUND.load(Ordering::Relaxed), 1);
    for t in [polite, stubborn, fresh] {
        assert_eq!(ex.result(t), Ok(Some(Err(TaskError::Cancelled))));
    }
    // The leaked stack stays out of the pool; the others came back.
    let st = ex.stack_stats();
    assert_eq!(st.in_use, 1);
    // Every slot, the leaked fiber's too, takes a new run.
    for t in [polite, stubborn, fresh] {
        reusable(ex, t);
    }
}

#[test]
fn header_rule_4_task_ids_are_read_from_other_threads_while_the_slot_is_created_again() {
    // Header rule 4: `id` is an atomic label, so this is no data race (a `Cell` was one;
    // only a race detector such as TSan or Miri sees the difference).
    static SLOT: keel_core::TaskSlot = keel_core::TaskSlot::new();
    static READS: AtomicUsize = AtomicUsize::new(0);
    let ex = pin!(Executor::new(SimDriver::new(), sim()).unwrap());
    let ex = ex.into_ref();
    let first = SLOT.create(keel_core::TaskAttrs::default()).unwrap();
    let first_id = first.id();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let reader = std::thread::spawn(move || {
        let mut max = 0;
        while !s.load(Ordering::Relaxed) {
            // A stale handle's id, read while the owner destroys and creates the slot.
            max = max.max(first.id());
            READS.fetch_add(1, Ordering::Relaxed);
        }
        max
    });
    let mut h = first;
    let mut ids = std::collections::HashSet::new();
    let t0 = std::time::Instant::now();
    let mut rounds = 0;
    while rounds < 2000 || (READS.load(Ordering::Relaxed) < 1000 && t0.elapsed() < Duration::from_secs(10)) {
        ex.destroy(h).unwrap();
        h = SLOT.create(keel_core::TaskAttrs::default()).unwrap();
        assert!(ids.insert(h.id()), "ids are unique");
        rounds += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let max = reader.join().unwrap();
    assert!(max >= first_id && max <= h.id(), "an id read on another thread is one the slot had");
}

#[test]
fn dispatch_rule_3_a_dispatched_task_cancelled_by_its_workers_drop_counts_as_completed_there() {
    static WORK: keel_core::Dispatcher = keel_core::Dispatcher::new();
    {
        let ex = pin!(Executor::new(SimDriver::new(), sim()).unwrap());
        let ex = ex.into_ref();
        assert!(ex.serve(&WORK));
        WORK.submit(task(Priority::Normal, "dispatched"), async {
            rt::sleep(Duration::from_secs(9)).await?;
            Ok(1)
        })
        .unwrap();
        assert_eq!(ex.run(1, None), Ok(1));
        assert_eq!(WORK.remaining(), 1);
    }
    assert_eq!(WORK.remaining(), 0, "its run ended with the worker");
}

/// The executor's drop first takes no new work (its handle unbound), then cancels every
/// attached task: a suspended future's body (with a status in flight) and a queued one
/// are dropped where they are, a fiber that has not started has its closure dropped, and
/// a started fiber is resumed with `Cancelled` and unwinds (its destructors run).
#[test]
fn teardown_rule_1_an_executor_drop_cancels_every_attached_task() {
    static FUTURE_DROPS: AtomicUsize = AtomicUsize::new(0);
    static FIBER_DROPS: AtomicUsize = AtomicUsize::new(0);
    static SAW_CANCELLED: AtomicBool = AtomicBool::new(false);
    let hs: &'static keel_core::HandleSlot = Box::leak(Box::new(keel_core::HandleSlot::new()));
    let handle;
    {
        let ex = pin!(Executor::with_stacks(SimDriver::new(), region(2), sim()).unwrap());
        let ex = ex.into_ref();
        handle = ex.handle(hs).unwrap();
        ex.attach(task(Priority::Normal, "io"), async {
            let _g = Guard(&FUTURE_DROPS);
            let st = pin!(IoStatus::new());
            initiate::<SimDriver>(st.as_ref(), SimOp::new(1).after(Duration::from_secs(10))).await.unwrap();
            suspend_until_completed_io(1).await?;
            Ok(0)
        })
        .unwrap();
        ex.attach_fiber(task(Priority::Normal, "started"), ATTRS, |f: &mut Fiber| -> keel_core::TaskResult {
            let _g = Guard(&FIBER_DROPS);
            let r = f.wait();
            SAW_CANCELLED.store(r == Err(Cancelled), Ordering::Relaxed);
            r?;
            Ok(0)
        })
        .unwrap();
        assert_eq!(ex.run(2, None), Ok(2));
        let queued = Guard(&FUTURE_DROPS);
        ex.attach(task(Priority::Normal, "queued"), async move {
            let _g = queued;
            Ok(0)
        })
        .unwrap();
        let fresh = Guard(&FIBER_DROPS);
        ex.attach_fiber(task(Priority::Normal, "fresh"), ATTRS, move |_: &mut Fiber| {
            let _g = &fresh;
            0u64
        })
        .unwrap();
        assert_eq!(ex.attached(), 4);
    }
    assert_eq!(FUTURE_DROPS.load(Ordering::Relaxed), 2, "a future body was not dropped once");
    assert_eq!(FIBER_DROPS.load(Ordering::Relaxed), 2, "a fiber was not unwound or its closure dropped");
    assert!(SAW_CANCELLED.load(Ordering::Relaxed), "the started fiber did not resume with Cancelled");
    let t = task(Priority::Normal, "late");
    assert!(
        matches!(handle.attach(t, async {}), Err(keel_core::AttachError::ExecutorGone(_))),
        "the dropped executor's handle still took work"
    );
}
