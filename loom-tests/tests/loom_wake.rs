//! loom models of the wake protocol (`core/src/mailbox/mod.rs`, wake rules 1-6; rule 7, the
//! executor's own same-thread wakes, is `core/tests/wake_rules.rs`'s): wakers on
//! other threads fire while the owner runs, suspends, completes, re-attaches, releases
//! the task; the wake lands before, during and after each step. Never lost (a wake for
//! the current run of a suspended task gets it polled again, and that poll sees what
//! the waker wrote before waking), never doubled (never queued twice), stale wakes are
//! no-ops.
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
    use core::task::Poll;
    use keel_core::loom_api::{Strong, Weaken, wake_with};
    use keel_core::{Config, DestroyError, Executor, NoIo, RunError, TaskAttrs, TaskHandle, TaskSlot, TaskState};
    use keel_loom_tests::{Leaked, ModelExecutor, RelaxedWakeCas, ReleaseWakeCas, check};
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use loom::thread;

    /// A small inbox batch: a node queued twice (a cycle) shows within one pass.
    fn config() -> Config {
        Config { inbox_batch: 3, ..Config::default() }
    }

    /// A weakened twin: a waker whose load finds an equal wake queued returns without
    /// its CAS (wake rule 4 says merge with the CAS).
    struct MergeByLoad;
    impl Weaken for MergeByLoad {
        const MERGE_BY_LOAD: bool = true;
    }

    /// Runs `ex` until nothing is left to do (every foreign thread has been joined, so
    /// every push is complete and `run` ends with `Stalled`).
    fn run_out(ex: core::pin::Pin<&Executor<NoIo>>, max_taken: u64) {
        for _ in 0..8 {
            let r = ex.run(1, None);
            // A node in the inbox twice makes a cycle: the same task comes out forever.
            let taken = ex.stats().inbox_taken;
            assert!(taken <= max_taken, "task queued twice: {taken} inbox entries for {max_taken} wakes");
            match r {
                Ok(_) => {}
                Err(RunError::Stalled) => return,
                Err(e) => panic!("run failed: {e:?}"),
            }
        }
        panic!("the executor never ran out of work");
    }

    /// Wakes `task` with `W`'s orderings from a new thread, after storing `flag`
    /// (Relaxed: only the wake may publish it).
    fn waker<W: Weaken>(task: TaskHandle, flags: &Arc<[AtomicBool; 2]>, i: usize) -> thread::JoinHandle<()> {
        let flags = flags.clone();
        thread::spawn(move || {
            flags[i].store(true, Ordering::Relaxed);
            wake_with::<W>(task);
        })
    }

    /// Two wakers of the same run fire while the owner runs the task for the first
    /// time: the wakes land before the poll (Attached), during it (Running: WOKEN_WHILE_RUNNING),
    /// or after it suspended (Suspended: queued). The task completes once it has seen
    /// both wakers' flags. It must complete (never lost), with at most one inbox entry
    /// per waker (never doubled).
    fn two_wakers_vs_suspend<W: Weaken>() {
        check(3, || {
            let slot = Leaked::new(TaskSlot::<64>::new());
            let flags: Arc<[AtomicBool; 2]> = Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);
            {
                let ex = ModelExecutor::new(NoIo, config());
                let ex = ex.get();
                let seen = flags.clone();
                let body = core::future::poll_fn(move |_| {
                    // Relaxed: the wake protocol must have published them.
                    if seen[0].load(Ordering::Relaxed) && seen[1].load(Ordering::Relaxed) {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                });
                let run = ex.attach(slot.get().create(TaskAttrs::default()).unwrap(), body).unwrap();
                let a = waker::<W>(run, &flags, 0);
                let b = waker::<W>(run, &flags, 1);
                assert_eq!(ex.run(1, None), Ok(1));
                a.join().unwrap();
                b.join().unwrap();
                run_out(ex, 2);
                assert_eq!(
                    ex.state(run),
                    Ok(TaskState::Completed),
                    "wake lost: the task is suspended although both wakers woke it after their stores"
                );
            }
            // SAFETY: joined, executor dropped.
            unsafe { slot.free() };
        });
    }

    // Preemption bound 3; 2,729 executions, 0.15 s (release, 2-core machine).
    #[test]
    fn wake_rule_3_two_wakers_vs_suspend_never_queue_the_task_twice() {
        two_wakers_vs_suspend::<Strong>();
    }

    // The same model, for the rule that keeps the wake: the task completes only if
    // both wakers' wakes reach it (its twin: `wake_rule_4_twin_merge_by_load_loses_a_wake`).
    #[test]
    fn wake_rule_4_two_wakers_vs_suspend_never_lose_a_wake() {
        two_wakers_vs_suspend::<Strong>();
    }

    // Preemption bound 3; fails within 0.1 s (release, 2-core machine).
    #[test]
    #[should_panic(expected = "task queued twice")]
    fn wake_rule_3_twin_relaxed_wake_cas_queues_twice() {
        two_wakers_vs_suspend::<RelaxedWakeCas>();
    }

    // Preemption bound 3; fails within 0.1 s (release, 2-core machine).
    #[test]
    #[should_panic(expected = "wake lost")]
    fn wake_rule_4_twin_merge_by_load_loses_a_wake() {
        two_wakers_vs_suspend::<MergeByLoad>();
    }

    /// A waker of run 1 fires while the owner runs run 1 to completion and re-attaches
    /// the task as run 2; a waker of run 2 fires once run 2 exists. Run 1's wake is for a
    /// completed run, then a stale one: it must never poll run 2 (wake rule 2), and it
    /// must not hide run 2's wake (rule 4: the newer generation is kept).
    fn wake_vs_complete_and_reattach<W: Weaken>() {
        check(3, || {
            let slot = Leaked::new(TaskSlot::<64>::new());
            let flags: Arc<[AtomicBool; 2]> = Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);
            let early_polls = Arc::new(AtomicUsize::new(0));
            {
                let ex = ModelExecutor::new(NoIo, config());
                let ex = ex.get();
                let run1 = ex.attach(slot.get().create(TaskAttrs::default()).unwrap(), async {}).unwrap();
                let stale = waker::<W>(run1, &flags, 0);
                assert_eq!(ex.run(1, None), Ok(1));
                assert_eq!(ex.state(run1), Ok(TaskState::Completed));
                let (seen, polls) = (flags.clone(), early_polls.clone());
                let body = core::future::poll_fn(move |_| {
                    // Relaxed: the wake protocol must have published it.
                    if seen[1].load(Ordering::Relaxed) {
                        Poll::Ready(())
                    } else {
                        // Relaxed: owner-thread count.
                        polls.fetch_add(1, Ordering::Relaxed);
                        Poll::Pending
                    }
                });
                let run2 = ex.attach(run1, body).unwrap();
                let current = waker::<W>(run2, &flags, 1);
                assert_eq!(ex.run(1, None), Ok(1));
                stale.join().unwrap();
                current.join().unwrap();
                run_out(ex, 2);
                assert_eq!(ex.state(run2), Ok(TaskState::Completed), "wake lost: run 2 was woken and never completed");
                assert!(
                    early_polls.load(Ordering::Relaxed) <= 1,
                    "stale wake ran the new run: run 2 was polled again before its own wake"
                );
            }
            // SAFETY: joined, executor dropped.
            unsafe { slot.free() };
        });
    }

    // Preemption bound 3; 3,115 executions, 0.17 s (release, 2-core machine).
    #[test]
    fn wake_rule_5_wake_vs_complete_and_reattach_stale_is_a_no_op() {
        wake_vs_complete_and_reattach::<Strong>();
    }

    // The same model, for the generation check: run 1's wake never polls run 2.
    #[test]
    fn wake_rule_2_a_stale_wake_racing_complete_and_reattach_never_polls_the_next_run() {
        wake_vs_complete_and_reattach::<Strong>();
    }

    // Preemption bound 3; fails within 0.1 s (release, 2-core machine).
    #[test]
    #[should_panic(expected = "task queued twice")]
    fn wake_rule_5_twin_release_wake_cas_queues_twice() {
        wake_vs_complete_and_reattach::<ReleaseWakeCas>();
    }

    /// A waker of run 1 fires while its owner E1 releases the task and a second
    /// executor E2 (same thread: executors are `!Send`, not exclusive) claims it and
    /// attaches run 2 (wake rule 6; remote rule 2's claim). The wake is stale by then or
    /// lands on E1 before the release; it must never reach E1 once E1 has let the task
    /// go, and it must never find the task ownerless (the debug assertion in
    /// `wake_by_gen`).
    fn wake_vs_release_and_reclaim<W: Weaken>() {
        check(3, || {
            let slot = Leaked::new(TaskSlot::<64>::new());
            let flags: Arc<[AtomicBool; 2]> = Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);
            {
                let e1 = ModelExecutor::new(NoIo, config());
                let e1 = e1.get();
                let e2 = ModelExecutor::new(NoIo, config());
                let e2 = e2.get();
                let run1 = e1.attach(slot.get().create(TaskAttrs::default()).unwrap(), async {}).unwrap();
                assert_eq!(e1.run(1, None), Ok(1));
                let w = waker::<W>(run1, &flags, 0);
                let mut released = false;
                for _ in 0..4 {
                    match e1.release(run1) {
                        Ok(_) => {
                            released = true;
                            break;
                        }
                        // The wake is being pushed to E1: release drained what had
                        // arrived; let the waker finish.
                        Err(DestroyError::WakeInFlight) => thread::yield_now(),
                        Err(e) => panic!("release failed: {e:?}"),
                    }
                }
                assert!(released, "E1 could not release the task");
                let taken_at_release = e1.stats().inbox_taken;
                let run2 = e2.attach(run1, async {}).unwrap();
                w.join().unwrap();
                run_out(e2, 1);
                run_out(e1, 1);
                assert_eq!(e2.state(run2), Ok(TaskState::Completed));
                assert_eq!(
                    e1.stats().inbox_taken,
                    taken_at_release,
                    "stale owner: a wake reached E1 after E1 released the task"
                );
            }
            // SAFETY: joined, executors dropped.
            unsafe { slot.free() };
        });
    }

    // Preemption bound 3; 44 executions, under 0.01 s (release, 2-core machine).
    #[test]
    fn wake_rule_6_wake_vs_release_and_reclaim_reaches_only_the_owner() {
        wake_vs_release_and_reclaim::<Strong>();
    }

    // Preemption bound 3; fails within 0.1 s (release, 2-core machine).
    #[test]
    #[should_panic(expected = "stale owner")]
    fn wake_rule_6_twin_release_cas_reaches_the_old_owner() {
        wake_vs_release_and_reclaim::<ReleaseWakeCas>();
    }
}
