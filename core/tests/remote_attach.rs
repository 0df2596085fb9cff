//! Attaching from other threads (`mailbox/mod.rs`, remote rules; inbox rule 5) and the dispatcher's
//! claim and release (`dispatch.rs`, dispatch rules 2-3), on real threads. The races are
//! loom's (`loom-tests/tests/loom_remote.rs`, `loom_dispatcher.rs`).

mod common;
use common::*;
use core::pin::pin;
use keel_core::{AttachError, CancelError, Config, Dispatcher, Executor, HandleSlot, NoIo, Priority, TaskState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A body that adds `v` to `out` (a task released at completion leaves no result to read).
fn adds(out: &Arc<AtomicU64>, v: u64) -> impl Future<Output = ()> + Send + 'static {
    let out = out.clone();
    async move {
        out.fetch_add(v, Ordering::Relaxed);
    }
}

fn handle_slot() -> &'static HandleSlot {
    Box::leak(Box::new(HandleSlot::new()))
}

/// A handle works only while its own binding lasts: once its executor is dropped and
/// another is bound to the same slot, the old handle says `ExecutorGone` and never
/// reaches the new executor; the new executor's handle works.
#[test]
fn remote_rule_1_a_handle_of_a_dropped_executor_never_reaches_the_next_one_bound_to_its_slot() {
    let hs = handle_slot();
    let old = {
        let ex = pin!(Executor::new(NoIo, Config::default()).unwrap());
        let ex = ex.into_ref();
        ex.handle(hs).expect("a fresh slot binds")
    };
    let ex = pin!(Executor::new(NoIo, Config::default()).unwrap());
    let ex = ex.into_ref();
    let new = ex.handle(hs).expect("the slot is free again once its executor is gone");
    let t = task(Priority::Normal, "stale");
    let out = Arc::new(AtomicU64::new(0));
    std::thread::scope(|s| {
        s.spawn(|| match old.attach(t, adds(&out, 1)) {
            Err(AttachError::ExecutorGone(_)) => {}
            r => panic!("a stale handle attached: {:?}", r.map(|_| ())),
        })
        .join()
        .unwrap();
        s.spawn(|| new.attach(t, adds(&out, 2)).map_err(|_| "refused").unwrap()).join().unwrap();
    });
    assert_eq!(ex.run(4, None), Ok(1));
    assert_eq!(out.load(Ordering::Relaxed), 2, "the stale handle's body ran, or the new one's did not");
}

/// A task attached from another thread stays owned by its executor until it completes:
/// a second attach (through the handle, or by the executor itself) says `OwnedElsewhere`;
/// once it has completed, the executor releases it and the attacher can attach it again.
#[test]
fn remote_rule_4_a_foreign_attached_task_is_released_when_it_completes() {
    let hs = handle_slot();
    let ex = pin!(Executor::new(NoIo, Config::default()).unwrap());
    let ex = ex.into_ref();
    let handle = ex.handle(hs).unwrap();
    let t = task(Priority::Normal, "remote");
    let out = Arc::new(AtomicU64::new(0));
    let run = std::thread::scope(|s| {
        let run = s.spawn(|| handle.attach(t, adds(&out, 1)).map_err(|_| "refused").unwrap()).join().unwrap();
        // Still in the inbox, not yet taken: the attacher's own second attach is refused.
        let (handle, out) = (&handle, &out);
        let again = s.spawn(move || matches!(handle.attach(run, adds(out, 100)), Err(AttachError::OwnedElsewhere(_))));
        assert!(again.join().unwrap(), "a second attach of a task in flight to its executor was accepted");
        run
    });
    assert!(matches!(ex.attach(run, async { 0u64 }), Err(AttachError::OwnedElsewhere(_))));
    assert_eq!(ex.run(4, None), Ok(1));
    assert_eq!(out.load(Ordering::Relaxed), 1);
    assert_eq!(ex.attached(), 0);
    // Completed and released: another attach from another thread goes through.
    std::thread::scope(|s| {
        s.spawn(|| handle.attach(run, adds(&out, 2)).map_err(|_| "not released at completion").unwrap())
            .join()
            .unwrap();
    });
    assert_eq!(ex.run(4, None), Ok(1));
    assert_eq!(out.load(Ordering::Relaxed), 3);
}

