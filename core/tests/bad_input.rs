//! Every caller mistake gets a typed error and loses nothing.

mod common;
use common::*;
use core::pin::pin;
use keel_core::sim::SimDriver;
use keel_core::{
    AttachError, CancelError, Config, CreateError, DestroyError, Executor, Priority, StaleHandle, TaskAttrs, TaskError,
    TaskPool, TaskSlot, TaskState, rt,
};

#[test]
fn header_rule_3_attaching_an_attached_task_hands_the_new_body_back() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let h = task(Priority::Normal, "a");
    let run = ex.attach(h, async { 1u64 }).unwrap();
    // Through the new run's handle: attached already.
    let err = ex.attach(run, async { 2u64 }).unwrap_err();
    assert!(matches!(err, AttachError::AlreadyAttached(_)));
    assert!(err.to_string().contains("wait for it to complete"));
    // Through the creation handle, now stale.
    assert!(matches!(ex.attach(h, async { 3u64 }), Err(AttachError::Stale(_))));
    ex.run(5, None).unwrap();
    assert_eq!(ex.result(run), Ok(Some(Ok(1))));
    // The body handed back is the one we passed.
    let body = ex.attach(h, async { 4u64 }).unwrap_err().into_body();
    let run2 = ex.attach(run, body).unwrap();
    ex.run(5, None).unwrap();
    assert_eq!(ex.result(run2), Ok(Some(Ok(4))));
}

#[test]
fn stale_handles_are_caught_by_cancel_state_result_and_destroy() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let first = ex
        .attach(task(Priority::Normal, "s"), async {
            rt::wait().await?;
            Ok(0)
        })
        .unwrap();
    ex.run(1, None).unwrap();
    ex.cancel(first).unwrap();
    ex.run(1, None).unwrap();
    let second = ex
        .attach(first, async {
            rt::wait().await?;
            Ok(0)
        })
        .unwrap();
    assert_eq!(ex.cancel(first), Err(CancelError::Stale));
    assert_eq!(ex.state(first), Err(StaleHandle));
    assert_eq!(ex.result(first), Err(StaleHandle));
    assert_eq!(ex.destroy(first), Err(DestroyError::Stale));
    assert!(!first.is_current());
    assert!(second.is_current());
    assert_eq!(ex.state(second), Ok(TaskState::Attached));
}

#[test]
fn destroying_an_attached_task_fails_and_after_destroy_every_handle_is_stale() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    static SLOT: TaskSlot = TaskSlot::new();
    let h = SLOT.create(TaskAttrs::default()).unwrap();
    assert_eq!(SLOT.create(TaskAttrs::default()), Err(CreateError::SlotInUse));
    let run = ex
        .attach(h, async {
            rt::wait().await?;
            Ok(1)
        })
        .unwrap();
    assert_eq!(ex.destroy(run), Err(DestroyError::Attached));
    ex.run(1, None).unwrap();
    assert_eq!(ex.destroy(run), Err(DestroyError::Attached));
    ex.cancel(run).unwrap();
    ex.run(1, None).unwrap();
    assert_eq!(ex.result(run), Ok(Some(Err(TaskError::Cancelled))));
    assert_eq!(ex.destroy(run), Ok(()));
    assert!(matches!(ex.attach(run, async { 0u64 }), Err(AttachError::Stale(_))));
    assert_eq!(ex.cancel(run), Err(CancelError::NotAttached));
    assert_eq!(ex.destroy(run), Err(DestroyError::Stale));
    run.wake(); // a no-op
    // The slot can be created again, and works.
    let again = SLOT.create(TaskAttrs::default()).unwrap();
    let r = ex.attach(again, async { 9u64 }).unwrap();
    ex.run(1, None).unwrap();
    assert_eq!(ex.result(r), Ok(Some(Ok(9))));
}

