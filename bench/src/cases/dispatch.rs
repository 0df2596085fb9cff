//! `dispatch_w1`, `dispatch_w2`: the same CPU-bound tasks through keel's work dispatcher
//! to a `keel_linux::pool::ThreadPool` of 1 and of 2 workers (tasks/s).
//!
//! - keel: each task is a future doing [`work`] (about 2 µs of dependent integer
//!   arithmetic here) and adding its result to a shared sum. A trial starts the pool
//!   (unpinned: the submitting thread needs a CPU too), runs a barrier of one task per
//!   worker (each spins until all have started, so every worker is up and serving before
//!   the clock starts), then times this: the main thread submits the whole batch of
//!   `iters` tasks (`Dispatcher::submit`), then `ThreadPool::wait(0, ...)`. The pool then
//!   quits and is joined; the sum of results, each worker's completed count and the
//!   dispatcher's `remaining` are checked.
//!
//! Tasks are reused across trials (and across the two cases): a task submitted again
//! must have been released by the worker that ran it (`AttachError::OwnedElsewhere`:
//! not yet, retry). A batch is every task of the trial up to [`MAX_BATCH`] (so a trial
//! is one batch: `wait` sleeps in 100 µs steps, and a gap at the end of every batch
//! would cost the 2-worker pool, whose batches are shorter, more than the 1-worker one).
//!
//! The goal, `dispatch_w2 >= 1.85 x dispatch_w1`, needs two idle CPUs: on a 2-CPU machine
//! the submitting thread (while it submits) and any other load take from the workers.

use crate::goals::{Goal, Op};
use crate::harness::{Case, Impl, Timed, Unit};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use keel_core::{AttachError, Dispatcher, TaskAttrs, TaskHandle, TaskSlot};
use keel_linux::pool::ThreadPool;
use std::cell::RefCell;
use std::time::{Duration, Instant};

/// One worker.
pub const W1: Case =
    Case { name: "dispatch_w1", unit: Unit::OpsPerSec, impls: &[Impl { name: "keel", run: keel::<1> }] };
/// Two workers.
pub const W2: Case =
    Case { name: "dispatch_w2", unit: Unit::OpsPerSec, impls: &[Impl { name: "keel", run: keel::<2> }] };

/// The goals of this module's cases (see `crate::goals`).
pub const GOALS: &[Goal] =
    &[Goal { case: "dispatch_w2", imp: "keel", peer_case: "dispatch_w1", peer: "keel", op: Op::AtLeast, x: 1.85 }];

/// Xorshift rounds per task: about 2.0 µs here (1.22 µs per 750 rounds, measured alone).
const WORK_ROUNDS: u32 = 1250;
/// Most tasks in one batch (and in the reused task pool).
const MAX_BATCH: usize = 1 << 16;
/// Body bytes of the bench's task slots (a task body is a `u64` and a state byte).
const BODY: usize = 64;
/// How long a wait or retry may take before the trial fails.
const TIMEOUT: Duration = Duration::from_secs(60);

/// One dispatcher per case (reused by every trial: quit tokens are all taken and the
/// worker slots emptied when a pool is joined).
static DISPATCHERS: [Dispatcher; 2] = [Dispatcher::new(), Dispatcher::new()];

/// The sum of the trial's task results (one trial at a time: the harness is
/// single-threaded).
static SUM: AtomicU64 = AtomicU64::new(0);
/// Barrier tasks that have started.
static READY: AtomicU32 = AtomicU32::new(0);
/// A barrier task gave up waiting for the others.
static BARRIER_FAILED: AtomicBool = AtomicBool::new(false);

std::thread_local! {
    /// The submitting thread's tasks (grown on demand, then reused).
    static TASKS: RefCell<Vec<TaskHandle>> = const { RefCell::new(Vec::new()) };
}

