//! Audit of join rule 6 (`core/src/task/join.rs`: a join's outcome travels as words in
//! its node; `Join` packs its entry, limit kind and one limit word): limits at their
//! extremes, a panic's message kept across the awaited slot's reuse, a `Join` dropped
//! after the slot moved on, `Join` staying `!Unpin` (its node is linked by address), and
//! `join_send`'s full entry table remembered and then retried.

mod common;
use common::*;
use core::future::Future;
use core::marker::PhantomData;
use core::pin::{Pin, pin};
use core::task::Poll;
use core::time::Duration;
use keel_core::join::{CROSS_WAITERS, Join, join, join_send, join_timeout, join_until};
use keel_core::sim::SimDriver;
use keel_core::{Config, Executor, Instant, JoinError, Priority, TaskError, TaskHandle, rt};
use std::cell::Cell;
use std::rc::Rc;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn sleeper(d: Duration, v: u64) -> Result<u64, TaskError> {
    rt::sleep(d).await?;
    Ok(v)
}

type Joined = Result<Result<u64, TaskError>, JoinError>;
type Out = Rc<Cell<Option<Joined>>>;

/// Join rule 6's limit word: a timeout of `Duration::MAX`, of more nanoseconds than a
/// u64 holds, or of exactly `u64::MAX` ns from a clock past zero, saturates to "never"
/// (no overflow into an instant in the past, no panic): each join waits for the result.
#[test]
fn huge_timeouts_saturate_and_wait_for_the_result() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let huge =
        [Duration::MAX, Duration::from_secs(u64::MAX / 1_000), Duration::from_nanos(u64::MAX), ms(1) * 1_000_000];
    for (n, t) in huge.into_iter().enumerate() {
        let child = ex.attach(task(Priority::Low, "child"), sleeper(ms(10), n as u64)).unwrap();
        let out: Out = Rc::default();
        let o = out.clone();
        ex.attach(task(Priority::Normal, "waiter"), async move {
            // The clock is past zero: the saturating add must not wrap.
            rt::sleep(ms(1)).await.unwrap();
            o.set(Some(join_timeout(child, t).await));
        })
        .unwrap();
        run_all!(ex);
        assert_eq!(out.get(), Some(Ok(Ok(n as u64))), "timeout {t:?}");
    }
}

/// `join_until`: an instant in the past gives up at once unless the run is over (the
/// record is looked at first); `Instant::MAX` waits for the result.
#[test]
fn join_until_past_and_far_future() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let done = ex.attach(task(Priority::Normal, "done"), async { 4u64 }).unwrap();
    run_all!(ex);
    let child = ex.attach(task(Priority::Low, "child"), sleeper(ms(20), 6)).unwrap();
    let outs: [Out; 4] = Default::default();
    let o = outs.clone();
    ex.attach(task(Priority::Normal, "waiter"), async move {
        rt::sleep(ms(2)).await.unwrap();
        o[0].set(Some(join_until(child, Instant::ZERO).await));
        o[1].set(Some(join_until(child, Instant::from_nanos(1)).await));
        o[2].set(Some(join_until(done, Instant::ZERO).await));
        o[3].set(Some(join_until(child, Instant::MAX).await));
    })
    .unwrap();
    run_all!(ex);
    assert_eq!(outs[0].get(), Some(Err(JoinError::TimedOut)));
    assert_eq!(outs[1].get(), Some(Err(JoinError::TimedOut)));
    assert_eq!(outs[2].get(), Some(Ok(Ok(4))), "a past deadline still reads a result that is there");
    assert_eq!(outs[3].get(), Some(Ok(Ok(6))));
}

