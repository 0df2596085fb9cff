//! loom models of the work dispatcher (`core/src/dispatch.rs`, dispatch rules 1-5): a
//! thread submits a task and then quits the worker while a worker executor (its whole
//! run loop, parking on `keel_loom_tests::Parker`) takes work, runs it and parks; two
//! workers race to take (pop and claim) while tasks are submitted; and two workers
//! modelled on their dispatcher steps alone (take, quit-token take, announce, re-check,
//! park: `loom_api::DispatchWorker`) serve a submit and a `quit(2)`; one worker on those
//! steps, parking through keel's protocol, is unparked by a submit (or sees its push). No task is lost
//! (quit drains: every task submitted before the quit runs before the workers return)
//! or run twice, and every worker returns on its quit token (none sleeps through it).
//!
//! Two whole worker executors at once (their full run loops) did not finish in 4
//! minutes even at preemption bound 2, so the models of two workers keep only the
//! workers' dispatcher steps; the whole run loop's part (attach, run, park through the
//! driver) is the one-worker model's.
//!
//! Bound: `preemption_bound = Some(3)` unless a model says otherwise
//! (`LOOM_MAX_PREEMPTIONS=3`), at most 4 threads counting the main one; debug assertions
//! on (`make loom`). `dispatch::MAX_WORKERS` is 2 under loom. Runtimes are measured on
//! the project's 2-core machine, release build, and given per test.

#[cfg(not(keel_loom))]
#[test]
fn loom_models_run_with_make_loom() {
    println!("{}", keel_loom_tests::SKIPPED);
}

#[cfg(keel_loom)]
mod models {
    use keel_core::dispatch::Dispatcher;
    use keel_core::loom_api::{DispatchWorker, Strong, Weaken, quit_with, submit_with, take, take_quit_with};
    use keel_core::{Config, RunError, TaskAttrs, TaskSlot};
    use keel_loom_tests::{Leaked, ModelDriver, ModelExecutor, Parked, Parker, Quiet, check};
    use loom::thread;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A worker: an executor serving `d` that runs until it takes a quit token.
    fn worker(d: &'static Dispatcher, quiet: loom::sync::Arc<Quiet>) -> thread::JoinHandle<()> {
        thread::spawn(move || {
            let parker = Parker::sharing(quiet);
            let ex = ModelExecutor::new(ModelDriver::new(parker), Config::default());
            let ex = ex.get();
            assert!(ex.serve(d), "no worker slot");
            for _ in 0..8 {
                match ex.run(4, None) {
                    Ok(_) => {}
                    Err(RunError::Quit) => return,
                    Err(RunError::Stalled) => panic!("worker never quit: it parked and nothing will unpark it"),
                    Err(e) => panic!("run failed: {e:?}"),
                }
            }
            panic!("worker never quit: 8 runs without a quit");
        })
    }

    /// `TASKS` tasks are submitted while `WORKERS` workers run; then `quit(WORKERS)`
    /// (with `W`'s fence). Every worker quits, and quit drains (dispatch rule 5): each
    /// task ran exactly once on them, none left waiting.
    fn submit_take_quit<W: Weaken, const WORKERS: usize, const TASKS: usize>() {
        check(3, || {
            let d = Leaked::new(Dispatcher::new());
            let slots: Vec<Leaked<TaskSlot<64>>> = (0..TASKS).map(|_| Leaked::new(TaskSlot::new())).collect();
            let runs: Vec<Arc<AtomicUsize>> = (0..TASKS).map(|_| Default::default()).collect();
            // Main is the one thread that unparks workers (submit, quit).
            let quiet = Quiet::new(1);
            let workers: Vec<_> = (0..WORKERS).map(|_| worker(d.get(), quiet.clone())).collect();
            for (slot, ran) in slots.iter().zip(&runs) {
                let ran = ran.clone();
                let body = async move {
                    ran.fetch_add(1, Ordering::Relaxed);
                };
                assert!(d.get().submit(slot.get().create(TaskAttrs::default()).unwrap(), body).is_ok());
            }
            quit_with::<W>(d.get(), WORKERS as u32);
            quiet.done();
            for w in &workers {
                w.thread().unpark();
            }
            for w in workers {
                w.join().unwrap();
            }
            assert_eq!(d.get().quit_count(), WORKERS as u32, "a worker left without its quit token");
            for (i, r) in runs.iter().enumerate() {
                let n = r.load(Ordering::Relaxed);
                assert!(n <= 1, "task ran twice: task {i} ran {n} times");
                assert!(n == 1, "task stranded: task {i}, submitted before quit, never ran");
            }
            assert_eq!(d.get().remaining(), 0, "task lost: the dispatcher still counts one");
            // SAFETY: every thread joined, every executor dropped.
            unsafe { d.free() };
            for s in slots {
                // SAFETY: as above.
                unsafe { s.free() };
            }
        });
    }

    /// The dispatcher's weakened twin: `quit` without its `SeqCst` fence between adding
    /// the tokens and looking for parked workers (dispatch rule 4).
    struct NoQuitFence;
    impl Weaken for NoQuitFence {
        const PUSH_FENCE: bool = false;
    }

