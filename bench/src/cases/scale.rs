//! Scaling curves: the same operation with more and more live tasks, to show whether a
//! runtime's per-operation cost stays flat as its work grows (each family is a
//! [`Curve`] per impl; the run prints whether it is flat within 20%).
//!
//! - `yield_n{1,1000,100000}` (ns per yield): N future tasks, each yielding k times
//!   (k = ceil(iters / N)), all ready at once, so each yield goes to the back of a run
//!   queue N long. keel: N attached tasks, `run` until all completed; tokio: N tasks
//!   spawned on a current-thread runtime before the clock starts, each yielding by
//!   waking itself (tokio's cheapest yield: the `yield` case's tokio-wake), the last to
//!   finish sends on a oneshot that `block_on` awaits.
//! - `timer_n{1,1000,100000}` (ns of the thread's CPU time per timer fire): N tasks,
//!   each sleeping 1 ms k times (k = ceil(iters / N), at most [`TIMER_ROUNDS`]), so N
//!   timers are armed at any time. The thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not
//!   the wall clock: at small N most of a trial is the sleeps themselves; the CPU time
//!   holds each fire's share of arming, expiry, wake and run, and of the parks between
//!   (at N = 1 one park per fire, so the smallest size is the dearest per fire). keel:
//!   `rt::sleep`; tokio: `tokio::time::sleep` on a runtime with its timer enabled (its
//!   wheel has 1 ms ticks, so 1 ms is its finest sleep, and keel sleeps as long).
//! - `fiber_yield_n{1,1000,10000}` (ns per yield): the same as `yield_n*` with keel fiber
//!   tasks (`Fiber::yield_now`, 64 KiB stacks).
//! - `fiber_spawn_n{1,1000,10000}` (ns per spawn + run): `fiber_spawn`'s keel loop with
//!   N - 1 other fibers alive, each asleep for an hour (armed timers, held stacks); they
//!   are cancelled after the trial.
//!
//! The keel fiber cases keep one executor per size and thread for the whole run (leaked),
//! its stacks from `MmapStacks` (keel-linux's guarded stacks: `RegionStacks` holds at
//! most 64) and kept in its spare pool (`Config::max_spare_stacks` = N), so that only the
//! first trial maps them. A trial's time is scaled from the k * N operations it did to `iters`.

use crate::goals::Curve;
use crate::harness::{Case, Impl, Timed, Unit};
use core::pin::Pin;
use keel_core::{Config, Executor, Fiber, TaskAttrs, TaskError, TaskHandle, TaskSlot, rt};
use keel_linux::{MmapStacks, SleepDriver};
use std::cell::RefCell;
use std::time::{Duration, Instant};

macro_rules! sized {
    ($name:literal, $unit:expr, $n:literal, [$($imp:literal => $f:ident),*]) => {
        Case { name: $name, unit: $unit, impls: &[$(Impl { name: $imp, run: $f::<$n> }),*] }
    };
}

/// `yield_n1`.
pub const YIELD_N1: Case = sized!("yield_n1", Unit::NsPerOp, 1, ["keel" => keel_yield, "tokio" => tokio_yield]);
/// `yield_n1000`.
pub const YIELD_N1000: Case =
    sized!("yield_n1000", Unit::NsPerOp, 1000, ["keel" => keel_yield, "tokio" => tokio_yield]);
/// `yield_n100000`.
pub const YIELD_N100000: Case =
    sized!("yield_n100000", Unit::NsPerOp, 100000, ["keel" => keel_yield, "tokio" => tokio_yield]);
/// `timer_n1`.
pub const TIMER_N1: Case = sized!("timer_n1", Unit::NsPerOp, 1, ["keel" => keel_timer, "tokio" => tokio_timer]);
/// `timer_n1000`.
pub const TIMER_N1000: Case =
    sized!("timer_n1000", Unit::NsPerOp, 1000, ["keel" => keel_timer, "tokio" => tokio_timer]);
/// `timer_n100000`.
pub const TIMER_N100000: Case =
    sized!("timer_n100000", Unit::NsPerOp, 100000, ["keel" => keel_timer, "tokio" => tokio_timer]);