/// Join rule 6 and `TaskError::Panicked`'s text: the node keeps the message's pointer and
/// length. The message is the body's own (a `&'static str` made at run time, in the
/// heap); after the awaited slot is re-attached and completes with another message, the
/// join polled again still returns the first message, byte for byte.
#[test]
fn a_panicked_message_kept_in_the_node_outlives_the_slots_reuse() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let first_msg: &'static str = String::leak(format!("first message {}", std::process::id()));
    let child = ex
        .attach(task(Priority::Low, "child"), async move {
            rt::sleep(ms(1)).await?;
            Err::<u64, TaskError>(TaskError::Panicked(first_msg))
        })
        .unwrap();
    let got: Rc<Cell<Option<(String, String)>>> = Rc::default();
    let reused = Rc::new(Cell::new(false));
    let (g, r) = (got.clone(), reused.clone());
    ex.attach(task(Priority::Normal, "waiter"), async move {
        let mut j = Box::pin(join(child));
        let first = j.as_mut().await;
        // Let the slot be re-attached and complete with another message.
        while !r.get() {
            rt::sleep(ms(1)).await.unwrap();
        }
        let again = match core::future::poll_fn(|cx| Poll::Ready(j.as_mut().poll(cx))).await {
            Poll::Ready(again) => again,
            Poll::Pending => panic!("pending after it returned"),
        };
        let text = |o: Joined| match o {
            Ok(Err(TaskError::Panicked(m))) => m.to_owned(),
            other => panic!("not a panic: {other:?}"),
        };
        g.set(Some((text(first), text(again))));
    })
    .unwrap();
    ex.run(8, None).unwrap();
    while ex.result(child) == Ok(None) {
        ex.run(8, None).unwrap();
    }
    let second_msg: &'static str = String::leak("second".repeat(7));
    let again = ex.attach(child, async move { Err::<u64, TaskError>(TaskError::Panicked(second_msg)) }).unwrap();
    while ex.result(again) == Ok(None) {
        ex.run(8, None).unwrap();
    }
    reused.set(true);
    run_all!(ex);
    let (a, b) = got.take().expect("the waiter ran to its end");
    assert_eq!(a, first_msg);
    assert_eq!(b, first_msg, "polled again after the slot's reuse");
}

/// A `Join` that gave up (timed out) and is dropped only after the awaited slot was
/// re-attached and another join linked itself to the new run: the drop touches nothing
/// (its node is not linked) and the new run's waiter still gets its result.
#[test]
fn a_join_dropped_after_the_slot_was_reused_leaves_the_new_runs_waiters_alone() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let child = ex.attach(task(Priority::Low, "child"), sleeper(ms(5), 1)).unwrap();
    let kept: Rc<Cell<Option<Pin<Box<Join>>>>> = Rc::default();
    let out: Out = Rc::default();
    let (k, o) = (kept.clone(), out.clone());
    ex.attach(task(Priority::Normal, "timed"), async move {
        let mut j = Box::pin(join_timeout(child, ms(1)));
        o.set(Some(j.as_mut().await));
        k.set(Some(j));
    })
    .unwrap();
    run_all!(ex);
    assert_eq!(out.get(), Some(Err(JoinError::TimedOut)));
    let again = ex.attach(child, sleeper(ms(5), 2)).unwrap();
    let out2: Out = Rc::default();
    let o2 = out2.clone();
    ex.attach(task(Priority::Normal, "new-waiter"), async move { o2.set(Some(join(again).await)) }).unwrap();
    ex.run(8, None).unwrap();
    assert_eq!(out2.get(), None, "linked to the new run");
    drop(kept.take());
    run_all!(ex);
    assert_eq!(out2.get(), Some(Ok(Ok(2))));
}

/// `Join` must stay `!Unpin`: its node is linked in the awaited task's list by address
/// (join rule 4), so safe code must not be able to move it between polls.
#[test]
fn join_is_not_unpin() {
    trait Fallback {
        const UNPIN: bool = false;
    }
    impl<T: ?Sized> Fallback for T {}
    struct Probe<T: ?Sized>(PhantomData<T>);
    #[allow(dead_code)]
    impl<T: ?Sized + Unpin> Probe<T> {
        const UNPIN: bool = true;
    }
    const { assert!(!<Probe<Join>>::UNPIN, "Join is Unpin: a linked node could be moved") };
    const { assert!(<Probe<u8>>::UNPIN, "the probe tells Unpin types") };
}