    // Preemption bound 3; 2,748 executions, 0.12 s (release, 2-core machine).
    #[test]
    fn dispatch_rule_4_one_worker_is_unparked_for_its_task_and_its_quit() {
        submit_take_quit::<Strong, 1, 1>();
    }

    // Preemption bound 3; fails within 0.1 s (release, 2-core machine).
    #[test]
    #[should_panic(expected = "worker never quit")]
    fn dispatch_rule_4_twin_quit_without_fence_leaves_a_worker_parked() {
        submit_take_quit::<NoQuitFence, 1, 1>();
    }

    /// The take itself, on its own (two worker executors with their whole run loops
    /// are past `make loom`'s budget at this bound): the main thread submits two tasks
    /// while two workers each try to take (pop and claim, `loom_api::take`) twice; then
    /// the main thread takes what is left. Every task is taken exactly once: the tagged
    /// Treiber stacks lose none and hand none out twice (dispatch rules 1-2).
    fn two_takers() {
        check(3, || {
            let d = Leaked::new(Dispatcher::new());
            let slots: Vec<Leaked<TaskSlot<64>>> = (0..2).map(|_| Leaked::new(TaskSlot::new())).collect();
            let tasks: Vec<_> = slots.iter().map(|s| s.get().create(TaskAttrs::default()).unwrap()).collect();
            let takers: Vec<_> = (0..2)
                .map(|_| {
                    let d = d.get();
                    thread::spawn(move || {
                        let me = DispatchWorker::new();
                        let mut got = Vec::new();
                        for _ in 0..2 {
                            match take(d, &me) {
                                Some(id) => got.push(id),
                                None => thread::yield_now(),
                            }
                        }
                        got
                    })
                })
                .collect();
            for &t in &tasks {
                assert!(d.get().submit(t, async {}).is_ok());
            }
            let mut got: Vec<u32> = takers.into_iter().flat_map(|t| t.join().unwrap()).collect();
            let me = DispatchWorker::new();
            while let Some(id) = take(d.get(), &me) {
                got.push(id);
            }
            for t in &tasks {
                let n = got.iter().filter(|&&id| id == t.id()).count();
                assert!(n <= 1, "task ran twice: task {} was taken {n} times", t.id());
                assert!(n == 1, "task lost: task {} was never taken", t.id());
            }
            // SAFETY: every thread joined; nothing runs the tasks.
            unsafe { d.free() };
            for s in slots {
                // SAFETY: as above.
                unsafe { s.free() };
            }
        });
    }

    // Preemption bound 3; 7,534 executions, 0.45 s (release, 2-core machine).
    #[test]
    fn dispatch_rule_1_two_takers_take_each_task_once() {
        two_takers();
    }

    // The same model, for the claim: a popped task is claimed by exactly one worker
    // (CAS from the dispatcher's sentinel).
    #[test]
    fn dispatch_rule_2_two_takers_claim_each_task_once() {
        two_takers();
    }

    /// A worker of `d` on its dispatcher steps alone, in the run loop's order for a
    /// worker with nothing of its own: take a task (it counts as run at once), else take
    /// a quit token (with `W`'s drain check) and return, else wait for the main thread's
    /// next step (loom's `park`; main unparks both workers after its submit and after its
    /// quit). It does not register or park through keel's protocol: with that (announce,
    /// re-check, `Parker`) two workers did not finish in 2 minutes at preemption bound 2 (this shape: 0.14 s at bound 3);
    /// not sleeping through a quit is the one-worker models'
    /// (`dispatch_rule_4_twin_quit_without_fence_leaves_a_worker_parked`). Returns the ids it took.
    fn step_worker<W: Weaken>(d: &'static Dispatcher) -> thread::JoinHandle<Vec<u32>> {
        thread::spawn(move || {
            let me = DispatchWorker::new();
            let mut got = Vec::new();
            for _ in 0..8 {
                if let Some(id) = take(d, &me) {
                    got.push(id);
                    continue;
                }
                if take_quit_with::<W>(d) {
                    return got;
                }
                // Nothing yet: where the run loop would park, until the submit or the
                // quit unparks it.
                thread::park();
            }
            panic!("worker never quit: 8 passes without a quit");
        })
    }

    /// Two workers on their dispatcher steps (`step_worker`) while the main thread
    /// submits one task and then calls `quit(2)`. Both workers quit, each with a token,
    /// and the task was taken exactly once before they did: quit drains (dispatch rule
    /// 5) and the take hands out no task twice (rules 1-2).
    fn two_workers_drain_then_quit<W: Weaken>() {
        check(3, || {
            let d = Leaked::new(Dispatcher::new());
            let slot = Leaked::new(TaskSlot::<64>::new());
            let t = slot.get().create(TaskAttrs::default()).unwrap();
            let workers: Vec<_> = (0..2).map(|_| step_worker::<W>(d.get())).collect();
            assert!(d.get().submit(t, async {}).is_ok());
            for w in &workers {
                w.thread().unpark();
            }
            quit_with::<Strong>(d.get(), 2);
            for w in &workers {
                w.thread().unpark();
            }
            let got: Vec<u32> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
            let n = got.iter().filter(|&&id| id == t.id()).count();
            assert!(n <= 1, "task ran twice: taken {n} times");
            assert!(n == 1, "task stranded: submitted before quit, and both workers quit without it");
            assert_eq!(d.get().quit_count(), 2, "a worker left without its quit token");
            // SAFETY: every thread joined, every worker dropped; nothing runs the task.
            unsafe { d.free() };
            // SAFETY: as above.
            unsafe { slot.free() };
        });
    }

