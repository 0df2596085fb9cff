//! Joins on the same executor (join rules 1-4 and 6, `core/src/join.rs`): futures and fibers,
//! several waiters, timeouts, cancel at each point, dropped waiters, stale handles and
//! joining oneself.

mod common;
use common::*;
use core::future::Future;
use core::pin::{Pin, pin};
use core::task::{Context, Poll};
use core::time::Duration;
use keel_core::join::{join, join_send, join_timeout, join_until};
use keel_core::sim::SimDriver;
use keel_core::{
    CancelOutcome, Config, Executor, Fiber, FiberAttrs, Instant, JoinError, Priority, RegionStacks, TaskError,
    TaskHandle, TaskState, rt,
};
use std::cell::Cell;
use std::rc::Rc;

const STACK: usize = 32 * 1024;
const ATTRS: FiberAttrs = FiberAttrs { stack_size: STACK, ..FiberAttrs::DEFAULT };

fn region(stacks: usize) -> RegionStacks {
    let mem: &'static mut [u8] = Vec::leak(vec![0u8; stacks * (STACK + 4096) + 64]);
    RegionStacks::new(mem, STACK, 4096).unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A task that sleeps `d` (virtual time) and returns `v`.
async fn sleeper(d: Duration, v: u64) -> Result<u64, TaskError> {
    rt::sleep(d).await?;
    Ok(v)
}

/// Resolves with whichever of `a` and `b` is ready first (`a` polled first), dropping
/// the other: the `select` a user writes.
struct First<A, B>(Option<Pin<Box<A>>>, Option<Pin<Box<B>>>);

enum Either<X, Y> {
    A(X),
    B(Y),
}

impl<A: Future, B: Future> Future for First<A, B> {
    type Output = Either<A::Output, B::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(x) = self.0.as_mut().unwrap().as_mut().poll(cx) {
            self.1 = None;
            return Poll::Ready(Either::A(x));
        }
        if let Poll::Ready(y) = self.1.as_mut().unwrap().as_mut().poll(cx) {
            self.0 = None;
            return Poll::Ready(Either::B(y));
        }
        Poll::Pending
    }
}

fn first<A: Future, B: Future>(a: A, b: B) -> First<A, B> {
    First(Some(Box::pin(a)), Some(Box::pin(b)))
}

#[test]
fn a_future_joins_a_future_that_completes_later_and_one_that_completed_before() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let early = ex.attach(task(Priority::Normal, "early"), async { 5u64 }).unwrap();
    run_all!(ex);
    let late = ex.attach(task(Priority::Normal, "late"), sleeper(ms(10), 7)).unwrap();
    let parent = ex
        .attach(task(Priority::Normal, "parent"), async move {
            let a = join(early).await.unwrap()?;
            let b = join(late).await.unwrap()?;
            Ok::<u64, TaskError>(a * 10 + b)
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(parent), Ok(Some(Ok(57))));
    assert_eq!(ex.now().as_nanos(), 10_000_000, "the join waited for the late task's sleep");
}

#[test]
fn several_waiters_futures_and_fibers_each_get_the_result_once() {
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(4), Config::default()).unwrap());
    let ex = ex.into_ref();
    let child = ex.attach(task(Priority::Low, "child"), sleeper(ms(3), 42)).unwrap();
    let woken = Rc::new(Cell::new(0u32));
    let mut waiters = Vec::new();
    for _ in 0..3 {
        let woken = woken.clone();
        waiters.push(
            ex.attach(task(Priority::Normal, "w"), async move {
                let r = join(child).await.unwrap();
                woken.set(woken.get() + 1);
                r
            })
            .unwrap(),
        );
    }
    for _ in 0..2 {
        let woken = woken.clone();
        waiters.push(
            ex.attach_fiber(task(Priority::High, "fw"), ATTRS, move |f: &mut Fiber| {
                let r = f.join(child, None).unwrap();
                woken.set(woken.get() + 1);
                r
            })
            .unwrap(),
        );
    }
    run_all!(ex);
    assert_eq!(woken.get(), 5);
    for w in waiters {
        assert_eq!(ex.result(w), Ok(Some(Ok(42))));
    }
    assert_eq!(ex.stats().completed, 6, "every task ran to completion once");
}

