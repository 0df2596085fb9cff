//! NT-style status blocks on the simulated driver.

mod common;
use common::*;
use core::pin::pin;
use core::time::Duration;
use keel_core::sim::{SimDriver, SimOp};
use keel_core::{
    Config, Errno, Executor, InitiateError, IoStatus, NoIo, Priority, TaskState, initiate, rt,
    suspend_until_completed_io,
};

#[test]
fn io_status_rule_1_completions_arrive_on_the_completed_list_in_completion_order() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let log = Log::default();
    let l = log.clone();
    let t = ex
        .attach(task(Priority::Normal, "io"), async move {
            let (a, b, c) = (pin!(IoStatus::new()), pin!(IoStatus::new()), pin!(IoStatus::new()));
            // A slow full read, a fast short read, an error.
            initiate::<SimDriver>(a.as_ref(), SimOp::new(1).after(Duration::from_millis(30)).with_result(Ok(4096)))
                .await
                .unwrap();
            initiate::<SimDriver>(b.as_ref(), SimOp::new(2).after(Duration::from_millis(10)).with_result(Ok(100)))
                .await
                .unwrap();
            initiate::<SimDriver>(
                c.as_ref(),
                SimOp::new(3).after(Duration::from_millis(20)).with_result(Err(Errno::EIO)),
            )
            .await
            .unwrap();
            assert!(a.is_in_flight() && b.is_in_flight() && c.is_in_flight());
            let mut total = 0;
            loop {
                let n = suspend_until_completed_io(8).await?;
                if n == 0 {
                    break;
                }
                total += n;
                let now = rt::clock().await.unwrap().as_nanos() / 1_000_000;
                l.push(format!("{n}@{now} a={:?} b={:?} c={:?}", a.result(), b.result(), c.result()));
            }
            Ok(total as u64)
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(3))));
    assert_eq!(
        log.take(),
        [
            "1@10 a=None b=Some(Ok(100)) c=None",
            "1@20 a=None b=Some(Ok(100)) c=Some(Err(Errno(5)))",
            "1@30 a=Some(Ok(4096)) b=Some(Ok(100)) c=Some(Err(Errno(5)))",
        ]
    );
    let st = ex.stats();
    assert_eq!((st.io_submitted, st.io_completed), (3, 3));
}

