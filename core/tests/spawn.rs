//! Spawning from inside a task (spawn rules, `core/src/exec/spawn.rs`): futures and
//! fibers, each refusal with its body handed back, join and select with a spawn, cancel
//! of the parent or the child at each point, teardown, and spawn futures dropped or
//! polled after their executor, or on another thread.

mod common;
use common::*;
use core::future::Future;
use core::pin::{Pin, pin};
use core::task::{Context, Poll};
use keel_core::join::join;
use keel_core::sim::SimDriver;
use keel_core::spawn::{spawn, spawn_fiber};
use keel_core::{
    AttachError, CancelOutcome, Config, Executor, Fiber, FiberAttrs, JoinError, Priority, RegionStacks, SpawnError,
    TaskCx, TaskError, TaskHandle, TaskState, rt,
};
use std::cell::Cell;
use std::rc::Rc;

const STACK: usize = 32 * 1024;
const ATTRS: FiberAttrs = FiberAttrs { stack_size: STACK, ..FiberAttrs::DEFAULT };

fn region(stacks: usize) -> RegionStacks {
    let mem: &'static mut [u8] = Vec::leak(vec![0u8; stacks * (STACK + 4096) + 64]);
    RegionStacks::new(mem, STACK, 4096).unwrap()
}

/// Counts its drops into a shared cell.
struct Drops(Rc<Cell<u32>>);
impl Drop for Drops {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

/// A failed spawn as a task error (the test looks at the kind elsewhere).
fn failed<B>(_: SpawnError<B>) -> TaskError {
    TaskError::Failed(-1)
}

/// A future task spawns a future and a fiber, joins both and adds their results; the
/// spawned tasks belong to the executor like any other (spawn rule 5).
#[test]
fn a_future_spawns_a_future_and_a_fiber_and_joins_both() {
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(2), Config::default()).unwrap());
    let ex = ex.into_ref();
    let (a, b) = (task(Priority::Normal, "a"), task(Priority::Normal, "b"));
    let got = Rc::new(Cell::new(None));
    let g = got.clone();
    let parent = ex
        .attach(task(Priority::Normal, "parent"), async move {
            let a = spawn(a, async { 20u64 }).await.map_err(failed)?;
            let b = spawn_fiber(b, ATTRS, |f: &mut Fiber| {
                f.yield_now()?;
                Ok::<u64, TaskError>(2)
            })
            .await
            .map_err(failed)?;
            g.set(Some((a, b)));
            let x = join(a).await.expect("joined")?;
            let y = join(b).await.expect("joined")?;
            Ok::<u64, TaskError>(x + y)
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(parent), Ok(Some(Ok(22))));
    let (a, b) = got.get().expect("both spawned");
    assert_eq!(ex.result(a), Ok(Some(Ok(20))));
    assert_eq!(ex.result(b), Ok(Some(Ok(2))));
    assert_eq!(ex.stats().completed, 3);
}

/// A fiber spawns a future and a fiber and joins both.
#[test]
fn a_fiber_spawns_a_future_and_a_fiber_and_joins_both() {
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(2), Config::default()).unwrap());
    let ex = ex.into_ref();
    let (a, b) = (task(Priority::Normal, "a"), task(Priority::Normal, "b"));
    let parent = ex
        .attach_fiber(task(Priority::Normal, "parent"), ATTRS, move |f: &mut Fiber| {
            let a = f
                .spawn(a, async {
                    rt::yield_now().await?;
                    Ok::<u64, TaskError>(30)
                })
                .map_err(failed)?;
            let b = f.spawn_fiber(b, ATTRS, |_: &mut Fiber| 4u64).map_err(failed)?;
            let x = f.join(a, None).expect("joined")?;
            let y = f.join(b, None).expect("joined")?;
            Ok::<u64, TaskError>(x + y)
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(parent), Ok(Some(Ok(34))));
}