#[test]
fn a_fiber_joins_a_future_and_a_future_joins_a_fiber() {
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(2), Config::default()).unwrap());
    let ex = ex.into_ref();
    let fut = ex.attach(task(Priority::Normal, "fut"), sleeper(ms(2), 3)).unwrap();
    let fib = ex
        .attach_fiber(task(Priority::Normal, "fib"), ATTRS, move |f: &mut Fiber| {
            let got = f.join(fut, Some(ms(100))).unwrap()?;
            f.sleep(ms(5))?;
            Ok::<u64, TaskError>(got + 1)
        })
        .unwrap();
    let top = ex.attach(task(Priority::Normal, "top"), async move { join(fib).await.unwrap().map(|v| v * 2) }).unwrap();
    run_all!(ex);
    assert_eq!(ex.result(top), Ok(Some(Ok(8))));
    assert_eq!(ex.now().as_nanos(), 7_000_000);
}

#[test]
fn a_join_times_out_the_awaited_task_runs_on_and_a_second_join_gets_the_result() {
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(2), Config::default()).unwrap());
    let ex = ex.into_ref();
    let child = ex.attach(task(Priority::Normal, "child"), sleeper(ms(50), 9)).unwrap();
    let fut = ex
        .attach(task(Priority::Normal, "fut"), async move {
            assert_eq!(join_timeout(child, ms(10)).await, Err(JoinError::TimedOut));
            assert_eq!(join_timeout(child, Duration::ZERO).await, Err(JoinError::TimedOut), "zero only looks");
            let at = rt::clock().await.unwrap();
            assert_eq!(at.as_nanos(), 10_000_000);
            assert_eq!(join_until(child, Instant::from_nanos(20_000_000)).await, Err(JoinError::TimedOut));
            join(child).await.unwrap()
        })
        .unwrap();
    let fib = ex
        .attach_fiber(task(Priority::Normal, "fib"), ATTRS, move |f: &mut Fiber| {
            assert_eq!(f.join(child, Some(ms(5))), Err(JoinError::TimedOut));
            assert_eq!(f.now().as_nanos(), 5_000_000);
            f.join(child, Some(ms(1000))).unwrap()
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(child), Ok(Some(Ok(9))));
    assert_eq!(ex.result(fut), Ok(Some(Ok(9))));
    assert_eq!(ex.result(fib), Ok(Some(Ok(9))));
    assert_eq!(ex.now().as_nanos(), 50_000_000);
}

#[test]
fn cancelling_the_waiter_leaves_the_awaited_task_alone() {
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(2), Config::default()).unwrap());
    let ex = ex.into_ref();
    let child = ex.attach(task(Priority::Normal, "child"), sleeper(ms(30), 4)).unwrap();
    let fut = ex
        .attach(task(Priority::Normal, "fut"), async move {
            let r = join(child).await;
            assert_eq!(r, Err(JoinError::Cancelled));
            // Cancelled before a join starts: it says so without waiting.
            assert_eq!(join(child).await, Err(JoinError::Cancelled));
            Err::<u64, TaskError>(TaskError::Cancelled)
        })
        .unwrap();
    let fib = ex
        .attach_fiber(task(Priority::Normal, "fib"), ATTRS, move |f: &mut Fiber| {
            assert_eq!(f.join(child, None), Err(JoinError::Cancelled));
            assert_eq!(f.join(child, None), Err(JoinError::Cancelled));
            Err::<u64, TaskError>(TaskError::Cancelled)
        })
        .unwrap();
    ex.run(3, None).unwrap();
    assert_eq!(ex.state(fut), Ok(TaskState::Suspended(keel_core::SuspendReason::Wait)));
    assert_eq!(ex.cancel(fut), Ok(CancelOutcome::Resumes));
    assert_eq!(ex.cancel(fib), Ok(CancelOutcome::Resumes));
    ex.run(4, None).unwrap();
    assert_eq!(ex.result(fut), Ok(Some(Err(TaskError::Cancelled))));
    assert_eq!(ex.result(fib), Ok(Some(Err(TaskError::Cancelled))));
    assert_eq!(ex.state(child), Ok(TaskState::Suspended(keel_core::SuspendReason::Timer)));
    run_all!(ex);
    assert_eq!(ex.result(child), Ok(Some(Ok(4))), "the awaited task ran on untouched");
}

