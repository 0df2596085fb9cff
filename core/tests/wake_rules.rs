//! The wake rules (mailbox module): running, ready, suspended, stale, and other threads.

mod common;
use common::*;
use core::future::poll_fn;
use core::pin::pin;
use core::task::Poll;
use keel_core::{Config, Executor, Priority, RunError, SuspendReason, TaskState, rt, sim::SimDriver};
use std::cell::Cell;
use std::rc::Rc;

#[test]
fn wake_rule_1_woken_by_its_waker_while_running_it_is_queued_once() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let polls = Rc::new(Cell::new(0));
    let p = polls.clone();
    let t = ex
        .attach(
            task(Priority::Normal, "y"),
            poll_fn(move |cx| {
                p.set(p.get() + 1);
                if p.get() == 3 {
                    return Poll::Ready(());
                }
                // Woken several times while running: still queued once.
                cx.waker().wake_by_ref();
                cx.waker().wake_by_ref();
                let owned = cx.waker().clone();
                owned.wake();
                Poll::Pending
            }),
        )
        .unwrap();
    assert_eq!(ex.run(1, None), Ok(1));
    assert_eq!(ex.state(t), Ok(TaskState::Suspended(SuspendReason::Wait)));
    assert_eq!(ex.stats().ready, [0, 0, 0]);
    // The wakes went through the inbox (the waker path); the next pass takes them, once.
    assert_eq!(ex.run(1, None), Ok(1));
    assert_eq!(ex.stats().ready, [0, 0, 0], "queued twice");
    assert_eq!(ex.run(5, None), Ok(1));
    assert_eq!(polls.get(), 3);
    assert_eq!(ex.result(t), Ok(Some(Ok(0))));
}

#[test]
fn wake_rule_1_a_wake_readies_a_suspended_task_and_is_a_no_op_when_queued_or_done() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let polls = Rc::new(Cell::new(0));
    let p = polls.clone();
    let t = ex
        .attach(task(Priority::Normal, "w"), async move {
            p.set(1);
            rt::wait().await?;
            p.set(2);
            Ok(0)
        })
        .unwrap();
    // While it is attached (queued, not started), a wake is a no-op.
    ex.wake(t);
    assert_eq!(ex.stats().ready, [0, 1, 0]);
    assert_eq!(ex.run(1, None), Ok(1));
    assert_eq!(ex.state(t), Ok(TaskState::Suspended(SuspendReason::Wait)));
    ex.wake(t);
    ex.wake(t); // ready now: a no-op
    assert_eq!(ex.stats().ready, [0, 1, 0]);
    assert_eq!(ex.run(5, None), Ok(1));
    assert_eq!(polls.get(), 2);
    // Completed: a no-op, and the run's handle still reads the result.
    ex.wake(t);
    assert_eq!(ex.run(1, None), Err(RunError::Stalled));
    assert_eq!(ex.result(t), Ok(Some(Ok(0))));
}

#[test]
fn wake_rule_2_a_stale_generation_wake_is_a_no_op_on_the_next_run() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let first = ex
        .attach(task(Priority::Normal, "a"), async {
            rt::wait().await?;
            Ok(1)
        })
        .unwrap();
    ex.run(1, None).unwrap();
    let stale_waker = first.waker();
    ex.wake(first);
    ex.run(1, None).unwrap();
    assert_eq!(ex.result(first), Ok(Some(Ok(1))));
    let second = ex
        .attach(first, async {
            rt::wait().await?;
            Ok(2)
        })
        .unwrap();
    ex.run(1, None).unwrap();
    assert_eq!(ex.state(second), Ok(TaskState::Suspended(SuspendReason::Wait)));
    stale_waker.wake_by_ref();
    first.wake();
    ex.wake(first);
    assert_eq!(
        ex.run(1, Some(core::time::Duration::ZERO)),
        Err(RunError::TimedOut),
        "a stale wake resumed the new run"
    );
    assert_eq!(ex.state(second), Ok(TaskState::Suspended(SuspendReason::Wait)));
    second.waker().wake();
    assert_eq!(ex.run(1, None), Ok(1));
    assert_eq!(ex.result(second), Ok(Some(Ok(2))));
}