/// Spawn rule 1: the child is queued behind its priority and the parent runs on until it
/// suspends: a lower-priority child runs after the parent's yield is served, a
/// higher-priority one before the parent's next resume.
#[test]
fn spawn_rule_1_the_child_runs_after_the_parent_suspends_by_priority() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let log = Log::default();
    let (low, high) = (task(Priority::Low, "low"), task(Priority::High, "high"));
    let (l, l1, l2) = (log.clone(), log.clone(), log.clone());
    ex.attach(task(Priority::Normal, "parent"), async move {
        spawn(low, async move { l1.push("low") }).await.map_err(failed)?;
        spawn(high, async move { l2.push("high") }).await.map_err(failed)?;
        l.push("parent spawned");
        rt::yield_now().await?;
        l.push("parent resumed");
        Ok::<(), TaskError>(())
    })
    .unwrap();
    run_all!(ex);
    assert_eq!(log.take(), ["parent spawned", "high", "parent resumed", "low"]);
}

/// Spawn rule 2: a spawn polled outside a keel task (a plain context, another thread)
/// attaches nothing and hands the body back; polled again it is `Spent`. The task slot
/// stays idle and can be attached later.
#[test]
fn spawn_rule_2_outside_a_task_hands_the_body_back() {
    let cx = &mut Context::from_waker(std::task::Waker::noop());
    let child = task(Priority::Normal, "child");
    let mut s = spawn(child, async { 5u64 });
    let Poll::Ready(Err(err)) = Pin::new(&mut s).poll(cx) else { panic!("a spawn outside a task attached") };
    assert!(matches!(err, SpawnError::NotInTask(_)), "{err:?}");
    assert!(err.to_string().contains("outside a keel task"), "{err}");
    let body = err.into_body().expect("the body comes back");
    assert!(matches!(Pin::new(&mut s).poll(cx), Poll::Ready(Err(SpawnError::Spent))));
    assert!(SpawnError::<()>::Spent.to_string().contains("create a new spawn"));
    // On another thread (the body is `Send`): the same, and the body comes back there.
    let back = std::thread::spawn(move || {
        let cx = &mut Context::from_waker(std::task::Waker::noop());
        let mut s = spawn(child, async { 6u64 });
        matches!(Pin::new(&mut s).poll(cx), Poll::Ready(Err(SpawnError::NotInTask(_))))
    })
    .join()
    .unwrap();
    assert!(back, "a spawn on a thread with no executor attached");
    // The handed-back body still runs, attached the ordinary way.
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let run = ex.attach(child, body).unwrap();
    run_all!(ex);
    assert_eq!(ex.result(run), Ok(Some(Ok(5))));
}

