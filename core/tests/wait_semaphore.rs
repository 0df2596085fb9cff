//! The wait primitives' semaphore (and the rules every primitive shares: wait rules 1-7
//! in core/src/wait/mod.rs), for future and fiber tasks, in both flavours.

mod common;
use common::*;
use core::future::{Future, poll_fn};
use core::pin::{Pin, pin};
use core::task::{Context, Poll, Waker};
use keel_core::sim::SimDriver;
use keel_core::wait::{Flavour, Local, LocalSemaphore, Semaphore, Shared, TryAcquireError, WaitError};
use keel_core::{Config, Executor, Fiber, FiberAttrs, Priority, RegionStacks, TaskError, TaskState, rt};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

const STACK: usize = 32 * 1024;
const ATTRS: FiberAttrs = FiberAttrs { stack_size: STACK, ..FiberAttrs::DEFAULT };

fn region(stacks: usize) -> RegionStacks {
    let mem: &'static mut [u8] = Vec::leak(vec![0u8; stacks * (STACK + 4096) + 64]);
    RegionStacks::new(mem, STACK, 4096).unwrap()
}

fn executor() -> Executor<SimDriver, RegionStacks> {
    Executor::with_stacks(SimDriver::new(), region(8), Config::default()).unwrap()
}

/// Polls `fut` once with a waker that is not a keel task's (rt rule 2).
fn poll_by_hand<T>(fut: Pin<&mut (impl Future<Output = T> + ?Sized)>) -> Poll<T> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

/// Wait rule 4: a holder keeps the one permit while waiters of every priority queue
/// (futures and fibers mixed), then each waiter takes it in turn: High, then Normal in
/// arrival order, then Low.
fn priority_then_fifo<F: Flavour>() {
    let ex = pin!(executor());
    let ex = ex.into_ref();
    let sem: Rc<Semaphore<F>> = Rc::new(Semaphore::new(1));
    let log = Log::default();
    let (s, l) = (sem.clone(), log.clone());
    let holder = ex
        .attach(task(Priority::High, "holder"), async move {
            let permit = s.acquire().await?;
            for _ in 0..3 {
                rt::yield_now().await?;
            }
            l.push("holder");
            drop(permit);
            Ok::<_, TaskError>(())
        })
        .unwrap();
    for (i, prio) in [Priority::Low, Priority::Normal, Priority::High, Priority::Normal].into_iter().enumerate() {
        let (s, l) = (sem.clone(), log.clone());
        if i % 2 == 0 {
            ex.attach(task(prio, "future"), async move {
                let _permit = s.acquire().await?;
                l.push(format!("{i}:{prio:?}"));
                rt::yield_now().await?;
                Ok::<_, TaskError>(())
            })
            .unwrap();
        } else {
            ex.attach_fiber(task(prio, "fiber"), ATTRS, move |f: &mut Fiber| {
                let _permit = s.acquire_blocking(f)?;
                l.push(format!("{i}:{prio:?}"));
                f.yield_now()?;
                Ok::<_, TaskError>(())
            })
            .unwrap();
        }
    }
    run_all!(ex);
    assert_eq!(ex.result(holder), Ok(Some(Ok(0))));
    assert_eq!(log.take(), ["holder", "2:High", "1:Normal", "3:Normal", "0:Low"]);
    assert_eq!((sem.available_permits(), sem.waiters()), (1, 0));
}

#[test]
fn wait_rule_4_local_waiters_are_served_by_priority_then_fifo() {
    priority_then_fifo::<Local>();
}

#[test]
fn wait_rule_4_shared_waiters_are_served_by_priority_then_fifo() {
    priority_then_fifo::<Shared>();
}

/// Wait rule 6: a waiter handed the permit and dropped before it took it passes it on.
fn dropped_granted_waiter_passes_on<F: Flavour>() {
    let ex = pin!(executor());
    let ex = ex.into_ref();
    let sem: Rc<Semaphore<F>> = Rc::new(Semaphore::new(0));
    let got = Rc::new(Cell::new(0));
    let released = Rc::new(Cell::new(false));
    let (s, r) = (sem.clone(), released.clone());
    // Queues first, then drops its future once the permit was handed to it (it is off
    // the queue) without polling it again.
    let dropper = ex
        .attach(task(Priority::Normal, "dropper"), async move {
            let mut acquire = pin!(s.acquire());
            let queued = poll_fn(|cx| Poll::Ready(acquire.as_mut().poll(cx).is_pending())).await;
            assert!(queued, "no permit yet: it queued");
            while !r.get() {
                rt::yield_now().await?;
            }
            Ok::<_, TaskError>(())
        })
        .unwrap();
    let (s, g) = (sem.clone(), got.clone());
    let next = ex
        .attach(task(Priority::Normal, "waiter"), async move {
            let _permit = s.acquire().await?;
            g.set(g.get() + 1);
            Ok::<_, TaskError>(())
        })
        .unwrap();
    ex.run(16, None).unwrap();
    assert_eq!(sem.waiters(), 2);
    sem.add_permits(1);
    assert_eq!(sem.waiters(), 1, "handed to the first waiter");
    released.set(true);
    run_all!(ex);
    assert_eq!(ex.result(dropper), Ok(Some(Ok(0))));
    assert_eq!(ex.result(next), Ok(Some(Ok(0))));
    assert_eq!(got.get(), 1, "the dropped waiter's permit went on to the next waiter");
    assert_eq!((sem.available_permits(), sem.waiters()), (1, 0));
}

