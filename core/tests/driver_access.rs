//! Driver rules 1-3 (exec/lend.rs): the driver is lent to one closure at a time, as a
//! `DriverMut` that cannot replace it; whatever a closure does that would reach the
//! driver again gets a typed error or is held back until the closure returns.

mod common;
use core::future::Future;
use core::pin::{Pin, pin};
use core::task::{Context, Poll};
use core::time::Duration;
use keel_core::io_status::{try_with_driver, with_driver};
use keel_core::sim::{SimDriver, SimEvent, SimOp};
use keel_core::{
    Config, Driver, DriverBusy, DriverError, Executor, Fiber, FiberAttrs, InitiateError, IoStatus, RegionStacks,
    RunError, TaskError, TaskResult, initiate, suspend_until_completed_io,
};
use std::rc::Rc;

fn completed(ex: Pin<&Executor<SimDriver, impl keel_core::StackProvider>>, label: u32) -> usize {
    ex.with_driver(|d| d.trace().filter(|e| matches!(e, SimEvent::Complete { label: l, .. } if *l == label)).count())
        .unwrap()
}

/// A nested `with_driver` gets `DriverBusy` (never a second live reference), from the
/// executor and from task code; `run` inside one is refused; after the closure returns
/// the driver can be lent again.
#[test]
fn driver_rule_1_a_nested_with_driver_is_a_typed_error() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let inner = ex
        .with_driver(|d| {
            let before = d.trace_len();
            let nested = ex.with_driver(|d2| d2.trace_len());
            let run = ex.run(1, Some(Duration::from_millis(1)));
            d.fail_next_submits(1, keel_core::Errno::EAGAIN);
            (before, nested, run)
        })
        .unwrap();
    assert_eq!(inner, (0, Err(DriverBusy), Err(RunError::DriverBusy)));
    assert_eq!(ex.with_driver(|d| d.trace_len()), Ok(0), "lent again once the closure returned");

    // From task code: a nested lend, an initiate and a wake-token submit inside a lend.
    let t = ex
        .attach(common::slot().create(Default::default()).unwrap(), async {
            let st = pin!(IoStatus::new());
            let r = core::future::poll_fn(|cx: &mut Context<'_>| {
                let waker = cx.waker().clone();
                let own: &Context<'_> = cx;
                let got = with_driver::<SimDriver, _>(own, |_| {
                    // The task's own context, shared: all that code inside the closure can
                    // hold of it while the driver is lent.
                    let nested = try_with_driver::<SimDriver, _>(own, |d| d.trace_len()).map(|_| ());
                    let mut op = Some(SimOp::new(8));
                    let sub = keel_core::try_submit_from::<SimDriver>(own, &mut op, true);
                    // Polling a future takes `&mut Context`: one rebuilt from the waker is
                    // outside the task (rt rule 2), so the initiate touches nothing.
                    let cx = &mut Context::from_waker(&waker);
                    let mut fut = pin!(initiate::<SimDriver>(st.as_ref(), SimOp::new(7)));
                    let init = match fut.as_mut().poll(cx) {
                        Poll::Ready(Err(InitiateError::NotInTask(op))) => op.label,
                        other => panic!("initiate inside a lend: {other:?}"),
                    };
                    (nested, init, sub, op.is_some())
                });
                Poll::Ready(got)
            })
            .await;
            assert_eq!(
                r,
                Some((
                    Err(DriverError::Busy),
                    7,
                    Err(keel_core::SubmitRefused::Failed(keel_core::Errno::EDEADLK)),
                    true
                ))
            );
            // Outside the lend both work (the first submit meets the injected EAGAIN).
            let st2 = pin!(IoStatus::new());
            assert!(matches!(
                initiate::<SimDriver>(st2.as_ref(), SimOp::new(9)).await,
                Err(InitiateError::Refused(_, keel_core::Errno::EAGAIN))
            ));
            initiate::<SimDriver>(st2.as_ref(), SimOp::new(9)).await.unwrap();
            assert_eq!(suspend_until_completed_io(1).await?, 1);
            Ok::<u64, TaskError>(3)
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(3))));
    assert_eq!(completed(ex, 9), 1);
}

