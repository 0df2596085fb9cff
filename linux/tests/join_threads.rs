//! Joins from other threads with keel-linux's `futex(2)` piece (`keel_linux::join`), on
//! real threads and executors that park on futexes (`SleepDriver`): a blocked thread is
//! woken by the run's end, times out, and many rounds of cross-thread joins lose no
//! wake (each join has a deadline far beyond its work; a lost wake shows as `TimedOut`).

use core::pin::{Pin, pin};
use core::time::Duration;
use keel_core::join::join;
use keel_core::{Config, Executor, JoinError, TaskAttrs, TaskError, TaskSlot, rt};
use keel_linux::SleepDriver;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

fn slot() -> &'static TaskSlot {
    Box::leak(Box::new(TaskSlot::new()))
}

fn run_until_idle(ex: Pin<&Executor<SleepDriver>>) {
    let start = Instant::now();
    while ex.attached() > 0 {
        ex.run(64, Some(Duration::from_millis(50))).ok();
        assert!(start.elapsed() < Duration::from_secs(30), "runaway");
    }
}

#[test]
fn a_thread_blocked_on_the_futex_is_woken_by_the_runs_end_and_times_out_otherwise() {
    let ex = pin!(Executor::new(SleepDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let sleeper = ex
        .attach(slot().create(TaskAttrs::default()).unwrap(), async {
            rt::sleep(Duration::from_millis(30)).await?;
            Ok::<u64, TaskError>(12)
        })
        .unwrap();
    let forever = ex
        .attach(slot().create(TaskAttrs::default()).unwrap(), async {
            rt::wait().await?;
            Ok::<u64, TaskError>(0)
        })
        .unwrap();
    std::thread::scope(|s| {
        let a = s.spawn(move || keel_linux::join_blocking(sleeper, Some(Duration::from_secs(20))));
        let b = s.spawn(move || keel_linux::join_blocking(forever, Some(Duration::from_millis(40))));
        let start = Instant::now();
        while !a.is_finished() || !b.is_finished() {
            ex.run(64, Some(Duration::from_millis(10))).ok();
            assert!(start.elapsed() < Duration::from_secs(25), "runaway");
        }
        assert_eq!(a.join().unwrap(), Ok(Ok(12)));
        assert_eq!(b.join().unwrap(), Err(JoinError::TimedOut));
    });
    ex.cancel(forever).unwrap();
    run_until_idle(ex);
    assert_eq!(keel_linux::join_blocking(forever, Some(Duration::ZERO)), Ok(Err(TaskError::Cancelled)));
}

/// Two executors on two threads: each round, executor A runs a short task and executor
/// B's task and a plain thread join it, racing its end (the announce may arrive before,
/// during or after it). 2,000 rounds; every join gets the result.
#[test]
fn rounds_of_cross_thread_joins_lose_no_wake() {
    const ROUNDS: u64 = 2_000;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::sync_channel::<keel_core::TaskHandle>(1);
    let (back, done) = std::sync::mpsc::sync_channel::<()>(1);
    let sum = Arc::new(AtomicU64::new(0));
    std::thread::scope(|s| {
        // Executor B: for each handle, a task joins it; the thread blocks on it too.
        let sum_b = sum.clone();
        let stop_b = stop.clone();
        s.spawn(move || {
            let ex = pin!(Executor::new(SleepDriver::new(), Config::default()).unwrap());
            let ex = ex.into_ref();
            let joiner = slot().create(TaskAttrs::default()).unwrap();
            let mut h = joiner;
            while let Ok(target) = rx.recv() {
                h = ex
                    .attach(h, async move {
                        match join(target).await {
                            Ok(r) => r,
                            Err(e) => panic!("join failed: {e}"),
                        }
                    })
                    .unwrap();
                let t = s.spawn(move || keel_linux::join_blocking(target, Some(Duration::from_secs(20))));
                run_until_idle(ex);
                let from_task = ex.result(h).unwrap().unwrap().unwrap();
                let from_thread = t.join().unwrap().expect("thread join").unwrap();
                assert_eq!(from_task, from_thread);
                sum_b.fetch_add(from_task, Ordering::Relaxed);
                back.send(()).unwrap();
            }
            stop_b.store(true, Ordering::Relaxed);
        });
        let ex = pin!(Executor::new(SleepDriver::new(), Config::default()).unwrap());
        let ex = ex.into_ref();
        let mut h = slot().create(TaskAttrs::default()).unwrap();
        for i in 0..ROUNDS {
            h = ex
                .attach(h, async move {
                    for _ in 0..(i % 4) {
                        rt::yield_now().await?;
                    }
                    Ok::<u64, TaskError>(i)
                })
                .unwrap();
            tx.send(h).unwrap();
            run_until_idle(ex);
            // Keep the run's result in place until both joins of this round returned; the
            // announce of a join that lost the race still reaches this executor: take it.
            let start = Instant::now();
            while done.try_recv().is_err() {
                ex.run(8, Some(Duration::from_millis(1))).ok();
                assert!(start.elapsed() < Duration::from_secs(25), "a join of round {i} never returned");
            }
        }
        drop(tx);
    });
    assert!(stop.load(Ordering::Relaxed));
    assert_eq!(sum.load(Ordering::Relaxed), ROUNDS * (ROUNDS - 1) / 2);
}
