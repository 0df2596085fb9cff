//! Defects the random programs (`random_programs.rs`) found, each as the smallest
//! program that shows it.

mod common;
use common::*;
use core::pin::pin;
use keel_core::sim::SimDriver;
use keel_core::{Config, DestroyError, Executor, Priority, TaskAttrs};

/// `destroy` of a completed task whose slot still has a wake queued behind another in the
/// inbox (`inbox_batch` 1: `release` drains two entries at most) fails with
/// `WakeInFlight`, whose documented remedy is "run the executor once and retry". The
/// retry must find the same handle valid and the slot must be freed by then. (Found by
/// `random_programs` with `inbox_batch` 1 and a completed task woken by two others.)
#[test]
fn destroy_after_wake_in_flight_can_be_retried_and_frees_the_slot() {
    let cfg = Config { inbox_batch: 1, ..Config::default() };
    let ex = pin!(Executor::new(SimDriver::new(), cfg).unwrap());
    let ex = ex.into_ref();
    let slot = slot();
    let a = ex.attach(task(Priority::Normal, "a"), async {}).unwrap();
    let b = ex.attach(task(Priority::Normal, "b"), async {}).unwrap();
    let c = ex.attach(slot.create(TaskAttrs::default()).unwrap(), async {}).unwrap();
    run_all!(ex);
    // Wakes of completed runs, from the owner's thread: queued in the inbox.
    a.wake();
    b.wake();
    c.wake();
    let first = ex.destroy(c);
    if first == Err(DestroyError::WakeInFlight) {
        let ran = ex.run(1, None);
        println!("destroy gave WakeInFlight; run(1) then gave {ran:?}");
        assert_eq!(ex.destroy(c), Ok(()), "the retry the error asks for");
    } else {
        assert_eq!(first, Ok(()));
    }
    assert!(slot.create(TaskAttrs::default()).is_ok(), "the slot is free again");
}

/// `task_times` is "per-task accounting of run `task`": without accounting its times are
/// zero, and its counters (`resumptions`, `io_initiated`, `io_completed`) count that run
/// alone, as they do with accounting (attach resets them only when accounting is on).
/// (Found by `random_programs`, whose harness reads `resumptions` per step.)
#[test]
fn task_times_counts_only_the_run_it_names_without_accounting() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let first = ex
        .attach(task(Priority::Normal, "t"), async {
            keel_core::rt::yield_now().await?;
            keel_core::rt::yield_now().await
        })
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.task_times(first).unwrap().resumptions, 3);
    let second = ex.attach(first, async {}).unwrap();
    assert_eq!(ex.task_times(second).unwrap().resumptions, 0, "a new run has not been resumed");
    run_all!(ex);
    assert_eq!(ex.task_times(second).unwrap().resumptions, 1);
}
