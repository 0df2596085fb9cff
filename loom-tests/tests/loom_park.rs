//! loom models of parking (`core/src/mailbox/mod.rs`, park rules 1-3): the executor
//! announces PARKED, fences, re-checks its inbox and parks; other threads push, fence,
//! and unpark it if they see PARKED. No unpark is missed: the executor always ends up
//! seeing every item. The eventfd, futex and ring that park a real executor cannot run
//! under loom; the models park on `keel_loom_tests::Parker` (loom's `park`/`unpark`
//! behind keel's `Unparker`, and behind the `Driver` trait's `park`). A park that no
//! thread will ever end returns `Quiet` (a real executor would sleep forever): if an
//! item is in the inbox then, its unpark was missed.
//!
//! Bound: `preemption_bound = Some(3)` in every model (`LOOM_MAX_PREEMPTIONS=3`), at
//! most 4 threads counting the main one; debug assertions on (`make loom`). Runtimes are
//! measured on the project's 2-core machine, release build, and given per test.

#[cfg(not(keel_loom))]
#[test]
fn loom_models_run_with_make_loom() {
    println!("{}", keel_loom_tests::SKIPPED);
}

#[cfg(keel_loom)]
mod models {
    use core::ptr::NonNull;
    use keel_core::loom_api::{Inbox, InboxNode, Pop, Recheck as Found, Remote, Strong, Weaken};
    use keel_core::{Config, HandleSlot, RunError, TaskAttrs, TaskSlot};
    use keel_loom_tests::{Leaked, ModelDriver, ModelExecutor, Parked, Parker, check};
    use loom::sync::Arc;
    use loom::thread;

    /// A weakened twin: no `SeqCst` fence between the executor's announce and its
    /// re-check (park rule 2).
    struct NoAnnounceFence;
    impl Weaken for NoAnnounceFence {
        const ANNOUNCE_FENCE: bool = false;
    }

    /// A weakened twin: no `SeqCst` fence between a pusher's push and its load of the
    /// park word (park rule 2).
    struct NoPushFence;
    impl Weaken for NoPushFence {
        const PUSH_FENCE: bool = false;
    }

    /// What the executor's thread does before parking, and whether it re-checks (the
    /// run loop in `exec/run.rs` always does: announce, re-check, park).
    #[derive(Copy, Clone, PartialEq, Eq)]
    enum Recheck {
        Yes,
        /// A weakened twin: announce, then park without looking at the inbox again.
        No,
    }

    struct Shared {
        inbox: Inbox,
        remote: Remote,
        nodes: [InboxNode; 2],
    }

    // SAFETY (for the casts below): `Shared` lives in an `Arc` for the whole execution;
    // its nodes are pushed once each.
    fn node(s: &Shared, i: usize) -> NonNull<InboxNode> {
        NonNull::from(&s.nodes[i])
    }

