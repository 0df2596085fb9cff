//! When the driver has no room (a full SQ) or the in-flight limit is reached, initiators
//! wait in I/O-priority order, FIFO within a level, and one task's operations are
//! submitted in the order it initiated them.

mod common;
use common::*;
use core::pin::pin;
use core::time::Duration;
use keel_core::sim::{SimDriverN, SimEvent, SimOp};
use keel_core::{
    Config, Executor, Fiber, FiberAttrs, IoStatus, Priorities, Priority, RegionStacks, TaskAttrs, initiate,
    suspend_until_completed_io,
};

type Sim4 = SimDriverN<4, 4096>;

fn region(n: usize) -> RegionStacks {
    RegionStacks::new(Vec::leak(vec![0u8; n * 20 * 1024 + 64]), 16 * 1024, 4096).unwrap()
}

fn io_task(io: Priority) -> keel_core::TaskHandle {
    let slot: &'static keel_core::TaskSlot<1024> = Box::leak(Box::new(keel_core::TaskSlot::new()));
    slot.create(TaskAttrs { priority: Priorities { cpu: Priority::Normal, io }, name: "io" }).unwrap()
}

#[test]
fn a_hundred_operations_through_four_slots_in_initiation_order() {
    let ex = pin!(Executor::with_stacks(Sim4::new(), region(4), Config::default()).unwrap());
    let ex = ex.into_ref();
    let mut runs = Vec::new();
    for t in 0..4u32 {
        // Two fibers and two futures, 25 operations each, each keeping 5 in flight.
        let h = io_task(Priority::Normal);
        let run = if t % 2 == 0 {
            ex.attach_fiber(
                h,
                FiberAttrs { stack_size: 16 * 1024, ..FiberAttrs::DEFAULT },
                move |f: &mut Fiber| -> keel_core::TaskResult {
                    let sts: [_; 5] = core::array::from_fn(|_| IoStatus::new());
                    let sts = pin!(sts);
                    let sts: &[IoStatus; 5] = &sts;
                    let mut done = 0;
                    for round in 0..5u32 {
                        for (k, st) in sts.iter().enumerate() {
                            // SAFETY: the array is pinned on this fiber's stack for the whole loop.
                            let st = unsafe { core::pin::Pin::new_unchecked(st) };
                            let label = t * 1000 + round * 5 + k as u32;
                            f.initiate::<Sim4>(st, SimOp::new(label).after(Duration::from_micros(10))).unwrap();
                        }
                        let mut got = 0;
                        while got < 5 {
                            got += f.suspend_until_completed_io(5)?;
                        }
                        done += got;
                    }
                    Ok(done as u64)
                },
            )
            .unwrap()
        } else {
            ex.attach(h, async move {
                let mut done = 0;
                for round in 0..5u32 {
                    let sts = pin!([const { IoStatus::new() }; 5]);
                    for (k, st) in sts.iter().enumerate() {
                        // SAFETY: pinned array inside the pinned future.
                        let st = unsafe { core::pin::Pin::new_unchecked(st) };
                        let label = t * 1000 + round * 5 + k as u32;
                        initiate::<Sim4>(st, SimOp::new(label).after(Duration::from_micros(10))).await.unwrap();
                    }
                    let mut got = 0;
                    while got < 5 {
                        got += suspend_until_completed_io(5).await?;
                    }
                    done += got;
                }
                Ok(done as u64)
            })
            .map_err(|e| e.split().0)
            .unwrap()
        };
        runs.push(run);
    }
    run_all!(ex);
    for r in runs {
        assert_eq!(ex.result(r), Ok(Some(Ok(25))));
    }
    let submits: Vec<u32> = ex
        .with_driver(|d| {
            d.trace()
                .filter_map(|e| match e {
                    SimEvent::Submit { label, .. } => Some(*label),
                    _ => None,
                })
                .collect()
        })
        .unwrap();
    assert_eq!(submits.len(), 100);
    for t in 0..4u32 {
        let mine: Vec<u32> = submits.iter().copied().filter(|l| l / 1000 == t).collect();
        let mut sorted = mine.clone();
        sorted.sort();
        assert_eq!(mine, sorted, "task {t}'s operations left initiation order");
        assert_eq!(mine.len(), 25);
    }
    // A full driver refuses (EBUSY, cheaply) and the executor queues the initiator: every
    // refused operation was submitted later, once, in order (checked above).
    let refused = ex.with_driver(|d| d.trace().filter(|e| matches!(e, SimEvent::Refuse { .. })).count()).unwrap();
    assert!(refused > 0, "four slots for twenty in flight must have been full at some point");
}

