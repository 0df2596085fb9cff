//! Sched rule 6 (exec/sched.rs) against what can happen while a lone yielder is held off
//! the run queue: a task attached from another thread that cancels it, a timer that comes
//! due (on a driver whose clock moves by itself), and the yielder cancelling its own joiner
//! in the resume in which it completes (join rule 3's inline wake of a task already woken).

mod common;
use common::*;
use core::pin::Pin;
use keel_core::join::join;
use keel_core::{Config, Driver, Executor, HandleSlot, NoIo, Park, Priority, TaskError, TaskState, rt};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

type Ex = Executor<NoIo>;

thread_local! {
    /// The executor of this thread's test, for bodies that cancel another task.
    static EX: Cell<Option<Pin<&'static Ex>>> = const { Cell::new(None) };
}

fn leaked_executor() -> Pin<&'static Ex> {
    let ex: &'static Ex = Box::leak(Box::new(Executor::new(NoIo, Config::default()).unwrap()));
    // SAFETY: leaked, so never moved (or dropped) again.
    let ex = unsafe { Pin::new_unchecked(ex) };
    EX.with(|c| c.set(Some(ex)));
    ex
}

/// A yielder alone at its level is cancelled by a High task attached from another thread
/// while it yields (the attach arrives through the inbox, which the held yielder's checks
/// drain): the High task runs, the cancel reaches the yielder at its next yield, and it
/// ends `Cancelled` well before its own bound.
#[test]
fn a_lone_yielder_cancelled_by_a_task_attached_from_another_thread_ends_cancelled() {
    let ex = leaked_executor();
    let hs: &'static HandleSlot = Box::leak(Box::new(HandleSlot::new()));
    let handle = ex.handle(hs).unwrap();
    let yields = Rc::new(Cell::new(0u64));
    let y = yields.clone();
    let started = Arc::new(AtomicBool::new(false));
    let s = started.clone();
    let y_task = ex
        .attach(task(Priority::Normal, "yielder"), async move {
            s.store(true, Ordering::Release);
            // Bounded: 50 million yields (seconds) if the cancel were lost.
            for _ in 0..50_000_000u64 {
                y.set(y.get() + 1);
                rt::yield_now().await?;
            }
            Ok(1)
        })
        .unwrap();
    let canceller = task(Priority::High, "canceller");
    let cancelled = Arc::new(AtomicBool::new(false));
    let c = cancelled.clone();
    let thread = std::thread::spawn(move || {
        while !started.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
        let body = async move {
            let ex = EX.with(|c| c.get()).expect("runs on the executor's thread");
            assert_eq!(ex.state(y_task), Ok(TaskState::Ready), "the yielder is between two resumes");
            assert_eq!(ex.cancel(y_task), Ok(keel_core::CancelOutcome::Resumes));
            c.store(true, Ordering::Release);
            Ok(7)
        };
        handle.attach(canceller, body).map_err(|_| "refused").unwrap();
    });
    let t0 = std::time::Instant::now();
    while ex.attached() > 0 {
        let _ = ex.run(1 << 20, Some(Duration::from_millis(10)));
        assert!(t0.elapsed() < Duration::from_secs(60), "runaway");
    }
    thread.join().unwrap();
    assert_eq!(ex.result(y_task), Ok(Some(Err(TaskError::Cancelled))), "the cancel reached the held yielder");
    assert!(cancelled.load(Ordering::Acquire), "the task attached from the other thread ran its cancel");
    assert!(yields.get() < 50_000_000);
    assert_eq!(ex.stats().ready, [0, 0, 0]);
}

/// A driver with no i/o whose clock is the wall's: time passes while a task yields.
struct Wall(std::time::Instant);

// SAFETY: it accepts no operation (its `Op` is uninhabited): nothing to report.
unsafe impl Driver for Wall {
    type Op = core::convert::Infallible;
    fn now(&self) -> keel_core::Instant {
        keel_core::Instant::from_nanos(self.0.elapsed().as_nanos() as u64)
    }
    fn submit(
        &mut self,
        op: Self::Op,
        _: keel_core::driver::IoToken,
    ) -> Result<keel_core::OpId, (Self::Op, keel_core::Errno)> {
        match op {}
    }
    fn cancel(&mut self, _: keel_core::OpId) {}
    fn retarget(&mut self, _: keel_core::OpId, _: keel_core::driver::IoToken) {}
    fn reap<F: FnMut(keel_core::driver::IoToken, keel_core::IoResult)>(&mut self, _: usize, _: &mut F) -> usize {
        0
    }
    fn in_flight(&self) -> usize {
        0
    }
    fn park(&mut self, deadline: Option<keel_core::Instant>) -> Result<Park, keel_core::Errno> {
        let Some(d) = deadline else { return Ok(Park::Stalled) };
        let now = self.now().as_nanos();
        std::thread::sleep(Duration::from_nanos(d.as_nanos().saturating_sub(now)));
        Ok(Park::Woke)
    }
}

