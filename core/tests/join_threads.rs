//! Joins from other threads on real threads (join rule 5, wake rule 8): a thread blocked
//! in `join_blocking`, and a task of an executor on another thread. The thread's blocking
//! piece here is a futex made of a mutex and a condition variable (the value check and
//! the wake both under the mutex, as the kernel's futex does), so a wake the executor
//! failed to send would leave the thread blocked until its deadline. The races are
//! loom's (`loom-tests/tests/loom_join.rs`); keel-linux's `futex(2)` piece has its own
//! test there.

mod common;
use common::*;
use core::pin::pin;
use core::time::Duration;
use keel_core::join::{ThreadWait, join, join_blocking, join_send};
use keel_core::{Config, Executor, HandleSlot, JoinError, NoIo, Priority, RunError, TaskError, TaskHandle, rt};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

static LOCK: Mutex<()> = Mutex::new(());
static CV: Condvar = Condvar::new();
static WAKES: AtomicUsize = AtomicUsize::new(0);
static BLOCKED: AtomicBool = AtomicBool::new(false);

/// A futex emulation: `wait` sleeps under the mutex only while the word still holds
/// `expected`; `wake_all` notifies under the mutex.
struct CondvarFutex;

impl ThreadWait for CondvarFutex {
    type Deadline = Instant;
    fn deadline_after(timeout: Duration) -> Instant {
        Instant::now() + timeout
    }
    fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> bool {
        let guard = LOCK.lock().unwrap();
        if word.load(Ordering::Acquire) != expected {
            return true;
        }
        BLOCKED.store(true, Ordering::SeqCst);
        match deadline {
            None => drop(CV.wait(guard).unwrap()),
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                drop(CV.wait_timeout(guard, left).unwrap());
            }
        }
        deadline.is_none_or(|at| Instant::now() < at)
    }
    fn wake_all(_: &AtomicU32) {
        WAKES.fetch_add(1, Ordering::SeqCst);
        let _guard = LOCK.lock().unwrap();
        CV.notify_all();
    }
}

/// Runs `ex` until nothing is attached; `NoIo` parks as `Stalled`, so idle passes return
/// at once (bounded: the other thread finishes its part within the bound).
fn run_until_idle(ex: core::pin::Pin<&Executor<NoIo>>) {
    let start = Instant::now();
    while ex.attached() > 0 {
        match ex.run(64, None) {
            Ok(_) | Err(RunError::Stalled) => std::thread::yield_now(),
            Err(e) => panic!("run: {e}"),
        }
        assert!(start.elapsed() < Duration::from_secs(20), "runaway: the join never completed");
    }
}

