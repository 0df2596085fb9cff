//! loom models of the cross-thread wait primitives' wake path (`core/src/wait/`, wait
//! rules 3, 6 and 7): a task on an executor waits for a permit of a cross-thread
//! `Semaphore` while another thread adds the permit; the add lands before, during and
//! after the task's try, its queueing and its suspension. The permit is never lost (the
//! task completes), and what the adding thread wrote before the add is seen by the task
//! after its acquire (the spin lock's Release/Acquire). Its weakened twin takes the lock
//! with Relaxed, and loom finds the two threads' accesses to the state unordered.
//!
//! A second model races a cancel of one of two waiters with the permit's arrival.
//!
//! Bound: `preemption_bound = Some(3)`, 2 threads counting the main one; debug
//! assertions on (`make loom`). Runtimes measured on the project's 2-core machine,
//! release build, and given per test.

#[cfg(not(keel_loom))]
#[test]
fn loom_models_run_with_make_loom() {
    println!("{}", keel_loom_tests::SKIPPED);
}

#[cfg(keel_loom)]
mod models {
    use keel_core::wait::{Semaphore, Shared, loom_weaken_lock};
    use keel_core::{Config, Executor, NoIo, RunError, TaskAttrs, TaskError, TaskSlot};
    use keel_loom_tests::{Leaked, ModelExecutor, check};
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::thread;

    /// Runs `ex` until nothing is left to do (the other thread has been joined).
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

    /// A task waits for a permit; another thread stores a value (Relaxed) and adds the
    /// permit. The task must complete (the wake is not lost) with the value (the permit
    /// published it).
    fn permit_from_another_thread(weak_lock: bool) {
        check(3, move || {
            loom_weaken_lock(weak_lock);
            let sem = Leaked::new(Semaphore::<Shared>::new(0));
            let slot = Leaked::new(TaskSlot::<256>::new());
            let data = Arc::new(AtomicUsize::new(0));
            {
                let ex = ModelExecutor::new(NoIo, Config::default());
                let ex = ex.get();
                let (s, d) = (sem.get(), data.clone());
                let run = ex
                    .attach(slot.get().create(TaskAttrs::default()).unwrap(), async move {
                        s.acquire().await.map_err(TaskError::from)?.forget();
                        // Relaxed: the permit's hand-over must have published it.
                        Ok::<_, TaskError>(d.load(Ordering::Relaxed) as u64)
                    })
                    .unwrap();
                let (s, d) = (sem.get(), data.clone());
                let adder = thread::spawn(move || {
                    d.store(1, Ordering::Relaxed);
                    s.add_permits(1);
                });
                let _ = ex.run(1, None);
                adder.join().unwrap();
                run_out(ex);
                assert_eq!(
                    ex.result(run),
                    Ok(Some(Ok(1))),
                    "permit lost, or the adder's write not seen after the acquire"
                );
                assert_eq!((sem.get().available_permits(), sem.get().waiters()), (0, 0));
            }
            loom_weaken_lock(false);
            // SAFETY: joined, executor dropped.
            unsafe {
                slot.free();
                sem.free();
            }
        });
    }

    // Preemption bound 3; 12 executions, under 0.01 s (release, 2-core machine).
    #[test]
    fn wait_rule_7_a_permit_added_on_another_thread_is_never_lost_and_publishes() {
        permit_from_another_thread(false);
    }

    // Preemption bound 3; fails within 0.01 s (release, 2-core machine).
    #[test]
    #[should_panic(expected = "Causality violation")]
    fn wait_rule_3_twin_relaxed_lock_races_on_the_state() {
        permit_from_another_thread(true);
    }

    /// Two tasks wait; another thread adds one permit while the owner cancels the first
    /// waiter. Whether the permit reached the first waiter before its cancel or not, it
    /// must end with the second (wait rule 6: a cancelled waiter passes its grant on).
    fn cancel_vs_permit(weak_lock: bool) {
        check(3, move || {
            loom_weaken_lock(weak_lock);
            let sem = Leaked::new(Semaphore::<Shared>::new(0));
            let slots = Leaked::new([TaskSlot::<256>::new(), TaskSlot::<256>::new()]);
            {
                let ex = ModelExecutor::new(NoIo, Config::default());
                let ex = ex.get();
                let mut runs = Vec::new();
                for slot in slots.get() {
                    let s = sem.get();
                    let body = async move {
                        s.acquire().await.map_err(TaskError::from)?.forget();
                        Ok::<_, TaskError>(1)
                    };
                    runs.push(ex.attach(slot.create(TaskAttrs::default()).unwrap(), body).unwrap());
                }
                assert_eq!(ex.run(2, None), Ok(2));
                assert_eq!(sem.get().waiters(), 2);
                let s = sem.get();
                let adder = thread::spawn(move || s.add_permits(1));
                ex.cancel(runs[0]).unwrap();
                let _ = ex.run(1, None);
                adder.join().unwrap();
                run_out(ex);
                assert_eq!(ex.result(runs[0]), Ok(Some(Err(TaskError::Cancelled))));
                assert_eq!(ex.result(runs[1]), Ok(Some(Ok(1))), "the permit was swallowed by the cancelled waiter");
                assert_eq!((sem.get().available_permits(), sem.get().waiters()), (0, 0));
            }
            loom_weaken_lock(false);
            // SAFETY: joined, executor dropped.
            unsafe {
                slots.free();
                sem.free();
            }
        });
    }

    // Preemption bound 3; 46 executions, under 0.01 s (release, 2-core machine).
    #[test]
    fn wait_rule_6_a_cancelled_waiter_never_swallows_a_permit_from_another_thread() {
        cancel_vs_permit(false);
    }

    // Preemption bound 3; fails within 0.01 s (release, 2-core machine).
    #[test]
    #[should_panic(expected = "Causality violation")]
    fn wait_rule_6_twin_relaxed_lock_races_on_the_state() {
        cancel_vs_permit(true);
    }
}
