//! The misuse table (`MISUSE.md` at the repository root): tests for the rows no other
//! test file shows, and the check that keeps the table honest (every test it cites
//! exists, by name, in the file it names).

mod common;
use common::*;
use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll};
use keel_core::io_status::{try_submit, try_submit_from, try_with_driver};
use keel_core::sim::{SimDriver, SimOp};
use keel_core::{
    Config, ConfigError, DriverError, Errno, Executor, HandleSlot, InitiateError, IoStatus, NoIo, NotSubmitted,
    Priority, StaleHandle, SubmitRefused, TaskError, initiate, suspend_until_completed_io,
};

/// Each run-loop bound set to 0 (and `max_io_in_flight: Some(0)`) is refused by name.
#[test]
fn config_zero_bound_is_refused_by_name() {
    let cases: [(&str, Config); 5] = [
        ("inbox_batch", Config { inbox_batch: 0, ..Config::default() }),
        ("timer_batch", Config { timer_batch: 0, ..Config::default() }),
        ("reap_batch", Config { reap_batch: 0, ..Config::default() }),
        ("resume_batch", Config { resume_batch: 0, ..Config::default() }),
        ("max_io_in_flight", Config { max_io_in_flight: Some(0), ..Config::default() }),
    ];
    for (name, cfg) in cases {
        let err = Executor::new(SimDriver::new(), cfg).err().expect("a zero bound is refused");
        assert_eq!(err, ConfigError::Zero(name));
        let text = err.to_string();
        assert!(text.contains(name) && text.contains("at least 1"), "{text}");
    }
    // Spare stacks may be 0 (keep none): not a bound.
    assert!(Executor::new(SimDriver::new(), Config { max_spare_stacks: 0, ..Config::default() }).is_ok());
}

/// `try_with_driver` polled with a context that is not a task's: `NotInTask`.
#[test]
fn try_with_driver_outside_a_task_is_not_in_task() {
    let cx = Context::from_waker(std::task::Waker::noop());
    let err = try_with_driver::<SimDriver, _>(&cx, |d| d.trace_len()).unwrap_err();
    assert_eq!(err, DriverError::NotInTask);
    assert!(err.to_string().contains("inside a keel task"));
}

