//! A handle of a dropped executor never attaches to the next executor bound to the same
//! `HandleSlot` (remote rule 1), on real threads.

use core::pin::pin;
use core::time::Duration;
use keel_core::{AttachError, Config, Executor, ExecutorHandle, HandleSlot, NoIo, TaskAttrs, TaskSlot};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
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
            let (stop, attempts, handles, published) = (stop.clone(), attempts.clone(), handles.clone(), published.clone());
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