#[test]
fn wait_rule_6_local_a_dropped_waiter_handed_a_permit_passes_it_on() {
    dropped_granted_waiter_passes_on::<Local>();
}

#[test]
fn wait_rule_6_shared_a_dropped_waiter_handed_a_permit_passes_it_on() {
    dropped_granted_waiter_passes_on::<Shared>();
}

/// Wait rules 5-6: cancelling waiting tasks (a future and a fiber) ends their waits with
/// `Cancelled`, takes them off the queue, and a permit handed to a cancelled waiter
/// still reaches the last one.
fn cancelled_waiters_leave_the_queue<F: Flavour>() {
    let ex = pin!(executor());
    let ex = ex.into_ref();
    let sem: Rc<Semaphore<F>> = Rc::new(Semaphore::new(0));
    let s = sem.clone();
    let fut = ex
        .attach(task(Priority::Normal, "future"), async move {
            match s.acquire().await {
                Err(WaitError::Cancelled) => Ok(7),
                other => panic!("expected Cancelled, got {other:?}"),
            }
        })
        .unwrap();
    let s = sem.clone();
    let fib = ex
        .attach_fiber(task(Priority::Normal, "fiber"), ATTRS, move |f: &mut Fiber| match s.acquire_blocking(f) {
            Err(WaitError::Cancelled) => Ok(8),
            other => panic!("expected Cancelled, got {other:?}"),
        })
        .unwrap();
    let s = sem.clone();
    let granted = ex
        .attach(task(Priority::Normal, "granted then cancelled"), async move {
            let _p = s.acquire().await?;
            Ok::<_, TaskError>(9)
        })
        .unwrap();
    let s = sem.clone();
    let last = ex
        .attach(task(Priority::Low, "last"), async move {
            let _p = s.acquire().await?;
            Ok::<_, TaskError>(10)
        })
        .unwrap();
    ex.run(16, None).unwrap();
    assert_eq!(sem.waiters(), 4);
    ex.cancel(fut).unwrap();
    ex.cancel(fib).unwrap();
    ex.run(16, None).unwrap();
    assert_eq!(sem.waiters(), 2, "cancelled waiters left the queue");
    // Handed to `granted`, which is cancelled before it runs: its wait says `Cancelled`
    // and passes the permit to `last`.
    sem.add_permits(1);
    ex.cancel(granted).unwrap();
    run_all!(ex);
    assert_eq!(ex.result(fut), Ok(Some(Ok(7))));
    assert_eq!(ex.result(fib), Ok(Some(Ok(8))));
    assert_eq!(ex.result(granted), Ok(Some(Err(TaskError::Cancelled))));
    assert_eq!(ex.result(last), Ok(Some(Ok(10))), "the permit reached the last waiter");
    assert_eq!((sem.available_permits(), sem.waiters()), (1, 0));
}

#[test]
fn wait_rule_5_local_cancelled_waiters_leave_the_queue_and_never_swallow_a_permit() {
    cancelled_waiters_leave_the_queue::<Local>();
}

#[test]
fn wait_rule_5_shared_cancelled_waiters_leave_the_queue_and_never_swallow_a_permit() {
    cancelled_waiters_leave_the_queue::<Shared>();
}

#[test]
fn wait_rule_5_polled_outside_a_task_it_takes_a_free_permit_or_says_not_in_task() {
    let sem = LocalSemaphore::new(1);
    let mut first = pin!(sem.acquire());
    let permit = match poll_by_hand(first.as_mut()) {
        Poll::Ready(Ok(p)) => p,
        other => panic!("a free permit: {other:?}"),
    };
    let mut second = pin!(sem.acquire());
    assert!(matches!(poll_by_hand(second.as_mut()), Poll::Ready(Err(WaitError::NotInTask))));
    assert_eq!(sem.waiters(), 0);
    drop(permit);
    assert_eq!(sem.available_permits(), 1);
}

