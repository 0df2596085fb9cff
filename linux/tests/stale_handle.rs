//! A handle of a dropped executor never attaches to the next executor bound to the same
//! `HandleSlot` (remote rule 1), on real threads.

use core::pin::pin;
use core::time::Duration;
use keel_core::{AttachError, Config, Executor, ExecutorHandle, HandleSlot, NoIo, TaskAttrs, TaskSlot};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// The main thread binds executors to one slot and drops them, one after another; after
/// each drop it publishes the dropped executor's handle. Two threads attach, without
/// pause, through the newest published handle, racing the next executor's bind: every
/// attach must say `ExecutorGone`, and no rebound executor may take a task. Bounded:
/// 300,000 rebinds or 3 s, whichever comes first.
#[test]
fn a_stale_handle_never_reaches_a_rebound_executor() {
    const REBINDS: usize = 300_000;
    let slot: &'static HandleSlot = Box::leak(Box::new(HandleSlot::new()));
    let handles: Arc<Vec<OnceLock<ExecutorHandle>>> = Arc::new((0..REBINDS).map(|_| OnceLock::new()).collect());
    let published = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let attackers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, attempts, handles, published) =
                (stop.clone(), attempts.clone(), handles.clone(), published.clone());
            std::thread::spawn(move || {
                let t = Box::leak(Box::new(TaskSlot::<64>::new())).create(TaskAttrs::default()).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    // Acquire: pairs with the publisher's Release (the handle is set).
                    let n = published.load(Ordering::Acquire);
                    let Some(stale) = n.checked_sub(1).and_then(|i| handles[i].get()) else {
                        std::hint::spin_loop();
                        continue;
                    };
                    attempts.fetch_add(1, Ordering::Relaxed);
                    match stale.attach(t, async {}) {
                        Err(AttachError::ExecutorGone(_)) => {}
                        Ok(_) => return Err("an attach through a dropped executor's handle returned Ok"),
                        Err(_) => return Err("an attach through a dropped executor's handle failed otherwise"),
                    }
                }
                Ok(())
            })
        })
        .collect();
    let start = Instant::now();
    let mut rebinds = 0;
    let mut taken = 0;
    while rebinds < REBINDS && start.elapsed() < Duration::from_secs(3) {
        let h = {
            let ex = pin!(Executor::new(NoIo, Config::default()).unwrap());
            let ex = ex.into_ref();
            let h = ex.handle(slot).expect("rebind the slot");
            let _ = ex.run(1, Some(Duration::ZERO));
            taken += ex.stats().inbox_taken;
            h
        };
        // The executor is dropped: its handle is stale from here on.
        handles[rebinds].set(h).unwrap();
        // Release: publishes the handle to the attackers' Acquire.
        published.store(rebinds + 1, Ordering::Release);
        rebinds += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap().unwrap();
    }
    println!("{rebinds} rebinds, {} stale attaches, {:.2?}", attempts.load(Ordering::Relaxed), start.elapsed());
    assert_eq!(taken, 0, "a rebound executor took a task attached through a stale handle");
    assert!(rebinds >= 100, "only {rebinds} rebinds: the test did not exercise the race");
}

/// A foreign thread attaches one task through the executor's handle, again and again,
/// while the executor's own thread attaches the same task locally between runs (remote
/// rule 2); each side releases or lets go of the task once its run completes, so the two
/// race for every run. Whichever attach wins, its body runs exactly once and the other
/// is refused; the owner never takes the task for its own while the foreign attacher
/// writes it (both succeeding would lose one body, or attach the task twice). Bounded: 3 s or 1,000,000 foreign tries.
#[test]
fn a_foreign_attach_racing_the_owners_attach_runs_one_body() {
    const FOREIGN: u64 = 1_000_000;
    let slot: &'static HandleSlot = Box::leak(Box::new(HandleSlot::new()));
    let t = Box::leak(Box::new(TaskSlot::<64>::new())).create(TaskAttrs::default()).unwrap();
    // The handle of the task's latest run, whichever side attached it.
    let latest = Arc::new(Mutex::new(t));
    let ran = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // The foreign attaches that succeeded, published before `stop`: an attach pushed onto
    // the inbox counts in `attached()` only once the owner takes it, so the owner runs on
    // until each of them has run (or a deadline says one was lost).
    let foreign_won = Arc::new(AtomicU64::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    let (ran2, stop2, latest2, won2) = (ran.clone(), stop.clone(), latest.clone(), foreign_won.clone());
    let owner = std::thread::spawn(move || {
        let ex = pin!(Executor::new(NoIo, Config::default()).unwrap());
        let ex = ex.into_ref();
        tx.send(ex.handle(slot).unwrap()).unwrap();
        let mut local = 0u64;
        let mut stopped_at = None;
        loop {
            // SeqCst: pairs with the stores of `foreign_won` then `stop` below.
            if stop2.load(Ordering::SeqCst) {
                let since = *stopped_at.get_or_insert_with(Instant::now);
                let foreign_ran = ran2.load(Ordering::Relaxed) & 0xFFFF_FFFF;
                if ex.attached() == 0 && foreign_ran >= won2.load(Ordering::SeqCst) {
                    break;
                }
                if since.elapsed() > Duration::from_secs(10) {
                    break; // the assertion below names what was lost
                }
            }
            let r = ran2.clone();
            let cur = *latest2.lock().unwrap();
            if let Ok(run) = ex.attach(cur, async move {
                r.fetch_add(1 << 32, Ordering::Relaxed);
            }) {
                local += 1;
                *latest2.lock().unwrap() = run;
            }
            let _ = ex.run(64, Some(Duration::ZERO));
            // A completed local run stays ours: give the task back, so that the foreign
            // side can attach it too (foreign runs are let go of on completion).
            let cur = *latest2.lock().unwrap();
            if matches!(ex.result(cur), Ok(Some(_))) {
                let _ = ex.release(cur);
            }
        }
        local
    });
    let h: ExecutorHandle = rx.recv().unwrap();
    let start = Instant::now();
    let (mut foreign, mut tries) = (0u64, 0u64);
    while tries < FOREIGN && start.elapsed() < Duration::from_secs(3) {
        tries += 1;
        let r = ran.clone();
        let cur = *latest.lock().unwrap();
        match h.attach(cur, async move {
            r.fetch_add(1, Ordering::Relaxed);
        }) {
            Ok(run) => {
                foreign += 1;
                *latest.lock().unwrap() = run;
            }
            Err(AttachError::OwnedElsewhere(_) | AttachError::Stale(_)) => {}
            Err(e) => panic!("foreign attach: {e}"),
        }
    }
    // SeqCst: the owner reads `stop`, then `foreign_won`.
    foreign_won.store(foreign, Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let local = owner.join().unwrap();
    let ran = ran.load(Ordering::Relaxed);
    println!("{foreign} foreign and {local} local attaches in {tries} tries, {:.2?}", start.elapsed());
    assert_eq!((ran & 0xFFFF_FFFF, ran >> 32), (foreign, local), "a body was lost or ran twice");
    assert!(foreign > 0 && local > 0, "one side never won: the race was not exercised");
}
