//! loom models of joins from other threads (`core/src/task/join.rs`, join rules 2 and 5;
//! `core/src/mailbox/mod.rs`, wake rule 8): a thread blocks in `join_blocking` on a
//! task that its executor runs to the end at the same time; the thread's registration,
//! announce and second look land before, during and after the run's end and the owner's
//! inbox drain. The thread is never left blocked (its futex stand-in is a loom mutex and
//! condition variable with the value check and the wake under the mutex), and it returns
//! the run's result.
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
    use keel_core::join::{ThreadWait, join_blocking};
    use keel_core::loom_api::{Strong, Weaken, join_blocking_with};
    use keel_core::{Config, NoIo, RunError, TaskAttrs, TaskSlot};
    use keel_loom_tests::{Leaked, ModelExecutor, check};
    use loom::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use loom::sync::{Arc, Condvar, Mutex};
    use loom::thread;

    loom::lazy_static! {
        static ref FUTEX: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());
    }

    /// `futex(2)` as loom can run it: `wait` sleeps only while the word holds
    /// `expected`, checked under the mutex `wake_all` notifies under.
    struct LoomFutex;

    impl ThreadWait for LoomFutex {
        type Deadline = ();
        fn deadline_after(_: core::time::Duration) {}
        fn wait(word: &AtomicU32, expected: u32, _: Option<()>) -> bool {
            let guard = FUTEX.0.lock().unwrap();
            // Acquire: as the kernel's read of the word, after the waker's store.
            if word.load(Ordering::Acquire) == expected {
                drop(FUTEX.1.wait(guard).unwrap());
            }
            true
        }
        fn wake_all(_: &AtomicU32) {
            let _guard = FUTEX.0.lock().unwrap();
            FUTEX.1.notify_all();
        }
    }

    /// A weakened twin: the joining thread registers in the task but never announces
    /// itself to the owner (wake rule 8 says it announces).
    struct NoAnnounce;
    impl Weaken for NoAnnounce {
        const ANNOUNCE_JOIN: bool = false;
    }

    /// The executor's thread runs a task that yields once and returns 7, while another
    /// thread joins it with `join_blocking`. The executor then keeps taking its inbox (as
    /// its run loop does) for a bounded number of passes; the joining thread must have
    /// returned `Ok(Ok(7))` by then.
    fn thread_join_vs_run_end<W: Weaken>() {
        check(3, || {
            let slot = Leaked::new(TaskSlot::<64>::new());
            {
                let ex = ModelExecutor::new(NoIo, Config::default());
                let ex = ex.get();
                let run = ex
                    .attach(slot.get().create(TaskAttrs::default()).unwrap(), async {
                        let _ = keel_core::rt::yield_now().await;
                        7u64
                    })
                    .unwrap();
                let returned = Arc::new(AtomicBool::new(false));
                let r = returned.clone();
                let joiner = thread::spawn(move || {
                    let got = join_blocking_with::<W, LoomFutex>(run, None);
                    // Release: pairs with the executor thread's Acquire below.
                    r.store(true, Ordering::Release);
                    got
                });
                let mut passes = 0;
                // Acquire: pairs with the joiner's Release.
                while !returned.load(Ordering::Acquire) {
                    match ex.run(1, None) {
                        Ok(_) | Err(RunError::Stalled) => {}
                        Err(e) => panic!("run failed: {e:?}"),
                    }
                    passes += 1;
                    assert!(passes < 8, "join lost: the thread is still blocked after the run's end");
                    thread::yield_now();
                }
                assert_eq!(joiner.join().unwrap(), Ok(Ok(7)));
            }
            // SAFETY: joined, executor dropped.
            unsafe { slot.free() };
        });
    }

    // Preemption bound 3; 1,385 executions, 0.16 s (release, 2-core machine).
    #[test]
    fn join_rule_5_a_blocked_thread_is_never_left_blocked() {
        thread_join_vs_run_end::<Strong>();
    }

    // Preemption bound 3; fails within 0.01 s (release, 2-core machine).
    #[test]
    #[should_panic(expected = "join lost")]
    fn join_rule_5_twin_no_announce_leaves_the_thread_blocked() {
        thread_join_vs_run_end::<NoAnnounce>();
    }

    /// `join_blocking` itself is `join_blocking_with::<Strong, _>`.
    #[test]
    fn production_join_blocking_is_the_strong_one() {
        check(1, || {
            let slot = Leaked::new(TaskSlot::<64>::new());
            let never = slot.get().create(TaskAttrs::default()).unwrap();
            assert_eq!(join_blocking::<LoomFutex>(never, None), Err(keel_core::JoinError::NeverAttached));
            // SAFETY: nothing uses it any more.
            unsafe { slot.free() };
        });
    }
}