/// Join rule 5's table through `join_send` on its own executor: `CROSS_WAITERS` waiters
/// hold every entry; one more is told `TooManyWaiters` and says so again when polled
/// again (its memo); once a waiter is cancelled (its entry freed) a retry waits and gets
/// the result, as do the others.
#[test]
fn join_send_too_many_waiters_is_remembered_and_a_retry_after_a_free_entry_waits() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let child = ex.attach(task(Priority::Low, "child"), sleeper(ms(10), 3)).unwrap();
    let mut waiters: Vec<TaskHandle> = Vec::new();
    for _ in 0..CROSS_WAITERS {
        waiters.push(
            ex.attach(task(Priority::Normal, "w"), async move {
                match join_send(child, None).await {
                    Ok(result) => result,
                    Err(e) => {
                        assert_eq!(e, JoinError::Cancelled);
                        Err(TaskError::Failed(-1))
                    }
                }
            })
            .unwrap(),
        );
    }
    ex.run(64, None).unwrap();
    let out: Rc<Cell<Option<[Joined; 3]>>> = Rc::default();
    let o = out.clone();
    let extra = ex
        .attach(task(Priority::Normal, "extra"), async move {
            let mut j = Box::pin(join_send(child, None));
            let first = j.as_mut().await;
            let again = match core::future::poll_fn(|cx| Poll::Ready(j.as_mut().poll(cx))).await {
                Poll::Ready(again) => again,
                Poll::Pending => panic!("pending after it returned"),
            };
            // Retry until an entry is free (one waiter is cancelled below).
            let retried = loop {
                match join_send(child, None).await {
                    Err(JoinError::TooManyWaiters) => rt::sleep(ms(1)).await.unwrap(),
                    other => break other,
                }
            };
            o.set(Some([first, again, retried]));
        })
        .unwrap();
    ex.run(64, None).unwrap();
    ex.cancel(waiters[0]).unwrap();
    run_all!(ex);
    assert_eq!(out.get(), Some([Err(JoinError::TooManyWaiters), Err(JoinError::TooManyWaiters), Ok(Ok(3))]));
    assert!(matches!(ex.result(extra), Ok(Some(Ok(_)))));
    assert!(matches!(ex.result(waiters[0]), Ok(Some(Err(_)))), "cancelled");
    for w in &waiters[1..] {
        assert_eq!(ex.result(*w), Ok(Some(Ok(3))));
    }
}

/// A join's node names the task to wake by its header alone (join rule 3). A task that
/// links a join and leaves without dropping it (the `Join` forgotten: safe, its memory
/// leaks and stays valid) ends its run with the node still linked. If its slot is then
/// released and attached on another executor, where it waits, the awaited run's end must
/// not wake it from this executor: that would run another executor's task here.
#[test]
fn a_forgotten_join_never_wakes_its_waiters_slot_once_attached_elsewhere() {
    let a = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let a = a.into_ref();
    let b = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let b = b.into_ref();
    let awaited = a.attach(task(Priority::Low, "awaited"), sleeper(ms(10), 1)).unwrap();
    let waiter = a
        .attach(task(Priority::Normal, "waiter"), async move {
            let mut j = Box::pin(join(awaited));
            let first = core::future::poll_fn(|cx| Poll::Ready(j.as_mut().poll(cx))).await;
            assert!(first.is_pending(), "linked in the awaited run's waiters");
            core::mem::forget(j);
            5u64
        })
        .unwrap();
    a.run(8, None).unwrap();
    assert_eq!(a.result(waiter), Ok(Some(Ok(5))));
    let moved = a.release(waiter).unwrap();
    let polls = Rc::new(Cell::new(0u32));
    let p = polls.clone();
    let on_b = b
        .attach(moved, async move {
            p.set(p.get() + 1);
            rt::sleep(ms(50)).await?;
            p.set(p.get() + 1);
            Ok::<u64, TaskError>(6)
        })
        .unwrap();
    b.run(8, None).unwrap();
    assert_eq!(polls.get(), 1, "waiting on b");
    // The awaited run ends on a: its waiters' list still holds the forgotten node.
    run_all!(a);
    assert_eq!(a.result(awaited), Ok(Some(Ok(1))));
    assert_eq!(polls.get(), 1, "b's task was not run by a");
    run_all!(b);
    assert_eq!(polls.get(), 2);
    assert_eq!(b.result(on_b), Ok(Some(Ok(6))));
}

