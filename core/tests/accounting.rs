//! Time accounting: on with `TscAccounting`, absent (zeros, no clock reads) by default.

mod common;
use common::*;
use core::pin::pin;
use core::time::Duration;
use keel_core::sim::SimDriver;
use keel_core::{Config, Executor, NoStacks, Priority, TickScale, TscAccounting, rt};

fn busy(n: u64) -> u64 {
    let mut x = n;
    for i in 0..n {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    x
}

#[test]
fn tsc_accounting_splits_running_ready_and_suspended_time() {
    let ex = Executor::new(SimDriver::new(), Config::default()).unwrap().with_accounting::<TscAccounting>();
    let ex = pin!(ex);
    let ex = ex.into_ref();
    let _: core::pin::Pin<&Executor<SimDriver, NoStacks, TscAccounting>> = ex;
    let worker = ex
        .attach(task(Priority::Normal, "worker"), async {
            busy(200_000);
            rt::yield_now().await?;
            busy(200_000);
            rt::sleep(Duration::from_millis(1)).await?;
            Ok(1)
        })
        .unwrap();
    let waiter = ex.attach(task(Priority::Normal, "waiter"), async { busy(10) }).unwrap();
    run_all!(ex);
    let w = ex.task_times(worker).unwrap();
    let v = ex.task_times(waiter).unwrap();
    assert_eq!(w.resumptions, 3);
    assert!(w.running_ns > 0 && w.longest_run_ns > 0 && w.longest_run_ns <= w.running_ns, "{w:?}");
    assert!(w.suspended_ns > 0, "the sleep was not counted as suspended: {w:?}");
    assert!(v.ready_wait_ns > 0, "the waiter queued behind the busy worker: {v:?}");
    let e = ex.exec_times();
    assert!(e.task_ns >= w.running_ns, "{e:?}");
    assert_eq!(e.per_priority, [0, 4, 0]);
    // A tick scale turns ticks into nanoseconds: doubling the scale doubles the report.
    ex.set_tick_scale(TickScale { mult: 2, shift: 0 });
    assert_eq!(ex.task_times(worker).unwrap().running_ns, 2 * w.running_ns);
}

#[test]
fn an_executor_without_accounting_reports_zero_times() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let t = ex.attach(task(Priority::Normal, "t"), async { busy(100_000) }).unwrap();
    run_all!(ex);
    let tt = ex.task_times(t).unwrap();
    assert_eq!((tt.running_ns, tt.ready_wait_ns, tt.suspended_ns), (0, 0, 0));
    assert_eq!(tt.resumptions, 1);
    assert_eq!(ex.exec_times().task_ns, 0);
}

#[test]
fn tick_scales_convert_hz() {
    let s = TickScale::from_hz(2_000_000_000);
    assert!((999_999_990..=1_000_000_000).contains(&s.to_ns(2_000_000_000)));
    assert_eq!(TickScale::from_hz(0), TickScale::IDENTITY);
}

/// A task attached before the executor's first `run` counts its ready wait from the
/// executor's first use, not from a zero clock reading (which made it the clock's whole
/// value, some 10^13 ticks).
#[test]
fn the_first_runs_ready_wait_is_bounded_by_the_time_that_passed() {
    use keel_core::Accounting;
    let before = TscAccounting::read();
    let ex = Executor::new(SimDriver::new(), Config::default()).unwrap().with_accounting::<TscAccounting>();
    let ex = pin!(ex);
    let ex = ex.into_ref();
    ex.set_tick_scale(TickScale::IDENTITY);
    let first = ex.attach(task(Priority::Normal, "first"), async { busy(10) }).unwrap();
    run_all!(ex);
    let elapsed = TscAccounting::read() - before;
    let t = ex.task_times(first).unwrap();
    assert!(t.ready_wait_ns <= elapsed, "ready wait {} ticks of {elapsed} that passed: {t:?}", t.ready_wait_ns);
}