/// `fiber_yield_n1`.
pub const FIBER_YIELD_N1: Case = sized!("fiber_yield_n1", Unit::NsPerOp, 1, ["keel" => keel_fiber_yield]);
/// `fiber_yield_n1000`.
pub const FIBER_YIELD_N1000: Case = sized!("fiber_yield_n1000", Unit::NsPerOp, 1000, ["keel" => keel_fiber_yield]);
/// `fiber_yield_n10000`.
pub const FIBER_YIELD_N10000: Case = sized!("fiber_yield_n10000", Unit::NsPerOp, 10000, ["keel" => keel_fiber_yield]);
/// `fiber_spawn_n1`.
pub const FIBER_SPAWN_N1: Case = sized!("fiber_spawn_n1", Unit::NsPerOp, 1, ["keel" => keel_fiber_spawn]);
/// `fiber_spawn_n1000`.
pub const FIBER_SPAWN_N1000: Case = sized!("fiber_spawn_n1000", Unit::NsPerOp, 1000, ["keel" => keel_fiber_spawn]);
/// `fiber_spawn_n10000`.
pub const FIBER_SPAWN_N10000: Case = sized!("fiber_spawn_n10000", Unit::NsPerOp, 10000, ["keel" => keel_fiber_spawn]);

/// The scaling curves of these cases.
pub const CURVES: &[Curve] = &[
    Curve {
        name: "yield",
        size: "live tasks",
        imp: "keel",
        points: &[(1, "yield_n1"), (1000, "yield_n1000"), (100000, "yield_n100000")],
    },
    Curve {
        name: "yield",
        size: "live tasks",
        imp: "tokio",
        points: &[(1, "yield_n1"), (1000, "yield_n1000"), (100000, "yield_n100000")],
    },
    Curve {
        name: "timer",
        size: "live tasks",
        imp: "keel",
        points: &[(1, "timer_n1"), (1000, "timer_n1000"), (100000, "timer_n100000")],
    },
    Curve {
        name: "timer",
        size: "live tasks",
        imp: "tokio",
        points: &[(1, "timer_n1"), (1000, "timer_n1000"), (100000, "timer_n100000")],
    },
    Curve {
        name: "fiber_yield",
        size: "live fibers",
        imp: "keel",
        points: &[(1, "fiber_yield_n1"), (1000, "fiber_yield_n1000"), (10000, "fiber_yield_n10000")],
    },
    Curve {
        name: "fiber_spawn",
        size: "live fibers",
        imp: "keel",
        points: &[(1, "fiber_spawn_n1"), (1000, "fiber_spawn_n1000"), (10000, "fiber_spawn_n10000")],
    },
];

/// Body bytes of the scaling cases' task slots.
const BODY: usize = 160;
/// Most rounds of 1 ms sleeps per task in a timer trial.
const TIMER_ROUNDS: u64 = 40;
/// The sleep of the timer cases.
const TICK: Duration = Duration::from_millis(1);

std::thread_local! {
    /// This thread's task slots for the scaling cases (grown on demand, then reused; a
    /// trial creates its tasks in the first N and destroys them at its end).
    static SLOTS: RefCell<Vec<&'static TaskSlot<BODY>>> = const { RefCell::new(Vec::new()) };
}

/// The first `n` slots of this thread.
fn slots(n: usize) -> Vec<&'static TaskSlot<BODY>> {
    SLOTS.with(|s| {
        let mut s = s.borrow_mut();
        while s.len() < n {
            s.push(Box::leak(Box::new(TaskSlot::new())));
        }
        s[..n].to_vec()
    })
}

/// Rounds per task for `iters` operations over `n` tasks: at least one, at most `cap`.
pub(super) fn rounds(iters: u64, n: u64, cap: u64) -> u64 {
    iters.div_ceil(n.max(1)).clamp(1, cap.max(1))
}

