//! The long soak's file executor: tasks (fibers and futures) that each write a random
//! block to their own temp file, fsync it, read it back and compare, close it, again;
//! every 100 ms one of them is cancelled (an error it sees after that must be
//! `ECANCELED` or `Cancelled`). Foreign threads attach to it through the
//! `ExecutorHandle` it publishes.

use super::net_util::{executor_with, fattrs, ring};
use super::soak_util::Rng;
use super::stats::{CANCELS, FILE_BYTES, FILE_ROUNDS, Stats, errno_name};
use super::{Shared, check_result, run_down};
use core::time::Duration;
use keel_core::{Errno, ExecutorHandle, Fiber, HandleSlot, TaskAttrs, TaskHandle, TaskSlot};
use keel_linux::RingConfig;
use keel_linux::fs::{self, FiberFs, Mode, OFlags};
use std::cell::Cell;
use std::ffi::CString;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// File tasks (each with its own file).
const FILE_TASKS: usize = 4;
/// The largest block written in one round.
const BLOCK_MAX: u64 = 64 * 1024;

/// What one file task takes with it.
struct Job {
    path: String,
    seed: u64,
    rounds: u64,
    cancelled: Rc<Cell<bool>>,
    st: Arc<Stats>,
}

impl Job {
    /// Records an error of operation `op`: expected only if the task was cancelled and
    /// the error is `ECANCELED`.
    fn failed(&self, op: &str, e: Errno) -> u64 {
        self.st.error_if(self.cancelled.get() && e == Errno::ECANCELED, &format!("file {op} {}", errno_name(e)));
        1
    }
    fn compare(&self, wrote: &[u8], n: u32, back: &[u8]) {
        if n as usize != wrote.len() || back != wrote {
            // Relaxed: a counter read after the joins.
            self.st.mismatches.fetch_add(1, Ordering::Relaxed);
            self.st.error(format!("UNEXPECTED file read-back differs ({n} of {} bytes)", wrote.len()));
        } else {
            self.st.op(FILE_ROUNDS, 1);
            self.st.op(FILE_BYTES, wrote.len() as u64);
        }
    }
}

/// This round's block: its length and bytes follow from the task's generator.
fn block(rng: &mut Rng, buf: &mut Vec<u8>) {
    let len = 1 + rng.below(BLOCK_MAX) as usize;
    let salt = rng.next();
    buf.clear();
    buf.extend((0..len).map(|i| (salt >> (i % 8 * 8)) as u8 ^ i as u8));
}

/// Runs the file executor until `sh.shutdown`; sends its handle first.
pub fn run(sh: Arc<Shared>, seed: u64, dir: std::path::PathBuf, ready: std::sync::mpsc::Sender<ExecutorHandle>) {
    let st = sh.stats.clone();
    let mut rng = Rng::new(seed);
    let ex = executor_with(ring(RingConfig::default()));
    let ex = ex.as_ref();
    let hslot: &'static HandleSlot = Box::leak(Box::new(HandleSlot::new()));
    ready.send(ex.handle(hslot).unwrap()).unwrap();
    let mut tasks: Vec<(TaskHandle, Rc<Cell<bool>>, bool)> = (0..FILE_TASKS)
        .map(|_| {
            let s: &'static TaskSlot<8192> = Box::leak(Box::new(TaskSlot::new()));
            (s.create(TaskAttrs::default()).unwrap(), Rc::new(Cell::new(false)), false)
        })
        .collect();
    let mut last_cancel = Instant::now();
    // Acquire: pairs with the main thread's Release store of `shutdown`.
    while !sh.shutdown.load(Ordering::Acquire) {
        let _ = ex.run(256, Some(Duration::from_millis(2)));
        for (i, (h, flag, live)) in tasks.iter_mut().enumerate() {
            if *live {
                match ex.result(*h) {
                    Ok(Some(r)) => {
                        check_result(&st, "file task", Ok(Some(r)), flag.get());
                        *live = false;
                    }
                    _ => continue,
                }
            }
            flag.set(false);
            let job = Job {
                path: dir.join(format!("file{i}")).to_str().unwrap().to_owned(),
                seed: rng.next(),
                rounds: 1 + rng.below(20),
                cancelled: flag.clone(),
                st: st.clone(),
            };
            *h = if i % 2 == 0 {
                ex.attach_fiber(*h, fattrs(), move |f: &mut Fiber| fiber_files(f, job)).map_err(|_| ())
            } else {
                ex.attach(*h, future_files(job)).map_err(|_| ())
            }
            .expect("attach a file task");
            *live = true;
        }
        if last_cancel.elapsed() >= Duration::from_millis(100) {
            last_cancel = Instant::now();
            let (h, flag, _) = &tasks[rng.below(FILE_TASKS as u64) as usize];
            flag.set(true);
            if ex.cancel(*h).is_ok() {
                st.op(CANCELS, 1);
            }
        }
    }
    for (h, flag, _) in &tasks {
        flag.set(true);
        let _ = ex.cancel(*h);
    }
    run_down(ex, &st, "file executor");
}

fn fiber_files(f: &mut Fiber, job: Job) -> u64 {
    let mut rng = Rng::new(job.seed);
    let path = CString::new(job.path.clone()).unwrap();
    let (mut wrote, mut back) = (Vec::new(), vec![0u8; BLOCK_MAX as usize]);
    for _ in 0..job.rounds {
        block(&mut rng, &mut wrote);
        let file = match f.open(
            &path,
            OFlags::CREATE | OFlags::RDWR | OFlags::TRUNC | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(file) => file,
            Err(e) => return job.failed("open", e),
        };
        match f.write(&file, &wrote, 0) {
            Ok(n) if n as usize == wrote.len() => {}
            Ok(n) => {
                job.st.error(format!("UNEXPECTED file short write {n} of {}", wrote.len()));
                return 1;
            }
            Err(e) => return job.failed("write", e),
        }
        if let Err(e) = f.fsync(&file) {
            return job.failed("fsync", e);
        }
        let n = match f.read(&file, &mut back[..wrote.len()], 0) {
            Ok(n) => n,
            Err(e) => return job.failed("read", e),
        };
        job.compare(&wrote, n, &back[..n as usize]);
        if let Err(e) = f.close(file) {
            return job.failed("close", e);
        }
    }
    0
}

async fn future_files(job: Job) -> u64 {
    let mut rng = Rng::new(job.seed);
    let (mut wrote, mut back) = (Vec::new(), Vec::with_capacity(BLOCK_MAX as usize));
    for _ in 0..job.rounds {
        block(&mut rng, &mut wrote);
        let file = match fs::open(
            &job.path,
            OFlags::CREATE | OFlags::RDWR | OFlags::TRUNC | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .await
        {
            Ok(file) => file,
            Err(e) => return job.failed("open", e),
        };
        let len = wrote.len();
        let (r, w) = fs::write(&file, wrote, 0).await;
        wrote = w;
        match r {
            Ok(n) if n as usize == len => {}
            Ok(n) => {
                job.st.error(format!("UNEXPECTED file short write {n} of {len}"));
                return 1;
            }
            Err(e) => return job.failed("write", e),
        }
        if let Err(e) = fs::fsync(&file).await {
            return job.failed("fsync", e);
        }
        back.clear();
        back.reserve(len);
        let (r, b) = fs::read(&file, back, 0).await;
        back = b;
        match r {
            Ok(n) => job.compare(&wrote, n, &back),
            Err(e) => return job.failed("read", e),
        }
        if let Err(e) = fs::close(file).await {
            return job.failed("close", e);
        }
    }
    0
}
