//! loom models of the executor's inbox (`core/src/mailbox/inbox.rs`): producers on other
//! threads push while the executor's thread drains; every task is taken exactly once.
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
    use core::pin::pin;
    use core::ptr::NonNull;
    use keel_core::loom_api::{Inbox, InboxNode, Pop, Strong, Weaken};
    use keel_core::{Config, Executor, HandleSlot, NoIo, RunError, TaskAttrs, TaskSlot};
    use keel_loom_tests::{Leaked, check};
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicBool, Ordering};
    use loom::thread;

    /// A stand-in for a task header: the inbox node first, then who it is.
    #[repr(C)]
    struct Item {
        node: InboxNode,
        id: usize,
    }

    fn item_of(node: NonNull<InboxNode>) -> &'static Item {
        // SAFETY: only `Item::node`s are pushed, and `Item` is `repr(C)` with the node
        // first; the items outlive the model's execution (leaked, freed after joins).
        unsafe { &*(node.as_ptr() as *const Item) }
    }

    /// The inbox's weakened twin: the producer's link store is Relaxed (inbox rule 1
    /// says Release).
    struct RelaxedLink;
    impl Weaken for RelaxedLink {
        const PUSH_LINK: Ordering = Ordering::Relaxed;
    }

    /// Producer A pushes task X, waits until the executor has taken it, and pushes X
    /// again (a task woken a second time: its node is reused); producer B pushes task Y
    /// meanwhile. The executor takes X twice and Y once, whatever the interleaving.
    ///
    /// What the Release link store carries here: X's `next` was set to Y by B's link
    /// store while X was queued the first time; A's second push clears it (Relaxed,
    /// published by its swap and link). If the consumer reaches X through a link store
    /// that does not publish that clear, it reads the stale `next == Y`, hands X out
    /// with its tail on Y, and later hands Y out a second time.
    fn reused_node<W: Weaken>() {
        check(3, || {
            let inbox = Arc::new(Inbox::new());
            inbox.init();
            let items = Leaked::new([Item { node: InboxNode::new(), id: 0 }, Item { node: InboxNode::new(), id: 1 }]);
            let x_taken = Arc::new(AtomicBool::new(false));
            let a = {
                let (inbox, x_taken, x) = (inbox.clone(), x_taken.clone(), NonNull::from(&items.get()[0].node));
                let x = x.as_ptr() as usize;
                thread::spawn(move || {
                    let x = NonNull::new(x as *mut InboxNode).unwrap();
                    // SAFETY: X is in no inbox; the items outlive the execution.
                    unsafe { inbox.push::<W>(x) };
                    // Acquire: pairs with the consumer's Release after taking X, as a
                    // waker's CAS finds the word the owner cleared (wake rule 5). Blocks
                    // (loom's park) rather than spins: the consumer unparks us once.
                    while !x_taken.load(Ordering::Acquire) {
                        thread::park();
                    }
                    // SAFETY: X was taken off the inbox: it is in none.
                    unsafe { inbox.push::<W>(x) };
                })
            };
            let b = {
                let (inbox, y) = (inbox.clone(), NonNull::from(&items.get()[1].node).as_ptr() as usize);
                thread::spawn(move || {
                    // SAFETY: Y is in no inbox; the items outlive the execution.
                    unsafe { inbox.push::<W>(NonNull::new(y as *mut InboxNode).unwrap()) };
                })
            };
            let mut taken = [0usize; 2];
            let mut passes = 0;
            while taken[0] + taken[1] < 3 {
                passes += 1;
                assert!(passes < 64, "consumer made no progress");
                match inbox.pop() {
                    Pop::Item(n) => {
                        let id = item_of(n).id;
                        taken[id] += 1;
                        assert!(taken[1] <= 1, "task taken twice: Y came out of the inbox again");
                        assert!(taken[0] <= 2, "task taken twice: X came out of the inbox a third time");
                        if id == 0 && taken[0] == 1 {
                            // Release: pairs with producer A's Acquire.
                            x_taken.store(true, Ordering::Release);
                            a.thread().unpark();
                        }
                    }
                    Pop::Empty | Pop::Busy => thread::yield_now(),
                }
            }
            a.join().unwrap();
            b.join().unwrap();
            assert!(matches!(inbox.pop(), Pop::Empty), "task taken twice: the inbox still holds a node");
            drop(inbox);
            // SAFETY: joined; the inbox that linked the items is gone.
            unsafe { items.free() };
        });
    }

    // Preemption bound 3; 27,467 executions, 1.3 s (release, 2-core machine).
    #[test]
    fn inbox_rule_1_reused_node_taken_exactly_once() {
        reused_node::<Strong>();
    }

    // Preemption bound 3; fails within 0.1 s (release, 2-core machine).
    #[test]
    #[should_panic(expected = "task taken twice")]
    fn inbox_rule_1_twin_relaxed_link_takes_a_task_twice() {
        reused_node::<RelaxedLink>();
    }

    /// `ATTACHERS` threads attach one task each through an `ExecutorHandle` (the real
    /// foreign-attach path: claim, place, mark, push, unpark check) while the executor's
    /// thread runs; then it runs to the end. Every task runs exactly once.
    fn foreign_attaches<const ATTACHERS: usize>() {
        check(3, || {
            let slots: Vec<Leaked<TaskSlot<64>>> = (0..ATTACHERS).map(|_| Leaked::new(TaskSlot::new())).collect();
            let hslot = Leaked::new(HandleSlot::new());
            let runs: Vec<std::sync::Arc<std::sync::atomic::AtomicUsize>> =
                (0..ATTACHERS).map(|_| Default::default()).collect();
            {
                let ex = pin!(Executor::new(NoIo, Config::default()).unwrap());
                let ex = ex.into_ref();
                let handle = ex.handle(hslot.get()).unwrap();
                let threads: Vec<_> = (0..ATTACHERS)
                    .map(|i| {
                        let task = slots[i].get().create(TaskAttrs::default()).unwrap();
                        let ran = runs[i].clone();
                        thread::spawn(move || {
                            let body = async move {
                                ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            };
                            assert!(handle.attach(task, body).is_ok(), "a foreign attach was refused");
                        })
                    })
                    .collect();
                // Drain while the attaches land (some pushes are seen half done: Busy).
                let _ = ex.run(ATTACHERS, None);
                for t in threads {
                    t.join().unwrap();
                }
                for _ in 0..ATTACHERS + 1 {
                    match ex.run(ATTACHERS, None) {
                        Ok(_) => {}
                        Err(RunError::Stalled) => break,
                        Err(e) => panic!("run failed: {e:?}"),
                    }
                }
                for (i, r) in runs.iter().enumerate() {
                    let n = r.load(std::sync::atomic::Ordering::Relaxed);
                    assert!(n <= 1, "task ran twice: task {i} ran {n} times");
                    assert!(n == 1, "task lost: task {i} never ran");
                }
                assert_eq!(ex.attached(), 0);
            }
            // SAFETY: joined, executor dropped.
            unsafe { hslot.free() };
            for s in slots {
                // SAFETY: as above.
                unsafe { s.free() };
            }
        });
    }

    // Preemption bound 3; 11,460 executions, 0.7 s (release, 2-core machine).
    #[test]
    fn inbox_rule_4_two_foreign_attaches_run_exactly_once() {
        foreign_attaches::<2>();
    }

    // Preemption bound 3; 254,000 executions, 21 s (release, 2-core machine): 4 threads,
    // the largest model of `make loom`.
    #[test]
    fn inbox_rule_4_three_foreign_attaches_run_exactly_once() {
        foreign_attaches::<3>();
    }
}