#[test]
fn a_waiter_cancelled_before_its_first_poll_never_registers() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let child = ex.attach(task(Priority::Normal, "child"), sleeper(ms(1), 4)).unwrap();
    let w = ex.attach(task(Priority::Normal, "w"), async move { join(child).await.unwrap() }).unwrap();
    assert_eq!(ex.cancel(w), Ok(CancelOutcome::Completed));
    run_all!(ex);
    assert_eq!(ex.result(w), Ok(Some(Err(TaskError::Cancelled))));
    assert_eq!(ex.result(child), Ok(Some(Ok(4))));
}

#[test]
fn cancelling_the_awaited_task_wakes_every_waiter_with_its_cancelled_result() {
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(2), Config::default()).unwrap());
    let ex = ex.into_ref();
    // Suspended on a timer (cancel edge 9), then one never started (edge 8).
    let child = ex.attach(task(Priority::Normal, "child"), sleeper(ms(30), 4)).unwrap();
    let fut = ex.attach(task(Priority::Normal, "fut"), async move { join(child).await.unwrap() }).unwrap();
    let fib = ex
        .attach_fiber(task(Priority::Normal, "fib"), ATTRS, move |f: &mut Fiber| f.join(child, None).unwrap())
        .unwrap();
    ex.run(3, None).unwrap();
    assert_eq!(ex.cancel(child), Ok(CancelOutcome::Resumes));
    run_all!(ex);
    assert_eq!(ex.result(fut), Ok(Some(Err(TaskError::Cancelled))));
    assert_eq!(ex.result(fib), Ok(Some(Err(TaskError::Cancelled))));

    let queued = ex.attach(task(Priority::Low, "queued"), async { 1u64 }).unwrap();
    let w = ex.attach(task(Priority::High, "w"), async move { join(queued).await.unwrap() }).unwrap();
    ex.run(1, None).unwrap();
    assert_eq!(ex.state(w), Ok(TaskState::Suspended(keel_core::SuspendReason::Wait)));
    assert_eq!(ex.cancel(queued), Ok(CancelOutcome::Completed));
    run_all!(ex);
    assert_eq!(ex.result(w), Ok(Some(Err(TaskError::Cancelled))));
}

#[test]
fn a_dropped_waiter_in_a_select_unlinks_and_the_others_still_get_the_result() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let child = ex.attach(task(Priority::Normal, "child"), sleeper(ms(20), 6)).unwrap();
    let sel = ex
        .attach(task(Priority::Normal, "select"), async move {
            match first(join(child), rt::sleep(ms(5))).await {
                Either::A(_) => panic!("the join won a race it should lose"),
                Either::B(slept) => slept?,
            }
            // The join was dropped when the sleep won; join again and win this time.
            match first(join(child), rt::sleep(ms(500))).await {
                Either::A(r) => r.unwrap(),
                Either::B(_) => panic!("the sleep won a race it should lose"),
            }
        })
        .unwrap();
    let other = ex.attach(task(Priority::Normal, "other"), async move { join(child).await.unwrap() }).unwrap();
    run_all!(ex);
    assert_eq!(ex.result(sel), Ok(Some(Ok(6))));
    assert_eq!(ex.result(other), Ok(Some(Ok(6))));
    assert_eq!(ex.now().as_nanos(), 20_000_000);
}