/// `elapsed` for `done` operations, scaled to `iters` operations.
pub(super) fn scaled(elapsed: Duration, done: u64, iters: u64) -> Duration {
    let ns = elapsed.as_nanos() * iters as u128 / done.max(1) as u128;
    Duration::from_nanos(ns.min(u64::MAX as u128) as u64)
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID always exists
    // on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `n` keel future tasks made by `body(rounds)` to completion on a fresh executor
/// and returns the run loop's time, read with `clock` (wall or CPU).
fn keel_futures<F, Fut>(n: usize, k: u64, body: F, clock: fn() -> Duration) -> Result<Duration, String>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<(), TaskError>> + 'static,
{
    let ex = core::pin::pin!(super::keel_executor()?);
    let ex = ex.into_ref();
    let mut hs = Vec::with_capacity(n);
    for s in slots(n) {
        let h = s.create(TaskAttrs { name: "scale", ..TaskAttrs::default() }).map_err(|e| format!("create: {e}"))?;
        hs.push(ex.attach(h, body(k)).map_err(|e| format!("attach: {e}"))?);
    }
    let start = clock();
    while ex.attached() > 0 {
        ex.run(usize::MAX, None).map_err(|e| format!("run: {e}"))?;
    }
    let elapsed = clock() - start;
    finish(ex, &hs)?;
    Ok(elapsed)
}

/// Checks that every task completed Ok and destroys it.
fn finish<S: keel_core::StackProvider>(ex: Pin<&Executor<SleepDriver, S>>, hs: &[TaskHandle]) -> Result<(), String> {
    for &h in hs {
        match ex.result(h) {
            Ok(Some(Ok(_))) => {}
            other => return Err(format!("a task ended with {other:?}")),
        }
        ex.destroy(h).map_err(|e| format!("destroy: {e}"))?;
    }
    Ok(())
}

fn wall() -> Duration {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed()
}

fn keel_yield<const N: u64>(iters: u64) -> Timed {
    let k = rounds(iters, N, u64::MAX);
    let body = |k: u64| async move {
        for _ in 0..k {
            rt::yield_now().await?;
        }
        Ok(())
    };
    Ok(scaled(keel_futures(N as usize, k, body, wall)?, k * N, iters))
}

fn keel_timer<const N: u64>(iters: u64) -> Timed {
    let k = rounds(iters, N, TIMER_ROUNDS);
    let body = |k: u64| async move {
        for _ in 0..k {
            rt::sleep(TICK).await?;
        }
        Ok(())
    };
    Ok(scaled(keel_futures(N as usize, k, body, thread_cpu)?, k * N, iters))
}

/// Runs `n` tokio tasks made by `body(rounds)` on a current-thread runtime (`timer`:
/// with its time driver), spawned before the clock starts; returns the time until the
/// last one finished, read with `clock`.
fn tokio_tasks<F, Fut>(n: u64, k: u64, timer: bool, body: F, clock: fn() -> Duration) -> Result<Duration, String>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    let mut b = tokio::runtime::Builder::new_current_thread();
    if timer {
        b.enable_time();
    }
    let rt = b.build().map_err(|e| e.to_string())?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let left = std::rc::Rc::new(std::cell::Cell::new(n));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let tx = std::rc::Rc::new(std::cell::Cell::new(Some(tx)));
        for _ in 0..n {
            let (left, tx, fut) = (left.clone(), tx.clone(), body(k));
            tokio::task::spawn_local(async move {
                fut.await;
                left.set(left.get() - 1);
                if left.get() == 0
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(());
                }
            });
        }
        let start = clock();
        rx.await.map_err(|_| "the last task never finished".to_string())?;
        Ok(clock() - start)
    })
}

fn tokio_yield<const N: u64>(iters: u64) -> Timed {
    let k = rounds(iters, N, u64::MAX);
    let body = |k: u64| async move {
        for _ in 0..k {
            super::yield_::WakeYield(false).await;
        }
    };
    Ok(scaled(tokio_tasks(N, k, false, body, wall)?, k * N, iters))
}

fn tokio_timer<const N: u64>(iters: u64) -> Timed {
    let k = rounds(iters, N, TIMER_ROUNDS);
    let body = |k: u64| async move {
        for _ in 0..k {
            tokio::time::sleep(TICK).await;
        }
    };
    Ok(scaled(tokio_tasks(N, k, true, body, thread_cpu)?, k * N, iters))
}

type FiberEx = Executor<SleepDriver, MmapStacks>;

std::thread_local! {
    /// This thread's fiber executors, one per stack count, made on first use and kept.
    static FIBER_EXS: RefCell<Vec<(usize, Pin<&'static FiberEx>)>> = const { RefCell::new(Vec::new()) };
}

/// This thread's fiber executor with `stacks` stacks.
fn fiber_ex(stacks: usize) -> Result<Pin<&'static FiberEx>, String> {
    FIBER_EXS.with(|exs| {
        let mut exs = exs.borrow_mut();
        if let Some((_, ex)) = exs.iter().find(|(n, _)| *n == stacks) {
            return Ok(*ex);
        }
        let stacks_provider = MmapStacks::new().map_err(|e| format!("stacks: {e}"))?;
        let cfg = Config { max_spare_stacks: stacks, ..Config::default() };
        let ex = Executor::with_stacks(SleepDriver::new(), stacks_provider, cfg).map_err(|e| e.to_string())?;
        let ex = Pin::static_ref(&*Box::leak(Box::new(ex)));
        exs.push((stacks, ex));
        Ok(ex)
    })
}

