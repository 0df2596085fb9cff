//! Fibers handed over from other threads (keel-core's fiber rule 8) on real threads: on
//! a ring executor with guarded mmap stacks, on both stackful switchers, with keel-linux's
//! panic catcher taken from the executor that runs them, and on the thread pool's
//! workers through the dispatcher.
#![cfg(all(target_os = "linux", target_env = "gnu"))]

use core::pin::pin;
use core::time::Duration;
use keel_core::{
    Dispatcher, Executor, Fiber, FiberAttrs, HandleSlot, Priorities, Priority, RunError, TaskAttrs, TaskHandle,
    TaskResult, TaskSlot,
};
use keel_linux::pool::ThreadPool;
use keel_linux::ucontext::UcontextSwitch;
use keel_linux::{MmapStacks, RingConfig, RingDriver};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const ATTRS: FiberAttrs = FiberAttrs { stack_size: 64 * 1024, ..FiberAttrs::DEFAULT };

fn task() -> TaskHandle {
    let s: &'static TaskSlot = Box::leak(Box::new(TaskSlot::new()));
    s.create(TaskAttrs { priority: Priorities::default(), name: "remote" }).unwrap()
}

/// Yields, sleeps on the ring's clock, checks it runs on `owner`, adds `v` to `out`.
fn body(
    out: &Arc<AtomicU64>,
    owner: std::thread::ThreadId,
    v: u64,
) -> impl FnOnce(&mut Fiber) -> TaskResult + Send + 'static {
    let out = out.clone();
    move |f: &mut Fiber| {
        f.yield_now()?;
        f.sleep(Duration::from_millis(1))?;
        assert_eq!(std::thread::current().id(), owner, "a remote fiber ran off its executor's thread");
        out.fetch_add(v, Ordering::SeqCst);
        Ok(v)
    }
}

fn run_until<D: keel_core::Driver, S: keel_core::StackProvider>(
    ex: core::pin::Pin<&Executor<D, S>>,
    done: impl Fn() -> bool,
) {
    for _ in 0..20_000 {
        if done() {
            return;
        }
        match ex.run(64, Some(Duration::from_millis(1))) {
            Ok(_) | Err(RunError::TimedOut) => {}
            Err(e) => panic!("run: {e}"),
        }
    }
    panic!("the remote fibers did not finish");
}

/// Fibers of both switchers attached from another thread to a parked ring executor: each
/// wakes it, suspends on the ring's timers and finishes on the executor's thread; a
/// panicking one is caught by the executor's catcher and the executor goes on; every
/// stack is back in the pool afterwards.
#[test]
fn remote_fibers_of_both_switchers_suspend_on_a_ring_executor_and_a_panic_is_caught() {
    let ex = pin!(
        Executor::with_stacks(
            RingDriver::new(RingConfig::default()).unwrap(),
            MmapStacks::new().unwrap(),
            keel_linux::panic::config()
        )
        .unwrap()
    );
    let ex = ex.into_ref();
    let handle = ex.handle(Box::leak(Box::new(HandleSlot::new()))).unwrap();
    let owner = std::thread::current().id();
    let out = Arc::new(AtomicU64::new(0));
    let panicked = Arc::new(AtomicU64::new(0));
    std::thread::scope(|s| {
        let (out, panicked) = (&out, &panicked);
        s.spawn(move || {
            for i in 0..16u64 {
                if i % 2 == 0 {
                    handle.attach_fiber(task(), ATTRS, body(out, owner, i)).map_err(|_| "refused").unwrap();
                } else {
                    handle
                        .attach_fiber_with::<UcontextSwitch, _, _>(task(), ATTRS, body(out, owner, i))
                        .map_err(|_| "refused")
                        .unwrap();
                }
            }
            let p = panicked.clone();
            handle
                .attach_fiber(task(), ATTRS, move |f: &mut Fiber| -> TaskResult {
                    f.yield_now()?;
                    p.fetch_add(1, Ordering::SeqCst);
                    panic!("a remote fiber panics");
                })
                .map_err(|_| "refused")
                .unwrap();
        });
        run_until(ex, || out.load(Ordering::SeqCst) == (0..16).sum::<u64>() && panicked.load(Ordering::SeqCst) == 1);
    });
    run_until(ex, || ex.attached() == 0);
    assert_eq!(ex.stats().completed, 17);
    assert_eq!(ex.stack_stats().in_use, 0, "a remote fiber's stack was not given back");
}

/// Dispatched fibers on the thread pool's workers: each yields and sleeps on its worker
/// and finishes there; the pool drains them all.
#[test]
fn dispatched_fibers_suspend_on_the_thread_pool_workers() {
    if !Dispatcher::supported() {
        println!("skipped: this CPU has no cmpxchg16b, which the dispatcher needs");
        return;
    }
    const N: u64 = 200;
    let d: &'static Dispatcher = Box::leak(Box::new(Dispatcher::new()));
    let out = Arc::new(AtomicU64::new(0));
    let threads = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    for i in 0..N {
        let (out, threads) = (out.clone(), threads.clone());
        let t = TaskSlot::new();
        let t: &'static TaskSlot = Box::leak(Box::new(t));
        let prio = Priorities {
            cpu: [Priority::High, Priority::Normal, Priority::Low][(i % 3) as usize],
            ..Default::default()
        };
        let run = t.create(TaskAttrs { priority: prio, name: "dispatched" }).unwrap();
        d.submit_fiber(run, ATTRS, move |f: &mut Fiber| -> TaskResult {
            let before = std::thread::current().id();
            f.yield_now()?;
            f.sleep(Duration::from_micros(200))?;
            assert_eq!(std::thread::current().id(), before, "a dispatched fiber moved between workers");
            threads.lock().unwrap().insert(before);
            out.fetch_add(i, Ordering::SeqCst);
            Ok(i)
        })
        .map_err(|_| "refused")
        .unwrap();
    }
    let pool = ThreadPool::start(d, 2, false).unwrap();
    assert!(pool.wait(0, Duration::from_secs(60)), "the dispatched fibers did not finish");
    let per_worker = pool.quit_and_join().unwrap();
    assert_eq!(per_worker.iter().sum::<u64>(), N);
    assert_eq!(out.load(Ordering::SeqCst), (0..N).sum::<u64>());
    assert!(!threads.lock().unwrap().is_empty());
}