/// The tests here share the futex statics: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
fn a_thread_blocked_in_join_is_woken_by_the_runs_end() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    BLOCKED.store(false, Ordering::SeqCst);
    let ex = pin!(Executor::new(NoIo, Config::default()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach(task(Priority::Normal, "awaited"), async {
            rt::wait().await?;
            Ok::<u64, TaskError>(77)
        })
        .unwrap();
    ex.run(1, None).unwrap();
    let wakes = WAKES.load(Ordering::SeqCst);
    std::thread::scope(|s| {
        let joiner = s.spawn(move || join_blocking::<CondvarFutex>(t, Some(Duration::from_secs(30))));
        // The thread registers, announces and blocks; the executor takes the announce.
        let start = Instant::now();
        while !BLOCKED.load(Ordering::SeqCst) {
            assert!(start.elapsed() < Duration::from_secs(20), "the joining thread never blocked");
            std::thread::yield_now();
        }
        ex.wake(t);
        run_until_idle(ex);
        assert_eq!(joiner.join().unwrap(), Ok(Ok(77)));
    });
    assert!(WAKES.load(Ordering::SeqCst) > wakes, "the run's end did not wake the blocked thread");
}

#[test]
fn a_blocked_thread_times_out_and_then_sees_a_cancelled_run_and_stale_handles() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ex = pin!(Executor::new(NoIo, Config::default()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach(task(Priority::Normal, "forever"), async {
            rt::wait().await?;
            Ok::<u64, TaskError>(1)
        })
        .unwrap();
    ex.run(1, None).unwrap();
    let never = task(Priority::Normal, "never");
    std::thread::scope(|s| {
        let r = s.spawn(move || join_blocking::<CondvarFutex>(t, Some(Duration::from_millis(20)))).join();
        assert_eq!(r.unwrap(), Err(JoinError::TimedOut));
        assert_eq!(
            s.spawn(move || join_blocking::<CondvarFutex>(never, None)).join().unwrap(),
            Err(JoinError::NeverAttached)
        );
    });
    // The timed-out join freed its entry; the awaited task runs on, and is cancelled.
    ex.cancel(t).unwrap();
    run_until_idle(ex);
    std::thread::scope(|s| {
        let r = s.spawn(move || join_blocking::<CondvarFutex>(t, None)).join().unwrap();
        assert_eq!(r, Ok(Err(TaskError::Cancelled)));
    });
    let next: TaskHandle = ex.attach(t, async { 2u64 }).unwrap();
    run_until_idle(ex);
    std::thread::scope(|s| {
        assert_eq!(s.spawn(move || join_blocking::<CondvarFutex>(t, None)).join().unwrap(), Err(JoinError::Stale));
        assert_eq!(s.spawn(move || join_blocking::<CondvarFutex>(next, None)).join().unwrap(), Ok(Ok(2)));
    });
}

#[test]
fn a_task_on_another_threads_executor_joins_and_is_woken_across() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ex = pin!(Executor::new(NoIo, Config::default()).unwrap());
    let ex = ex.into_ref();
    let release = std::sync::Arc::new(AtomicBool::new(false));
    let r = release.clone();
    let awaited = ex
        .attach(task(Priority::Normal, "awaited"), async move {
            // Yields until the joiner on the other thread has started waiting.
            let mut spins = 0u64;
            while !r.load(Ordering::SeqCst) {
                rt::yield_now().await?;
                spins += 1;
                assert!(spins < 100_000_000, "runaway");
            }
            Ok::<u64, TaskError>(5)
        })
        .unwrap();
    let joined = AtomicU32::new(0);
    std::thread::scope(|s| {
        let joiner = s.spawn(|| {
            let other = pin!(Executor::new(NoIo, Config::default()).unwrap());
            let other = other.into_ref();
            let w = other
                .attach(task(Priority::Normal, "joiner"), async move {
                    let r = join(awaited).await;
                    r.unwrap()
                })
                .unwrap();
            other.run(1, None).unwrap();
            release.store(true, Ordering::SeqCst);
            run_until_idle(other);
            joined.store(other.result(w).unwrap().unwrap().unwrap() as u32, Ordering::SeqCst);
        });
        // The executor keeps taking its inbox until the joiner returned (an announce may
        // land after its task ended, as in a real run loop).
        let start = Instant::now();
        while joined.load(Ordering::SeqCst) == 0 || ex.attached() > 0 {
            match ex.run(64, None) {
                Ok(_) | Err(RunError::Stalled) => std::thread::yield_now(),
                Err(e) => panic!("run: {e}"),
            }
            assert!(start.elapsed() < Duration::from_secs(20), "runaway");
        }
        joiner.join().unwrap();
    });
    assert_eq!(joined.load(Ordering::SeqCst), 5);
}

/// A future attached from another thread (through an `ExecutorHandle`, so it must be
/// `Send`) joins a task of a third thread's executor with `join_send`.
#[test]
fn a_future_attached_from_another_thread_joins_with_join_send() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ex = pin!(Executor::new(NoIo, Config::default()).unwrap());
    let ex = ex.into_ref();
    let release = std::sync::Arc::new(AtomicBool::new(false));
    let r = release.clone();
    let awaited = ex
        .attach(task(Priority::Normal, "awaited"), async move {
            let mut spins = 0u64;
            while !r.load(Ordering::SeqCst) {
                rt::yield_now().await?;
                spins += 1;
                assert!(spins < 100_000_000, "runaway");
            }
            Ok::<u64, TaskError>(9)
        })
        .unwrap();
    let got = std::sync::Arc::new(AtomicU32::new(0));
    let hs: &'static HandleSlot = Box::leak(Box::new(HandleSlot::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let attached = std::sync::Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        let (a, done) = (attached.clone(), got.clone());
        s.spawn(move || {
            let other = pin!(Executor::new(NoIo, Config::default()).unwrap());
            let other = other.into_ref();
            tx.send(other.handle(hs).unwrap()).unwrap();
            let start = Instant::now();
            // The attach arrives through the inbox: run until the joiner has returned.
            while !a.load(Ordering::SeqCst) || done.load(Ordering::SeqCst) == 0 || other.attached() > 0 {
                match other.run(64, None) {
                    Ok(_) | Err(RunError::Stalled) => std::thread::yield_now(),
                    Err(e) => panic!("run: {e}"),
                }
                assert!(start.elapsed() < Duration::from_secs(20), "the joiner never returned");
            }
        });
        let handle = rx.recv().unwrap();
        let g = got.clone();
        handle
            .attach(task(Priority::Normal, "joiner"), async move {
                let r = join_send(awaited, Some(Duration::from_secs(20))).await;
                g.store(r.unwrap().unwrap() as u32, Ordering::SeqCst);
            })
            .map_err(|_| "refused")
            .unwrap();
        attached.store(true, Ordering::SeqCst);
        release.store(true, Ordering::SeqCst);
        // The executor keeps running (taking its inbox) as a real run loop does, until the
        // joiner returned: an announce that arrives after its task ended is taken there.
        let start = Instant::now();
        while got.load(Ordering::SeqCst) == 0 || ex.attached() > 0 {
            match ex.run(64, None) {
                Ok(_) | Err(RunError::Stalled) => std::thread::yield_now(),
                Err(e) => panic!("run: {e}"),
            }
            assert!(start.elapsed() < Duration::from_secs(20), "runaway");
        }
    });
    assert_eq!(got.load(Ordering::SeqCst), 9);
}
