//! The ring driver's two backends on work that never touches i/o: `spawn_backend`,
//! `yield_backend` and `timer_backend` (ns per operation), each run on an executor whose
//! driver is `RingDriver` on io_uring (`keel-ring`) and on the epoll engine
//! (`keel-epoll`). Goal: the epoll backend within 5% of the ring (the task path is the
//! same; only parking and reaping differ).
//!
//! - spawn: attach an `async {}` body and `run` it to completion, one at a time.
//! - yield: one task yields `iters` times.
//! - timer: one task sleeps 0 ns `iters` times (each sleep arms a timer that is due at
//!   once, so every one goes through the timer queue and a park with a past deadline).

use crate::goals::{Goal, Op};
use crate::harness::{Case, Impl, Timed, Unit};
use core::pin::Pin;
use keel_core::{Config, Executor, TaskError, TaskSlot, rt};
use keel_linux::{BackendChoice, RingConfig, RingDriver};
use std::time::{Duration, Instant};

const RING: BackendChoice = BackendChoice::Ring;
const EPOLL: BackendChoice = BackendChoice::Epoll;

/// `spawn_backend`.
pub const SPAWN: Case = Case {
    name: "spawn_backend",
    unit: Unit::NsPerOp,
    impls: &[Impl { name: "keel-ring", run: spawn::<0> }, Impl { name: "keel-epoll", run: spawn::<1> }],
};
/// `yield_backend`.
pub const YIELD: Case = Case {
    name: "yield_backend",
    unit: Unit::NsPerOp,
    impls: &[Impl { name: "keel-ring", run: yields::<0> }, Impl { name: "keel-epoll", run: yields::<1> }],
};
/// `timer_backend`.
pub const TIMER: Case = Case {
    name: "timer_backend",
    unit: Unit::NsPerOp,
    impls: &[Impl { name: "keel-ring", run: timers::<0> }, Impl { name: "keel-epoll", run: timers::<1> }],
};

/// The goals of this module's cases (see `crate::goals`).
pub const GOALS: &[Goal] = &[
    Goal {
        case: "spawn_backend",
        imp: "keel-epoll",
        peer_case: "spawn_backend",
        peer: "keel-ring",
        op: Op::AtMost,
        x: 1.05,
    },
    Goal {
        case: "yield_backend",
        imp: "keel-epoll",
        peer_case: "yield_backend",
        peer: "keel-ring",
        op: Op::AtMost,
        x: 1.05,
    },
    Goal {
        case: "timer_backend",
        imp: "keel-epoll",
        peer_case: "timer_backend",
        peer: "keel-ring",
        op: Op::AtMost,
        x: 1.05,
    },
];

std::thread_local! {
    static SLOT: &'static TaskSlot = Box::leak(Box::new(TaskSlot::new()));
}

fn executor<const B: usize>() -> Result<Executor<RingDriver>, String> {
    let backend = if B == 0 { RING } else { EPOLL };
    let d = RingDriver::new(RingConfig { backend, ..RingConfig::default() }).map_err(|e| format!("driver: {e}"))?;
    Executor::new(d, Config::default()).map_err(|e| e.to_string())
}

fn spawn<const B: usize>(iters: u64) -> Timed {
    let ex = core::pin::pin!(executor::<B>()?);
    let ex = ex.into_ref();
    let mut h = super::create_task(SLOT.with(|s| *s), "spawn")?;
    let start = Instant::now();
    for _ in 0..iters {
        h = ex.attach(h, async {}).map_err(|e| format!("attach: {e}"))?;
        ex.run(usize::MAX, None).map_err(|e| format!("run: {e}"))?;
    }
    let elapsed = start.elapsed();
    check(ex, iters)?;
    ex.destroy(h).map_err(|e| format!("destroy: {e}"))?;
    Ok(elapsed)
}

fn yields<const B: usize>(iters: u64) -> Timed {
    run_body::<B>(iters, |n| {
        Box::pin(async move {
            for _ in 0..n {
                rt::yield_now().await?;
            }
            Ok::<u64, TaskError>(0)
        })
    })
}

fn timers<const B: usize>(iters: u64) -> Timed {
    run_body::<B>(iters, |n| {
        Box::pin(async move {
            for _ in 0..n {
                rt::sleep(Duration::ZERO).await?;
            }
            Ok::<u64, TaskError>(0)
        })
    })
}

type Body = Pin<Box<dyn core::future::Future<Output = Result<u64, TaskError>>>>;

fn run_body<const B: usize>(iters: u64, body: fn(u64) -> Body) -> Timed {
    let ex = core::pin::pin!(executor::<B>()?);
    let ex = ex.into_ref();
    let h = super::create_task(SLOT.with(|s| *s), "backend")?;
    let h = ex.attach(h, body(iters)).map_err(|e| format!("attach: {e}"))?;
    let start = Instant::now();
    while ex.attached() > 0 {
        ex.run(usize::MAX, Some(Duration::from_secs(5))).map_err(|e| format!("run: {e}"))?;
    }
    let elapsed = start.elapsed();
    match ex.result(h) {
        Ok(Some(Ok(_))) => {}
        other => return Err(format!("task ended with {other:?}")),
    }
    ex.destroy(h).map_err(|e| format!("destroy: {e}"))?;
    Ok(elapsed)
}

fn check(ex: Pin<&Executor<RingDriver>>, iters: u64) -> Result<(), String> {
    let completed = ex.stats().completed;
    if completed != iters {
        return Err(format!("{completed} of {iters} runs completed"));
    }
    Ok(())
}