#[test]
fn a_woken_waiter_keeps_its_result_when_the_slot_is_reattached_before_it_runs() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let child = ex
        .attach(task(Priority::Low, "child"), async {
            rt::yield_now().await?;
            Ok(11u64)
        })
        .unwrap();
    let w = ex.attach(task(Priority::High, "w"), async move { join(child).await.unwrap() }).unwrap();
    // w links; child starts and yields; child completes and wakes w.
    ex.run(3, None).unwrap();
    assert_eq!(ex.state(child), Ok(TaskState::Completed));
    assert_eq!(ex.state(w), Ok(TaskState::Ready));
    let next = ex.attach(child, async { 99u64 }).unwrap();
    run_all!(ex);
    assert_eq!(ex.result(w), Ok(Some(Ok(11))), "the waiter's copy is the run it joined");
    assert_eq!(ex.result(next), Ok(Some(Ok(99))));
}

#[test]
fn stale_handles_never_attached_handles_and_oneself_are_typed_errors() {
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(1), Config::default()).unwrap());
    let ex = ex.into_ref();
    let created = task(Priority::Normal, "t");
    let first_run = ex.attach(created, async { 1u64 }).unwrap();
    run_all!(ex);
    let second_run = ex.attach(first_run, async { 2u64 }).unwrap();
    run_all!(ex);
    let never = task(Priority::Normal, "never");
    let slot_of_destroyed = ex.attach(task(Priority::Normal, "gone"), async { 3u64 }).unwrap();
    run_all!(ex);
    ex.destroy(slot_of_destroyed).unwrap();
    let checks = ex
        .attach(task(Priority::Normal, "checks"), async move {
            assert_eq!(join(first_run).await, Err(JoinError::Stale));
            assert_eq!(join(created).await, Err(JoinError::Stale));
            assert_eq!(join(second_run).await, Ok(Ok(2)));
            assert_eq!(join(never).await, Err(JoinError::NeverAttached));
            assert_eq!(join(slot_of_destroyed).await, Err(JoinError::Stale));
            let me = core::future::poll_fn(|cx| Poll::Ready(rt::current_task(cx).unwrap())).await;
            assert_eq!(join(me).await, Err(JoinError::JoinSelf));
            assert_eq!(join_timeout(me, ms(5)).await, Err(JoinError::JoinSelf));
            Ok::<u64, TaskError>(1)
        })
        .unwrap();
    let fib = ex
        .attach_fiber(task(Priority::Normal, "fib"), ATTRS, move |f: &mut Fiber| {
            let me = f.task();
            assert_eq!(f.join(me, None), Err(JoinError::JoinSelf));
            assert_eq!(f.join(first_run, None), Err(JoinError::Stale));
            assert_eq!(f.join(never, None), Err(JoinError::NeverAttached));
            assert_eq!(f.join(second_run, None), Ok(Ok(2)));
            1u64
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(checks), Ok(Some(Ok(1))));
    assert_eq!(ex.result(fib), Ok(Some(Ok(1))));
}

#[test]
fn a_join_polled_outside_a_task_says_so_and_touches_nothing() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let child = ex.attach(task(Priority::Normal, "child"), sleeper(ms(1), 4)).unwrap();
    let mut j = pin!(join(child));
    let mut cx = Context::from_waker(core::task::Waker::noop());
    assert_eq!(j.as_mut().poll(&mut cx), Poll::Ready(Err(JoinError::NotInTask)));
    assert_eq!(j.as_mut().poll(&mut cx), Poll::Ready(Err(JoinError::NotInTask)), "polled again: the same");
    // With the task's own waker in a Context of our own (rt rule 2): still outside.
    let waker = child.waker();
    let mut cx = Context::from_waker(&waker);
    assert_eq!(pin!(join(child)).poll(&mut cx), Poll::Ready(Err(JoinError::NotInTask)));
    run_all!(ex);
    assert_eq!(ex.result(child), Ok(Some(Ok(4))));
}

