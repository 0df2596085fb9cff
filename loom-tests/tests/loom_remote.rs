//! loom models of attaching from other threads (`core/src/mailbox/mod.rs`, remote rules
//! 1-3): a handle of a dropped executor never reaches the next executor bound to the same
//! `HandleSlot`; a foreign attach and the owner's calls on the same task never touch the
//! task's local fields at the same time (the claim publishes the owner only once the task
//! is whole).
//!
//! Bound: `preemption_bound = Some(3)` (`LOOM_MAX_PREEMPTIONS=3`), 2 threads counting the
//! main one; debug assertions on (`make loom`). Runtimes are measured on the project's
//! 2-core machine, release build, and given per test.

#[cfg(not(keel_loom))]
#[test]
fn loom_models_run_with_make_loom() {
    println!("{}", keel_loom_tests::SKIPPED);
}

#[cfg(keel_loom)]
mod models {
    use keel_core::loom_api::{Strong, Weaken, attach_with, handle_with, unbind_with};
    use keel_core::{AttachError, Config, DestroyError, HandleSlot, NoIo, RunError, TaskAttrs, TaskSlot};
    use keel_loom_tests::{Leaked, ModelExecutor, check};
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::thread;

    /// A weakened twin: bind bumps the slot's epoch after it publishes the executor's
    /// address, and unbind does not bump it (the bump in the wrong place: remote rule 1 says unbind).
    struct EpochAtBind;
    impl Weaken for EpochAtBind {
        const EPOCH_AT_UNBIND: bool = false;
    }

    /// E1 is bound to a slot and dropped; a thread attaches through E1's handle while the
    /// main thread binds E2 to the same slot. The attach must say `ExecutorGone`; it must
    /// never reach E2. (The attacher does not race E1's drop here: that half of remote
    /// rule 1 is a store-load pattern on `SeqCst` accesses, which loom models as AcqRel
    /// only; the real-thread test in `linux/tests/stale_handle.rs` races it.)
    fn stale_handle_vs_rebind<W: Weaken>() {
        check(3, || {
            let hs = Leaked::new(HandleSlot::new());
            let task = Leaked::new(TaskSlot::<64>::new());
            {
                let h1 = {
                    let e1 = ModelExecutor::new(NoIo, Config::default());
                    let h1 = handle_with::<W>(e1.get(), hs.get()).expect("bind E1");
                    unbind_with::<W>(e1.get());
                    h1
                };
                let t = task.get().create(TaskAttrs::default()).unwrap();
                let attacher = thread::spawn(move || match h1.attach(t, async {}) {
                    Ok(_) => true,
                    Err(AttachError::ExecutorGone(_)) => false,
                    Err(e) => panic!("attach failed: {e}"),
                });
                let e2 = ModelExecutor::new(NoIo, Config::default());
                let _h2 = handle_with::<W>(e2.get(), hs.get()).expect("bind E2");
                let attached = attacher.join().unwrap();
                // Every push is complete (joined): E2 takes whatever reached it.
                let _ = e2.get().run(1, None);
                assert!(
                    !attached && e2.get().stats().inbox_taken == 0,
                    "stale handle: an attach through dropped E1's handle reached E2"
                );
            }
            // SAFETY: joined, executors dropped.
            unsafe {
                task.free();
                hs.free();
            }
        });
    }

    // Preemption bound 3; 4 executions, under 0.01 s (release, 2-core machine).
    #[test]
    fn remote_rule_1_stale_handle_vs_rebind_never_reaches_the_new_executor() {
        stale_handle_vs_rebind::<Strong>();
    }

    // Preemption bound 3; fails within 0.01 s (release, 2-core machine).
    #[test]
    #[should_panic(expected = "stale handle")]
    fn remote_rule_1_twin_epoch_at_bind_reaches_the_new_executor() {
        stale_handle_vs_rebind::<EpochAtBind>();
    }

    /// A weakened twin: a foreign claim sets the owner at once, before the body and the
    /// local fields are written (remote rule 2 says the owner is published only once the task is whole).
    struct OwnerAtClaim;
    impl Weaken for OwnerAtClaim {
        const CLAIM_SENTINEL: bool = false;
    }

