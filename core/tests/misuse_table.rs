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
    Config, ConfigError, DriverError, Errno, Executor, InitiateError, IoStatus, NoIo, NotSubmitted, Priority,
    SubmitRefused, TaskError, initiate,
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
