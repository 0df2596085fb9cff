//! Cancellation in every lifecycle state, as a table.

mod common;
use common::*;
use core::pin::{Pin, pin};
use core::time::Duration;
use keel_core::sim::{SimDriver, SimOp};
use keel_core::{
    CancelError, CancelOutcome, Cancelled, Config, Executor, IoStatus, Priority, SuspendReason, TaskError, TaskHandle,
    TaskState, initiate, rt, suspend_until_completed_io,
};
use std::cell::Cell;
use std::rc::Rc;

type Ex<'a> = Pin<&'a Executor<SimDriver>>;
type Seen = Rc<Cell<Option<Result<(), Cancelled>>>>;

/// A body that records what its suspension point returned.
async fn body(kind: &'static str, seen: Seen) -> keel_core::TaskResult {
    {
        let r = match kind {
            "timer" => rt::sleep(Duration::from_secs(10)).await,
            "wait" => rt::wait().await,
            "yield" => rt::yield_now().await,
            "io" => {
                let st = pin!(IoStatus::new());
                initiate::<SimDriver>(st.as_ref(), SimOp::new(1).after(Duration::from_secs(10))).await.unwrap();
                suspend_until_completed_io(1).await.map(|_| ())
            }
            _ => Ok(()),
        };
        seen.set(Some(r));
        // After a cancel, every later suspension point says so too.
        let again = rt::yield_now().await;
        if r.is_err() {
            assert_eq!(again, Err(Cancelled));
        }
        r?;
        Ok(5)
    }
}

fn start(ex: Ex<'_>, kind: &'static str) -> (TaskHandle, Seen) {
    let seen = Rc::new(Cell::new(None));
    let t = ex.attach(task(Priority::Normal, "c"), body(kind, seen.clone())).unwrap();
    (t, seen)
}

#[test]
fn attached_not_started_completes_as_cancelled_without_running() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let (t, seen) = start(ex, "timer");
    assert_eq!(ex.state(t), Ok(TaskState::Attached));
    assert_eq!(ex.cancel(t), Ok(CancelOutcome::Completed));
    assert_eq!(ex.state(t), Ok(TaskState::Completed));
    assert_eq!(ex.result(t), Ok(Some(Err(TaskError::Cancelled))));
    assert_eq!(seen.get(), None, "the body ran");
    assert_eq!(ex.attached(), 0);
}

/// A started task that is ready (here: yielding) is not dropped: it stays queued and
/// its suspension point returns `Cancelled` when it runs (before: its body was dropped
/// where it stood).
#[test]
fn ready_stays_queued_and_resumes_with_cancelled() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let (t, seen) = start(ex, "yield");
    ex.run(1, None).unwrap();
    assert_eq!(ex.state(t), Ok(TaskState::Ready));
    assert_eq!(ex.cancel(t), Ok(CancelOutcome::Resumes));
    assert_eq!(ex.state(t), Ok(TaskState::Ready));
    assert_eq!(ex.stats().ready, [0, 1, 0]);
    run_all!(ex);
    assert_eq!(seen.get(), Some(Err(Cancelled)));
    assert_eq!(ex.result(t), Ok(Some(Err(TaskError::Cancelled))));
}

/// What a target task saw after it was woken by its completion and cancelled before it
/// ran again.
#[derive(Default)]
struct AfterWake {
    /// The suspension it was woken from returned (`Err(Cancelled)`, or the wake).
    woke: Cell<Option<Result<(), Cancelled>>>,
    /// The completion's result, as the task reads it.
    result: Cell<Option<keel_core::IoResult>>,
    /// Its next suspension point.
    next: Cell<Option<Result<(), Cancelled>>>,
}