#[test]
fn a_body_too_large_or_over_aligned_is_refused_with_sizes() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let small: &'static TaskSlot<32> = Box::leak(Box::new(TaskSlot::new()));
    let h = small.create(TaskAttrs::default()).unwrap();
    let big = [7u8; 100];
    let err = ex.attach(h, async move { big[0] as u64 }).unwrap_err();
    match &err {
        AttachError::BodyTooLarge { needed, capacity, .. } => {
            assert!(*needed >= 100);
            assert_eq!(*capacity, 32);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("TaskSlot<"));
    #[repr(align(64))]
    struct Aligned(u8);
    let a = Aligned(3);
    let roomy = task(Priority::Normal, "roomy");
    assert!(matches!(
        ex.attach(roomy, async move {
            let a = a;
            a.0 as u64
        }),
        Err(AttachError::BodyOverAligned { align: 64, .. })
    ));
    // Nothing was lost: the handle still works.
    let run = ex.attach(h, async { 5u64 }).unwrap();
    ex.run(1, None).unwrap();
    assert_eq!(ex.result(run), Ok(Some(Ok(5))));
}

#[test]
fn header_rule_2_a_task_belongs_to_one_executor_until_released() {
    let a = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let a = a.into_ref();
    let b = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let b = b.into_ref();
    let run = a.attach(task(Priority::Normal, "own"), async { 1u64 }).unwrap();
    assert!(matches!(b.attach(run, async { 2u64 }), Err(AttachError::OwnedElsewhere(_))));
    assert_eq!(b.cancel(run), Err(CancelError::OwnedElsewhere));
    assert_eq!(b.destroy(run), Err(DestroyError::OwnedElsewhere));
    assert_eq!(a.release(run), Err(DestroyError::Attached));
    a.run(1, None).unwrap();
    let freed = a.release(run).unwrap();
    let on_b = b.attach(freed, async { 2u64 }).unwrap();
    b.run(1, None).unwrap();
    assert_eq!(b.result(on_b), Ok(Some(Ok(2))));
    assert!(matches!(a.attach(on_b, async { 3u64 }), Err(AttachError::OwnedElsewhere(_))));
}

#[test]
fn a_full_pool_says_so() {
    static POOL: TaskPool<2, 64> = TaskPool::new();
    let x = POOL.create(TaskAttrs::default()).unwrap();
    let _y = POOL.create(TaskAttrs::default()).unwrap();
    assert_eq!(POOL.create(TaskAttrs::default()), Err(CreateError::PoolFull));
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    ex.destroy(x).unwrap();
    assert!(POOL.create(TaskAttrs::default()).is_ok());
}

#[test]
fn a_panicking_body_completes_as_panicked_and_the_executor_goes_on() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let bad = ex
        .attach(task(Priority::High, "bad"), async {
            rt::yield_now().await?;
            if std::hint::black_box(true) {
                panic!("boom");
            }
            Ok(0)
        })
        .unwrap();
    let good = ex.attach(task(Priority::Low, "good"), async { 8u64 }).unwrap();
    ex.run(1, None).unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ex.run(1, None)));
    assert!(caught.is_err());
    assert!(matches!(ex.result(bad), Ok(Some(Err(TaskError::Panicked(_))))));
    assert_eq!(ex.run(5, None), Ok(1));
    assert_eq!(ex.result(good), Ok(Some(Ok(8))));
}

#[test]
fn teardown_rule_4_an_executor_dropped_with_suspended_tasks_releases_them() {
    let h;
    {
        let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
        let ex = ex.into_ref();
        h = ex
            .attach(task(Priority::Normal, "left"), async {
                rt::sleep(core::time::Duration::from_secs(9)).await?;
                Ok(1)
            })
            .unwrap();
        ex.run(1, None).unwrap();
    }
    // The task is unowned now: another executor can take it.
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let run = ex.attach(h, async { 2u64 }).unwrap();
    ex.run(1, None).unwrap();
    assert_eq!(ex.result(run), Ok(Some(Ok(2))));
}