/// Wait rule 5: a waiting future moved out of its task (boxed, queued inside the task,
/// then polled by hand on the executor's thread) leaves the queue with `NotInTask`; one
/// that was handed the permit meanwhile returns it.
#[test]
fn wait_rule_5_a_waiter_moved_out_of_its_task_leaves_the_queue_or_keeps_its_grant() {
    type Boxed = Pin<Box<dyn Future<Output = Result<keel_core::wait::Permit<'static, Shared>, WaitError>>>>;
    static SEM: Semaphore = Semaphore::new(0);
    for grant in [false, true] {
        let ex = pin!(executor());
        let ex = ex.into_ref();
        let out: Rc<RefCell<Option<Boxed>>> = Rc::default();
        let o = out.clone();
        ex.attach(task(Priority::Normal, "mover"), async move {
            let mut acquire: Boxed = Box::pin(SEM.acquire());
            assert!(poll_fn(|cx| Poll::Ready(acquire.as_mut().poll(cx).is_pending())).await);
            *o.borrow_mut() = Some(acquire);
            Ok::<_, TaskError>(())
        })
        .unwrap();
        run_all!(ex);
        assert_eq!(SEM.waiters(), 1);
        if grant {
            SEM.add_permits(1);
        }
        let mut moved = out.borrow_mut().take().unwrap();
        match poll_by_hand(moved.as_mut()) {
            Poll::Ready(Ok(permit)) if grant => drop(permit),
            Poll::Ready(Err(WaitError::NotInTask)) if !grant => {}
            other => panic!("grant {grant}: {other:?}"),
        }
        assert_eq!((SEM.waiters(), SEM.available_permits()), (0, usize::from(grant)));
        if grant {
            SEM.try_acquire().unwrap().forget();
        }
    }
}

#[test]
fn closing_ends_every_wait_with_closed_and_later_acquires_fail() {
    let ex = pin!(executor());
    let ex = ex.into_ref();
    let sem: Rc<LocalSemaphore> = Rc::new(LocalSemaphore::new(0));
    let mut runs = Vec::new();
    for i in 0..3 {
        let s = sem.clone();
        if i == 1 {
            runs.push(
                ex.attach_fiber(task(Priority::Normal, "fiber"), ATTRS, move |f: &mut Fiber| {
                    Ok::<_, TaskError>(u64::from(s.acquire_blocking(f).err() == Some(WaitError::Closed)))
                })
                .unwrap(),
            );
        } else {
            runs.push(
                ex.attach(task(Priority::Normal, "future"), async move {
                    Ok::<_, TaskError>(u64::from(s.acquire().await.err() == Some(WaitError::Closed)))
                })
                .unwrap(),
            );
        }
    }
    ex.run(16, None).unwrap();
    assert_eq!(sem.waiters(), 3);
    sem.close();
    run_all!(ex);
    for run in runs {
        assert_eq!(ex.result(run), Ok(Some(Ok(1))));
    }
    assert!(sem.is_closed());
    assert_eq!(sem.try_acquire().err(), Some(TryAcquireError::Closed));
}

/// Wait rule 7, cross-thread: a permit added on another thread wakes the waiter, which
/// completes once its executor runs.
#[test]
fn wait_rule_7_a_permit_from_another_thread_wakes_the_waiter() {
    static SEM: Semaphore = Semaphore::new(0);
    let ex = pin!(executor());
    let ex = ex.into_ref();
    let run = ex
        .attach(task(Priority::Normal, "waiter"), async {
            let permit = SEM.acquire().await?;
            permit.forget();
            Ok::<_, TaskError>(5)
        })
        .unwrap();
    ex.run(16, None).unwrap();
    assert_eq!(ex.state(run), Ok(TaskState::Suspended(keel_core::SuspendReason::Wait)));
    std::thread::spawn(|| SEM.add_permits(1)).join().unwrap();
    run_all!(ex);
    assert_eq!(ex.result(run), Ok(Some(Ok(5))));
    assert_eq!((SEM.available_permits(), SEM.waiters()), (0, 0));
}

/// Dropping the executor with a permit held by one task and another task waiting:
/// teardown drops both bodies; the permit comes back and the queue is empty.
#[test]
fn executor_drop_with_a_holder_and_waiters_leaves_the_semaphore_whole() {
    for flavour_local in [true, false] {
        let local: Rc<LocalSemaphore> = Rc::new(LocalSemaphore::new(1));
        let shared: Rc<Semaphore> = Rc::new(Semaphore::new(1));
        {
            let ex = pin!(executor());
            let ex = ex.into_ref();
            for i in 0..3 {
                let (l, s) = (local.clone(), shared.clone());
                if i == 2 {
                    ex.attach_fiber(task(Priority::Normal, "fiber"), ATTRS, move |f: &mut Fiber| {
                        if flavour_local {
                            let _p = l.acquire_blocking(f)?;
                            f.sleep(core::time::Duration::from_secs(100))?;
                        } else {
                            let _p = s.acquire_blocking(f)?;
                            f.sleep(core::time::Duration::from_secs(100))?;
                        }
                        Ok::<_, TaskError>(())
                    })
                    .unwrap();
                } else {
                    ex.attach(task(Priority::Normal, "future"), async move {
                        if flavour_local {
                            let _p = l.acquire().await?;
                            rt::sleep(core::time::Duration::from_secs(100)).await?;
                        } else {
                            let _p = s.acquire().await?;
                            rt::sleep(core::time::Duration::from_secs(100)).await?;
                        }
                        Ok::<_, TaskError>(())
                    })
                    .unwrap();
                }
            }
            ex.run(16, None).unwrap();
            assert_eq!(local.waiters() + shared.waiters(), 2);
        }
        assert_eq!((local.available_permits(), local.waiters()), (1, 0));
        assert_eq!((shared.available_permits(), shared.waiters()), (1, 0));
    }
}