/// Spawn rule 4: the caller's own slot, a slot attached already, a stale handle and a
/// task owned by another executor are refused with `Executor::attach`'s errors, each
/// with the body back; a good spawn polled again returns the same handle.
#[test]
fn spawn_rule_4_busy_own_stale_and_foreign_slots_are_refused_with_the_body() {
    let other = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let other = other.into_ref();
    let foreign = other.attach(task(Priority::Normal, "foreign"), rt::wait()).unwrap();
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let busy = ex.attach(task(Priority::Normal, "busy"), rt::wait()).unwrap();
    let done = ex.attach(task(Priority::Normal, "done"), async { 1u64 }).unwrap();
    ex.run(2, None).unwrap();
    let stale = done; // re-attached below: this handle names the earlier run
    let done2 = ex.attach(stale, async { 2u64 }).unwrap();
    let seen = Rc::new(Cell::new(0u32));
    let s = seen.clone();
    let big: &'static keel_core::TaskSlot<1024> = Box::leak(Box::new(keel_core::TaskSlot::new()));
    let parent = ex
        .attach(big.create(keel_core::TaskAttrs::default()).unwrap(), async move {
            let me = core::future::poll_fn(|cx| Poll::Ready(TaskCx::of(cx).unwrap().task())).await;
            fn kind<B>(e: SpawnError<B>) -> (SpawnError<()>, String) {
                let text = e.to_string();
                let (e, body) = e.split();
                assert!(body.is_some(), "no body back for {e:?}");
                (e, text)
            }
            let (e, text) = kind(spawn(me, async { 0u64 }).await.unwrap_err());
            assert_eq!(e, SpawnError::Attach(AttachError::AlreadyAttached(())));
            assert!(text.contains("attached already"), "{text}");
            let (e, _) = kind(spawn(busy, async { 0u64 }).await.unwrap_err());
            assert_eq!(e, SpawnError::Attach(AttachError::AlreadyAttached(())));
            let (e, text) = kind(spawn(stale, async { 0u64 }).await.unwrap_err());
            assert_eq!(e, SpawnError::Attach(AttachError::Stale(())));
            assert!(text.contains("stale"), "{text}");
            let (e, text) = kind(spawn(foreign, async { 0u64 }).await.unwrap_err());
            assert_eq!(e, SpawnError::Attach(AttachError::OwnedElsewhere(())));
            assert!(text.contains("another executor"), "{text}");
            s.set(4);
            // A good spawn, polled twice: the same handle.
            let child = task(Priority::Normal, "child");
            let mut good = spawn(child, async { 9u64 });
            let first = (&mut good).await.map_err(failed)?;
            let again = (&mut good).await.map_err(failed)?;
            assert_eq!(first, again);
            join(first).await.expect("joined")
        })
        .unwrap();
    ex.cancel(busy).unwrap();
    run_all!(ex);
    assert_eq!(seen.get(), 4, "the parent did not reach its checks");
    assert_eq!(ex.result(parent), Ok(Some(Ok(9))));
    assert_eq!(ex.result(done2), Ok(Some(Ok(2))));
    other.cancel(foreign).unwrap();
}

/// Spawn rule 3: a fiber unwinding through `Cancelled` in `shutdown`, and in the
/// executor's drop, cannot spawn (`TearingDown`, body back, the slot left idle); after
/// `shutdown` the executor spawns again.
#[test]
fn spawn_rule_3_no_spawn_while_the_executor_tears_down() {
    let outcomes: Rc<Cell<[Option<bool>; 2]>> = Rc::new(Cell::new([None, None]));
    let child = task(Priority::Normal, "child");
    let fiber = |i: usize, outcomes: Rc<Cell<[Option<bool>; 2]>>| {
        move |f: &mut Fiber| {
            let _ = f.wait();
            let r = f.spawn(child, async { 1u64 });
            let mut o = outcomes.get();
            o[i] = Some(match r {
                Err(e) => {
                    assert!(e.to_string().contains("tearing down"), "{e}");
                    matches!(e, SpawnError::TearingDown(_))
                }
                Ok(_) => false,
            });
            outcomes.set(o);
            0u64
        }
    };
    {
        let ex = pin!(Executor::with_stacks(SimDriver::new(), region(2), Config::default()).unwrap());
        let ex = ex.into_ref();
        ex.attach_fiber(task(Priority::Normal, "f0"), ATTRS, fiber(0, outcomes.clone())).unwrap();
        ex.run(1, None).unwrap();
        let report = ex.shutdown().unwrap();
        assert_eq!(report.cancelled, 1);
        assert_eq!(outcomes.get()[0], Some(true), "a spawn during shutdown was not refused");
        // Usable again afterwards.
        let parent = ex
            .attach(task(Priority::Normal, "after"), async move {
                let c = spawn(child, async { 3u64 }).await.map_err(failed)?;
                join(c).await.expect("joined")
            })
            .unwrap();
        run_all!(ex);
        assert_eq!(ex.result(parent), Ok(Some(Ok(3))));
        ex.attach_fiber(task(Priority::Normal, "f1"), ATTRS, fiber(1, outcomes.clone())).unwrap();
        ex.run(1, None).unwrap();
    }
    assert_eq!(outcomes.get()[1], Some(true), "a spawn during the executor's drop was not refused");
}