/// Join rule 5 between two executors on one thread: a future and a fiber on `a` join a
/// task of `b` that completes later, one that completed before, with timeouts and
/// cancels; the awaited task is never disturbed.
#[test]
fn joins_across_executors_get_the_result_time_out_and_cancel() {
    let a = pin!(Executor::with_stacks(SimDriver::new(), region(2), Config::default()).unwrap());
    let a = a.into_ref();
    let b = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let b = b.into_ref();
    let done_before = b.attach(task(Priority::Normal, "before"), async { 3u64 }).unwrap();
    run_all!(b);
    let on_b = b.attach(task(Priority::Normal, "on_b"), sleeper(ms(10), 1)).unwrap();
    let fut = a
        .attach(task(Priority::Normal, "fut"), async move {
            let before = join(done_before).await.unwrap()?;
            assert_eq!(join_timeout(on_b, ms(1)).await, Err(JoinError::TimedOut));
            let got = join(on_b).await.unwrap()?;
            Ok::<u64, TaskError>(before * 10 + got)
        })
        .unwrap();
    let fib = a
        .attach_fiber(task(Priority::Normal, "fib"), ATTRS, move |f: &mut Fiber| {
            assert_eq!(f.join(done_before, Some(ms(1))), Ok(Ok(3)));
            f.join(on_b, None).unwrap()
        })
        .unwrap();
    let to_cancel = a
        .attach(task(Priority::Normal, "to_cancel"), async move {
            assert_eq!(join(on_b).await, Err(JoinError::Cancelled));
            Err::<u64, TaskError>(TaskError::Cancelled)
        })
        .unwrap();
    // a's tasks register with b's task and announce; its timer passes for the 1 ms join.
    a.run(16, None).unwrap();
    assert_eq!(a.state(to_cancel), Ok(TaskState::Suspended(keel_core::SuspendReason::Wait)));
    assert_eq!(a.cancel(to_cancel), Ok(CancelOutcome::Resumes));
    while a.attached() > 2 {
        a.run(16, None).unwrap();
    }
    assert_eq!(a.result(to_cancel), Ok(Some(Err(TaskError::Cancelled))));
    // a parks until the 1 ms join times out; that join's task joins again, untimed.
    a.run(16, None).unwrap();
    assert_eq!(a.now().as_nanos(), 1_000_000);
    // b takes the announces, then runs its task to the end, which wakes a's joins.
    run_all!(b);
    assert_eq!(b.result(on_b), Ok(Some(Ok(1))), "the awaited task ran undisturbed");
    run_all!(a);
    assert_eq!(a.result(fut), Ok(Some(Ok(31))));
    assert_eq!(a.result(fib), Ok(Some(Ok(1))));
}

/// Join rule 5's table: `CROSS_WAITERS` joins from other threads at once, and one more
/// is told so; a join that returns frees its entry for the next.
#[test]
fn one_join_more_than_the_cross_entries_is_too_many_waiters() {
    let a = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let a = a.into_ref();
    let b = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let b = b.into_ref();
    let on_b = b.attach(task(Priority::Normal, "on_b"), sleeper(ms(10), 8)).unwrap();
    let mut waiters = Vec::new();
    for _ in 0..keel_core::join::CROSS_WAITERS {
        waiters.push(a.attach(task(Priority::Normal, "w"), async move { join(on_b).await.unwrap() }).unwrap());
    }
    a.run(64, None).unwrap();
    let extra = a.attach(task(Priority::Normal, "extra"), async move {
        assert_eq!(join(on_b).await, Err(JoinError::TooManyWaiters));
        1u64
    });
    let extra = extra.unwrap();
    a.run(64, None).unwrap();
    assert_eq!(a.result(extra), Ok(Some(Ok(1))));
    run_all!(b);
    run_all!(a);
    for w in waiters {
        assert_eq!(a.result(w), Ok(Some(Ok(8))));
    }
    // Every entry is free again.
    let on_b = b.attach(on_b, sleeper(ms(10), 9)).unwrap();
    let mut again = Vec::new();
    for _ in 0..keel_core::join::CROSS_WAITERS {
        again.push(a.attach(task(Priority::Normal, "w2"), async move { join(on_b).await.unwrap() }).unwrap());
    }
    a.run(64, None).unwrap();
    run_all!(b);
    run_all!(a);
    for w in again {
        assert_eq!(a.result(w), Ok(Some(Ok(9))));
    }
}