/// A submitted task belongs to the dispatcher until a worker claims it: an executor's
/// own attach and cancel say the task is owned elsewhere; a serving worker then claims
/// and runs it.
#[test]
fn dispatch_rule_2_a_submitted_task_is_the_dispatchers_until_a_worker_claims_it() {
    let d: &'static Dispatcher = Box::leak(Box::new(Dispatcher::new()));
    if !Dispatcher::supported() {
        println!("skipped: this CPU has no cmpxchg16b, the dispatcher is unsupported");
        return;
    }
    let out = Arc::new(AtomicU64::new(0));
    let t = d.submit(task(Priority::Normal, "dispatched"), adds(&out, 5)).map_err(|_| "refused").unwrap();
    let ex = pin!(Executor::new(NoIo, Config::default()).unwrap());
    let ex = ex.into_ref();
    assert!(matches!(ex.attach(t, async { 6u64 }), Err(AttachError::OwnedElsewhere(_))));
    assert_eq!(ex.cancel(t), Err(CancelError::OwnedElsewhere));
    assert!(ex.serve(d));
    assert_eq!(ex.run(4, None), Ok(1));
    assert_eq!(out.load(Ordering::Relaxed), 5, "the worker did not run the claimed task");
}

/// A dispatched task is released by its worker when it completes, and the dispatcher
/// counts it: `remaining` goes back to 0, and the task can be attached anywhere.
#[test]
fn dispatch_rule_3_a_dispatched_task_is_released_and_counted_when_it_completes() {
    let d: &'static Dispatcher = Box::leak(Box::new(Dispatcher::new()));
    if !Dispatcher::supported() {
        println!("skipped: this CPU has no cmpxchg16b, the dispatcher is unsupported");
        return;
    }
    let worker = pin!(Executor::new(NoIo, Config::default()).unwrap());
    let worker = worker.into_ref();
    assert!(worker.serve(d));
    let out = Arc::new(AtomicU64::new(0));
    let t = d.submit(task(Priority::Normal, "dispatched"), adds(&out, 5)).map_err(|_| "refused").unwrap();
    assert_eq!(d.remaining(), 1);
    assert_eq!(worker.run(4, None), Ok(1));
    assert_eq!(out.load(Ordering::Relaxed), 5);
    assert_eq!(d.remaining(), 0, "the completion was not counted");
    let other = pin!(Executor::new(NoIo, Config::default()).unwrap());
    let other = other.into_ref();
    let again = other.attach(t, async { 6u64 }).map_err(|_| "the worker kept the task").unwrap();
    assert_eq!(other.state(again), Ok(TaskState::Attached));
    assert_eq!(other.run(1, None), Ok(1));
    assert_eq!(other.result(again), Ok(Some(Ok(6))));
}

/// The inbox is ready once the executor is pinned, before any task can name it: on a
/// fresh executor, a foreign attach through its handle and a foreign wake of a task
/// attached to it, both before its first `run`, reach its inbox, and the first `run`
/// takes them.
#[test]
fn inbox_rule_5_a_fresh_executors_inbox_takes_foreign_pushes_before_its_first_run() {
    let ex = pin!(Executor::new(NoIo, Config::default()).unwrap());
    let ex = ex.into_ref();
    let out = Arc::new(AtomicU64::new(0));
    let local = ex.attach(task(Priority::Normal, "local"), async { 1u64 }).unwrap();
    let handle = ex.handle(handle_slot()).unwrap();
    let remote = task(Priority::Normal, "remote");
    std::thread::scope(|s| {
        s.spawn(|| handle.attach(remote, adds(&out, 7)).map_err(|_| "refused").unwrap()).join().unwrap();
        s.spawn(|| local.waker().wake()).join().unwrap();
    });
    assert_eq!(ex.run(4, None), Ok(2), "the first run missed a foreign push");
    assert_eq!(out.load(Ordering::Relaxed), 7);
    assert_eq!(ex.result(local), Ok(Some(Ok(1))));
    assert_eq!(ex.stats().inbox_taken, 2);
}