    /// The drain's weakened twin: a worker takes a quit token without looking at the
    /// dispatcher again after loading the tokens (dispatch rule 5), so a worker whose
    /// take found nothing just before the submit quits past the task.
    struct QuitWithoutDrain;
    impl Weaken for QuitWithoutDrain {
        const QUIT_DRAINS: bool = false;
    }

    // Preemption bound 3; 2,344 executions, 0.14 s (release, 2-core machine).
    #[test]
    fn dispatch_rule_5_two_workers_drain_then_quit() {
        two_workers_drain_then_quit::<Strong>();
    }

    // Preemption bound 3; fails within 0.1 s (release, 2-core machine). At bound 2 it
    // does not fail: stranding needs main preempted after the spawns and each worker
    // preempted between its empty take and its token take.
    #[test]
    #[should_panic(expected = "task stranded")]
    fn dispatch_rule_5_twin_quit_without_drain_check_strands_a_task() {
        two_workers_drain_then_quit::<QuitWithoutDrain>();
    }

    /// A worker on its dispatcher steps, registered and parking through keel's protocol
    /// (count itself idle, announce PARKED, fence, re-check, park on a `Parker`), while
    /// the main thread submits one task with `W`'s fence between its push and its read of
    /// the idle count (and, if not zero, its look for a parked worker; dispatch rule 4),
    /// then says it will unpark no more. The worker takes `W`'s place for its idle count.
    /// The worker takes the task before it would sleep for good: a parked worker is
    /// counted and unparked by the submit, or its re-check sees the push.
    fn submit_unparks_a_parking_worker<W: Weaken>() {
        check(3, || {
            let d = Leaked::new(Dispatcher::new());
            let slot = Leaked::new(TaskSlot::<64>::new());
            let t = slot.get().create(TaskAttrs::default()).unwrap();
            let quiet = Quiet::new(1);
            let q = quiet.clone();
            let dd = d.get();
            let worker = thread::spawn(move || {
                let parker = Parker::sharing(q);
                let me = DispatchWorker::new();
                // SAFETY: `me` stays here until it drops at the end of this closure.
                assert!(unsafe { me.serve(dd, parker.unparker()) }, "no worker slot");
                for _ in 0..4 {
                    if take(dd, &me).is_some() {
                        return;
                    }
                    if me.announce_and_recheck_with::<W>() {
                        me.running();
                        continue;
                    }
                    match parker.park() {
                        Parked::Woke => me.running(),
                        Parked::Quiet => {
                            panic!("task stranded: the worker parked past the submit and nothing will unpark it")
                        }
                    }
                }
                panic!("the worker passed 4 times without taking the task");
            });
            assert!(submit_with::<W, _>(d.get(), t, async {}), "submit refused");
            quiet.done();
            worker.thread().unpark();
            worker.join().unwrap();
            // SAFETY: the thread joined, its worker dropped (unregistered); nothing runs the task.
            unsafe { d.free() };
            // SAFETY: as above.
            unsafe { slot.free() };
        });
    }

    /// The submit's weakened twin: no `SeqCst` fence between the push and the idle-count
    /// read, so the submitter can read no idle worker while the worker's re-check misses
    /// the push.
    struct NoSubmitFence;
    impl Weaken for NoSubmitFence {
        const PUSH_FENCE: bool = false;
    }

    /// The idle count's weakened twin: the worker counts itself idle after its re-check,
    /// so a submit whose fence comes after the worker's announce fence can read zero
    /// (and skip every worker) while the re-check missed its push.
    struct IdleAfterRecheck;
    impl Weaken for IdleAfterRecheck {
        const IDLE_BEFORE_RECHECK: bool = false;
    }

    // Preemption bound 3; 176 executions, 0.03 s (release, 2-core machine).
    #[test]
    fn dispatch_rule_4_a_submit_unparks_a_parking_worker() {
        submit_unparks_a_parking_worker::<Strong>();
    }

    // Preemption bound 3; fails within 0.1 s (release, 2-core machine).
    #[test]
    #[should_panic(expected = "task stranded")]
    fn dispatch_rule_4_twin_submit_without_fence_strands_its_task() {
        submit_unparks_a_parking_worker::<NoSubmitFence>();
    }

    // Preemption bound 3; fails within 0.1 s (release, 2-core machine).
    #[test]
    #[should_panic(expected = "task stranded")]
    fn dispatch_rule_4_twin_idle_counted_after_recheck_strands_its_task() {
        submit_unparks_a_parking_worker::<IdleAfterRecheck>();
    }
}