#[test]
fn refused_submissions_hand_the_operation_back() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    ex.with_driver(|d| d.fail_next_submits(1, Errno::EAGAIN)).unwrap();
    let t = ex
        .attach(task(Priority::Normal, "refused"), async {
            let st = pin!(IoStatus::new());
            match initiate::<SimDriver>(st.as_ref(), SimOp::new(77)).await {
                Err(InitiateError::Refused(op, Errno::EAGAIN)) => assert_eq!(op.label, 77),
                other => panic!("{other:?}"),
            }
            // The status is still free: retry succeeds.
            initiate::<SimDriver>(st.as_ref(), SimOp::new(78).with_result(Ok(1))).await.unwrap();
            // Busy while in flight.
            assert!(matches!(
                initiate::<SimDriver>(st.as_ref(), SimOp::new(79)).await,
                Err(InitiateError::StatusBusy(_))
            ));
            assert_eq!(suspend_until_completed_io(1).await, Ok(1));
            Ok(st.result().unwrap().unwrap() as u64)
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
}

#[test]
fn wrong_driver_and_outside_a_task_are_typed_errors() {
    let ex = pin!(Executor::new(NoIo, Config::default()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach(task(Priority::Normal, "wrong"), async {
            let st = pin!(IoStatus::new());
            assert!(matches!(
                initiate::<SimDriver>(st.as_ref(), SimOp::new(1)).await,
                Err(InitiateError::WrongDriver(_))
            ));
            Ok(1)
        })
        .unwrap();
    ex.run(1, None).unwrap();
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
    // Outside any task.
    let st = pin!(IoStatus::new());
    let mut fut = pin!(initiate::<SimDriver>(st.as_ref(), SimOp::new(2)));
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    assert!(matches!(fut.as_mut().poll(&mut cx), std::task::Poll::Ready(Err(InitiateError::NotInTask(_)))));
}

#[test]
fn io_status_rule_4_a_status_dropped_in_flight_is_orphaned_and_its_completion_never_reaches_it() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach(task(Priority::Normal, "orphan"), async {
            for i in 0..50 {
                let st = pin!(IoStatus::new());
                initiate::<SimDriver>(st.as_ref(), SimOp::new(i).after(Duration::from_secs(1))).await.unwrap();
                // `st` is dropped here with its operation in flight; the next iteration's
                // status may sit at the same address.
            }
            rt::sleep(Duration::from_millis(1)).await?;
            Ok(7)
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(7))));
    let st = ex.stats();
    assert_eq!((st.io_submitted, st.io_completed), (50, 50));
    let cancelled =
        ex.with_driver(|d| d.trace().filter(|e| matches!(e, keel_core::sim::SimEvent::Cancel { .. })).count()).unwrap();
    assert!(cancelled == 50, "orphans were not cancelled");
    assert_eq!(ex.now().as_nanos(), 1_000_000, "orphans ran their full latency");
}

#[test]
fn a_body_returning_with_io_in_flight_drains_before_it_completes() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let mut h = task(Priority::Normal, "pump");
    for round in 0..3u64 {
        let t = ex
            .attach(h, async move {
                let st = pin!(IoStatus::new());
                initiate::<SimDriver>(st.as_ref(), SimOp::new(1).after(Duration::from_secs(5))).await.unwrap();
                Ok(round)
            })
            .unwrap();
        assert_eq!(ex.run(1, None), Ok(1));
        assert_eq!(ex.state(t), Ok(TaskState::Draining));
        // Not reusable until drained.
        assert!(matches!(ex.attach(t, async { 0u64 }), Err(keel_core::AttachError::AlreadyAttached(_))));
        assert_eq!(ex.run(1, None), Ok(1), "the drained completion counts as an item");
        assert_eq!(ex.result(t), Ok(Some(Ok(round))));
        h = t;
    }
}

/// An operation submitted with a wake token is the driver's, not the run's: a body that
/// returns with one in flight completes at once (no Draining), and its completion,
/// reaped during the task's next run, wakes nothing there.
#[test]
fn io_status_rule_5_a_wake_token_operation_never_holds_or_wakes_a_later_run() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach(task(Priority::Normal, "token"), async {
            core::future::poll_fn(|cx| {
                keel_core::try_submit::<SimDriver>(cx, SimOp::new(1).after(Duration::from_millis(5))).unwrap();
                core::task::Poll::Ready(())
            })
            .await;
            Ok(1)
        })
        .unwrap();
    assert_eq!(ex.run(1, None), Ok(1));
    assert_eq!(ex.state(t), Ok(TaskState::Completed), "a wake-token operation held the run");
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
    let polls = std::rc::Rc::new(std::cell::Cell::new(0));
    let p = polls.clone();
    let next = ex
        .attach(t, async move {
            p.set(p.get() + 1);
            rt::wait().await?;
            Ok(2)
        })
        .unwrap();
    assert_eq!(ex.run(1, None), Ok(1));
    // The old operation completes (the clock passes 5 ms) while the next run waits.
    assert_eq!(ex.run(1, Some(Duration::from_millis(20))), Err(keel_core::RunError::TimedOut));
    let reaped = ex
        .with_driver(|d| d.trace().any(|e| matches!(e, keel_core::sim::SimEvent::Complete { label: 1, .. })))
        .unwrap();
    assert!(reaped, "the operation never completed");
    assert_eq!(polls.get(), 1, "the old run's completion woke the next run");
    assert_eq!(ex.state(next), Ok(TaskState::Suspended(keel_core::SuspendReason::Wait)));
}

/// The driver's token for an in-flight operation is its status block's address: each
/// completion lands on its own status, whatever order the operations complete in (the
/// same body as io_status rule 1's test).
#[test]
fn io_status_rule_3_each_completion_reaches_its_own_status_block() {
    io_status_rule_1_completions_arrive_on_the_completed_list_in_completion_order();
}
