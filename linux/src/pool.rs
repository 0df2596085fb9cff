//! A thread pool of worker executors serving a `keel_core::Dispatcher` (work dispatching):
//! N threads, optionally pinned one per CPU, each running a ring-less
//! executor (pure compute, futures and fibers on guarded mmap stacks) that takes the highest-priority dispatched task whenever it has
//! none of its own, until the dispatcher's `quit` reaches it.
//!
//! `wait` and `quit_and_join` block the calling thread (they sleep in short steps; they
//! are not on any executor's hot path).

use crate::{MmapStacks, SleepDriver};
use keel_core::{Dispatcher, Executor, RunError};
use std::io;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Worker threads serving one dispatcher.
#[derive(Debug)]
pub struct ThreadPool {
    dispatcher: &'static Dispatcher,
    threads: Vec<JoinHandle<Result<u64, RunError>>>,
}

/// How long `wait` and `quit_and_join` sleep between looks.
const STEP: Duration = Duration::from_micros(100);

impl ThreadPool {
    /// Starts `workers` threads (pinned to CPUs 0, 1, ... if `pin`). Zero workers is
    /// `InvalidInput`: nothing submitted to the dispatcher would ever run.
    pub fn start(dispatcher: &'static Dispatcher, workers: usize, pin: bool) -> io::Result<Self> {
        if workers == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "ThreadPool::start: workers must be at least 1"));
        }
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let mut threads = Vec::with_capacity(workers);
        for i in 0..workers {
            let t = std::thread::Builder::new().name(format!("keel-worker-{i}")).spawn(move || {
                if pin {
                    let mut set = rustix::thread::CpuSet::new();
                    set.set(i % cpus);
                    let _ = rustix::thread::sched_setaffinity(None, &set);
                }
                worker(dispatcher)
            })?;
            threads.push(t);
        }
        Ok(ThreadPool { dispatcher, threads })
    }

    /// Blocks until at most `max_remaining` submitted tasks have not completed, or the
    /// timeout passes (`false`).
    pub fn wait(&self, max_remaining: u64, timeout: Duration) -> bool {
        wait(self.dispatcher, max_remaining, timeout)
    }

    /// Asks every worker to quit and joins them; returns each worker's completed-task
    /// count, or the first error a worker met. Drains first (dispatch rule 5): every
    /// task submitted before this call runs before the workers return.
    pub fn quit_and_join(self) -> Result<Vec<u64>, RunError> {
        self.dispatcher.quit(self.threads.len() as u32);
        self.threads.into_iter().map(|t| t.join().unwrap_or(Err(RunError::Stalled))).collect()
    }
}

/// Blocks until at most `max_remaining` of `d`'s tasks have not completed, or `timeout`
/// passes (`false`).
pub fn wait(d: &Dispatcher, max_remaining: u64, timeout: Duration) -> bool {
    let t0 = Instant::now();
    while d.remaining() > max_remaining {
        if t0.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(STEP);
    }
    true
}

/// Asks `n` workers to quit and waits until they have (or the timeout passes); returns
/// how many quit. A worker quits once it is idle (dispatch rule 5): it finishes its own
/// tasks and keeps taking dispatched ones while any wait, so no task submitted before
/// this call is stranded; under a steady stream of new submissions the quit waits for a
/// gap (and may time out). Tasks submitted after the last worker quit stay queued,
/// counted by `Dispatcher::remaining` (and so by [`wait`]), for the next executor that
/// serves the dispatcher.
pub fn quit(d: &Dispatcher, n: u32, timeout: Duration) -> u32 {
    let before = d.quit_count();
    d.quit(n);
    let t0 = Instant::now();
    while d.quit_count() - before < n && t0.elapsed() < timeout {
        std::thread::sleep(STEP);
    }
    d.quit_count() - before
}

/// One worker thread's loop.
fn worker(d: &'static Dispatcher) -> Result<u64, RunError> {
    // Guarded mmap stacks, so dispatched fibers (`Dispatcher::submit_fiber`) can run here;
    // made on this thread (`MmapStacks` is `!Send`) and mapped only when a fiber needs one.
    let stacks = MmapStacks::new().map_err(|_| RunError::Stalled)?;
    let ex = core::pin::pin!(
        Executor::with_stacks(SleepDriver::new(), stacks, crate::panic::config()).map_err(|_| RunError::Stalled)?
    );
    let ex = ex.into_ref();
    if !ex.serve(d) {
        return Err(RunError::Stalled);
    }
    loop {
        match ex.run(1024, None) {
            Ok(_) | Err(RunError::TimedOut) => {}
            Err(RunError::Quit) => return Ok(ex.stats().completed),
            Err(e) => return Err(e),
        }
    }
}
