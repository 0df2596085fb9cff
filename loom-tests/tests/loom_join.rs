//! loom models of joins from other threads (`core/src/task/join.rs`, join rules 2, 5 and
//! 8; `core/src/mailbox/mod.rs`, wake rule 8).
//!
//! - Join rule 5: a thread blocks in `join_blocking` on a task that its executor runs to
//!   the end at the same time; the thread's registration, announce and second look land
//!   before, during and after the run's end and the owner's inbox drain. The thread is
//!   never left blocked (its futex stand-in is a loom mutex and condition variable with
//!   the value check and the wake under the mutex), and it returns the run's result.
//! - Join rule 8: a `join_send` registered by a task of the awaited task's executor is
//!   handed to a task on another thread's executor, whose poll re-points the entry while
//!   the owner ends the awaited run; the awaiting task gets the result, and the entry's
//!   stale target (the registering run, whose slot has a later run by then) is never
//!   woken.
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
    use core::future::Future;
    use core::pin::Pin;
    use core::task::{Context, Poll};
    use keel_core::join::{JoinSend, ThreadWait, join_blocking, join_send};
    use keel_core::loom_api::{Strong, Weaken, join_blocking_with, poll_join_send_with};
    use keel_core::{
        Config, JoinError, NoIo, Priorities, Priority, RunError, TaskAttrs, TaskError, TaskResult, TaskSlot,
    };
    use keel_loom_tests::{Leaked, ModelExecutor, check};
    use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
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

    /// A weakened twin: a join polled by another run than the one its entry names stores
    /// its new target but does not announce itself again before its second look (join
    /// rule 8 says it announces, as `register` does).
    struct NoRepointAnnounce;
    impl Weaken for NoRepointAnnounce {
        const REPOINT_ANNOUNCE: bool = false;
    }

    /// How many passes each executor's loop may take in the re-point model: above what
    /// any execution of the production protocol takes (at most 6 on the owner's thread,
    /// 5 on B's, over all 5,016), while a lost wake spins to it at any bound.
    const REPOINT_PASSES: usize = 8;

    /// How P polls the join: production's `Future::poll`, or a twin's.
    type PollJoin = fn(Pin<&mut JoinSend>, &mut Context<'_>) -> Poll<Result<TaskResult, JoinError>>;

    /// Join rule 8 under loom. Before the race, on the main thread's executor A: task R
    /// (high priority) polls `join_send` of run T (A's, not yet polled, returns 7) once:
    /// R registers an entry naming R's run and announces it; R stashes the pending join
    /// and its run ends; R's slot then starts a later run that stays pending; A takes
    /// R's announce (it wakes R's ended run, a no-op, and marks T's run: asserted). Then,
    /// at the same time:
    /// - the main thread runs A: T's run ends (its record published, then, the run being
    ///   marked, every entry woken), and A takes whatever announce comes (each wakes every
    ///   entry);
    /// - thread B's executor runs task P, which takes the join and awaits it through
    ///   `poll` (`JoinSend`'s own, production's; the twin's `poll_join_send_with`): its
    ///   first poll looks, re-points the entry at P's run, announces itself and looks
    ///   again.
    ///
    /// Checked, in every execution: P's join returns `Ok(Ok(7))` within a bounded number
    /// of passes of both loops ("join lost" otherwise: the owner woke R's ended run
    /// instead of P, and P's second look missed the record); P's join is polled at most 3
    /// times: its first poll, and one per owner step that can read the new target (the
    /// take of P's announce, T's end), so no wake repeats; R's later run is polled once,
    /// by the pass that started it (the entry's stale target is never woken as the slot's
    /// later run).
    ///
    /// The twin `NoRepointAnnounce` leaves the re-point's announce out: then nothing
    /// orders P's store of the new target before the owner's read of the entry at T's
    /// end, nor that end's record before P's second look (the store-buffer pattern), so
    /// the owner may wake R's ended run while P finds nothing, and P waits for ever.
    /// (Under any sequentially consistent interleaving the twin still delivers: one of
    /// the two sees the other's store; loom finds the weak-memory execution.)
    fn repoint_vs_run_end(poll: PollJoin) {
        check(3, move || {
            let slots = Leaked::new([TaskSlot::<256>::new(), TaskSlot::<256>::new(), TaskSlot::<256>::new()]);
            let later_polls = Arc::new(AtomicUsize::new(0));
            {
                let ex = ModelExecutor::new(NoIo, Config::default());
                let ex = ex.get();
                let awaited = ex.attach(slots.get()[0].create(TaskAttrs::default()).unwrap(), async { 7u64 }).unwrap();
                let stash: Arc<Mutex<Option<JoinSend>>> = Arc::new(Mutex::new(None));
                let s = stash.clone();
                let high = TaskAttrs { priority: Priorities { cpu: Priority::High, io: Priority::Normal }, name: "R" };
                let registers = ex
                    .attach(slots.get()[1].create(high).unwrap(), async move {
                        let mut join = join_send(awaited, None);
                        let first = core::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut join).poll(cx))).await;
                        assert!(first.is_pending(), "T's run cannot have ended: {first:?}");
                        *s.lock().unwrap() = Some(join);
                    })
                    .unwrap();
                // R's run (high priority: before T's first poll); then R's slot's later run.
                assert_eq!(ex.run(1, None), Ok(1));
                let lp = later_polls.clone();
                ex.attach(
                    registers,
                    core::future::poll_fn(move |_| {
                        // Relaxed: read on this thread.
                        lp.fetch_add(1, Ordering::Relaxed);
                        Poll::<()>::Pending
                    }),
                )
                .unwrap();
                assert_eq!(ex.run(1, None), Ok(1));
                assert_eq!(ex.stats().inbox_taken, 1, "R's announce is taken before the race: T's run is marked");
                let got = Arc::new(AtomicBool::new(false));
                let g = got.clone();
                let p_slot = &slots.get()[2];
                let b = thread::spawn(move || {
                    let eb = ModelExecutor::new(NoIo, Config::default());
                    let eb = eb.get();
                    let polls = Arc::new(AtomicUsize::new(0));
                    let p = polls.clone();
                    let awaits = eb
                        .attach(p_slot.create(TaskAttrs::default()).unwrap(), async move {
                            let mut join = stash.lock().unwrap().take().expect("stashed");
                            let out = core::future::poll_fn(|cx| {
                                // Relaxed: read on this thread.
                                p.fetch_add(1, Ordering::Relaxed);
                                poll(Pin::new(&mut join), cx)
                            })
                            .await;
                            out.unwrap_or(Err(TaskError::Failed(-1)))
                        })
                        .unwrap();
                    let mut passes = 0;
                    while eb.attached() > 0 {
                        match eb.run(1, None) {
                            Ok(_) | Err(RunError::Stalled) => {}
                            Err(e) => panic!("run failed: {e:?}"),
                        }
                        passes += 1;
                        assert!(
                            passes < REPOINT_PASSES,
                            "join lost: the task awaiting the re-pointed join was never woken"
                        );
                        thread::yield_now();
                    }
                    // Release: pairs with the main thread's Acquire.
                    g.store(true, Ordering::Release);
                    // Relaxed: written on this thread.
                    (eb.result(awaits).unwrap(), polls.load(Ordering::Relaxed))
                });
                let mut passes = 0;
                // Acquire: pairs with B's Release.
                while !got.load(Ordering::Acquire) {
                    match ex.run(1, None) {
                        Ok(_) | Err(RunError::Stalled) => {}
                        Err(e) => panic!("run failed: {e:?}"),
                    }
                    passes += 1;
                    assert!(passes < REPOINT_PASSES, "join lost: the task awaiting the re-pointed join never returned");
                    thread::yield_now();
                }
                let (out, polls) = b.join().unwrap();
                assert_eq!(out, Some(Ok(7)), "the awaiting task's join did not return T's result");
                assert!(polls <= 3, "a wake repeated: P's join was polled {polls} times");
                assert_eq!(ex.result(awaited), Ok(Some(Ok(7))));
                // Relaxed: written on this thread.
                assert_eq!(later_polls.load(Ordering::Relaxed), 1, "a stale entry woke the slot's later run");
            }
            // SAFETY: joined, executors dropped.
            unsafe { slots.free() };
        });
    }

    // Preemption bound 3; 5,016 executions, 0.24 s (release, 2-core machine).
    #[test]
    fn join_rule_8_a_re_pointed_join_send_gets_the_result() {
        repoint_vs_run_end(<JoinSend as Future>::poll);
    }

    // Preemption bound 3; fails within 0.01 s (release, 2-core machine).
    #[test]
    #[should_panic(expected = "join lost")]
    fn join_rule_8_twin_no_re_announce_loses_the_wake() {
        repoint_vs_run_end(poll_join_send_with::<NoRepointAnnounce>);
    }
}
