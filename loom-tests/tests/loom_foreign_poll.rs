//! loom model of a keel future polled on another thread with a task's waker (rt rules
//! 1-2, `core/src/rt.rs`): whatever the owner is doing (resuming that very task
//! included), the foreign poll is outside the task and touches nothing of the executor.
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
    use core::pin::pin;
    use core::task::{Context, Poll};
    use core::time::Duration;
    use keel_core::loom_api::weaken_current;
    use keel_core::{Config, NoIo, TaskAttrs, TaskError, TaskSlot, rt};
    use keel_loom_tests::{Leaked, ModelExecutor, check};
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicBool, Ordering};
    use loom::thread;

    /// The owner resumes a task (whose body reaches an atomic step mid-poll) while thread
    /// B polls `rt::sleep(5 s)` with the task's waker. B must get "not in a task" (ready
    /// at once, rt rule 2) at every point of the resume, and the task's result is its own.
    /// With `weak` (the weakened twin: "the task is running", on any thread, is taken for
    /// "inside the task", read from the owner's record of the task it resumes instead of
    /// rt rule 1's address compare) B finds the task current while the owner resumes it and arms a timer on
    /// the owner's executor from B's thread.
    fn foreign_sleep_vs_resume(weak: bool) {
        check(3, move || {
            weaken_current(weak);
            let slot = Leaked::new(TaskSlot::<64>::new());
            {
                let ex = ModelExecutor::new(NoIo, Config::default());
                let ex = ex.get();
                let step = Arc::new(AtomicBool::new(false));
                let s2 = step.clone();
                let body = core::future::poll_fn(move |_| {
                    // An atomic step inside the resume: B may run here.
                    // Relaxed: nothing is published through it.
                    s2.store(true, Ordering::Relaxed);
                    Poll::Ready(Ok::<u64, TaskError>(7))
                });
                let run = ex.attach(slot.get().create(TaskAttrs::default()).unwrap(), body).unwrap();
                let s3 = step.clone();
                let b = thread::spawn(move || {
                    // A step on the body's atomic, so that loom runs B's poll before, inside
                    // and after the resume (rt rule 1's check itself reads nothing shared).
                    // Relaxed: nothing is published through it.
                    let _ = s3.load(Ordering::Relaxed);
                    let waker = run.waker();
                    let mut cx = Context::from_waker(&waker);
                    let sleep = pin!(rt::sleep(Duration::from_secs(5)));
                    matches!(sleep.poll(&mut cx), Poll::Ready(Ok(())))
                });
                assert_eq!(ex.run(1, None), Ok(1));
                let outside = b.join().unwrap();
                assert!(outside, "foreign poll inside the task: B's sleep suspended on the owner's executor");
                assert_eq!(ex.stats().timers_armed, 0, "foreign poll armed a timer on the owner's executor");
                assert_eq!(ex.result(run), Ok(Some(Ok(7))));
            }
            // SAFETY: joined, executor dropped.
            unsafe { slot.free() };
        });
    }

    // Preemption bound 3; 16 executions, under 0.01 s (release, 2-core machine).
    #[test]
    fn rt_rule_1_foreign_sleep_vs_resume_is_outside_the_task() {
        foreign_sleep_vs_resume(false);
    }

    // The same model, for what "outside" does: the foreign `sleep` is ready at once and
    // the owner's executor has no timer armed from it.
    #[test]
    fn rt_rule_2_a_foreign_sleep_is_ready_at_once_and_touches_nothing() {
        foreign_sleep_vs_resume(false);
    }

    // Preemption bound 3; fails within 0.01 s (release, 2-core machine).
    #[test]
    #[should_panic(expected = "foreign poll")]
    fn rt_rule_1_twin_current_by_sched_arms_the_owners_timer() {
        foreign_sleep_vs_resume(true);
    }
}