    /// `PUSHERS` threads each push one node and run the pusher's half of park rule 2
    /// (with `W`'s fences); the executor's thread takes what is there, and when it finds
    /// nothing it announces (with `W`'s fence), re-checks (if `recheck`), and parks. It
    /// must take every node. At most one unparker call per announce (park rule 1).
    /// Returns in how many executions the executor parked on a push in progress
    /// (`Found::Busy`): that state is reached, not only reasoned about.
    fn park_protocol<W: Weaken, const PUSHERS: usize>(recheck: Recheck) -> usize {
        let busy_parks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = busy_parks.clone();
        check(3, move || {
            let parker = Parker::new(PUSHERS);
            let shared = Arc::new(Shared {
                inbox: Inbox::new(),
                remote: Remote::new(),
                nodes: [InboxNode::new(), InboxNode::new()],
            });
            shared.inbox.init();
            shared.remote.set_unparker(Some(parker.unparker()));
            let pushers: Vec<_> = (0..PUSHERS)
                .map(|i| {
                    let (shared, parker) = (shared.clone(), parker.clone());
                    thread::spawn(move || {
                        // SAFETY: the node is pushed once, and `shared` outlives the inbox.
                        unsafe { shared.inbox.push::<W>(node(&shared, i)) };
                        shared.remote.after_push::<W>();
                        parker.done();
                    })
                })
                .collect();
            let mut taken = 0;
            let mut announces = 0;
            for _ in 0..16 {
                match shared.inbox.pop() {
                    Pop::Item(_) => {
                        taken += 1;
                        if taken == PUSHERS {
                            break;
                        }
                        continue;
                    }
                    // A push is half done (inbox rule 3): the run loop passes again.
                    Pop::Busy => {
                        thread::yield_now();
                        continue;
                    }
                    Pop::Empty => {}
                }
                // Park rule 2, as the run loop does it.
                shared.remote.announce::<W>();
                announces += 1;
                if recheck == Recheck::Yes {
                    match shared.inbox.recheck() {
                        Found::Items => {
                            shared.remote.running();
                            continue;
                        }
                        // Inbox rule 3: a push is half done. The run loop parks on it
                        // after `INBOX_BUSY_SPINS` passes (zero under loom): so here, at
                        // once; the pusher's unpark check must end the park.
                        Found::Busy => {
                            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Found::Empty => {}
                    }
                }
                let parked = parker.park();
                shared.remote.running();
                if parked == Parked::Quiet {
                    // Every pusher is done and none unparked us: whatever is in the inbox
                    // now, a real executor would never see.
                    assert!(
                        matches!(shared.inbox.pop(), Pop::Empty),
                        "unpark missed: the executor parked with a task in its inbox and no one unparked it"
                    );
                    break;
                }
            }
            parker.wait_quiet();
            for p in pushers {
                p.join().unwrap();
            }
            assert_eq!(taken, PUSHERS, "unpark missed: the executor stopped with tasks untaken");
            assert!(
                parker.unparks() <= announces,
                "{} unparks for {announces} announces (park rule 1)",
                parker.unparks()
            );
        });
        busy_parks.load(std::sync::atomic::Ordering::Relaxed)
    }

    // Preemption bound 3; 175 executions, under 0.01 s (release, 2-core machine).
    #[test]
    fn park_rule_2_one_pusher_no_missed_unpark() {
        // The producer-mid-push state (inbox rule 3) is among the executions: the
        // executor parked on it and the pusher's unpark check ended the park.
        assert!(park_protocol::<Strong, 1>(Recheck::Yes) > 0, "no execution parked on a push in progress");
    }

    // The same model, for the push in progress: the executor reaches `Busy`, parks on it,
    // and the pusher's unpark check ends the park (inbox rule 3).
    #[test]
    fn inbox_rule_3_a_push_in_progress_is_busy_then_parked_on_without_loss() {
        assert!(park_protocol::<Strong, 1>(Recheck::Yes) > 0, "no execution parked on a push in progress");
    }

    // Preemption bound 3; 39,114 executions, 2.0 s (release, 2-core machine).
    #[test]
    fn park_rule_1_two_pushers_one_unpark_per_park() {
        park_protocol::<Strong, 2>(Recheck::Yes);
    }

    // Preemption bound 3; fails within 0.1 s (release, 2-core machine).
    #[test]
    #[should_panic(expected = "unpark missed")]
    fn park_rule_2_twin_without_announce_fence_misses_an_unpark() {
        park_protocol::<NoAnnounceFence, 1>(Recheck::Yes);
    }

    // Preemption bound 3; fails within 0.1 s (release, 2-core machine).
    #[test]
    #[should_panic(expected = "unpark missed")]
    fn park_rule_2_twin_without_push_fence_misses_an_unpark() {
        park_protocol::<NoPushFence, 1>(Recheck::Yes);
    }

    // Preemption bound 3; fails within 0.1 s (release, 2-core machine).
    #[test]
    #[should_panic(expected = "unpark missed")]
    fn park_rule_2_twin_without_recheck_misses_an_unpark() {
        park_protocol::<Strong, 1>(Recheck::No);
    }

    /// The real thing: an executor whose driver parks on a [`Parker`] runs (and parks,
    /// through `exec/run.rs`'s announce, re-check, `Driver::park`) while another thread
    /// attaches a task through an `ExecutorHandle` (claim, place, push, unpark check).
    /// The task runs: `run` never returns `Stalled`, which here means it parked with the
    /// attach in its inbox and nobody to unpark it.
    fn executor_parked_vs_foreign_attach() {
        check(3, || {
            let parker = Parker::new(1);
            let slot = Leaked::new(TaskSlot::<64>::new());
            let hslot = Leaked::new(HandleSlot::new());
            let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            {
                let ex = ModelExecutor::new(ModelDriver::new(parker.clone()), Config::default());
                let ex = ex.get();
                let handle = ex.handle(hslot.get()).unwrap();
                let task = slot.get().create(TaskAttrs::default()).unwrap();
                let attacher = {
                    let (parker, ran) = (parker.clone(), ran.clone());
                    thread::spawn(move || {
                        let body = async move { ran.store(true, std::sync::atomic::Ordering::Relaxed) };
                        assert!(handle.attach(task, body).is_ok(), "the foreign attach was refused");
                        parker.done();
                    })
                };
                let r = ex.run(1, None);
                assert!(r != Err(RunError::Stalled), "unpark missed: the executor parked with the attach in its inbox");
                assert_eq!(r, Ok(1));
                parker.wait_quiet();
                attacher.join().unwrap();
                assert!(ran.load(std::sync::atomic::Ordering::Relaxed));
            }
            // SAFETY: joined, executor dropped.
            unsafe { hslot.free() };
            // SAFETY: as above.
            unsafe { slot.free() };
        });
    }

    // Preemption bound 3; 175 executions, under 0.01 s (release, 2-core machine).
    #[test]
    fn park_rule_3_a_parked_executor_is_woken_by_a_foreign_attach() {
        executor_parked_vs_foreign_attach();
    }

    // The same model, for the attacher's side: it pushes the node itself (the task keeps
    // QUEUED while claimed) and unparks the parked executor.
    #[test]
    fn remote_rule_3_a_foreign_attach_pushes_its_node_and_unparks_the_executor() {
        executor_parked_vs_foreign_attach();
    }
}
