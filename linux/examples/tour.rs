//! A walk through keel on a real clock: priorities, timers, cancellation, future tasks.
//!
//! `cargo run --release --example tour`

use core::pin::pin;
use core::time::Duration;
use keel_core::{
    CancelOutcome, Config, Executor, Priorities, Priority, TaskAttrs, TaskHandle, TaskSlot, TaskState, rt,
};
use keel_linux::SleepDriver;
use std::cell::RefCell;

static SLOTS: [TaskSlot; 8] = [const { TaskSlot::new() }; 8];

thread_local! {
    static LOG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn say(line: String) {
    println!("  {line}");
    LOG.with(|l| l.borrow_mut().push(line));
}

fn create(i: usize, cpu: Priority, name: &'static str) -> TaskHandle {
    SLOTS[i].create(TaskAttrs { priority: Priorities { cpu, io: Priority::Normal }, name }).expect("fresh slot")
}

fn main() {
    let ex = pin!(Executor::new(SleepDriver::new(), Config::default()).expect("default config is valid"));
    let ex = ex.into_ref();
    let start = ex.now();
    let ms = move |ex: core::pin::Pin<&Executor<SleepDriver>>| ex.now().saturating_since(start).as_millis();

    println!("1. priorities: attached low, normal, high; the run loop takes high first, FIFO within a level");
    for (i, (p, name)) in [(Priority::Low, "low"), (Priority::Normal, "normal"), (Priority::High, "high")].into_iter().enumerate() {
        ex.attach(create(i, p, name), async move {
            say(format!("{name} runs"));
            rt::yield_now().await?;
            say(format!("{name} runs again after yielding"));
            Ok(0)
        })
        .unwrap();
    }
    while ex.attached() > 0 {
        ex.run(64, None).unwrap();
    }

    println!("2. timers on the monotonic clock: three sleepers, woken in deadline order");
    let mut sleepers = Vec::new();
    for (i, d) in [(3usize, 30u64), (4, 10), (5, 20)] {
        let h = ex
            .attach(create(i, Priority::Normal, "sleeper"), async move {
                rt::sleep(Duration::from_millis(d)).await?;
                say(format!("slept {d} ms"));
                Ok(d)
            })
            .unwrap();
        sleepers.push(h);
    }
    while ex.attached() > 0 {
        ex.run(64, Some(Duration::from_secs(1))).unwrap();
    }
    println!("  all woke by {} ms; results {:?}", ms(ex), sleepers.iter().map(|&h| ex.result(h).unwrap()).collect::<Vec<_>>());

    println!("3. cancellation: a task sleeping for an hour is cancelled; its sleep returns Cancelled");
    let long = ex
        .attach(create(6, Priority::Normal, "hour"), async {
            match rt::sleep(Duration::from_secs(3600)).await {
                Ok(()) => say("slept an hour (should not happen)".into()),
                Err(c) => say(format!("sleep ended early: {c}")),
            }
            Ok(0)
        })
        .unwrap();
    ex.run(1, None).unwrap();
    println!("  state before cancel: {:?}", ex.state(long).unwrap());
    assert_eq!(ex.cancel(long), Ok(CancelOutcome::Resumes));
    ex.run(1, None).unwrap();
    println!("  state after: {:?}, result {:?}, {} ms in", ex.state(long).unwrap(), ex.result(long).unwrap(), ms(ex));
    assert_eq!(ex.state(long), Ok(TaskState::Completed));

    println!("4. reuse: one task slot, 1000 runs, each a new future with its own result");
    let mut h = create(7, Priority::Normal, "reused");
    let mut sum = 0;
    for i in 0..1000u64 {
        h = ex.attach(h, async move { i }).unwrap();
        ex.run(1, None).unwrap();
        sum += ex.result(h).unwrap().unwrap().unwrap();
    }
    println!("  sum of results {sum}");
    let s = ex.stats();
    println!("5. executor stats: {} resumptions ({:?} by priority), {} completed, {} timers fired, {} parks", s.resumed, s.per_priority, s.completed, s.timers_fired, s.parks);
    let lines = LOG.with(|l| l.borrow().len());
    assert!(lines >= 10);
}
