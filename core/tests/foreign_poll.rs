//! Keel futures polled anywhere but inside their task's resume (rt rules 1-2): on another
//! thread with the task's waker, or with a `Context` rebuilt from it. They behave as
//! "not in a task" and never touch the executor.

mod common;
use common::*;
use core::pin::{Pin, pin};
use core::task::{Context, Poll, Waker};
use core::time::Duration;
use keel_core::io_status::{self, SubmitRefused};
use keel_core::sim::{SimDriver, SimOp};
use keel_core::{Config, Errno, Executor, IoStatus, Priority, SuspendReason, TaskHandle, TaskState, rt};
use std::sync::mpsc;

/// Every keel future and function, polled with `waker` in a `Context` of our own: each
/// must give its "not in a task" outcome (rt rule 2). Returns what failed.
fn poll_everything_outside(waker: &Waker) -> Vec<&'static str> {
    let mut cx = Context::from_waker(waker);
    let mut failed = Vec::new();
    let mut check = |ok: bool, what: &'static str| {
        if !ok {
            failed.push(what);
        }
    };
    let sleep = pin!(rt::sleep(Duration::from_secs(5)));
    check(matches!(sleep.poll(&mut cx), Poll::Ready(Ok(()))), "sleep");
    let until = pin!(rt::sleep_until(keel_core::Instant::from_nanos(5_000_000_000)));
    check(matches!(until.poll(&mut cx), Poll::Ready(Ok(()))), "sleep_until");
    let y = pin!(rt::yield_now());
    check(matches!(y.poll(&mut cx), Poll::Ready(Ok(()))), "yield_now");
    let w = pin!(rt::wait());
    check(matches!(w.poll(&mut cx), Poll::Ready(Ok(()))), "wait");
    check(keel_core::TaskCx::of(&cx).is_none(), "TaskCx::of");
    check(rt::now(&cx).is_none(), "now");
    check(rt::current_task(&cx).is_none(), "current_task");
    check(!rt::is_cancelled(&cx), "is_cancelled");
    check(rt::priorities(&cx).is_none(), "priorities");
    check(io_status::with_driver::<SimDriver, _>(&cx, |_| ()).is_none(), "with_driver");
    check(io_status::driver_ptr::<SimDriver>(&cx).is_none(), "driver_ptr");
    let mut op = Some(SimOp::new(1));
    check(
        matches!(io_status::try_submit_from::<SimDriver>(&cx, &mut op, true), Err(SubmitRefused::Failed(Errno::EPERM))),
        "try_submit_from",
    );
    check(op.is_some(), "try_submit_from took the operation");
    let st = pin!(IoStatus::new());
    let init = pin!(keel_core::initiate::<SimDriver>(st.as_ref(), SimOp::new(2)));
    check(matches!(init.poll(&mut cx), Poll::Ready(Err(keel_core::InitiateError::NotInTask(_)))), "initiate");
    check(!st.is_in_flight(), "initiate put the status in flight");
    let done = pin!(keel_core::suspend_until_completed_io(1));
    check(matches!(done.poll(&mut cx), Poll::Ready(Ok(0))), "suspend_until_completed_io");
    io_status::waiting_for_io(&cx);
    failed
}

/// On thread B, every keel future polled with the waker of a task that A has parked
/// (suspended in `wait`) behaves as outside a task: A's timers stay unarmed, nothing is
/// submitted, and the task's result is what its body computed. Without rt rule 1's
/// check, B's `sleep` would arm a 5 s timer on A (and A would wake the task after 5 s).
#[test]
fn rt_rule_2_keel_futures_polled_on_another_thread_with_a_parked_tasks_waker_touch_nothing() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let run = ex
        .attach(task(Priority::Normal, "parked"), async {
            rt::wait().await?;
            Ok(6 * 7)
        })
        .unwrap();
    ex.run(1, None).unwrap();
    assert_eq!(ex.state(run), Ok(TaskState::Suspended(SuspendReason::Wait)));
    let failed = std::thread::spawn(move || poll_everything_outside(&run.waker())).join().unwrap();
    assert!(failed.is_empty(), "inside the task on another thread: {failed:?}");
    let stats = ex.stats();
    assert_eq!(stats.timers_armed, 0, "another thread's sleep armed a timer on this executor");
    assert_eq!(stats.io_submitted, 0);
    assert_eq!(ex.state(run), Ok(TaskState::Suspended(SuspendReason::Wait)));
    ex.wake(run);
    run_all!(ex);
    assert_eq!(ex.result(run), Ok(Some(Ok(42))));
    assert_eq!(ex.now(), keel_core::Instant::ZERO, "the clock moved: a timer fired");
}

