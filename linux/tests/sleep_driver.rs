//! The ring-less driver on the real monotonic clock.

use core::pin::pin;
use core::time::Duration;
use keel_core::{Config, Driver, Executor, Park, RunError, TaskAttrs, TaskSlot, rt};

use keel_linux::SleepDriver;

#[test]
fn a_sleep_on_the_real_clock_lasts_at_least_its_duration() {
    static SLOT: TaskSlot = TaskSlot::new();
    let ex = pin!(Executor::new(SleepDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let t0 = std::time::Instant::now();
    let run = ex
        .attach(SLOT.create(TaskAttrs::default()).unwrap(), async {
            rt::sleep(Duration::from_millis(20)).await?;
            Ok(1)
        })
        .unwrap();
    while ex.attached() > 0 {
        ex.run(8, Some(Duration::from_secs(5))).unwrap();
    }
    assert!(t0.elapsed() >= Duration::from_millis(20), "woke early: {:?}", t0.elapsed());
    assert_eq!(ex.result(run), Ok(Some(Ok(1))));
    assert!(ex.stats().parks >= 1);
}

#[test]
fn a_bare_driver_with_nothing_to_wait_for_is_stalled_and_a_timeout_times_out() {
    let mut d = SleepDriver::new();
    assert_eq!(d.park(None), Ok(Park::Stalled));
    let past = d.now();
    assert_eq!(d.park(Some(past)), Ok(Park::Woke));
    let ex = pin!(Executor::new(SleepDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    // With the executor's park word it can be unparked from other threads, so it waits
    // rather than reporting Stalled; bound the wait with a timeout.
    let t0 = std::time::Instant::now();
    assert_eq!(ex.run(1, Some(Duration::from_millis(5))), Err(RunError::TimedOut));
    assert!(t0.elapsed() >= Duration::from_millis(5));
}

#[test]
fn the_clock_is_monotonic() {
    let mut last = keel_linux::monotonic_now();
    for _ in 0..10_000 {
        let now = keel_linux::monotonic_now();
        assert!(now >= last);
        last = now;
    }
}