/// A lone yielder while another task sleeps 5 ms: the armed timer keeps the yielder's
/// passes from skipping the timer check, so the sleeper wakes while the yielder still
/// yields (it yields until it sees the sleeper done, bounded by 10 s of wall time).
#[test]
fn a_timer_comes_due_while_a_lone_yielder_yields() {
    let ex = core::pin::pin!(Executor::new(Wall(std::time::Instant::now()), Config::default()).unwrap());
    let ex = ex.into_ref();
    let fired = Rc::new(Cell::new(false));
    let f = fired.clone();
    ex.attach(task(Priority::High, "sleeper"), async move {
        rt::sleep(Duration::from_millis(5)).await?;
        f.set(true);
        Ok(0)
    })
    .unwrap();
    assert_eq!(ex.run(1, None), Ok(1), "the sleeper armed its timer");
    let f = fired.clone();
    let y = ex
        .attach(task(Priority::Normal, "yielder"), async move {
            let t0 = std::time::Instant::now();
            while !f.get() {
                if t0.elapsed() > Duration::from_secs(10) {
                    return Ok(0);
                }
                rt::yield_now().await?;
            }
            Ok(1)
        })
        .unwrap();
    let t0 = std::time::Instant::now();
    while ex.attached() > 0 {
        let _ = ex.run(1 << 20, Some(Duration::from_millis(10)));
        assert!(t0.elapsed() < Duration::from_secs(60), "runaway");
    }
    assert_eq!(ex.result(y), Ok(Some(Ok(1))), "the timer fired while the yielder yielded");
}

/// The yielder, in the resume in which it completes, cancels the task joining it: the
/// joiner is woken twice in one pass (by the cancel, then by the run's end: join rule 3's
/// inline wake finds it Ready and changes nothing, wake rule 1), runs once, and sees
/// either the result or its cancel, never a corrupted run queue.
#[test]
fn a_joiner_cancelled_by_the_run_it_joins_as_that_run_ends_runs_once() {
    let ex = leaked_executor();
    let handles: Rc<Cell<Option<(keel_core::TaskHandle, keel_core::TaskHandle)>>> = Rc::default();
    let runs = Rc::new(Cell::new(0u32));
    let (r, h) = (runs.clone(), handles.clone());
    let joiner = ex
        .attach(task(Priority::Normal, "joiner"), async move {
            r.set(r.get() + 1);
            let (yielder, _) = h.get().expect("both attached before the first run");
            let got = join(yielder).await;
            r.set(r.get() + 1);
            match got {
                Ok(Ok(v)) => Ok(v),
                _ => Ok(99),
            }
        })
        .unwrap();
    let h = handles.clone();
    let yielder = ex
        .attach(task(Priority::Normal, "yielder"), async move {
            for _ in 0..100 {
                rt::yield_now().await?;
            }
            let ex = EX.with(|c| c.get()).expect("runs on the executor's thread");
            let (_, joiner) = h.get().unwrap();
            assert_eq!(ex.state(joiner), Ok(TaskState::Suspended(keel_core::SuspendReason::Wait)));
            ex.cancel(joiner).map_err(|_| TaskError::Failed(1))?;
            Ok(5)
        })
        .unwrap();
    handles.set(Some((yielder, joiner)));
    run_all!(ex);
    assert_eq!(ex.result(yielder), Ok(Some(Ok(5))));
    let j = ex.result(joiner);
    assert!(matches!(j, Ok(Some(Ok(5 | 99))) | Ok(Some(Err(TaskError::Cancelled)))), "{j:?}");
    assert_eq!(runs.get(), 2, "the joiner resumed once after its join");
    assert_eq!(ex.stats().ready, [0, 0, 0]);
    assert_eq!(ex.attached(), 0);
}
