//! `TaskCx`: the running task's context resolved once per poll. Inside a task it answers
//! what the per-call functions of `rt` and `io_status` answer; outside it is `None`
//! (`foreign_poll.rs` checks that with every other keel call).

mod common;
use common::*;
use core::pin::pin;
use core::task::Poll;
use keel_core::io_status::{self, SubmitRefused};
use keel_core::sim::{SimDriver, SimOp};
use keel_core::{Config, DriverError, Executor, Priority, SuspendReason, TaskCx, TaskState, rt};
use std::cell::RefCell;
use std::rc::Rc;

#[test]
fn a_task_cx_answers_what_the_per_call_functions_answer() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let task = task(Priority::High, "cx");
    let seen = Rc::new(RefCell::new(Vec::new()));
    let log = seen.clone();
    let run = ex
        .attach(task, async move {
            core::future::poll_fn(|cx| {
                let tcx = TaskCx::of(cx).expect("inside a task");
                let mut log = log.borrow_mut();
                log.push(("task", Some(tcx.task()) == rt::current_task(cx)));
                log.push(("cancelled", tcx.is_cancelled() == rt::is_cancelled(cx)));
                log.push(("priorities", Some(tcx.priorities()) == rt::priorities(cx)));
                log.push(("now", Some(tcx.now()) == rt::now(cx)));
                log.push(("driver_ptr", tcx.driver_ptr::<SimDriver>() == io_status::driver_ptr::<SimDriver>(cx)));
                // Driver rule 1: a nested lend is refused, through either form.
                let nested = tcx.try_with_driver::<SimDriver, _>(|_| tcx.try_with_driver::<SimDriver, _>(|_| ()));
                log.push(("nested lend refused", nested == Ok(Err(DriverError::Busy))));
                let mut op = Some(SimOp::new(5));
                let submitted = tcx.try_submit_from::<SimDriver>(&mut op, true);
                log.push(("submitted", submitted.is_ok() && op.is_none()));
                tcx.waiting_for_io();
                Poll::Ready(())
            })
            .await;
            Ok(0)
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(run), Ok(Some(Ok(0))));
    let seen = seen.borrow();
    assert_eq!(seen.len(), 7);
    for (what, ok) in seen.iter() {
        assert!(ok, "{what}");
    }
}

#[test]
fn waiting_for_io_through_a_task_cx_is_the_state_a_suspended_task_reports() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let run = ex
        .attach(task(Priority::Normal, "io"), async {
            let mut polled = false;
            core::future::poll_fn(|cx| {
                if polled {
                    return Poll::Ready(());
                }
                polled = true;
                let tcx = TaskCx::of(cx).unwrap();
                let mut op = Some(SimOp::new(10));
                assert_eq!(tcx.try_submit_from::<SimDriver>(&mut op, true).map(drop), Ok::<(), SubmitRefused>(()));
                tcx.waiting_for_io();
                Poll::Pending
            })
            .await;
            Ok(0)
        })
        .unwrap();
    ex.run(1, None).unwrap();
    assert_eq!(ex.state(run), Ok(TaskState::Suspended(SuspendReason::Io)));
    run_all!(ex);
    assert_eq!(ex.result(run), Ok(Some(Ok(0))));
}

/// Rt rule 1: the `Context` a body is polled with is its task's own at every poll,
/// whatever the body did with it before: one that replaced it (`*cx = ...`, a `Context`
/// of a foreign waker) in one poll gets the task's own again at the next, and a new run
/// of the slot gets a `Context` naming that run.
#[test]
fn rt_rule_1_a_body_that_replaced_its_context_gets_its_own_at_the_next_poll() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let mut handle = task(Priority::Normal, "replaces its cx");
    for _ in 0..2 {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let log = seen.clone();
        let run = ex
            .attach(handle, async move {
                let mut polls = 0;
                core::future::poll_fn(|cx| {
                    polls += 1;
                    log.borrow_mut().push(rt::current_task(cx));
                    if polls == 1 {
                        cx.waker().wake_by_ref();
                        *cx = core::task::Context::from_waker(core::task::Waker::noop());
                        assert_eq!(rt::current_task(cx), None, "a foreign waker's Context is outside the task");
                        return Poll::Pending;
                    }
                    Poll::Ready(())
                })
                .await;
                Ok(0)
            })
            .unwrap();
        run_all!(ex);
        assert_eq!(ex.result(run), Ok(Some(Ok(0))));
        assert_eq!(*seen.borrow(), vec![Some(run), Some(run)], "both polls see the task's own run");
        handle = run;
    }
}

/// Rt rule 1 with the resume `Context` made once per run: a body that stores another
/// `Context` in the one it was polled with (`*cx = ...`) gets keel's own again at its next
/// poll, and the next run of the slot gets one naming that run.
#[test]
fn a_body_that_replaces_its_context_gets_keels_again_at_the_next_poll() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let body = |log: Rc<RefCell<Vec<Option<keel_core::TaskHandle>>>>| async move {
        let mut polls = 0;
        core::future::poll_fn(|cx| {
            log.borrow_mut().push(rt::current_task(cx));
            *cx = core::task::Context::from_waker(std::task::Waker::noop());
            assert_eq!(rt::current_task(cx), None, "a foreign context is not the task's");
            polls += 1;
            if polls == 2 {
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref(); // the noop waker: nothing
            Poll::Pending
        })
        .await;
    };
    let first = ex.attach(task(Priority::Normal, "replacer"), body(seen.clone())).unwrap();
    ex.run(1, None).unwrap();
    ex.wake(first);
    run_all!(ex);
    let second = ex.attach(first, body(seen.clone())).unwrap();
    ex.run(1, None).unwrap();
    ex.wake(second);
    run_all!(ex);
    assert_eq!(*seen.borrow(), [Some(first), Some(first), Some(second), Some(second)]);
}
