//! `Dispatcher::quit` (dispatch rule 5) on one thread: quit drains what was submitted
//! before it; what comes later waits for the next worker; tokens beyond the workers wait
//! too. The races between threads are loom's (`loom-tests/tests/loom_dispatcher.rs`).

mod common;
use common::*;
use core::pin::pin;
use keel_core::{Config, Dispatcher, Executor, NoIo, Priority, RunError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

fn dispatcher() -> &'static Dispatcher {
    Box::leak(Box::new(Dispatcher::new()))
}

fn submit_counting(d: &'static Dispatcher, cpu: Priority, ran: &Arc<AtomicU32>) {
    let ran = ran.clone();
    assert!(
        d.submit(task(cpu, "q"), async move {
            ran.fetch_add(1, Ordering::Relaxed);
        })
        .is_ok()
    );
}

/// Runs `ex` until `run` says anything but `Ok` (at most 16 runs).
fn run_until_err(ex: core::pin::Pin<&Executor<NoIo>>) -> RunError {
    for _ in 0..16 {
        if let Err(e) = ex.run(64, None) {
            return e;
        }
    }
    panic!("16 runs without an error");
}

#[test]
fn dispatch_rule_5_quit_drains_every_task_submitted_before_it() {
    let d = dispatcher();
    let ran = Arc::new(AtomicU32::new(0));
    for p in [Priority::Low, Priority::Normal, Priority::High] {
        submit_counting(d, p, &ran);
    }
    d.quit(1);
    let ex = pin!(Executor::new(NoIo, Config::default()).unwrap());
    let ex = ex.into_ref();
    assert!(ex.serve(d));
    // The token is there from the start, but the worker is not idle until the
    // dispatcher is empty.
    assert_eq!(run_until_err(ex), RunError::Quit);
    assert_eq!(ran.load(Ordering::Relaxed), 3, "a task submitted before quit was stranded");
    assert_eq!(d.remaining(), 0);
    assert_eq!(d.quit_count(), 1);
}

#[test]
fn dispatch_rule_5_tasks_submitted_after_the_last_worker_quit_wait_for_the_next_worker() {
    let d = dispatcher();
    let ran = Arc::new(AtomicU32::new(0));
    {
        let ex = pin!(Executor::new(NoIo, Config::default()).unwrap());
        let ex = ex.into_ref();
        assert!(ex.serve(d));
        d.quit(1);
        assert_eq!(run_until_err(ex), RunError::Quit);
    }
    submit_counting(d, Priority::Normal, &ran);
    submit_counting(d, Priority::High, &ran);
    assert_eq!(d.remaining(), 2, "queued tasks with no worker are still counted (wait sees them)");
    assert_eq!(ran.load(Ordering::Relaxed), 0);
    let ex = pin!(Executor::new(NoIo, Config::default()).unwrap());
    let ex = ex.into_ref();
    assert!(ex.serve(d), "the quit worker gave its slot back");
    // No token now: the new worker runs both and then has nothing to wait on.
    assert_eq!(run_until_err(ex), RunError::Stalled);
    assert_eq!(ran.load(Ordering::Relaxed), 2);
    assert_eq!(d.remaining(), 0);
}

#[test]
fn dispatch_rule_5_quit_tokens_beyond_the_workers_wait_for_later_workers() {
    let d = dispatcher();
    d.quit(2);
    let a = pin!(Executor::new(NoIo, Config::default()).unwrap());
    let a = a.into_ref();
    assert!(a.serve(d));
    assert_eq!(run_until_err(a), RunError::Quit);
    assert_eq!(d.quit_count(), 1);
    // A second worker, later, still finds one token; it drains first.
    let ran = Arc::new(AtomicU32::new(0));
    submit_counting(d, Priority::Low, &ran);
    let b = pin!(Executor::new(NoIo, Config::default()).unwrap());
    let b = b.into_ref();
    assert!(b.serve(d));
    assert_eq!(run_until_err(b), RunError::Quit);
    assert_eq!(ran.load(Ordering::Relaxed), 1);
    assert_eq!(d.quit_count(), 2);
    // All tokens taken: a third worker does not quit.
    let c = pin!(Executor::new(NoIo, Config::default()).unwrap());
    let c = c.into_ref();
    assert!(c.serve(d));
    assert_eq!(run_until_err(c), RunError::Stalled);
}

#[test]
fn dispatch_rule_5_a_worker_with_a_task_of_its_own_quits_only_once_it_completes() {
    let d = dispatcher();
    let ex = pin!(Executor::new(NoIo, Config::default()).unwrap());
    let ex = ex.into_ref();
    assert!(ex.serve(d));
    // A task of its own that waits for a wake from outside (here: this thread).
    let waker: Arc<std::sync::Mutex<Option<core::task::Waker>>> = Arc::default();
    let w = waker.clone();
    let mut polled = false;
    let t = ex
        .attach(
            task(Priority::Normal, "own"),
            core::future::poll_fn(move |cx| {
                if polled {
                    return core::task::Poll::Ready(());
                }
                polled = true;
                *w.lock().unwrap() = Some(cx.waker().clone());
                core::task::Poll::Pending
            }),
        )
        .unwrap();
    d.quit(1);
    assert_eq!(ex.run(64, None), Ok(1));
    // Suspended with a token waiting: not idle, so no quit; it parks (NoIo: Stalled).
    assert_eq!(ex.run(64, None), Err(RunError::Stalled));
    assert_eq!(d.quit_count(), 0);
    waker.lock().unwrap().take().unwrap().wake();
    assert_eq!(ex.run(64, None), Ok(1));
    assert_eq!(ex.result(t), Ok(Some(Ok(0))));
    assert_eq!(run_until_err(ex), RunError::Quit);
    assert_eq!(d.quit_count(), 1);
}
