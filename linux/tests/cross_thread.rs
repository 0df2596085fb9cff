//! Attaching and waking across threads, on real threads and real parking.

use core::pin::pin;
use core::time::Duration;
use keel_core::{AttachError, Config, Executor, HandleSlot, TaskAttrs, TaskHandle, TaskSlot, rt};
use keel_linux::{RingConfig, RingDriver, SleepDriver};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

fn slot() -> &'static TaskSlot {
    Box::leak(Box::new(TaskSlot::new()))
}

fn handle_slot() -> &'static HandleSlot {
    Box::leak(Box::new(HandleSlot::new()))
}

/// An executor parked with no timer and nothing attached is woken by a foreign attach.
fn parked_executor_woken_by_foreign_attach<D: keel_core::Driver>(make: impl FnOnce() -> D + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let done = std::sync::Arc::new(AtomicU64::new(0));
    let d2 = done.clone();
    let exec_thread = std::thread::spawn(move || {
        let ex = pin!(Executor::new(make(), Config::default()).unwrap());
        let ex = ex.into_ref();
        tx.send(ex.handle(handle_slot()).unwrap()).unwrap();
        // Nothing attached, no timer, no timeout: this parks until the attach arrives.
        let n = ex.run(1, None).unwrap();
        assert_eq!(n, 1);
        assert!(ex.stats().parks >= 1, "it never parked");
        d2.load(Ordering::SeqCst)
    });
    let h = rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(50)); // let it park
    let t = slot().create(TaskAttrs::default()).unwrap();
    let d3 = done.clone();
    h.attach(t, async move {
        d3.store(7, Ordering::SeqCst);
    })
    .unwrap();
    assert_eq!(exec_thread.join().unwrap(), 7);
    // The executor is gone: its handle says so, and the body comes back.
    let again = slot().create(TaskAttrs::default()).unwrap();
    match h.attach(again, async {}) {
        Err(AttachError::ExecutorGone(_body)) => {}
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn a_parked_ringless_executor_is_woken_by_a_foreign_attach() {
    parked_executor_woken_by_foreign_attach(SleepDriver::new);
}

#[test]
fn a_parked_ring_executor_is_woken_by_a_foreign_attach() {
    parked_executor_woken_by_foreign_attach(|| RingDriver::new(RingConfig::default()).unwrap());
}

/// Two threads attach a million tasks each to a third thread's executor.
#[test]
fn two_threads_attach_a_million_tasks_each() {
    const PER_THREAD: u64 = 1_000_000;
    const POOL: usize = 64;
    let (tx, rx) = mpsc::channel();
    let ran = std::sync::Arc::new(AtomicU64::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let exec_thread = std::thread::spawn(move || {
        let ex = pin!(Executor::new(SleepDriver::new(), Config::default()).unwrap());
        let ex = ex.into_ref();
        tx.send(ex.handle(handle_slot()).unwrap()).unwrap();
        while !stop2.load(Ordering::SeqCst) || ex.attached() > 0 {
            let _ = ex.run(4096, Some(Duration::from_millis(10)));
        }
        ex.stats()
    });
    let h = rx.recv().unwrap();
    let t0 = Instant::now();
    let attachers: Vec<_> = (0..2u64)
        .map(|who| {
            let ran = ran2_clone(&ran);
            std::thread::spawn(move || {
                let mut tasks: Vec<TaskHandle> =
                    (0..POOL).map(|_| slot().create(TaskAttrs::default()).unwrap()).collect();
                let mut sum = 0u64;
                let mut i = 0u64;
                let mut retries = 0u64;
                while i < PER_THREAD {
                    let k = (i as usize) % POOL;
                    let value = who * PER_THREAD + i;
                    let ran = ran.clone();
                    match h.attach(tasks[k], async move {
                        ran.fetch_add(value, Ordering::Relaxed);
                    }) {
                        Ok(run) => {
                            tasks[k] = run;
                            sum += value;
                            i += 1;
                        }
                        // Still owned by the executor (not yet completed and released).
                        Err(AttachError::OwnedElsewhere(_)) => {
                            retries += 1;
                            std::hint::spin_loop();
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                (sum, retries)
            })
        })
        .collect();
    let mut want = 0;
    for a in attachers {
        let (sum, retries) = a.join().unwrap();
        eprintln!("attacher: {retries} retries while tasks were still owned");
        want += sum;
    }
    // Wait until everything attached has run: bounded from here, so that a slow attach
    // phase (a sanitizer build, a loaded machine) is not taken for lost tasks.
    let drain = Instant::now();
    while ran.load(Ordering::SeqCst) != want {
        assert!(drain.elapsed() < Duration::from_secs(120), "tasks lost: ran {} of {want}", ran.load(Ordering::SeqCst));
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::SeqCst);
    let stats = exec_thread.join().unwrap();
    assert_eq!(stats.completed, 2 * PER_THREAD, "{stats:?}");
    assert_eq!(ran.load(Ordering::SeqCst), want);
    eprintln!("2 x {PER_THREAD} foreign attaches in {:?}; executor parked {} times", t0.elapsed(), stats.parks);
}

fn ran2_clone(a: &std::sync::Arc<AtomicU64>) -> std::sync::Arc<AtomicU64> {
    a.clone()
}

/// A task waiting in a parked executor is woken from four threads at once. Each burst
/// resumes it at least once and never more often than it was woken; debug builds also
/// check that it is never in two queues (list rule 1).
#[test]
fn a_waker_fired_from_four_threads_wakes_a_parked_executor() {
    const ROUNDS: u32 = 20;
    const WAKES: u32 = 4 * 50;
    let (tx, rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let exec_thread = std::thread::spawn(move || {
        let ex = pin!(Executor::new(RingDriver::new(RingConfig::default()).unwrap(), Config::default()).unwrap());
        let ex = ex.into_ref();
        let polls = std::rc::Rc::new(std::cell::Cell::new(0u32));
        let p = polls.clone();
        let t = ex
            .attach(slot().create(TaskAttrs::default()).unwrap(), async move {
                loop {
                    p.set(p.get() + 1);
                    if rt::wait().await.is_err() {
                        return;
                    }
                }
            })
            .unwrap();
        ex.run(1, None).unwrap();
        let mut per_round = Vec::new();
        for _ in 0..ROUNDS {
            let before = polls.get();
            tx.send(t).unwrap();
            // Parks (no timer) until the first wake arrives.
            ex.run(usize::MAX, None).unwrap();
            // Then take whatever else the burst causes, until the wakers are done.
            done_rx.recv().unwrap();
            while ex.run(usize::MAX, Some(Duration::from_millis(10))).is_ok() {}
            assert_eq!(ex.stats().ready, [0, 0, 0]);
            per_round.push(polls.get() - before);
        }
        ex.cancel(t).unwrap();
        while ex.attached() > 0 {
            ex.run(8, Some(Duration::from_millis(10))).unwrap();
        }
        (per_round, ex.stats().parks)
    });
    while let Ok(t) = rx.recv() {
        std::thread::sleep(Duration::from_millis(2));
        let waker = t.waker();
        std::thread::scope(|s| {
            for _ in 0..4 {
                let w = waker.clone();
                s.spawn(move || {
                    for _ in 0..WAKES / 4 {
                        w.wake_by_ref();
                    }
                });
            }
        });
        if done_tx.send(()).is_err() {
            break;
        }
    }
    let (per_round, parks) = exec_thread.join().unwrap();
    assert_eq!(per_round.len(), ROUNDS as usize);
    for (i, n) in per_round.iter().enumerate() {
        assert!((1..=WAKES).contains(n), "round {i}: {n} resumptions for {WAKES} wakes");
    }
    assert!(parks >= ROUNDS as u64, "the executor did not park between bursts ({parks})");
}

/// A ring executor with nothing in flight, woken from another thread again and again,
/// parks once per wake: it does not spin (whichever unpark mechanism the probe chose: the
/// eventfd read is re-armed every time, a MsgRing CQE is taken by the next park).
#[test]
fn a_ring_executor_woken_repeatedly_parks_instead_of_spinning() {
    const WAKES: u64 = 50;
    static RESUMED: AtomicU64 = AtomicU64::new(0);
    let (tx, rx) = mpsc::channel();
    let exec_thread = std::thread::spawn(move || {
        let ex = pin!(Executor::new(RingDriver::new(RingConfig::default()).unwrap(), Config::default()).unwrap());
        let ex = ex.into_ref();
        let t = ex
            .attach(slot().create(TaskAttrs::default()).unwrap(), async move {
                for _ in 0..WAKES {
                    rt::wait().await?;
                    RESUMED.fetch_add(1, Ordering::SeqCst);
                }
                Ok(0)
            })
            .unwrap();
        ex.run(1, None).unwrap();
        tx.send(t).unwrap();
        while ex.attached() > 0 {
            if let Err(e) = ex.run(usize::MAX, Some(Duration::from_secs(5))) {
                panic!("{e}: {:?} state {:?}", ex.stats(), ex.state(t));
            }
        }
        ex.stats().parks
    });
    let t = rx.recv().unwrap();
    for k in 1..=WAKES {
        std::thread::sleep(Duration::from_millis(1));
        t.wake();
        // Wakes coalesce by design (a wake while one is pending does nothing more), so wait
        // until this one has been taken before the next. Bounded: 5 s.
        let t0 = Instant::now();
        while RESUMED.load(Ordering::SeqCst) < k {
            assert!(t0.elapsed() < Duration::from_secs(5), "wake {k} was lost");
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    let parks = exec_thread.join().unwrap();
    assert!(parks <= 4 * WAKES, "{parks} parks for {WAKES} wakes: the executor spins");
}