/// Two spawns joined with a hand-written `join` (both polled with the task's context)
/// and a spawn raced against a wait that never ends (the spawn wins at once).
#[test]
fn spawns_under_join_and_select() {
    struct Both<A: Future, B: Future>(Pin<Box<A>>, Pin<Box<B>>, Option<A::Output>, Option<B::Output>);
    impl<A: Future, B: Future> Future for Both<A, B>
    where
        A::Output: Unpin,
        B::Output: Unpin,
    {
        type Output = (A::Output, B::Output);
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let this = &mut *self;
            if this.2.is_none()
                && let Poll::Ready(x) = this.0.as_mut().poll(cx)
            {
                this.2 = Some(x);
            }
            if this.3.is_none()
                && let Poll::Ready(y) = this.1.as_mut().poll(cx)
            {
                this.3 = Some(y);
            }
            if this.2.is_some() && this.3.is_some() {
                return Poll::Ready((this.2.take().unwrap(), this.3.take().unwrap()));
            }
            Poll::Pending
        }
    }
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let (a, b, c) = (task(Priority::Normal, "a"), task(Priority::Normal, "b"), task(Priority::Normal, "c"));
    let parent = ex
        .attach(task(Priority::Normal, "parent"), async move {
            let sa = async move { spawn(a, async { 1u64 }).await.map_err(|_| ()) };
            let sb = async move { spawn(b, async { 2u64 }).await.map_err(|_| ()) };
            let (x, y) = Both(Box::pin(sa), Box::pin(sb), None, None).await;
            let (x, y) = (x.map_err(|()| TaskError::Failed(-1))?, y.map_err(|()| TaskError::Failed(-1))?);
            let (jx, jy) = Both(Box::pin(join(x)), Box::pin(join(y)), None, None).await;
            let mut sum = jx.expect("joined")? + jy.expect("joined")?;
            // Select: the spawn is ready at its first poll; the wait is dropped.
            let mut s = Box::pin(spawn(c, async { 4u64 }));
            let mut w = Box::pin(rt::wait());
            let z = core::future::poll_fn(|cx| {
                if let Poll::Ready(r) = s.as_mut().poll(cx) {
                    return Poll::Ready(r);
                }
                let _ = w.as_mut().poll(cx);
                Poll::Pending
            })
            .await
            .map_err(failed)?;
            sum += join(z).await.expect("joined")?;
            Ok::<u64, TaskError>(sum)
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(parent), Ok(Some(Ok(7))));
}

