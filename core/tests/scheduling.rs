//! Run-loop order and `run`'s contract on the simulated driver.

mod common;
use common::*;
use core::pin::pin;
use core::time::Duration;
use keel_core::{Config, Executor, Priority, RunError, TaskState, rt, sim::SimDriver};

#[test]
fn highest_cpu_priority_first_and_fifo_within_a_level() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let log = Log::default();
    let specs = [
        (Priority::Low, "l1"),
        (Priority::Normal, "n1"),
        (Priority::High, "h1"),
        (Priority::Low, "l2"),
        (Priority::High, "h2"),
        (Priority::Normal, "n2"),
    ];
    for (p, name) in specs {
        let log = log.clone();
        ex.attach(task(p, name), async move {
            log.push(name);
            rt::yield_now().await?;
            log.push(format!("{name}'"));
            Ok(0)
        })
        .unwrap();
    }
    run_all!(ex);
    // Each yield goes to the back of its own level, so a level finishes before the next.
    assert_eq!(log.take(), ["h1", "h2", "h1'", "h2'", "n1", "n2", "n1'", "n2'", "l1", "l2", "l1'", "l2'"]);
    assert_eq!(ex.stats().per_priority, [4, 4, 4]);
}

#[test]
fn run_does_at_most_max_items() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach(task(Priority::Normal, "y"), async {
            for _ in 0..10 {
                rt::yield_now().await?;
            }
            Ok(0)
        })
        .unwrap();
    assert_eq!(ex.run(3, None), Ok(3));
    assert_eq!(ex.state(t), Ok(TaskState::Ready));
    assert_eq!(ex.run(100, None), Ok(8)); // 11 resumptions in all
    assert_eq!(ex.state(t), Ok(TaskState::Completed));
}

#[test]
fn zero_max_items_is_a_typed_error() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    assert_eq!(ex.into_ref().run(0, None), Err(RunError::ZeroMaxItems));
}

#[test]
fn timeout_with_nothing_done_is_timed_out_and_advances_virtual_time() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    assert_eq!(ex.run(1, Some(Duration::from_millis(3))), Err(RunError::TimedOut));
    assert_eq!(ex.now().as_nanos(), 3_000_000);
    assert_eq!(ex.run(1, Some(Duration::ZERO)), Err(RunError::TimedOut));
}

#[test]
fn no_timeout_and_nothing_able_to_wake_is_stalled() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    assert_eq!(ex.run(1, None), Err(RunError::Stalled));
    let t = ex
        .attach(task(Priority::Normal, "w"), async {
            rt::wait().await?;
            Ok(0)
        })
        .unwrap();
    assert_eq!(ex.run(10, None), Ok(1));
    assert_eq!(ex.state(t), Ok(TaskState::Suspended(keel_core::SuspendReason::Wait)));
    assert_eq!(ex.run(10, None), Err(RunError::Stalled));
    ex.wake(t);
    assert_eq!(ex.run(10, None), Ok(1));
    assert_eq!(ex.result(t), Ok(Some(Ok(0))));
}

#[test]
fn zero_capacity_configuration_is_refused() {
    for cfg in [
        Config { inbox_batch: 0, ..Config::default() },
        Config { timer_batch: 0, ..Config::default() },
        Config { reap_batch: 0, ..Config::default() },
        Config { resume_batch: 0, ..Config::default() },
    ] {
        let err = Executor::new(SimDriver::new(), cfg).err().expect("zero must be refused");
        assert!(err.to_string().contains("must be at least 1"), "{err}");
    }
}

#[test]
fn a_task_is_reused_for_many_runs_and_results_are_per_run() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let mut h = task(Priority::Normal, "reuse");
    for i in 0..1000u64 {
        let run = ex.attach(h, async move { i * 2 }).unwrap();
        assert_eq!(ex.run(1, None), Ok(1));
        assert_eq!(ex.result(run), Ok(Some(Ok(i * 2))));
        h = run;
    }
}

/// Every inner loop of a pass is bounded by its configuration value: with `timer_batch`
/// 1 a pass fires one of three expired timers, and with `inbox_batch` 1 it takes one of
/// three queued foreign wakes, before it resumes a task (`run(1, ..)` returns after
/// that). The default batches take all three in the same pass.
#[test]
fn sched_rule_4_a_pass_fires_at_most_timer_batch_timers_and_takes_at_most_inbox_batch_wakes() {
    fn timers_then_wakes(cfg: Config) -> (u64, u64) {
        let ex = pin!(Executor::new(SimDriver::new(), cfg).unwrap());
        let ex = ex.into_ref();
        let sleepers: Vec<_> = (0..3)
            .map(|_| {
                ex.attach(task(Priority::Normal, "sleeper"), async {
                    rt::sleep(core::time::Duration::from_millis(1)).await?;
                    Ok(0)
                })
                .unwrap()
            })
            .collect();
        assert_eq!(ex.run(3, None), Ok(3));
        assert_eq!(ex.run(1, None), Ok(1));
        let fired = ex.stats().timers_fired;
        run_all!(ex);
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                ex.attach(task(Priority::Normal, "waiter"), async {
                    rt::wait().await?;
                    Ok(0)
                })
                .unwrap()
            })
            .collect();
        assert_eq!(ex.run(3, None), Ok(3));
        let wakers: Vec<_> = waiters.iter().map(|t| t.waker()).collect();
        std::thread::spawn(move || wakers.iter().for_each(|w| w.wake_by_ref())).join().unwrap();
        let before = ex.stats().inbox_taken;
        assert_eq!(ex.run(1, None), Ok(1));
        let taken = ex.stats().inbox_taken - before;
        run_all!(ex);
        assert!(sleepers.iter().chain(&waiters).all(|&t| ex.result(t) == Ok(Some(Ok(0)))));
        (fired, taken)
    }
    assert_eq!(timers_then_wakes(Config::default()), (3, 3), "the default batches take everything due");
    let one = Config { timer_batch: 1, inbox_batch: 1, ..Config::default() };
    assert_eq!(timers_then_wakes(one), (1, 1), "a pass went past its batch");
}