/// Join rule 7 on one executor: the forgotten join's waiter slot is re-attached here; the
/// awaited run's end does not wake the later run (it waits for its own timer).
#[test]
fn a_forgotten_join_never_wakes_its_waiters_later_run() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let awaited = ex.attach(task(Priority::Low, "awaited"), sleeper(ms(10), 1)).unwrap();
    let waiter = ex
        .attach(task(Priority::Normal, "waiter"), async move {
            let mut j = Box::pin(join(awaited));
            let first = core::future::poll_fn(|cx| Poll::Ready(j.as_mut().poll(cx))).await;
            assert!(first.is_pending(), "linked in the awaited run's waiters");
            core::mem::forget(j);
            5u64
        })
        .unwrap();
    ex.run(8, None).unwrap();
    assert_eq!(ex.result(waiter), Ok(Some(Ok(5))));
    let polls = Rc::new(Cell::new(0u32));
    let p = polls.clone();
    let later = ex
        .attach(waiter, async move {
            // Pending until polled again: a forged wake shows as a second poll.
            let mut once = false;
            core::future::poll_fn(|_| {
                p.set(p.get() + 1);
                if core::mem::replace(&mut once, true) { Poll::Ready(()) } else { Poll::Pending }
            })
            .await;
            6u64
        })
        .unwrap();
    ex.run(8, None).unwrap();
    assert_eq!(polls.get(), 1);
    while ex.result(awaited) == Ok(None) {
        ex.run(8, None).unwrap();
    }
    // Nothing left to run: the later run waits for a wake nobody sends (`Stalled`).
    let _ = ex.run(8, None);
    assert_eq!(polls.get(), 1, "the later run was not woken by the awaited run's end");
    assert_eq!(ex.result(later), Ok(None));
    ex.cancel(later).unwrap();
    run_all!(ex);
}

/// Join rule 7 with two executors on one thread (a `Join` is `!Send`, not bound to one
/// executor): a join linked by a task of `a`, then awaited by a task of `b`, must wake
/// `b`'s task when the awaited run ends on `a` (not run it from `a`'s ready list, and not
/// leave it waiting for ever).
#[test]
fn a_join_linked_on_one_executor_then_awaited_on_another_gets_its_result() {
    let a = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let a = a.into_ref();
    let b = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let b = b.into_ref();
    let awaited = a.attach(task(Priority::Low, "awaited"), sleeper(ms(10), 7)).unwrap();
    let stash: Rc<Cell<Option<Pin<Box<Join>>>>> = Rc::default();
    let s = stash.clone();
    a.attach(task(Priority::Normal, "linker"), async move {
        let mut j = Box::pin(join(awaited));
        let first = core::future::poll_fn(|cx| Poll::Ready(j.as_mut().poll(cx))).await;
        assert!(first.is_pending(), "linked in the awaited run's waiters");
        s.set(Some(j));
    })
    .unwrap();
    a.run(8, None).unwrap();
    let out: Out = Rc::default();
    let o = out.clone();
    let s = stash.clone();
    let on_b = b
        .attach(task(Priority::Normal, "awaiter"), async move {
            let j = s.take().expect("stashed");
            o.set(Some(j.await));
        })
        .unwrap();
    let _ = b.run(8, None);
    assert_eq!(out.get(), None, "waiting");
    for _ in 0..1_000 {
        if out.get().is_some() {
            break;
        }
        let _ = a.run(64, None);
        let _ = b.run(64, None);
    }
    assert_eq!(out.get(), Some(Ok(Ok(7))));
    assert_eq!(b.result(on_b).map(|r| r.is_some()), Ok(true));
}

/// Join rule 6 for `NotInTask`: a linked join polled outside any task returns
/// `NotInTask`, and polled again after the awaited run ended it returns that again (the
/// node it keeps its outcome in must leave the waiters' list first, or the run's end
/// overwrites what it returned).
#[test]
fn a_linked_join_polled_outside_a_task_keeps_not_in_task() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let awaited = ex.attach(task(Priority::Low, "awaited"), sleeper(ms(10), 7)).unwrap();
    let stash: Rc<Cell<Option<Pin<Box<Join>>>>> = Rc::default();
    let s = stash.clone();
    ex.attach(task(Priority::Normal, "linker"), async move {
        let mut j = Box::pin(join(awaited));
        let first = core::future::poll_fn(|cx| Poll::Ready(j.as_mut().poll(cx))).await;
        assert!(first.is_pending(), "linked in the awaited run's waiters");
        s.set(Some(j));
    })
    .unwrap();
    ex.run(8, None).unwrap();
    let mut j = stash.take().expect("stashed");
    let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
    assert_eq!(j.as_mut().poll(&mut cx), Poll::Ready(Err(JoinError::NotInTask)));
    run_all!(ex);
    assert_eq!(ex.result(awaited), Ok(Some(Ok(7))));
    assert_eq!(j.as_mut().poll(&mut cx), Poll::Ready(Err(JoinError::NotInTask)), "what it returned, again");
}