#[test]
fn dropping_the_executor_while_joins_wait_ends_them_all() {
    let done = Rc::new(Cell::new(0u32));
    {
        let ex = pin!(Executor::with_stacks(SimDriver::new(), region(2), Config::default()).unwrap());
        let ex = ex.into_ref();
        let child = ex.attach(task(Priority::Normal, "child"), sleeper(ms(1_000_000), 4)).unwrap();
        let d = done.clone();
        ex.attach(task(Priority::Normal, "fut"), async move {
            let r = join(child).await;
            d.set(d.get() + 1);
            r.unwrap()
        })
        .unwrap();
        let d = done.clone();
        ex.attach_fiber(task(Priority::Normal, "fib"), ATTRS, move |f: &mut Fiber| {
            let r = f.join(child, None);
            assert!(matches!(r, Err(JoinError::Cancelled) | Ok(Err(TaskError::Cancelled))), "{r:?}");
            d.set(d.get() + 1);
            1u64
        })
        .unwrap();
        ex.run(3, None).unwrap();
    }
    // The future was dropped where it waited (its node unlinked); the fiber unwound
    // through its join.
    assert_eq!(done.get(), 1);
}

/// A handle from `rt::current_task` of a task that completes: joined by a later task.
#[test]
fn joining_a_run_that_ended_with_an_error_returns_that_error() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let failing: TaskHandle =
        ex.attach(task(Priority::Normal, "failing"), async { Err::<u64, TaskError>(TaskError::Failed(-3)) }).unwrap();
    let w = ex.attach(task(Priority::Normal, "w"), async move { join(failing).await.unwrap() }).unwrap();
    run_all!(ex);
    assert_eq!(ex.result(w), Ok(Some(Err(TaskError::Failed(-3)))));
}

/// `join_send` is `Send` (for futures attached from other threads) and waits as a join
/// from another thread even for a task of its own executor: the result, a timeout, a
/// cancel, a dropped join in a select, and the typed errors.
#[test]
fn join_send_is_send_and_waits_through_the_cross_entries_on_its_own_executor() {
    fn is_send<T: Send>(_: &T) {}
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let child = ex.attach(task(Priority::Normal, "child"), sleeper(ms(20), 5)).unwrap();
    let j = join_send(child, None);
    is_send(&j);
    drop(j);
    let w = ex
        .attach(task(Priority::Normal, "w"), async move {
            assert_eq!(join_send(child, Some(ms(2))).await, Err(JoinError::TimedOut));
            match first(join_send(child, None), rt::sleep(ms(3))).await {
                Either::A(_) => panic!("the join won a race it should lose"),
                Either::B(slept) => slept?,
            }
            let me = core::future::poll_fn(|cx| Poll::Ready(rt::current_task(cx).unwrap())).await;
            assert_eq!(join_send(me, None).await, Err(JoinError::JoinSelf));
            join_send(child, None).await.unwrap()
        })
        .unwrap();
    let c = ex
        .attach(task(Priority::Normal, "c"), async move {
            assert_eq!(join_send(child, None).await, Err(JoinError::Cancelled));
            1u64
        })
        .unwrap();
    ex.run(4, None).unwrap();
    ex.cancel(c).unwrap();
    run_all!(ex);
    assert_eq!(ex.result(w), Ok(Some(Ok(5))));
    assert_eq!(ex.result(c), Ok(Some(Ok(1))));
    let mut cx = Context::from_waker(core::task::Waker::noop());
    assert_eq!(pin!(join_send(child, None)).poll(&mut cx), Poll::Ready(Err(JoinError::NotInTask)));
}