/// Runs `target` (CPU priority Normal) until it is suspended on its operation, lets the
/// operation complete in a pass whose only resumption is a higher-priority task (so the
/// target is `Ready`, woken, not yet polled), cancels it there, and runs it to the end.
fn cancel_woken_before_it_runs(
    target: impl core::future::Future<Output = keel_core::TaskResult> + 'static,
) -> (Pin<Box<Executor<SimDriver>>>, TaskHandle) {
    let ex = Box::pin(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let stop = Rc::new(Cell::new(false));
    let s = stop.clone();
    // Waits until woken, then yields until stopped: with it ready, `run(1)` reaps and
    // resumes it, not the target.
    let busy = ex
        .as_ref()
        .attach(task(Priority::High, "busy"), async move {
            rt::wait().await.unwrap();
            while !s.get() {
                rt::yield_now().await.unwrap();
            }
            Ok(0)
        })
        .unwrap();
    let t = ex.as_ref().attach(task(Priority::Normal, "target"), target).unwrap();
    assert_eq!(ex.as_ref().run(2, None), Ok(2));
    assert_eq!(ex.as_ref().state(t), Ok(TaskState::Suspended(SuspendReason::Io)));
    ex.as_ref().wake(busy);
    assert_eq!(ex.as_ref().run(1, None), Ok(1));
    assert_eq!(ex.as_ref().state(t), Ok(TaskState::Ready), "the completion was reaped and woke the target");
    assert_eq!(ex.as_ref().cancel(t), Ok(CancelOutcome::Resumes));
    stop.set(true);
    run_all!(ex.as_ref());
    (ex, t)
}

/// A future task woken by its status's completion and cancelled before it runs again is
/// not dropped: its suspension point returns `Cancelled`, the status holds the result,
/// and its next suspension point returns `Cancelled` too. A cancel that dropped the body
/// here (`Completed`) would lose the result.
#[test]
fn a_task_woken_by_its_status_and_cancelled_before_it_runs_sees_the_result() {
    let seen: Rc<AfterWake> = Rc::default();
    let s = seen.clone();
    let (ex, t) = cancel_woken_before_it_runs(async move {
        let st = pin!(IoStatus::new());
        initiate::<SimDriver>(st.as_ref(), SimOp::new(1).with_result(Ok(42))).await.unwrap();
        s.woke.set(Some(suspend_until_completed_io(1).await.map(drop)));
        s.result.set(st.result());
        s.next.set(Some(rt::yield_now().await));
        Ok(7)
    });
    assert_eq!(seen.woke.get(), Some(Err(Cancelled)));
    assert_eq!(seen.result.get(), Some(Ok(42)), "the completion was lost");
    assert_eq!(seen.next.get(), Some(Err(Cancelled)));
    assert_eq!(ex.as_ref().result(t), Ok(Some(Ok(7))), "the body decides its result");
}

/// The same for an operation submitted with a wake token (`try_submit`): the body is
/// polled again (it sees the wake), then its next suspension point returns `Cancelled`.
/// A cancel that dropped the body here would lose the wake.
#[test]
fn a_task_woken_by_a_wake_token_op_and_cancelled_before_it_runs_sees_the_wake() {
    let seen: Rc<AfterWake> = Rc::default();
    let s = seen.clone();
    let (ex, t) = cancel_woken_before_it_runs(async move {
        let mut op = Some(SimOp::new(2).with_result(Ok(9)));
        let mut submitted = false;
        core::future::poll_fn(|cx| {
            if submitted {
                return core::task::Poll::Ready(());
            }
            keel_core::try_submit_from::<SimDriver>(cx, &mut op, true).unwrap();
            keel_core::io_status::waiting_for_io(cx);
            submitted = true;
            core::task::Poll::Pending
        })
        .await;
        s.woke.set(Some(Ok(())));
        s.next.set(Some(rt::yield_now().await));
        Ok(7)
    });
    assert_eq!(seen.woke.get(), Some(Ok(())), "the body was not polled after its wake");
    assert_eq!(seen.next.get(), Some(Err(Cancelled)));
    assert_eq!(ex.as_ref().result(t), Ok(Some(Ok(7))));
    let done = ex
        .as_ref()
        .with_driver(|d| {
            d.trace().any(|e| matches!(e, keel_core::sim::SimEvent::Complete { label: 2, result: Ok(9), .. }))
        })
        .unwrap();
    assert!(done, "the operation completed with its own result");
}

#[test]
fn suspended_on_a_timer_resumes_with_cancelled_and_the_timer_is_removed() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let (t, seen) = start(ex, "timer");
    ex.run(1, None).unwrap();
    assert_eq!(ex.state(t), Ok(TaskState::Suspended(SuspendReason::Timer)));
    assert_eq!(ex.stats().timers_armed, 1);
    assert_eq!(ex.cancel(t), Ok(CancelOutcome::Resumes));
    assert_eq!(ex.stats().timers_armed, 0);
    run_all!(ex);
    assert_eq!(seen.get(), Some(Err(Cancelled)));
    assert_eq!(ex.result(t), Ok(Some(Err(TaskError::Cancelled))));
    assert_eq!(ex.now().as_nanos(), 0, "virtual time moved: the timer was not removed");
}

