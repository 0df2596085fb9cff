//! Sched rule 6 (exec/sched.rs): a yielding task alone at its level may be held off the
//! run queue between two resumes. What a user can see must be what a queued task gives:
//! `run`'s item limit leaves it queued, a task of a higher level woken meanwhile runs
//! first, one of its own level woken meanwhile runs after its next resume and before
//! the one after that.

mod common;
use common::*;
use core::future::Future;
use core::pin::{Pin, pin};
use core::task::{Context, Poll, Waker};
use keel_core::{Config, Executor, Priority, TaskState, rt, sim::SimDriver};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Pending once, leaving its waker in `slot`; ready when polled again.
struct ParkOnce {
    slot: Arc<Mutex<Option<Waker>>>,
    parked: bool,
}

impl Future for ParkOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.parked {
            return Poll::Ready(());
        }
        self.parked = true;
        *self.slot.lock().unwrap() = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[test]
fn sched_rule_6_a_lone_yielder_stopped_by_max_items_stays_queued() {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let t = ex
        .attach(task(Priority::Normal, "y"), async {
            for _ in 0..10 {
                rt::yield_now().await?;
            }
            Ok(0)
        })
        .unwrap();
    assert_eq!(ex.run(4, None), Ok(4));
    assert_eq!(ex.state(t), Ok(TaskState::Ready));
    assert_eq!(ex.stats().ready, [0, 1, 0], "the yielder is queued when run returns");
    assert_eq!(ex.run(100, None), Ok(7));
    assert_eq!(ex.state(t), Ok(TaskState::Completed));
    assert_eq!(ex.stats().ready, [0, 0, 0]);
}

/// Runs a yielder of level Normal beside a task of `other` level parked on its waker; a
/// thread wakes the parked task (through the inbox) during the yielder's first resume.
/// Returns the log: the yielder logs `y<k>` at its resume k (then yields), the other task
/// `woken` when it runs.
fn woken_from_another_thread_while_yielding(other: Priority) -> Vec<String> {
    let ex = pin!(Executor::new(SimDriver::new(), Config::default()).unwrap());
    let ex = ex.into_ref();
    let log = Log::default();
    let slot: Arc<Mutex<Option<Waker>>> = Arc::default();
    let waked = Arc::new(AtomicBool::new(false));
    let (l, s) = (log.clone(), slot.clone());
    ex.attach(task(other, "parked"), async move {
        ParkOnce { slot: s, parked: false }.await;
        l.push("woken");
        Ok(0)
    })
    .unwrap();
    // Parks the other task (and leaves nothing queued).
    assert_eq!(ex.run(1, None), Ok(1));
    let (l, s, w) = (log.clone(), slot.clone(), waked.clone());
    let waked = waked.clone();
    ex.attach(task(Priority::Normal, "yielder"), async move {
        let waker = s.lock().unwrap().take().expect("the parked task left its waker");
        let thread = std::thread::spawn(move || {
            waker.wake();
            w.store(true, Ordering::Release);
        });
        // The executor's thread waits here, inside the yielder's resume, until the wake
        // has returned (bounded: ten seconds): the wake is then whole in the inbox, and
        // no pass has taken it yet.
        let start = std::time::Instant::now();
        while !waked.load(Ordering::Acquire) {
            assert!(start.elapsed().as_secs() < 10, "the thread's wake never returned");
            std::hint::spin_loop();
        }
        for k in 0..3 {
            l.push(format!("y{k}"));
            rt::yield_now().await?;
        }
        thread.join().unwrap();
        Ok(0)
    })
    .unwrap();
    run_all!(ex);
    log.take()
}

#[test]
fn sched_rule_6_a_higher_level_woken_meanwhile_runs_before_the_yielders_next_resume() {
    // y0 is the resume that saw the wake returned: the woken task is in the inbox
    // then, and the next pass takes it; being higher, it runs before y1.
    assert_eq!(woken_from_another_thread_while_yielding(Priority::High), ["y0", "woken", "y1", "y2"]);
}

#[test]
fn sched_rule_6_a_same_level_task_woken_meanwhile_runs_after_the_yielders_next_resume() {
    // The yielder was ahead of it (its yield came first): y1 runs first, then the woken
    // task, then y2 (the yielder queued behind it by its yield after y1).
    assert_eq!(woken_from_another_thread_while_yielding(Priority::Normal), ["y0", "y1", "woken", "y2"]);
}

#[test]
fn sched_rule_6_a_lower_level_woken_meanwhile_waits_for_the_yielder() {
    assert_eq!(woken_from_another_thread_while_yielding(Priority::Low), ["y0", "y1", "y2", "woken"]);
}