/// Cancel at each point: the parent before its first run (its spawn never happens: the
/// child's slot stays idle and its body is dropped once), the parent while it joins the
/// child (the child runs on), the child before it runs and while it waits (the join gets
/// the child's `Cancelled`). A cancelled fiber still spawns: a spawn is no suspension point.
#[test]
fn cancel_the_parent_or_the_child_at_each_point() {
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(1), Config::default()).unwrap());
    let ex = ex.into_ref();
    // The parent cancelled before it runs.
    let drops = Rc::new(Cell::new(0));
    let d = Drops(drops.clone());
    let child = task(Priority::Normal, "child");
    let p = ex
        .attach(task(Priority::Normal, "p0"), async move {
            let _ = spawn(child, async move {
                let _d = d;
                1u64
            })
            .await;
        })
        .unwrap();
    assert_eq!(ex.cancel(p), Ok(CancelOutcome::Completed));
    assert_eq!(drops.get(), 1, "the unspawned body was not dropped once");
    assert!(matches!(ex.state(child), Err(_) | Ok(TaskState::Idle)), "the child slot was attached");
    // The parent cancelled while it joins: the child runs on.
    let child = task(Priority::Low, "child1");
    let got = Rc::new(Cell::new(None));
    let g = got.clone();
    let p = ex
        .attach(task(Priority::Normal, "p1"), async move {
            let c = spawn(child, async {
                rt::yield_now().await?;
                Ok::<u64, TaskError>(11)
            })
            .await
            .map_err(failed)?;
            g.set(Some(c));
            join(c).await.map_err(|e| {
                assert_eq!(e, JoinError::Cancelled);
                TaskError::Cancelled
            })?
        })
        .unwrap();
    ex.run(1, None).unwrap();
    assert_eq!(ex.cancel(p), Ok(CancelOutcome::Resumes));
    run_all!(ex);
    assert_eq!(ex.result(p), Ok(Some(Err(TaskError::Cancelled))));
    assert_eq!(ex.result(got.get().unwrap()), Ok(Some(Ok(11))));
    // The child cancelled before it runs, then while it waits: the join gets `Cancelled`.
    for started in [false, true] {
        let child = task(Priority::High, "child2");
        let got = Rc::new(Cell::new(None));
        let g = got.clone();
        let p = ex
            .attach(task(Priority::Normal, "p2"), async move {
                let c = spawn(child, async {
                    rt::wait().await?;
                    Ok::<u64, TaskError>(1)
                })
                .await
                .map_err(failed)?;
                g.set(Some(c));
                if started {
                    rt::yield_now().await?;
                }
                join(c).await.expect("joined")
            })
            .unwrap();
        ex.run(1, None).unwrap();
        let c = got.get().unwrap();
        if started {
            ex.run(1, None).unwrap();
            assert_eq!(ex.state(c), Ok(TaskState::Suspended(keel_core::SuspendReason::Wait)));
        }
        let outcome = ex.cancel(c).unwrap();
        assert_eq!(outcome, if started { CancelOutcome::Resumes } else { CancelOutcome::Completed });
        run_all!(ex);
        assert_eq!(ex.result(p), Ok(Some(Err(TaskError::Cancelled))), "started: {started}");
    }
    // A cancelled fiber spawns (not a suspension point) and its child runs.
    let child = task(Priority::Normal, "child3");
    let f = ex
        .attach_fiber(task(Priority::Normal, "f"), ATTRS, move |f: &mut Fiber| {
            assert!(f.wait().is_err());
            let c = f.spawn(child, async { 5u64 }).map_err(failed)?;
            Ok::<TaskHandle, TaskError>(c).map(|c| c.id() as u64)
        })
        .unwrap();
    ex.run(1, None).unwrap();
    assert_eq!(ex.cancel(f), Ok(CancelOutcome::Resumes));
    run_all!(ex);
    assert_eq!(ex.result(f), Ok(Some(Ok(child.id() as u64))));
    assert_eq!(ex.stats().completed, 9);
}

/// A spawn future moved out of its task (kept outside) and dropped after its executor
/// drops its body once; a spawned child that never ran is dropped once by the executor's
/// drop, and its slot is free for another executor.
#[test]
fn spawn_futures_and_spawned_children_outlive_or_die_with_the_executor() {
    let drops = Rc::new(Cell::new(0));
    type Kept = Option<Pin<Box<dyn Future<Output = ()>>>>;
    let kept: Rc<Cell<Kept>> = Rc::new(Cell::new(None));
    let spawned = task(Priority::Low, "spawned");
    let spawned_run = Rc::new(Cell::new(None));
    let later = task(Priority::Normal, "later");
    {
        let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
        let ex = ex.into_ref();
        let (d1, d2, k, sr) = (Drops(drops.clone()), Drops(drops.clone()), kept.clone(), spawned_run.clone());
        ex.attach(task(Priority::Normal, "parent"), async move {
            // Moved out of the task, never polled.
            k.set(Some(Box::pin(async move {
                let _ = spawn(later, async move {
                    let _d = d1;
                })
                .await;
            })));
            // Spawned, never run: the parent returns and the executor drops.
            let run = spawn(spawned, async move {
                let _d = d2;
                rt::wait().await
            })
            .await
            .map_err(failed)?;
            sr.set(Some(run));
            Ok::<(), TaskError>(())
        })
        .unwrap();
        ex.run(1, None).unwrap();
        assert_eq!(ex.state(spawned_run.get().unwrap()), Ok(TaskState::Attached));
    }
    assert_eq!(drops.get(), 1, "the executor's drop dropped the never-run child once");
    // Polled outside any task after its executor is gone: nothing attached.
    let mut f = kept.take().unwrap();
    let cx = &mut Context::from_waker(std::task::Waker::noop());
    assert_eq!(f.as_mut().poll(cx), Poll::Ready(()));
    assert_eq!(drops.get(), 2, "the body handed back was not dropped once");
    drop(f);
    assert_eq!(drops.get(), 2);
    // Both slots are free for another executor.
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    assert!(ex.attach(later, async {}).is_ok());
    assert!(ex.attach(spawned_run.get().unwrap(), async {}).is_ok());
    run_all!(ex);
}