/// Task `i`'s work: dependent xorshift rounds from a seed that depends on `i % 1024`.
fn work(i: u64) -> u64 {
    let mut x = (i & 1023).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for _ in 0..WORK_ROUNDS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

/// The sum (wrapping) of `work(i)` for `i` in `0..n`.
fn expected_sum(n: u64) -> u64 {
    std::thread_local! {
        static TABLE: Vec<u64> = (0..1024).map(work).collect();
    }
    TABLE.with(|t| (0..n).fold(0u64, |s, i| s.wrapping_add(t[(i & 1023) as usize])))
}

/// Grows the task pool to `n` tasks.
fn grow(tasks: &mut Vec<TaskHandle>, n: usize) -> Result<(), String> {
    if tasks.len() >= n {
        return Ok(());
    }
    let more = n - tasks.len();
    let slots: &'static [TaskSlot<BODY>] = Box::leak((0..more).map(|_| TaskSlot::new()).collect());
    for s in slots {
        tasks.push(
            s.create(TaskAttrs { name: "dispatch", ..TaskAttrs::default() }).map_err(|e| format!("create: {e}"))?,
        );
    }
    Ok(())
}

/// Submits `body` as the next run of `*task`, retrying while the task is not yet
/// released by the worker that ran it last.
fn submit<F>(d: &'static Dispatcher, task: &mut TaskHandle, body: F) -> Result<(), String>
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut body = body;
    let mut since = None;
    loop {
        match d.submit(*task, body) {
            Ok(run) => {
                *task = run;
                return Ok(());
            }
            Err(AttachError::OwnedElsewhere(b)) => {
                let t = *since.get_or_insert_with(Instant::now);
                if t.elapsed() > TIMEOUT {
                    return Err("a task was never released".into());
                }
                body = b;
                std::thread::yield_now();
            }
            Err(e) => return Err(format!("submit: {e}")),
        }
    }
}

/// A barrier task: waits (spinning, bounded) until all `w` barrier tasks have started.
async fn barrier(w: u32) {
    READY.fetch_add(1, Ordering::SeqCst);
    let t0 = Instant::now();
    while READY.load(Ordering::SeqCst) < w {
        if t0.elapsed() > Duration::from_secs(5) {
            BARRIER_FAILED.store(true, Ordering::SeqCst);
            return;
        }
        core::hint::spin_loop();
    }
}

fn keel<const W: usize>(iters: u64) -> Timed {
    let d: &'static Dispatcher = &DISPATCHERS[W - 1];
    TASKS.with(|tasks| {
        let mut tasks = tasks.borrow_mut();
        grow(&mut tasks, (iters as usize).clamp(W, MAX_BATCH))?;
        SUM.store(0, Ordering::SeqCst);
        READY.store(0, Ordering::SeqCst);
        BARRIER_FAILED.store(false, Ordering::SeqCst);
        let pool = ThreadPool::start(d, W, false).map_err(|e| format!("pool: {e}"))?;
        let timed = (|| {
            for t in &mut tasks[..W] {
                submit(d, t, barrier(W as u32))?;
            }
            if !pool.wait(0, TIMEOUT) || BARRIER_FAILED.load(Ordering::SeqCst) {
                return Err("the workers did not all start".to_string());
            }
            let start = Instant::now();
            let mut i = 0u64;
            while i < iters {
                let b = (iters - i).min(tasks.len() as u64) as usize;
                for t in &mut tasks[..b] {
                    let me = i;
                    submit(d, t, async move {
                        SUM.fetch_add(work(me), Ordering::Relaxed);
                    })?;
                    i += 1;
                }
                if !pool.wait(0, TIMEOUT) {
                    return Err(format!("{} tasks still not done after {TIMEOUT:?}", d.remaining()));
                }
            }
            Ok(start.elapsed())
        })();
        let per_worker = pool.quit_and_join().map_err(|e| format!("worker: {e}"))?;
        let elapsed = timed?;
        let ran: u64 = per_worker.iter().sum();
        if ran != iters + W as u64 || d.remaining() != 0 {
            return Err(format!("workers completed {per_worker:?} for {iters} tasks and {W} barrier tasks"));
        }
        if SUM.load(Ordering::SeqCst) != expected_sum(iters) {
            return Err("wrong sum of task results".into());
        }
        Ok(elapsed)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_sum_matches_the_work() {
        let direct = (0..2100u64).fold(0u64, |s, i| s.wrapping_add(work(i)));
        assert_eq!(expected_sum(2100), direct);
    }

    #[test]
    fn a_task_body_fits_the_slot() {
        let body = async move {
            SUM.fetch_add(work(core::hint::black_box(3)), Ordering::Relaxed);
        };
        assert!(size_of_val(&body) <= BODY);
        assert!(size_of_val(&barrier(2)) <= BODY);
    }
}