/// Join rule 2's two halves: a run whose body returned with i/o in flight has staged its
/// result, but joins see it only when the run completes (after draining). A same-executor
/// join and one from another executor wait through the drain, `result` says nothing
/// yet, a join on the slot's previous run is stale throughout, and both joins get the
/// body's result once the drain ends.
#[test]
fn joins_wait_through_a_draining_run_and_get_its_result_when_it_completes() {
    use keel_core::sim::SimOp;
    use keel_core::{IoStatus, initiate};
    let a = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let a = a.into_ref();
    let b = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let b = b.into_ref();
    let previous = b.attach(task(Priority::Normal, "pump"), async { 1u64 }).unwrap();
    run_all!(b);
    let pump = b
        .attach(previous, async {
            let st = pin!(IoStatus::new());
            initiate::<SimDriver>(st.as_ref(), SimOp::new(1).after(ms(5))).await.unwrap();
            Ok(9u64)
        })
        .unwrap();
    // `local` runs first and waits; then `pump` returns with its operation in flight,
    // which the drain cancels and the next reap completes.
    let local = b.attach(task(Priority::High, "local"), async move { join(pump).await.unwrap() }).unwrap();
    assert_eq!(b.run(2, None), Ok(2));
    assert_eq!(b.state(pump), Ok(TaskState::Draining));
    assert_eq!(b.result(pump), Ok(None), "a draining run has no result yet");
    assert_eq!(b.state(local), Ok(TaskState::Suspended(keel_core::SuspendReason::Wait)));
    let remote = a
        .attach(task(Priority::Normal, "remote"), async move {
            assert_eq!(join_timeout(pump, ms(1)).await, Err(JoinError::TimedOut), "saw a staged result");
            assert_eq!(join(previous).await, Err(JoinError::Stale));
            join(pump).await.unwrap()
        })
        .unwrap();
    // a's join announces itself to b and times out on a's clock while b's run drains.
    a.run(16, None).unwrap();
    a.run(16, None).unwrap();
    assert_eq!(a.state(remote), Ok(TaskState::Suspended(keel_core::SuspendReason::Wait)));
    assert_eq!(b.state(pump), Ok(TaskState::Draining), "the drain ended early");
    run_all!(b);
    assert_eq!(b.result(pump), Ok(Some(Ok(9))));
    assert_eq!(b.result(local), Ok(Some(Ok(9))));
    run_all!(a);
    assert_eq!(a.result(remote), Ok(Some(Ok(9))));
}

/// Awaits a join, then (after `pause`, if any: the world may change meanwhile) polls it
/// once more, and returns both outcomes (join rule 6: the second must be the first
/// again, from what the node kept, not a new look).
async fn twice<F: Future>(f: F, pause: Option<Duration>) -> (F::Output, F::Output)
where
    F::Output: Copy + std::fmt::Debug,
{
    let mut f = Box::pin(f);
    let first = f.as_mut().await;
    if let Some(d) = pause {
        rt::sleep(d).await.unwrap();
    }
    match core::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx))).await {
        Poll::Ready(again) => (first, again),
        Poll::Pending => panic!("a join that returned {first:?} was pending when polled again"),
    }
}

type Outs = Rc<Cell<Vec<(Result<Result<u64, TaskError>, JoinError>, Result<Result<u64, TaskError>, JoinError>)>>>;