/// Driver rule 3: an in-flight status dropped inside `with_driver` (its last `Rc` held
/// outside the task), and a task with i/o in flight cancelled inside it: the retarget
/// and the cancels are held back until the closure returns, then applied, so the
/// orphan's completion never reaches the freed status and the cancelled task drains.
#[test]
fn driver_rule_3_drops_and_cancels_inside_with_driver_are_held_back_and_applied_after() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let st: Pin<Rc<IoStatus>> = Rc::pin(IoStatus::new());
    let mine = st.clone();
    let orphaner = ex
        .attach(common::slot().create(Default::default()).unwrap(), async move {
            initiate::<SimDriver>(mine.as_ref(), SimOp::new(1).after(Duration::from_secs(5))).await.unwrap();
            drop(mine); // the last reference is outside now
            keel_core::rt::sleep(Duration::from_secs(1)).await?;
            Ok::<u64, TaskError>(1)
        })
        .unwrap();
    let victim = ex
        .attach(common::slot().create(Default::default()).unwrap(), async {
            let st = pin!(IoStatus::new());
            initiate::<SimDriver>(st.as_ref(), SimOp::new(2).after(Duration::from_secs(5))).await.unwrap();
            suspend_until_completed_io(1).await?;
            Ok::<u64, TaskError>(2)
        })
        .unwrap();
    assert_eq!(ex.run(2, None), Ok(2));
    assert!(st.is_in_flight());
    let now = ex.now();
    ex.with_driver(|d| {
        assert_eq!(d.in_flight(), 2);
        // The executor's clock reads its last reading while the driver is lent.
        assert_eq!(ex.now(), now);
        drop(st); // in flight: orphaned (retarget and cancel held back)
        assert_eq!(ex.cancel(victim), Ok(keel_core::CancelOutcome::CancellingIo));
        // Held back: nothing reached the driver yet.
        assert!(!d.trace().any(|e| matches!(e, SimEvent::Cancel { .. })));
    })
    .unwrap();
    let cancels = ex.with_driver(|d| d.trace().filter(|e| matches!(e, SimEvent::Cancel { .. })).count()).unwrap();
    assert_eq!(cancels, 2, "both cancels applied once the closure returned");
    run_all!(ex);
    assert_eq!(ex.result(orphaner), Ok(Some(Ok(1))), "drained its orphan");
    assert_eq!(ex.result(victim), Ok(Some(Err(TaskError::Cancelled))));
    assert_eq!(ex.with_driver(|d| d.in_flight()), Ok(0));
    assert_eq!((completed(ex, 1), completed(ex, 2)), (1, 1));
    assert!(ex.now() < keel_core::Instant::from_nanos(5_000_000_000), "cancelled early, not at the 5 s deadline");
}

/// Driver rule 3's bound: more in-flight statuses dropped inside one closure than can
/// be held back poisons the executor: it never reaps again (a completion would name a
/// freed status), `run` says so, and dropping it is sound.
#[test]
fn driver_rule_3_too_many_drops_inside_one_closure_poison_the_executor() {
    let n = keel_core::exec::DEFERRED_DRIVER_OPS; // two held-back calls per orphan
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let sts: Vec<Pin<Rc<IoStatus>>> = (0..n).map(|_| Rc::pin(IoStatus::new())).collect();
    let mine = sts.clone();
    ex.attach(common::slot().create(Default::default()).unwrap(), async move {
        for (i, st) in mine.iter().enumerate() {
            initiate::<SimDriver>(st.as_ref(), SimOp::new(i as u32).after(Duration::from_millis(1))).await.unwrap();
        }
        Ok::<u64, TaskError>(0)
    })
    .unwrap();
    assert_eq!(ex.run(1, None), Ok(1));
    ex.with_driver(|_| drop(sts)).unwrap();
    assert_eq!(ex.run(10, Some(Duration::from_millis(10))), Err(RunError::Poisoned));
    assert_eq!(
        ex.with_driver(|d| d.trace().filter(|e| matches!(e, SimEvent::Complete { .. })).count()),
        Ok(0),
        "nothing reaped"
    );
}