#[test]
fn room_rule_4_waiters_get_room_once_each_by_io_priority_then_fifo_within_the_in_flight_limit() {
    let cfg = Config { max_io_in_flight: Some(1), ..Config::default() };
    let ex = pin!(Executor::new(Sim4::new(), cfg).unwrap());
    let ex = ex.into_ref();
    let order = Log::default();
    // Attach in the order low, normal, high, high2; the first one takes the only slot.
    for (io, name) in [
        (Priority::Low, "first"),
        (Priority::Low, "low"),
        (Priority::Normal, "normal"),
        (Priority::High, "high"),
        (Priority::High, "high2"),
    ] {
        let order = order.clone();
        ex.attach(io_task(io), async move {
            let st = pin!(IoStatus::new());
            initiate::<Sim4>(st.as_ref(), SimOp::new(0).after(Duration::from_millis(1))).await.unwrap();
            order.push(name);
            suspend_until_completed_io(1).await?;
            Ok(0)
        })
        .unwrap();
    }
    run_all!(ex);
    assert_eq!(order.take(), ["first", "high", "high2", "normal", "low"]);
    // Never more than one in flight: five ops of 1 ms each, one after another.
    assert_eq!(ex.now().as_nanos(), 5_000_000);
}

#[test]
fn zero_in_flight_limit_is_refused() {
    let cfg = Config { max_io_in_flight: Some(0), ..Config::default() };
    assert!(Executor::new(Sim4::new(), cfg).is_err());
}

#[test]
fn room_rule_5_a_cancelled_waiter_for_room_leaves_the_waiters_and_its_next_run_can_wait_again() {
    let cfg = Config { max_io_in_flight: Some(1), ..Config::default() };
    let ex = pin!(Executor::new(Sim4::new(), cfg).unwrap());
    let ex = ex.into_ref();
    let holder = ex
        .attach(io_task(Priority::Normal), async {
            let st = pin!(IoStatus::new());
            initiate::<Sim4>(st.as_ref(), SimOp::new(1).after(Duration::from_secs(1))).await.unwrap();
            suspend_until_completed_io(1).await?;
            Ok(1)
        })
        .unwrap();
    let waiter = ex
        .attach(io_task(Priority::High), async {
            let st = pin!(IoStatus::new());
            match initiate::<Sim4>(st.as_ref(), SimOp::new(2)).await {
                Err(keel_core::InitiateError::Cancelled(op)) => assert_eq!(op.label, 2),
                other => panic!("{other:?}"),
            }
            Err::<u64, _>(keel_core::TaskError::Cancelled)
        })
        .unwrap();
    ex.run(2, None).unwrap();
    assert_eq!(ex.state(waiter), Ok(keel_core::TaskState::Suspended(keel_core::SuspendReason::SqSlot)));
    assert_eq!(ex.cancel(waiter), Ok(keel_core::CancelOutcome::Resumes));
    assert_eq!(ex.run(1, None), Ok(1));
    assert_eq!(ex.result(waiter), Ok(Some(Err(keel_core::TaskError::Cancelled))));
    // The cancelled run left the waiters for room: the slot's next run waits for room
    // again while the holder still holds it (debug builds check the list push), and gets
    // it once the holder's operation completes.
    let again = ex
        .attach(waiter, async {
            let st = pin!(IoStatus::new());
            initiate::<Sim4>(st.as_ref(), SimOp::new(3)).await.unwrap();
            suspend_until_completed_io(1).await?;
            Ok(3)
        })
        .unwrap();
    assert_eq!(ex.run(1, None), Ok(1));
    assert_eq!(ex.state(again), Ok(keel_core::TaskState::Suspended(keel_core::SuspendReason::SqSlot)));
    run_all!(ex);
    assert_eq!(ex.result(again), Ok(Some(Ok(3))));
    assert_eq!(ex.result(holder), Ok(Some(Ok(1))));
}