fn keel_fiber_yield<const N: u64>(iters: u64) -> Timed {
    let k = rounds(iters, N, u64::MAX);
    let ex = fiber_ex(N as usize)?;
    let mut hs = Vec::with_capacity(N as usize);
    for s in slots(N as usize) {
        let h = s.create(TaskAttrs { name: "scale", ..TaskAttrs::default() }).map_err(|e| format!("create: {e}"))?;
        let body = move |f: &mut Fiber| {
            for _ in 0..k {
                f.yield_now()?;
            }
            Ok(k)
        };
        hs.push(ex.attach_fiber(h, super::FIBER_ATTRS, body).map_err(|e| format!("attach: {e}"))?);
    }
    let before = ex.stats().resumed;
    let start = Instant::now();
    while ex.attached() > 0 {
        ex.run(usize::MAX, None).map_err(|e| format!("run: {e}"))?;
    }
    let elapsed = start.elapsed();
    let resumed = ex.stats().resumed - before;
    if resumed != (k + 1) * N {
        return Err(format!("{resumed} resumes for {N} fibers of {k} yields"));
    }
    finish(ex, &hs)?;
    Ok(scaled(elapsed, k * N, iters))
}

/// Runs what is ready without waiting for the sleepers' timers (nothing ready is fine).
fn run_ready(ex: Pin<&FiberEx>) -> Result<(), String> {
    match ex.run(usize::MAX, Some(Duration::ZERO)) {
        Ok(_) | Err(keel_core::RunError::TimedOut) => Ok(()),
        Err(e) => Err(format!("run: {e}")),
    }
}

fn keel_fiber_spawn<const N: u64>(iters: u64) -> Timed {
    let ex = fiber_ex(N as usize)?;
    let all = slots(N as usize);
    let (spawner, sleepers) = all.split_first().ok_or("no slots")?;
    let mut hs = Vec::with_capacity(sleepers.len());
    for s in sleepers {
        let h = s.create(TaskAttrs { name: "sleeper", ..TaskAttrs::default() }).map_err(|e| format!("create: {e}"))?;
        let body = |f: &mut Fiber| match f.sleep(Duration::from_secs(3600)) {
            Err(keel_core::Cancelled) => Ok(0u64),
            Ok(()) => Err(TaskError::Failed(-1)),
        };
        hs.push(ex.attach_fiber(h, super::FIBER_ATTRS, body).map_err(|e| format!("attach: {e}"))?);
    }
    // Every sleeper starts and arms its timer before the clock starts.
    run_ready(ex)?;
    let mut h =
        spawner.create(TaskAttrs { name: "spawn", ..TaskAttrs::default() }).map_err(|e| format!("create: {e}"))?;
    let before = ex.stats().completed;
    let start = Instant::now();
    for _ in 0..iters {
        h = ex.attach_fiber(h, super::FIBER_ATTRS, |_: &mut Fiber| 1u64).map_err(|e| format!("attach: {e}"))?;
        run_ready(ex)?;
    }
    let elapsed = start.elapsed();
    let completed = ex.stats().completed - before;
    if completed != iters || ex.attached() != sleepers.len() {
        return Err(format!("{completed} of {iters} runs completed, {} attached", ex.attached()));
    }
    hs.push(h);
    for &s in &hs[..sleepers.len()] {
        ex.cancel(s).map_err(|e| format!("cancel: {e}"))?;
    }
    while ex.attached() > 0 {
        run_ready(ex)?;
    }
    finish(ex, &hs)?;
    Ok(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_cover_iters() {
        assert_eq!(rounds(16, 100_000, u64::MAX), 1);
        assert_eq!(rounds(3_000_000, 100_000, u64::MAX), 30);
        assert_eq!(rounds(3_000_001, 100_000, u64::MAX), 31);
        assert_eq!(rounds(5000, 1, 40), 40);
        assert_eq!(rounds(0, 0, 0), 1);
    }

    #[test]
    fn scaling_to_iters() {
        assert_eq!(scaled(Duration::from_nanos(1000), 100, 10), Duration::from_nanos(100));
        assert_eq!(scaled(Duration::from_nanos(1000), 0, 10), Duration::from_nanos(10_000));
    }

    #[test]
    fn curves_name_registered_cases_and_impls() {
        for c in &super::super::curves() {
            for (_, case) in c.points {
                let case = super::super::ALL.iter().find(|k| k.name == *case).expect("a registered case");
                assert!(case.impls.iter().any(|i| i.name == c.imp), "{} has no impl {}", case.name, c.imp);
            }
            assert!(c.points.windows(2).all(|w| w[0].0 < w[1].0), "{}: sizes must grow", c.name);
        }
    }
}
