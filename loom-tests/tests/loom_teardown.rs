//! loom models of a task's end racing a wake from another thread, on the paths the other
//! models leave out: `destroy` (the generation bump, the release, and on `WakeInFlight`
//! the generation put back for the retry the error asks for) and the executor's drop
//! (teardown rules 1 and 4: the suspended task's body dropped where it is, the task
//! released, wakers inside waited for). A stale wake never polls the slot's next run,
//! and the body is dropped once.
//!
//! The weakened twins weaken the waker's CAS on the notify word (wake rules 3-5). Against
//! `destroy` keel's own debug assertion catches them ("QUEUED clear on a task with no
//! owner"); against the executor's drop the waker pushes into the dropped executor's
//! inbox of the dropped executor: loom fails on its freed atomics ("index out of bounds"
//! in its object store), or a stale wake shows on E2.
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
    use keel_core::loom_api::{Strong, Weaken, wake_with};
    use keel_core::{Config, DestroyError, Executor, NoIo, RunError, TaskAttrs, TaskHandle, TaskSlot, TaskState, rt};
    use keel_loom_tests::{Leaked, ModelExecutor, RelaxedWakeCas, ReleaseWakeCas, check};
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::thread;

    fn config() -> Config {
        Config { inbox_batch: 1, ..Config::default() }
    }

    /// Runs `ex` until it stalls (every foreign thread joined first), at most 8 items.
    fn run_out(ex: core::pin::Pin<&Executor<NoIo>>) {
        for _ in 0..8 {
            match ex.run(1, None) {
                Ok(_) => {}
                Err(RunError::Stalled) => return,
                Err(e) => panic!("run failed: {e:?}"),
            }
        }
        panic!("the executor never ran out of work");
    }

    /// Counts its drops (a task body's).
    struct Drops(Arc<AtomicUsize>);
    impl Drop for Drops {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn waker<W: Weaken>(task: TaskHandle) -> thread::JoinHandle<()> {
        thread::spawn(move || wake_with::<W>(task))
    }

    /// A waker of completed run 1 fires while its owner destroys the task, retrying on
    /// `WakeInFlight` after a run (the error's remedy: the generation is put back, so
    /// the handle stays valid), then creates the slot again and attaches run 2, which
    /// waits. The destroy succeeds, and the stale wake never wakes run 2.
    fn wake_vs_destroy_and_recreate<W: Weaken>() {
        check(3, || {
            let slot = Leaked::new(TaskSlot::<64>::new());
            {
                let e = ModelExecutor::new(NoIo, config());
                let e = e.get();
                let run1 = e.attach(slot.get().create(TaskAttrs::default()).unwrap(), async {}).unwrap();
                assert_eq!(e.run(1, None), Ok(1));
                let w = waker::<W>(run1);
                let mut destroyed = false;
                for _ in 0..4 {
                    match e.destroy(run1) {
                        Ok(()) => {
                            destroyed = true;
                            break;
                        }
                        Err(DestroyError::WakeInFlight) => {
                            thread::yield_now();
                            let _ = e.run(1, None);
                        }
                        Err(other) => panic!("destroy failed: {other:?}"),
                    }
                }
                assert!(destroyed, "the destroy never went through");
                let run2 = slot.get().create(TaskAttrs::default()).expect("the destroyed slot is free");
                let run2 = e.attach(run2, rt::wait()).unwrap();
                w.join().unwrap();
                run_out(e);
                assert_eq!(
                    e.state(run2),
                    Ok(TaskState::Suspended(keel_core::SuspendReason::Wait)),
                    "stale wake: a wake of run 1 woke run 2"
                );
                e.wake(run2);
                run_out(e);
                assert_eq!(e.state(run2), Ok(TaskState::Completed));
            }
            // SAFETY: joined, executor dropped.
            unsafe { slot.free() };
        });
    }

    // Preemption bound 3; 110 executions, 0.02 s (release, 2-core machine).
    #[test]
    fn wake_rule_5_wake_vs_destroy_and_recreate_never_wakes_the_next_run() {
        wake_vs_destroy_and_recreate::<Strong>();
    }

    // Fails within 0.1 s (release, 2-core machine).
    #[test]
    #[should_panic(expected = "QUEUED clear on a task with no owner")]
    fn wake_rule_5_twin_release_wake_cas_vs_destroy() {
        wake_vs_destroy_and_recreate::<ReleaseWakeCas>();
    }

    // Fails within 0.1 s (release, 2-core machine).
    #[test]
    #[should_panic(expected = "QUEUED clear on a task with no owner")]
    fn wake_rule_5_twin_relaxed_wake_cas_vs_destroy() {
        wake_vs_destroy_and_recreate::<RelaxedWakeCas>();
    }

    /// A waker of suspended run 1 fires while its executor E1 is dropped (teardown: the
    /// body dropped where it waits, the task released, wakers inside waited for); then
    /// E2 attaches run 2 to the released slot (claiming it), which waits. Run 1's body is
    /// dropped once, and the wake never wakes run 2.
    fn wake_vs_executor_drop<W: Weaken>() {
        check(3, || {
            let slot = Leaked::new(TaskSlot::<64>::new());
            let drops = Arc::new(AtomicUsize::new(0));
            {
                let e1 = ModelExecutor::new(NoIo, config());
                let guard = Drops(drops.clone());
                let run1 = e1
                    .get()
                    .attach(slot.get().create(TaskAttrs::default()).unwrap(), async move {
                        let _guard = guard;
                        rt::wait().await
                    })
                    .unwrap();
                assert_eq!(e1.get().run(1, None), Ok(1));
                let w = waker::<W>(run1);
                drop(e1);
                assert_eq!(drops.load(Ordering::Relaxed), 1, "run 1's body was not dropped once");
                let e2 = ModelExecutor::new(NoIo, config());
                let e2 = e2.get();
                let run2 = e2.attach(run1, rt::wait()).expect("the released task attaches to E2");
                w.join().unwrap();
                run_out(e2);
                // A wake that lands between E2's claim and its attach may pass through
                // E2's inbox (as in `loom_wake`'s release model); it must poll nothing.
                assert!(e2.stats().inbox_taken <= 1, "task queued twice on E2");
                assert_eq!(
                    e2.state(run2),
                    Ok(TaskState::Suspended(keel_core::SuspendReason::Wait)),
                    "stale wake: a wake of run 1 woke run 2"
                );
                e2.wake(run2);
                run_out(e2);
            }
            // SAFETY: joined, executors dropped.
            unsafe { slot.free() };
        });
    }

    // Preemption bound 3; 462 executions, 0.08 s (release, 2-core machine), with the
    // teardown spins on `crate::sync::spin_loop`.
    #[test]
    fn teardown_rule_4_wake_vs_executor_drop_never_wakes_the_next_run() {
        wake_vs_executor_drop::<Strong>();
    }

    // Fails within 0.1 s: on the "stale wake" assertion, or in loom's object store
    // ("index out of bounds": the waker touching an atomic of the dropped executor).
    #[test]
    #[should_panic]
    fn teardown_rule_4_twin_release_wake_cas_vs_executor_drop() {
        wake_vs_executor_drop::<ReleaseWakeCas>();
    }

    // Fails within 0.1 s: on the "stale wake" assertion, or in loom's object store
    // ("index out of bounds": the waker touching an atomic of the dropped executor).
    #[test]
    #[should_panic]
    fn teardown_rule_4_twin_relaxed_wake_cas_vs_executor_drop() {
        wake_vs_executor_drop::<RelaxedWakeCas>();
    }
}