/// `initiate_pair` puts both operations in or neither: with room for one only it hands
/// both back (`Refused(EBUSY)`) without queueing the task; with room for two both go in,
/// one after the other; the same status twice is refused.
#[test]
fn a_pair_goes_in_whole_or_not_at_all() {
    let cfg = Config { max_io_in_flight: Some(2), ..Config::default() };
    let ex = pin!(Executor::with_stacks(Sim4::new(), region(1), cfg).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach_fiber(
            io_task(Priority::Normal),
            FiberAttrs { stack_size: 16 * 1024, ..FiberAttrs::DEFAULT },
            |f: &mut Fiber| -> keel_core::TaskResult {
                let (a, b, c) = (pin!(IoStatus::new()), pin!(IoStatus::new()), pin!(IoStatus::new()));
                f.initiate::<Sim4>(c.as_ref(), SimOp::new(9).after(Duration::from_millis(1))).unwrap();
                // One more may go in flight, not two.
                let r = f.initiate_pair::<Sim4>((a.as_ref(), SimOp::new(1)), (b.as_ref(), SimOp::new(2))).unwrap_err();
                assert!(
                    matches!(r.reason, keel_core::InitiateError::Refused((), keel_core::Errno::EBUSY)),
                    "{:?}",
                    r.reason
                );
                assert_eq!((r.first.label, r.second.label), (1, 2));
                assert!(!a.is_in_flight() && !b.is_in_flight());
                assert_eq!(f.suspend_until_completed_io(1)?, 1);
                // Room for two now.
                let r = f.initiate_pair::<Sim4>((a.as_ref(), SimOp::new(3)), (a.as_ref(), SimOp::new(4))).unwrap_err();
                assert!(
                    matches!(r.reason, keel_core::InitiateError::StatusBusy(())),
                    "the same status twice: {:?}",
                    r.reason
                );
                f.initiate_pair::<Sim4>((a.as_ref(), SimOp::new(5)), (b.as_ref(), SimOp::new(6)))
                    .map_err(|_| keel_core::TaskError::Failed(1))?;
                let mut got = 0;
                while got < 2 {
                    got += f.suspend_until_completed_io(2)?;
                }
                Ok(got as u64)
            },
        )
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(2))));
    let submitted: Vec<u64> = ex
        .with_driver(|d| {
            d.trace()
                .filter_map(|e| if let SimEvent::Submit { label, .. } = e { Some(*label as u64) } else { None })
                .collect()
        })
        .unwrap();
    assert_eq!(submitted, [9, 5, 6], "nothing of the refused pair was submitted, and the pair went in order");
}

/// A silent status's completion moves it to the completed list without waking its task:
/// the fiber waiting on a silent and a normal operation is resumed once, when the normal
/// one (which completes later) is done.
#[test]
fn a_silent_status_does_not_wake_its_task() {
    let ex = pin!(Executor::with_stacks(Sim4::new(), region(1), Config::default()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach_fiber(
            io_task(Priority::Normal),
            FiberAttrs { stack_size: 16 * 1024, ..FiberAttrs::DEFAULT },
            |f: &mut Fiber| -> keel_core::TaskResult {
                let (quiet, loud) = (pin!(IoStatus::new_silent()), pin!(IoStatus::new()));
                f.initiate::<Sim4>(quiet.as_ref(), SimOp::new(1).after(Duration::from_millis(1))).unwrap();
                f.initiate::<Sim4>(loud.as_ref(), SimOp::new(2).after(Duration::from_millis(5))).unwrap();
                let mut wakes = 0;
                while loud.is_in_flight() {
                    f.wait_io();
                    wakes += 1;
                }
                assert!(!quiet.is_in_flight(), "the silent operation completed first");
                assert_eq!(f.suspend_until_completed_io(2)?, 2);
                Ok(wakes)
            },
        )
        .unwrap();
    run_all!(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))), "woken once: by the normal status only");
}