/// Join rule 6: whatever a join returned it returns again when polled after, whether the
/// awaited run's end copied a result into its node while it waited (an `Ok`, a failure,
/// a cancel, a panic's message), its first look found the result in the record, or it
/// gave up with a `JoinError` of its own (timed out, cancelled, stale, itself). A join
/// that timed out says so again after the awaited run completed.
#[test]
fn join_rule_6_a_join_polled_again_returns_what_it_returned_for_every_outcome() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let outs: Outs = Rc::default();
    let waiter = |name, child: TaskHandle, outs: Outs| {
        ex.attach(task(Priority::Normal, name), async move {
            let got = Box::pin(twice(join(child), None)).await;
            let mut all = outs.take();
            all.push(got);
            outs.set(all);
        })
        .unwrap()
    };
    // Woken by the run's end, with each kind of result copied into the node.
    let ok = ex.attach(task(Priority::Low, "ok"), async { 7u64 }).unwrap();
    let failed =
        ex.attach(task(Priority::Low, "failed"), async { Err::<u64, TaskError>(TaskError::Failed(-9)) }).unwrap();
    let cancelled = ex.attach(task(Priority::Low, "cancelled"), sleeper(ms(50), 1)).unwrap();
    let panics = ex
        .attach(task(Priority::Low, "panics"), async {
            let _ = rt::sleep(ms(5)).await;
            if std::hint::black_box(true) {
                panic!("the awaited body panics");
            }
            0u64
        })
        .unwrap();
    for (name, child) in [("w-ok", ok), ("w-failed", failed), ("w-cancelled", cancelled), ("w-panics", panics)] {
        waiter(name, child, outs.clone());
    }
    // The waiters (Normal) link before the Low children run; one is cancelled unstarted.
    ex.run(4, None).unwrap();
    assert_eq!(ex.cancel(cancelled), Ok(CancelOutcome::Completed));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        while ex.attached() > 0 {
            ex.run(1_000, None).unwrap();
        }
    }));
    assert!(caught.is_err(), "the body's panic goes on out of run");
    run_all!(ex);
    let panicked = Err(TaskError::Panicked("the task body panicked while being resumed"));
    let want = [Ok(Ok(7)), Ok(Err(TaskError::Failed(-9))), Ok(Err(TaskError::Cancelled)), Ok(panicked)];
    let got = outs.take();
    assert_eq!(got.len(), 4);
    for want in want {
        assert!(got.contains(&(want, want)), "{want:?} returned, and again, by a woken join: {got:?}");
    }

    // Found in the record at the first look (the awaited runs are over).
    let outs: Outs = Rc::default();
    waiter("late-ok", ok, outs.clone());
    waiter("late-failed", failed, outs.clone());
    run_all!(ex);
    let got = outs.take();
    assert!(got.contains(&(Ok(Ok(7)), Ok(Ok(7)))), "{got:?}");
    assert!(got.contains(&(Ok(Err(TaskError::Failed(-9))), Ok(Err(TaskError::Failed(-9))))), "{got:?}");

    // A join's own outcomes: timed out (polled again once `long` completed), cancelled
    // while waiting, stale, itself.
    let outs: Outs = Rc::default();
    let long = ex.attach(task(Priority::Normal, "long"), sleeper(ms(100), 3)).unwrap();
    let o = outs.clone();
    ex.attach(task(Priority::Normal, "timed"), async move {
        let got = Box::pin(twice(join_timeout(long, ms(10)), Some(ms(200)))).await;
        let mut all = o.take();
        all.push(got);
        o.set(all);
    })
    .unwrap();
    let cancelled_waiter = waiter("cancelled-waiter", long, outs.clone());
    let o = outs.clone();
    let stale = ok;
    ex.attach(task(Priority::Normal, "stale-and-self"), async move {
        let me = core::future::poll_fn(|cx| Poll::Ready(rt::current_task(cx))).await.unwrap();
        for got in [Box::pin(twice(join(stale), None)).await, Box::pin(twice(join(me), None)).await] {
            let mut all = o.take();
            all.push(got);
            o.set(all);
        }
    })
    .unwrap();
    // Re-attaching `ok`'s slot makes `stale` name a run it has left.
    let ok_again = ex.attach(ok, async { 8u64 });
    assert!(ok_again.is_ok());
    ex.run(8, None).unwrap();
    assert_eq!(ex.cancel(cancelled_waiter), Ok(CancelOutcome::Resumes));
    run_all!(ex);
    let got = outs.take();
    assert_eq!(ex.result(long), Ok(Some(Ok(3))), "the timed-out join's second poll came after this");
    for want in [JoinError::TimedOut, JoinError::Cancelled, JoinError::Stale, JoinError::JoinSelf] {
        assert!(got.contains(&(Err(want), Err(want))), "{want:?} returned, and again: {got:?}");
    }
}