/// A `Send` spawn made on one thread and awaited in a task of an executor on another
/// thread attaches there.
#[test]
fn a_spawn_awaited_on_another_threads_executor_attaches_there() {
    let child = task(Priority::Normal, "child");
    let s = spawn(child, async { 12u64 });
    let got = std::thread::spawn(move || {
        let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
        let ex = ex.into_ref();
        let p = ex
            .attach(task(Priority::Normal, "parent"), async move {
                let c = s.await.map_err(failed)?;
                join(c).await.expect("joined")
            })
            .unwrap();
        run_all!(ex);
        ex.result(p)
    })
    .join()
    .unwrap();
    assert_eq!(got, Ok(Some(Ok(12))));
}

/// `TaskCx::spawn` and `TaskCx::spawn_fiber` inside a hand-written poll: the same rules
/// (a refused fiber spawn hands its closure back; with no stack provider: `NoStack`).
#[test]
fn task_cx_spawns_inside_a_hand_written_poll() {
    let ex = pin!(Executor::with_stacks(SimDriver::new(), region(2), Config::default()).unwrap());
    let ex = ex.into_ref();
    let (a, b) = (task(Priority::Normal, "a"), task(Priority::Normal, "b"));
    let big: &'static keel_core::TaskSlot<1024> = Box::leak(Box::new(keel_core::TaskSlot::new()));
    let parent = ex
        .attach(big.create(keel_core::TaskAttrs::default()).unwrap(), async move {
            let (x, y) = core::future::poll_fn(|cx| {
                let tcx = TaskCx::of(cx).expect("inside a task");
                let x = tcx.spawn(a, async { 5u64 }).map_err(failed);
                let y = tcx.spawn_fiber(b, ATTRS, |_: &mut Fiber| 6u64).map_err(failed);
                Poll::Ready((x, y))
            })
            .await;
            let (x, y) = (x?, y?);
            // The fiber's slot is attached now (its new run's handle): refused, closure back.
            let again = core::future::poll_fn(|cx| {
                Poll::Ready(
                    TaskCx::of(cx).unwrap().spawn_fiber(y, ATTRS, |_: &mut Fiber| 0u64).map_err(|e| e.split().0),
                )
            })
            .await;
            assert_eq!(again, Err(SpawnError::Attach(AttachError::AlreadyAttached(()))));
            Ok::<u64, TaskError>(join(x).await.expect("joined")? + join(y).await.expect("joined")?)
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(parent), Ok(Some(Ok(11))));
    // No stack provider: the fiber spawn is refused with the provider's reason.
    let bare = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let bare = bare.into_ref();
    let c = task(Priority::Normal, "c");
    let p = bare
        .attach(task(Priority::Normal, "p"), async move {
            match spawn_fiber(c, ATTRS, |_: &mut Fiber| 1u64).await {
                Err(SpawnError::Attach(AttachError::NoStack { .. })) => Ok(1u64),
                other => Err(TaskError::Failed(if other.is_ok() { -2 } else { -3 })),
            }
        })
        .unwrap();
    run_all!(bare);
    assert_eq!(bare.result(p), Ok(Some(Ok(1))));
}