/// Four threads fire one task's waker 100 times each, in 50 rounds, while the owner
/// runs the task between rounds: each round polls the task exactly once more.
fn wakers_on_four_threads() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let polls = Rc::new(Cell::new(0u32));
    let p = polls.clone();
    let t = ex
        .attach(task(Priority::Normal, "x"), async move {
            loop {
                p.set(p.get() + 1);
                if rt::wait().await.is_err() {
                    return;
                }
            }
        })
        .unwrap();
    for round in 1..=50u32 {
        ex.run(1, None).unwrap();
        assert_eq!(polls.get(), round);
        let waker = t.waker();
        std::thread::scope(|s| {
            for _ in 0..4 {
                let w = waker.clone();
                s.spawn(move || {
                    for _ in 0..100 {
                        w.wake_by_ref();
                    }
                });
            }
        });
    }
    ex.run(1, None).unwrap();
    assert_eq!(polls.get(), 51);
    assert_eq!(ex.run(1, Some(core::time::Duration::ZERO)), Err(RunError::TimedOut), "woken twice");
}

#[test]
fn wake_rule_5_the_owner_takes_a_foreign_wake_racing_completion_and_drops_it() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let mut h = task(Priority::Normal, "race");
    for i in 0..2000u64 {
        let run = ex
            .attach(h, async move {
                rt::yield_now().await?;
                Ok(i)
            })
            .unwrap();
        let waker = run.waker();
        std::thread::scope(|s| {
            s.spawn(move || waker.wake());
            while ex.attached() > 0 {
                ex.run(8, None).unwrap();
            }
        });
        assert_eq!(ex.result(run), Ok(Some(Ok(i))));
        h = run;
    }
    // Late wakes for finished runs leave nothing behind.
    let _ = ex.run(4, Some(core::time::Duration::ZERO));
    assert_eq!(ex.stats().ready, [0, 0, 0]);
}

/// Same-thread wakes from the executor itself (`Executor::wake`, a timer firing,
/// `yield_now`) are plain updates of the task's local state: `Executor::wake` readies a
/// suspended task at once (no inbox pass between), and none of them goes through the
/// inbox.
#[test]
fn wake_rule_7_the_executors_own_wakes_skip_the_notify_word_and_the_inbox() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach(task(Priority::Normal, "local"), async {
            for _ in 0..3 {
                rt::wait().await?;
                rt::yield_now().await?;
                rt::sleep(core::time::Duration::from_millis(1)).await?;
            }
            Ok(3)
        })
        .unwrap();
    for _ in 0..3 {
        while ex.state(t) != Ok(TaskState::Suspended(SuspendReason::Wait)) {
            ex.run(1, None).unwrap();
        }
        assert_eq!(ex.stats().ready, [0, 0, 0]);
        ex.wake(t);
        assert_eq!(ex.stats().ready, [0, 1, 0], "the executor's own wake did not ready the task at once");
        assert_eq!(ex.state(t), Ok(TaskState::Ready));
    }
    while ex.attached() > 0 {
        ex.run(8, None).unwrap();
    }
    assert_eq!(ex.result(t), Ok(Some(Ok(3))));
    assert_eq!(ex.stats().timers_fired, 3);
    assert_eq!(ex.stats().inbox_taken, 0, "a same-thread wake went through the inbox");
}

#[test]
fn wake_rule_3_wakers_on_four_threads_queue_the_task_once() {
    wakers_on_four_threads();
}

/// Other threads read the header's atomics (`notify`, `generation`, `exec`) and push its
/// inbox node while the owner runs the task and writes its `Cell`s: the same four-thread
/// test (a data race there would be a failure under a race detector; here it shows as a
/// lost or doubled wake).
#[test]
fn header_rule_1_other_threads_touch_only_the_headers_atomics_while_the_owner_runs() {
    wakers_on_four_threads();
}