    /// Thread B attaches an unowned task through E's handle while E's own thread attaches
    /// the same task locally. Exactly one attach wins, the task runs that body once, and
    /// the loser's body comes back; E's thread never acts on the task while B writes it.
    fn foreign_attach_vs_owner_attach<W: Weaken>() {
        check(3, || {
            let hs = Leaked::new(HandleSlot::new());
            let task = Leaked::new(TaskSlot::<64>::new());
            let ran = Arc::new(AtomicUsize::new(0));
            {
                let ex = ModelExecutor::new(NoIo, Config::default());
                let e = ex.get();
                let h = handle_with::<Strong>(e, hs.get()).expect("bind");
                let t = task.get().create(TaskAttrs::default()).unwrap();
                let r = ran.clone();
                let b = thread::spawn(move || {
                    attach_with::<W, _>(&h, t, async move {
                        // Relaxed: read after the executor ran, on its thread.
                        r.fetch_add(1, Ordering::Relaxed);
                    })
                    .is_ok()
                });
                let r = ran.clone();
                let local = e
                    .attach(t, async move {
                        // Relaxed: as above.
                        r.fetch_add(10, Ordering::Relaxed);
                    })
                    .is_ok();
                let foreign = b.join().unwrap();
                assert!(!(local && foreign), "foreign attach raced the owner: both attaches of one task succeeded");
                assert!(local || foreign, "neither attach succeeded");
                for _ in 0..4 {
                    if e.run(4, None) == Err(RunError::Stalled) {
                        break;
                    }
                }
                let want = if local { 10 } else { 1 };
                assert_eq!(ran.load(Ordering::Relaxed), want, "the winning body did not run exactly once");
            }
            // SAFETY: joined, executor dropped.
            unsafe {
                task.free();
                hs.free();
            }
        });
    }

    // Preemption bound 3; 10 executions, under 0.01 s (release, 2-core machine).
    #[test]
    fn remote_rule_2_foreign_attach_vs_owner_attach_one_wins() {
        foreign_attach_vs_owner_attach::<Strong>();
    }

    // Preemption bound 3; fails within 0.01 s (release, 2-core machine).
    #[test]
    #[should_panic(expected = "foreign attach raced the owner")]
    fn remote_rule_2_twin_owner_at_claim_both_attaches_win() {
        foreign_attach_vs_owner_attach::<OwnerAtClaim>();
    }

    /// Thread B attaches an unowned task through E's handle while E's own thread destroys
    /// it. Either the destroy comes first (the attach then fails) or the destroy says the
    /// task is owned elsewhere; never may E's thread bump or release a task B is writing.
    fn foreign_attach_vs_owner_destroy<W: Weaken>() {
        check(3, || {
            let hs = Leaked::new(HandleSlot::new());
            let task = Leaked::new(TaskSlot::<64>::new());
            {
                let ex = ModelExecutor::new(NoIo, Config::default());
                let e = ex.get();
                let h = handle_with::<Strong>(e, hs.get()).expect("bind");
                let t = task.get().create(TaskAttrs::default()).unwrap();
                let b = thread::spawn(move || attach_with::<W, _>(&h, t, async {}).is_ok());
                let destroyed = e.destroy(t);
                let foreign = b.join().unwrap();
                assert!(
                    matches!(destroyed, Ok(()) | Err(DestroyError::OwnedElsewhere)),
                    "foreign attach raced the owner: destroy acted on a task being claimed ({destroyed:?})"
                );
                assert!(!(foreign && destroyed.is_ok()), "foreign attach raced the owner: attached and destroyed");
                for _ in 0..4 {
                    if e.run(4, None) == Err(RunError::Stalled) {
                        break;
                    }
                }
            }
            // SAFETY: joined, executor dropped.
            unsafe {
                task.free();
                hs.free();
            }
        });
    }

    // Preemption bound 3; 26 executions, under 0.01 s (release, 2-core machine).
    #[test]
    fn remote_rule_2_foreign_attach_vs_owner_destroy_never_both() {
        foreign_attach_vs_owner_destroy::<Strong>();
    }

    // Preemption bound 3; fails within 0.01 s (release, 2-core machine).
    #[test]
    #[should_panic(expected = "foreign attach raced the owner")]
    fn remote_rule_2_twin_owner_at_claim_destroy_acts_on_it() {
        foreign_attach_vs_owner_destroy::<OwnerAtClaim>();
    }
}