/// `try_with_driver::<D>` in a task whose executor runs another driver: `WrongDriver`.
#[test]
fn try_with_driver_for_another_driver_type_is_wrong_driver() {
    let ex = pin!(Executor::new(NoIo, Config::default()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach(task(Priority::Normal, "wrong"), async {
            let r =
                core::future::poll_fn(|cx| Poll::Ready(try_with_driver::<SimDriver, _>(cx, |d| d.trace_len()))).await;
            assert_eq!(r, Err(DriverError::WrongDriver));
            assert!(DriverError::WrongDriver.to_string().contains("different driver"));
            Ok::<u64, TaskError>(1)
        })
        .unwrap();
    ex.run(1, None).unwrap();
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
}

/// `initiate` with the task's own context while the executor's driver is lent to a
/// `with_driver` closure: `InitiateError::DriverBusy`, the operation handed back.
#[test]
fn initiate_inside_with_driver_is_driver_busy() {
    let ex: &'static Executor<SimDriver> =
        Box::leak(Box::new(Executor::new(SimDriver::new(), Config::default()).unwrap()));
    let ex = core::pin::Pin::static_ref(ex);
    let t = ex
        .attach(task(Priority::Normal, "busy"), async move {
            let st = pin!(IoStatus::new());
            let label = core::future::poll_fn(|cx: &mut Context<'_>| {
                let got = ex.with_driver(|_| {
                    let mut fut = pin!(initiate::<SimDriver>(st.as_ref(), SimOp::new(5)));
                    match fut.as_mut().poll(cx) {
                        Poll::Ready(Err(e @ InitiateError::DriverBusy(_))) => {
                            assert!(e.to_string().contains("lent to a with_driver closure"), "{e}");
                            match e {
                                InitiateError::DriverBusy(op) => op.label,
                                _ => unreachable!(),
                            }
                        }
                        other => panic!("initiate inside a lend: {other:?}"),
                    }
                });
                Poll::Ready(got)
            })
            .await;
            assert_eq!(label, Ok(5), "the operation comes back");
            assert!(!st.is_in_flight());
            Ok::<u64, TaskError>(1)
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
}

/// `try_submit` and `try_submit_from` with a context that is not a task's: `EPERM`, the
/// operation handed back (or left in place).
#[test]
fn try_submit_outside_a_task_is_failed_eperm() {
    let cx = Context::from_waker(std::task::Waker::noop());
    match try_submit::<SimDriver>(&cx, SimOp::new(3)) {
        Err(NotSubmitted::Failed(op, Errno::EPERM)) => assert_eq!(op.label, 3),
        other => panic!("{other:?}"),
    }
    let mut op = Some(SimOp::new(4));
    assert_eq!(try_submit_from::<SimDriver>(&cx, &mut op, true), Err(SubmitRefused::Failed(Errno::EPERM)));
    assert_eq!(op.map(|o| o.label), Some(4), "left where it was");
}

/// `try_submit_from::<D>` in a task whose executor runs another driver: `EINVAL`, the
/// operation left in place.
#[test]
fn try_submit_from_for_another_driver_type_is_failed_einval() {
    let ex = pin!(Executor::new(NoIo, Config::default()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach(task(Priority::Normal, "wrong"), async {
            let mut op = Some(SimOp::new(6));
            let r = core::future::poll_fn(|cx| Poll::Ready(try_submit_from::<SimDriver>(cx, &mut op, true))).await;
            assert_eq!(r, Err(SubmitRefused::Failed(Errno::EINVAL)));
            assert_eq!(op.map(|o| o.label), Some(6));
            Ok::<u64, TaskError>(1)
        })
        .unwrap();
    ex.run(1, None).unwrap();
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
}

/// `Executor::handle` with a slot bound to another live executor, or a second time for
/// the same executor: `None` (one slot names one executor; one executor has one slot).
#[test]
fn handle_of_a_slot_bound_to_a_live_executor_is_none() {
    let hs: &'static HandleSlot = Box::leak(Box::new(HandleSlot::new()));
    let other: &'static HandleSlot = Box::leak(Box::new(HandleSlot::new()));
    let a = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let a = a.into_ref();
    let b = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let b = b.into_ref();
    assert!(a.handle(hs).is_some(), "a fresh slot binds");
    assert!(b.handle(hs).is_none(), "the slot names a live executor already");
    assert!(a.handle(other).is_none(), "the executor has a slot already");
    assert!(b.handle(other).is_some(), "b binds a slot of its own");
}

/// `task_times` and `switcher` with a handle of an earlier run: `StaleHandle`.
#[test]
fn task_times_and_switcher_of_a_stale_handle_are_stale() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let first = ex.attach(task(Priority::Normal, "t"), async { 1u64 }).unwrap();
    ex.run(1, None).unwrap();
    let second = ex.attach(first, async { 2u64 }).unwrap();
    assert_eq!(ex.task_times(first).err(), Some(StaleHandle));
    assert_eq!(ex.switcher(first).err(), Some(StaleHandle));
    assert!(ex.task_times(second).is_ok());
    assert!(StaleHandle.to_string().contains("use the handle the latest attach returned"));
}

/// A cancelled task that goes on to initiate i/o (it ignored `Cancelled`):
/// `InitiateError::Cancelled`, the operation handed back, nothing submitted.
#[test]
fn initiate_after_the_task_was_cancelled_is_cancelled() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach(task(Priority::Normal, "stubborn"), async {
            let ignored = keel_core::rt::wait().await;
            assert_eq!(ignored, Err(keel_core::Cancelled));
            let st = pin!(IoStatus::new());
            match initiate::<SimDriver>(st.as_ref(), SimOp::new(8)).await {
                Err(e @ InitiateError::Cancelled(_)) => {
                    assert!(e.to_string().contains("return and let it complete"), "{e}");
                    let InitiateError::Cancelled(op) = e else { unreachable!() };
                    assert_eq!(op.label, 8);
                }
                other => panic!("{other:?}"),
            }
            assert!(!st.is_in_flight());
            Ok::<u64, TaskError>(1)
        })
        .unwrap();
    ex.run(1, None).unwrap();
    ex.cancel(t).unwrap();
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
    assert_eq!(ex.with_driver(|d| keel_core::Driver::in_flight(&**d)), Ok(0));
}

/// `suspend_until_completed_io(0)` with a completion waiting: it returns `Ok(0)`, the
/// answer that means "nothing in flight and nothing completed", so a caller looping until
/// 0 stops with a completion never taken, and one looping until it is positive spins.
/// A zero bound should be refused (as `run(0)` is, `RunError::ZeroMaxItems`) or taken
/// as 1; this test asserts the completion is reported either way.
#[test]
fn suspend_until_completed_io_with_max_zero_is_detected() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach(task(Priority::Normal, "zero"), async {
            let st = pin!(IoStatus::new());
            initiate::<SimDriver>(st.as_ref(), SimOp::new(1).with_result(Ok(3))).await.unwrap();
            let n = suspend_until_completed_io(0).await?;
            Ok::<u64, TaskError>(n as u64)
        })
        .unwrap();
    run_all!(ex);
    assert_ne!(ex.result(t), Ok(Some(Ok(0))), "a completion was waiting, and 0 says there was none");
}

/// Every test `MISUSE.md` cites as `` `dir/tests/file.rs::name` `` is a `fn name` in that
/// file, and the table cites at least one test per crate.
#[test]
fn misuse_table_cites_only_tests_that_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root");
    let table = std::fs::read_to_string(root.join("MISUSE.md")).expect("MISUSE.md at the repository root");
    let mut cited = 0;
    let mut missing = Vec::new();
    for (i, piece) in table.split('`').enumerate() {
        // Odd pieces are inside backticks.
        let Some((file, name)) = piece.split_once(".rs::").filter(|_| i % 2 == 1) else { continue };
        let file = format!("{file}.rs");
        let src = std::fs::read_to_string(root.join(&file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let found = src.lines().any(|l| {
            let l = l.trim_start();
            l.strip_prefix("fn ").or_else(|| l.strip_prefix("async fn ")).is_some_and(|rest| {
                rest.strip_prefix(name).is_some_and(|after| after.starts_with('(') || after.starts_with('<'))
            })
        });
        if !found {
            missing.push(format!("{file}::{name}"));
        }
        cited += 1;
    }
    assert!(missing.is_empty(), "MISUSE.md cites tests that do not exist: {missing:?}");
    assert!(cited >= 40, "MISUSE.md cites only {cited} tests");
    assert!(table.contains("`core/tests/") && table.contains("`linux/tests/"));
}
