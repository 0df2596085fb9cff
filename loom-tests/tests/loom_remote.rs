//! loom models of attaching from other threads (`core/src/exec/remote.rs`, remote rules
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
    use keel_core::loom_api::{Strong, Weaken, handle_with, unbind_with};
    use keel_core::{AttachError, Config, HandleSlot, NoIo, TaskAttrs, TaskSlot};
    use keel_loom_tests::{Leaked, ModelExecutor, check};
    use loom::thread;

    /// A weakened twin: bind bumps the slot's epoch after it publishes the executor's
    /// address, and unbind does not bump it (remote rule 1 as it first was).
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
    fn remote_stale_handle_vs_rebind_never_reaches_the_new_executor() {
        stale_handle_vs_rebind::<Strong>();
    }

    // Preemption bound 3; fails within 0.01 s (release, 2-core machine).
    #[test]
    #[should_panic(expected = "stale handle")]
    fn remote_stale_handle_vs_rebind_epoch_at_bind_reaches_the_new_executor() {
        stale_handle_vs_rebind::<EpochAtBind>();
    }
}
