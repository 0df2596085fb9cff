//! Join rule 8 under real threads (a stress companion of `forgotten_futures.rs`'s
//! step-by-step cases and of the loom model in `loom-tests/tests/loom_join.rs`, which
//! checks the re-point against the run's end in every interleaving of a smaller case,
//! two threads): a `join_send` registered
//! by a task on one thread, handed to a task on a second thread and awaited there, while
//! a third thread's executor runs the awaited task to its end at the same time: the
//! awaited run ends only after the awaiting task has taken the join (a flag it sets),
//! then after a different number of yields in each iteration, so the run's end races the
//! second task's re-point. The awaiting task must get the run's result every time, within
//! a bound (a lost wake leaves it pending until the bound and fails the test).

mod common;
use common::*;
use core::future::Future;
use core::pin::{Pin, pin};
use core::task::Poll;
use core::time::Duration;
use keel_core::join::{JoinSend, join_send};
use keel_core::sim::SimDriver;
use keel_core::{Config, Executor, Priority, TaskError, TaskHandle, rt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

const ITERATIONS: u64 = 200;
/// Per iteration and thread: far above the microseconds an iteration takes.
const BOUND: Duration = Duration::from_secs(5);

type Stash = Arc<Mutex<Option<Pin<Box<JoinSend>>>>>;

/// Runs `ex` until `done()` or `BOUND`; `false` if the bound ran out.
fn run_until(ex: Pin<&Executor<SimDriver>>, done: impl Fn() -> bool) -> bool {
    let t0 = Instant::now();
    while !done() {
        if t0.elapsed() > BOUND {
            return false;
        }
        let _ = ex.run(8, Some(Duration::from_micros(100)));
    }
    true
}

#[test]
fn join_rule_8_a_join_send_handed_between_threads_while_its_run_ends_gets_the_result() {
    for i in 0..ITERATIONS {
        let yields = i % 7;
        let (handle_tx, handle_rx) = mpsc::channel::<TaskHandle>();
        let go = Arc::new(AtomicBool::new(false));
        let owner_go = go.clone();
        // The owner's thread: the awaited run yields `yields` times and returns `i`.
        let owner = std::thread::spawn(move || {
            let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
            let ex = ex.into_ref();
            let awaited = ex
                .attach(task(Priority::Normal, "awaited"), async move {
                    // Acquire: pairs with the awaiting task's Release store.
                    while !owner_go.load(Ordering::Acquire) {
                        rt::yield_now().await?;
                    }
                    for _ in 0..yields {
                        rt::yield_now().await?;
                    }
                    Ok::<u64, TaskError>(i)
                })
                .unwrap();
            handle_tx.send(awaited).unwrap();
            assert!(run_until(ex, || ex.attached() == 0), "iteration {i}: the awaited run never ended");
        });
        let awaited = handle_rx.recv().unwrap();
        let stash: Stash = Arc::default();
        // The registering thread: one poll (pending: the run waits for `go`), then the
        // join goes to the stash.
        let s = stash.clone();
        std::thread::spawn(move || {
            let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
            let ex = ex.into_ref();
            ex.attach(task(Priority::Normal, "registers"), async move {
                let mut j = Box::pin(join_send(awaited, None));
                let first = core::future::poll_fn(|cx| Poll::Ready(j.as_mut().poll(cx))).await;
                *s.lock().unwrap() = Some(match first {
                    Poll::Pending => j,
                    Poll::Ready(out) => panic!("iteration {i}: the run cannot have ended yet: {out:?}"),
                });
            })
            .unwrap();
            assert!(run_until(ex, || ex.attached() == 0), "iteration {i}: the registering task never ended");
        })
        .join()
        .unwrap();
        // This thread: a task awaits the handed-over join, racing the run's end.
        let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
        let ex = ex.into_ref();
        let got: Arc<Mutex<Option<u64>>> = Arc::default();
        let g = got.clone();
        let s = stash.clone();
        ex.attach(task(Priority::Normal, "awaits"), async move {
            let j = s.lock().unwrap().take().expect("stashed");
            // Release: pairs with the awaited run's Acquire load; the run may end now.
            go.store(true, Ordering::Release);
            let value = match j.await {
                Ok(Ok(v)) => v,
                other => panic!("iteration {i}: the join returned {other:?}"),
            };
            *g.lock().unwrap() = Some(value);
        })
        .unwrap();
        let woken = run_until(ex, || ex.attached() == 0);
        owner.join().unwrap();
        assert!(woken, "iteration {i}: the awaiting task was never woken (join rule 8)");
        assert_eq!(*got.lock().unwrap(), Some(i), "iteration {i}: the run's own result");
    }
}