/// A fiber that suspends inside `Executor::with_driver` (reached through a `'static`
/// executor) holds the driver lent: the run loop keeps off the driver (no reap, no
/// park) until the fiber resumes and the closure returns.
#[test]
fn driver_rule_1_a_fiber_suspended_inside_with_driver_keeps_the_run_loop_off_the_driver() {
    type Ex = Executor<SimDriver, RegionStacks>;
    let stacks = RegionStacks::new(Vec::leak(vec![0u8; 2 * 20 * 1024 + 64]), 16 * 1024, 4096).unwrap();
    let ex: &'static Ex =
        Box::leak(Box::new(Executor::with_stacks(SimDriver::new(), stacks, Config::default()).unwrap()));
    let ex = Pin::static_ref(ex);
    let t = ex
        .attach_fiber(
            common::slot().create(Default::default()).unwrap(),
            FiberAttrs { stack_size: 16 * 1024, ..FiberAttrs::default() },
            move |f: &mut Fiber| -> TaskResult {
                let st = pin!(IoStatus::new());
                f.initiate::<SimDriver>(st.as_ref(), SimOp::new(5)).unwrap();
                let seen = ex
                    .with_driver(|d| {
                        f.yield_now().unwrap();
                        // Not reaped while lent, though it was due at once.
                        d.trace().filter(|e| matches!(e, SimEvent::Complete { .. })).count()
                    })
                    .unwrap();
                while f.suspend_until_completed_io(1)? == 0 {}
                Ok(seen as u64)
            },
        )
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(0))));
    assert_eq!(completed(ex, 5), 1);
}

/// A driver crate's value that reaches the driver from `Drop` (as keel-linux's kept
/// operations do) through `DriverPtr::call_or_defer`: dropped inside `with_driver`, its
/// call is held back until the closure returns (driver rule 3), never a second
/// reference.
#[test]
fn driver_rule_3_a_driver_call_from_drop_inside_with_driver_is_held_back() {
    struct Abandon(keel_core::DriverPtr<SimDriver>, keel_core::OpId);
    impl Drop for Abandon {
        fn drop(&mut self) {
            // SAFETY: the executor outlives this value in this test; same thread.
            unsafe { self.0.call_or_defer(|d, id| d.cancel(id), self.1) };
        }
    }
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let held: Rc<std::cell::RefCell<Option<Abandon>>> = Rc::default();
    let h = held.clone();
    let t = ex
        .attach(common::slot().create(Default::default()).unwrap(), async move {
            let v = core::future::poll_fn(|cx| {
                let mut op = Some(SimOp::new(4).after(Duration::from_secs(5)));
                let id = keel_core::try_submit_from::<SimDriver>(cx, &mut op, true).unwrap();
                Poll::Ready(Abandon(keel_core::io_status::driver_handle::<SimDriver>(cx).unwrap(), id))
            })
            .await;
            *h.borrow_mut() = Some(v);
            Ok::<u64, TaskError>(0)
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(0))));
    let cancels = |d: &SimDriver| d.trace().filter(|e| matches!(e, SimEvent::Cancel { label: 4, .. })).count();
    ex.with_driver(|d| {
        drop(held.borrow_mut().take());
        assert_eq!(cancels(d), 0, "held back while lent");
    })
    .unwrap();
    assert_eq!(ex.with_driver(|d| cancels(d)), Ok(1), "applied when the closure returned");
    let _ = ex.run(10, Some(Duration::from_millis(1)));
    assert_eq!(ex.with_driver(|d| d.in_flight()), Ok(0));
    assert!(ex.now() < keel_core::Instant::from_nanos(5_000_000_000));
}

/// Sched rule 3 inside a reap: a fiber that returned with i/o in flight completes in the
/// reap's sink, and its stack goes back to the pool there, stamped with the clock read
/// before the reap (with trimming on; debug builds assert the sink never reaches the
/// driver), with the stack provider run as user code under the lend flag.
#[test]
fn sched_rule_3_a_drained_fiber_pools_its_stack_inside_the_reap_without_reaching_the_driver() {
    let stacks = RegionStacks::new(Vec::leak(vec![0u8; 2 * 20 * 1024 + 64]), 16 * 1024, 4096).unwrap();
    let cfg = Config { trim_spare_stacks_after: Some(Duration::from_secs(1)), ..Config::default() };
    let ex = pin!(Executor::with_stacks(SimDriver::new(), stacks, cfg).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach_fiber(
            common::slot().create(Default::default()).unwrap(),
            FiberAttrs { stack_size: 16 * 1024, ..FiberAttrs::default() },
            |f: &mut Fiber| -> TaskResult {
                let st = Box::leak(Box::new(IoStatus::new()));
                // SAFETY: leaked, so never moved or freed.
                let st = unsafe { Pin::new_unchecked(&*st) };
                f.initiate::<SimDriver>(st, SimOp::new(3).after(Duration::from_millis(2))).unwrap();
                Ok(5) // returns with the operation in flight: it is cancelled and drained
            },
        )
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(5))));
    assert_eq!(completed(ex, 3), 1);
    let s = ex.stack_stats();
    assert_eq!((s.spares, s.in_use), (1, 0), "the drained fiber's stack went back to the pool: {s:?}");
}
