//! The work dispatcher on real worker threads.

use core::time::Duration;
use keel_core::{AttachError, Dispatcher, Priorities, Priority, TaskAttrs, TaskHandle, TaskSlot};
use keel_linux::pool::{self, ThreadPool};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

fn task(cpu: Priority) -> TaskHandle {
    let s: &'static TaskSlot = Box::leak(Box::new(TaskSlot::new()));
    s.create(TaskAttrs { priority: Priorities { cpu, io: Priority::Normal }, name: "d" }).unwrap()
}

fn spin_work(i: u64) -> u64 {
    let mut x = i | 1;
    for _ in 0..200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

#[test]
fn ten_thousand_tasks_of_mixed_priorities_on_two_workers() {
    const N: u64 = 10_000;
    let d: &'static Dispatcher = Box::leak(Box::new(Dispatcher::new()));
    let results: Arc<Vec<AtomicU64>> = Arc::new((0..N).map(|_| AtomicU64::new(0)).collect());
    let started = Arc::new(AtomicU64::new(0));
    let order: Arc<Vec<AtomicU64>> = Arc::new((0..N).map(|_| AtomicU64::new(0)).collect());
    let prio = |i: u64| [Priority::Low, Priority::Normal, Priority::High][(i % 3) as usize];
    // Everything waits before the workers start, so priority order must show.
    for i in 0..N {
        let (results, started, order) = (results.clone(), started.clone(), order.clone());
        d.submit(task(prio(i)), async move {
            order[i as usize].store(started.fetch_add(1, Ordering::SeqCst), Ordering::SeqCst);
            results[i as usize].store(spin_work(i), Ordering::SeqCst);
        })
        .unwrap();
    }
    assert_eq!(d.remaining(), N);
    let pool = ThreadPool::start(d, 2, false).unwrap();
    assert!(pool.wait(0, Duration::from_secs(60)), "tasks did not finish");
    let per_worker = pool.quit_and_join().unwrap();
    assert_eq!(per_worker.iter().sum::<u64>(), N);
    for i in 0..N {
        assert_eq!(results[i as usize].load(Ordering::SeqCst), spin_work(i), "task {i}");
    }
    // Priority order where work was waiting: once a lower level has started, at most one
    // task of a higher level can still start after it: the one the other worker had
    // already taken (it may be preempted between taking it and starting it).
    let starts = |p: Priority| (0..N).filter(move |&i| prio(i) == p).map(|i| order[i as usize].load(Ordering::SeqCst));
    let normal_first = starts(Priority::Normal).min().unwrap();
    let low_first = starts(Priority::Low).min().unwrap();
    let late_high = starts(Priority::High).filter(|&s| s > normal_first).count();
    let late_normal = starts(Priority::Normal).filter(|&s| s > low_first).count();
    assert!(late_high <= 1, "{late_high} high tasks started after the first normal one");
    assert!(late_normal <= 1, "{late_normal} normal tasks started after the first low one");
}

#[test]
fn workers_take_work_submitted_while_they_are_parked_and_quit_on_request() {
    let d: &'static Dispatcher = Box::leak(Box::new(Dispatcher::new()));
    let pool = ThreadPool::start(d, 2, true).unwrap();
    std::thread::sleep(Duration::from_millis(30)); // both park with nothing to do
    let sum = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for i in 0..100u64 {
        let s = sum.clone();
        handles.push(
            d.submit(task(Priority::Normal), async move {
                s.fetch_add(i, Ordering::SeqCst);
            })
            .unwrap(),
        );
    }
    assert!(pool::wait(d, 0, Duration::from_secs(10)), "parked workers were not woken");
    assert_eq!(sum.load(Ordering::SeqCst), 4950);
    // Tasks come back released: the same handles submit again.
    for h in handles {
        let s = sum.clone();
        let mut r = d.submit(h, async move {
            s.fetch_add(1, Ordering::SeqCst);
        });
        while let Err(AttachError::OwnedElsewhere(b)) = r {
            std::thread::yield_now();
            r = d.submit(h, b);
        }
        r.unwrap();
    }
    assert!(pool::wait(d, 0, Duration::from_secs(10)));
    assert_eq!(sum.load(Ordering::SeqCst), 5050);
    assert_eq!(pool::quit(d, 1, Duration::from_secs(5)), 1);
    let rest = pool.quit_and_join().unwrap();
    assert_eq!(rest.len(), 2);
}

/// Dispatch rule 5: `quit` drains. Tasks submitted right before `quit_and_join` (no
/// `wait`) all run before the workers return: none is stranded in the dispatcher.
#[test]
fn quit_right_after_submit_runs_every_task_first() {
    const N: u64 = 2_000;
    let d: &'static Dispatcher = Box::leak(Box::new(Dispatcher::new()));
    let pool = ThreadPool::start(d, 2, false).unwrap();
    let ran = Arc::new(AtomicU64::new(0));
    for i in 0..N {
        let ran = ran.clone();
        d.submit(task(Priority::Normal), async move {
            std::hint::black_box(spin_work(i));
            ran.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
    }
    let per_worker = pool.quit_and_join().unwrap();
    assert_eq!(ran.load(Ordering::Relaxed), N, "a task submitted before quit was stranded");
    assert_eq!(per_worker.iter().sum::<u64>(), N);
    assert_eq!(d.remaining(), 0);
    assert_eq!(d.double_takes(), 0);
}
