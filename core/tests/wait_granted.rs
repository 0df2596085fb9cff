//! Whose cancel a granted waiter's try answers to (wait rule 6): the task polling it.
//! The try checks the task its node names first (the common case, one address compare)
//! and resolves the polling task from the `Context` otherwise, so a waiting future moved
//! to another task answers for that task, and a body that stored another `Context` in
//! its own (`*cx = ...`) still answers for its own task, in whose resume it runs.

mod common;
use common::*;
use core::future::{Future, poll_fn};
use core::pin::{Pin, pin};
use core::task::{Context, Poll, Waker};
use keel_core::sim::SimDriver;
use keel_core::wait::{Flavour, Local, Permit, Semaphore, Shared, WaitError};
use keel_core::{Config, Executor, Priority, TaskError};
use std::cell::RefCell;
use std::rc::Rc;

type Boxed<F> = Pin<Box<dyn Future<Output = Result<Permit<'static, F>, WaitError>>>>;

/// A future queued by task A, handed a permit, then moved to task B and polled there:
/// the answer is B's (`Cancelled` if B was cancelled, and the permit goes back), whether
/// or not A was cancelled.
fn moved_granted_waiter_answers_for_its_poller<F: Flavour>() {
    for (a_cancelled, b_cancelled) in [(false, false), (true, false), (false, true), (true, true)] {
        let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
        let ex = ex.into_ref();
        let sem: &'static Semaphore<F> = Box::leak(Box::new(Semaphore::new(0)));
        let slot: Rc<RefCell<Option<Boxed<F>>>> = Rc::default();
        let out = slot.clone();
        let a = ex
            .attach(task(Priority::Normal, "queues"), async move {
                let mut acquire: Boxed<F> = Box::pin(sem.acquire());
                assert!(poll_fn(|cx| Poll::Ready(acquire.as_mut().poll(cx).is_pending())).await);
                *out.borrow_mut() = Some(acquire);
                // Stays alive (its run current) until cancelled, waking on every wake.
                while keel_core::rt::wait().await.is_ok() {}
                Ok::<_, TaskError>(1)
            })
            .unwrap();
        ex.run(1, None).unwrap();
        assert_eq!(sem.waiters(), 1);
        sem.add_permits(1);
        assert_eq!((sem.waiters(), sem.available_permits()), (0, 0), "granted to A's node");
        if a_cancelled {
            ex.cancel(a).unwrap();
        }
        let taken = slot.clone();
        let b = ex
            .attach(task(Priority::High, "polls it"), async move {
                // Suspends once, so a cancel can reach it while it runs (a task cancelled
                // before its first run completes without running its body).
                let _ = keel_core::rt::wait().await;
                let mut moved = taken.borrow_mut().take().unwrap();
                match moved.as_mut().await {
                    Ok(permit) => {
                        permit.forget();
                        Ok::<_, TaskError>(2)
                    }
                    Err(WaitError::Cancelled) => Ok(3),
                    Err(e) => panic!("unexpected {e:?}"),
                }
            })
            .unwrap();
        ex.run(1, None).unwrap();
        if b_cancelled {
            ex.cancel(b).unwrap();
        } else {
            ex.wake(b);
        }
        ex.run(1, None).unwrap();
        let expect = if b_cancelled { 3 } else { 2 };
        assert_eq!(ex.result(b), Ok(Some(Ok(expect))), "A cancelled {a_cancelled}, B cancelled {b_cancelled}");
        assert_eq!(
            sem.available_permits(),
            usize::from(b_cancelled),
            "a cancelled poller passes the permit on; otherwise it took it"
        );
        ex.cancel(a).ok();
        run_all!(ex);
        assert!(ex.result(a).unwrap().is_some());
    }
}

#[test]
fn wait_rule_6_local_a_moved_granted_waiter_answers_for_the_task_polling_it() {
    moved_granted_waiter_answers_for_its_poller::<Local>();
}

#[test]
fn wait_rule_6_shared_a_moved_granted_waiter_answers_for_the_task_polling_it() {
    moved_granted_waiter_answers_for_its_poller::<Shared>();
}

/// A granted waiter polled by its own task with a `Context` the body stored in its own
/// (`*cx = Context::from_waker(Waker::noop())`): the poll still runs in that task's
/// resume, so a cancel of that task ends the wait with `Cancelled` and the permit goes
/// back; without a cancel the wait takes it.
fn replaced_context_answers_for_its_task<F: Flavour>() {
    for cancelled in [false, true] {
        let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
        let ex = ex.into_ref();
        let sem: &'static Semaphore<F> = Box::leak(Box::new(Semaphore::new(0)));
        let t = ex
            .attach(task(Priority::Normal, "replaces its cx"), async move {
                let mut acquire = pin!(sem.acquire());
                let mut polls = 0;
                poll_fn(|cx: &mut Context<'_>| {
                    polls += 1;
                    if polls > 1 {
                        *cx = Context::from_waker(Waker::noop());
                    }
                    match acquire.as_mut().poll(cx) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(Ok(permit)) => {
                            permit.forget();
                            Poll::Ready(Ok::<_, TaskError>(4))
                        }
                        Poll::Ready(Err(WaitError::Cancelled)) => Poll::Ready(Ok(5)),
                        Poll::Ready(Err(e)) => panic!("unexpected {e:?}"),
                    }
                })
                .await
            })
            .unwrap();
        ex.run(1, None).unwrap();
        assert_eq!(sem.waiters(), 1);
        sem.add_permits(1);
        if cancelled {
            ex.cancel(t).unwrap();
        }
        run_all!(ex);
        assert_eq!(ex.result(t), Ok(Some(Ok(if cancelled { 5 } else { 4 }))), "cancelled {cancelled}");
        assert_eq!(sem.available_permits(), usize::from(cancelled));
    }
}

#[test]
fn wait_rule_6_local_a_body_that_replaced_its_context_answers_for_its_own_task() {
    replaced_context_answers_for_its_task::<Local>();
}

#[test]
fn wait_rule_6_shared_a_body_that_replaced_its_context_answers_for_its_own_task() {
    replaced_context_answers_for_its_task::<Shared>();
}