/// The same while A is inside its resume of the task: the body hands its handle to thread
/// B and blocks until B has polled everything with the task's waker. Without rt rule 1's
/// check, B would find the task "current" on A and arm a timer on A from B's thread.
#[test]
fn rt_rule_2_keel_futures_polled_on_another_thread_while_the_task_runs_touch_nothing() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let (to_b, at_b) = mpsc::channel::<TaskHandle>();
    let (to_a, at_a) = mpsc::channel::<Vec<&'static str>>();
    let b = std::thread::spawn(move || {
        let run = at_b.recv().unwrap();
        to_a.send(poll_everything_outside(&run.waker())).unwrap();
    });
    let mut handed = false;
    let run = ex
        .attach(
            task(Priority::Normal, "running"),
            core::future::poll_fn(move |cx| {
                if !handed {
                    handed = true;
                    to_b.send(rt::current_task(cx).expect("inside the task")).unwrap();
                    let failed = at_a.recv().unwrap();
                    assert!(failed.is_empty(), "inside the task on another thread: {failed:?}");
                }
                Poll::Ready(Ok::<u64, keel_core::TaskError>(7))
            }),
        )
        .unwrap();
    ex.run(1, None).unwrap();
    b.join().unwrap();
    assert_eq!(ex.stats().timers_armed, 0, "another thread's sleep armed a timer on this executor");
    assert_eq!(ex.result(run), Ok(Some(Ok(7))));
}

/// Inside the task, a `Context` rebuilt from the task's waker is not the task's (rt rule
/// 1): keel futures polled with it are outside; with the task's own they are inside.
#[test]
fn rt_rule_1_a_context_rebuilt_from_the_waker_is_outside_the_task() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let run = ex
        .attach(
            task(Priority::Normal, "rebuilt"),
            core::future::poll_fn(|cx| {
                let inside = rt::now(cx).is_some();
                let rebuilt = Context::from_waker(cx.waker());
                let outside = rt::now(&rebuilt).is_none() && rt::current_task(&rebuilt).is_none();
                let mut sleep = rt::sleep(Duration::from_secs(1));
                let mut rebuilt = Context::from_waker(cx.waker());
                let ready = matches!(Pin::new(&mut sleep).poll(&mut rebuilt), Poll::Ready(Ok(())));
                Poll::Ready(Ok::<u64, keel_core::TaskError>(
                    u64::from(inside) + 2 * u64::from(outside) + 4 * u64::from(ready),
                ))
            }),
        )
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(run), Ok(Some(Ok(7))));
    assert_eq!(ex.stats().timers_armed, 0);
}

/// Handles of one executor's task given to another executor (two executors on one thread)
/// never act on the task: `wake` is a no-op, the rest say the task is not theirs. The
/// owner still runs it to the result its body computed.
#[test]
fn header_rule_2_another_executors_methods_never_act_on_a_task() {
    let a = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let a = a.into_ref();
    let b = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let b = b.into_ref();
    let run = a
        .attach(task(Priority::Normal, "a's"), async {
            rt::wait().await?;
            Ok(5)
        })
        .unwrap();
    a.run(1, None).unwrap();
    b.wake(run);
    assert_eq!(b.stats().ready, [0, 0, 0], "b queued a's task");
    assert_eq!(a.state(run), Ok(TaskState::Suspended(SuspendReason::Wait)), "b's wake reached a's task");
    assert_eq!(b.state(run), Err(keel_core::StaleHandle));
    assert_eq!(b.result(run), Err(keel_core::StaleHandle));
    assert_eq!(b.cancel(run), Err(keel_core::CancelError::OwnedElsewhere));
    assert_eq!(b.destroy(run), Err(keel_core::DestroyError::OwnedElsewhere));
    assert_eq!(b.release(run).map(|_| ()), Err(keel_core::DestroyError::OwnedElsewhere));
    assert!(matches!(b.attach(run, async { 0u64 }), Err(keel_core::AttachError::OwnedElsewhere(_))));
    a.wake(run);
    run_all!(a);
    assert_eq!(a.result(run), Ok(Some(Ok(5))));
}