#[test]
fn suspended_in_an_explicit_wait_resumes_with_cancelled() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let (t, seen) = start(ex, "wait");
    ex.run(1, None).unwrap();
    assert_eq!(ex.state(t), Ok(TaskState::Suspended(SuspendReason::Wait)));
    assert_eq!(ex.cancel(t), Ok(CancelOutcome::Resumes));
    run_all!(ex);
    assert_eq!(seen.get(), Some(Err(Cancelled)));
}

#[test]
fn suspended_on_io_cancels_the_io_then_resumes_with_cancelled() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let (t, seen) = start(ex, "io");
    ex.run(1, None).unwrap();
    assert_eq!(ex.state(t), Ok(TaskState::Suspended(SuspendReason::Io)));
    assert_eq!(ex.cancel(t), Ok(CancelOutcome::CancellingIo));
    assert_eq!(ex.state(t), Ok(TaskState::Cancelling));
    assert_eq!(ex.cancel(t), Ok(CancelOutcome::AlreadyCancelling));
    run_all!(ex);
    assert_eq!(seen.get(), Some(Err(Cancelled)));
    assert_eq!(ex.result(t), Ok(Some(Err(TaskError::Cancelled))));
    assert_eq!(ex.now().as_nanos(), 0, "the i/o ran its full latency instead of being cancelled");
    let ecanceled = ex
        .with_driver(|d| {
            d.trace().any(|e| {
                matches!(e, keel_core::sim::SimEvent::Complete { result: Err(keel_core::Errno::ECANCELED), .. })
            })
        })
        .unwrap();
    assert!(ecanceled);
}

#[test]
fn running_sees_the_cancel_at_its_next_suspension_point() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    static SLOT: keel_core::TaskSlot = keel_core::TaskSlot::new();
    let h = SLOT.create(Default::default()).unwrap();
    let seen = Rc::new(Cell::new(None));
    let s2 = seen.clone();
    // The body cancels itself while running, through its own executor reference.
    let exr: &'static Executor<SimDriver> = unsafe_static(ex);
    let t = ex
        .attach(h, async move {
            let me = core::future::poll_fn(|cx| core::task::Poll::Ready(rt::current_task(cx))).await.unwrap();
            let outcome = Pin::static_ref(exr).cancel(me);
            assert_eq!(outcome, Ok(CancelOutcome::AtNextSuspension));
            let r = rt::sleep(Duration::from_secs(1)).await;
            s2.set(Some(r));
            r?;
            Ok(1)
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(seen.get(), Some(Err(Cancelled)));
    assert_eq!(ex.result(t), Ok(Some(Err(TaskError::Cancelled))));
    assert_eq!(ex.now().as_nanos(), 0, "it slept instead of seeing the cancel");
}

/// The executor lives on this test's stack for the whole test; the body only uses the
/// reference while the executor runs it.
fn unsafe_static(ex: Ex<'_>) -> &'static Executor<SimDriver> {
    // SAFETY: see the doc comment: the reference never outlives the pinned executor.
    unsafe { &*(ex.get_ref() as *const Executor<SimDriver>) }
}

#[test]
fn draining_and_completed_are_too_late_idle_is_not_attached() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    // Draining: the body returns with an operation in flight (its status dropped).
    let t = ex
        .attach(task(Priority::Normal, "d"), async {
            let st = pin!(IoStatus::new());
            initiate::<SimDriver>(st.as_ref(), SimOp::new(9).after(Duration::from_secs(1))).await.unwrap();
            Ok(3)
        })
        .unwrap();
    ex.run(1, None).unwrap();
    assert_eq!(ex.state(t), Ok(TaskState::Draining));
    assert_eq!(ex.cancel(t), Err(CancelError::TooLate));
    run_all!(ex);
    assert_eq!(ex.state(t), Ok(TaskState::Completed));
    assert_eq!(ex.cancel(t), Err(CancelError::TooLate));
    let idle = task(Priority::Normal, "idle");
    assert_eq!(ex.cancel(idle), Err(CancelError::NotAttached));
}

#[test]
fn run_from_inside_a_task_is_refused() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let exr = unsafe_static(ex);
    let t = ex
        .attach(task(Priority::Normal, "nested"), async move {
            assert_eq!(Pin::static_ref(exr).run(1, None), Err(keel_core::RunError::Reentrant));
            Ok(1)
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
}
