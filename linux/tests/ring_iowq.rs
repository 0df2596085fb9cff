//! The kernel's worker pool (`ring/iowq.rs`): the cap bounds the workers of the
//! executor's thread (iowq rule 2), the pool is per thread and shared by the executors on
//! it (rule 1), `ATTACH_WQ` is checked by the kernel and shares no pool across threads
//! (rule 3). Blocking work: `splice` from an empty pipe into a regular file, which waits in
//! an io-wq worker (unbound work) until the pipe gets data. Worker threads are counted by
//! name (`iou-wrk-<tid>`) in /proc/self/task; every wait is bounded.

#[path = "net_util/mod.rs"]
mod util;

use core::pin::Pin;
use core::time::Duration;
use io_uring::{opcode, types};
use keel_core::{Fiber, TaskHandle};
use keel_linux::fs::FiberFs;
use keel_linux::ring::RingOp;
use keel_linux::ring::WorkerPool;
use keel_linux::{RingConfig, RingDriver};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use util::*;

/// Worker threads of the pool of thread `tid`.
fn workers_of(tid: i32) -> usize {
    let name = format!("iou-wrk-{tid}");
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter(|e| {
            let comm = e.as_ref().unwrap().path().join("comm");
            std::fs::read_to_string(comm).is_ok_and(|c| c.trim() == name)
        })
        .count()
}

fn tid() -> i32 {
    rustix::thread::gettid().as_raw_nonzero().get()
}

struct Blockers {
    pipe_w: OwnedFd,
    _pipe_r: OwnedFd,
    _out: std::fs::File,
    tasks: Vec<TaskHandle>,
}

/// `n` fibers each splicing one byte from an empty pipe into a file: each waits in a worker.
fn blockers(ex: Pin<&Ex>, n: usize) -> Blockers {
    let mut p = [0; 2];
    // SAFETY: `p` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: just made, ours, wrapped once each.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
    let path = std::env::temp_dir().join(format!("keel-iowq-{}-{}", std::process::id(), tid()));
    let out = std::fs::File::create(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let (rfd, ofd) = (r.as_raw_fd(), out.as_raw_fd());
    let tasks = (0..n)
        .map(|_| {
            ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
                let e = opcode::Splice::new(types::Fd(rfd), -1, types::Fd(ofd), -1, 1).build();
                // SAFETY: the SQE names two descriptors the test keeps open until every
                // fiber is done, and no memory.
                f.run_op(unsafe { RingOp::from_entry(e) }).map(u64::from).unwrap_or(99)
            })
            .unwrap()
        })
        .collect();
    Blockers { pipe_w: w, _pipe_r: r, _out: out, tasks }
}

/// Runs `ex` until `tid`'s pool has `want` workers (or 5 s), then a little longer; the
/// most workers seen.
fn run_and_count(ex: Pin<&Ex>, tid: i32, want: usize) -> usize {
    let mut most = 0;
    for i in 0..500 {
        let _ = ex.run(64, Some(Duration::from_millis(10)));
        most = most.max(workers_of(tid));
        if most >= want && i >= 20 {
            break;
        }
    }
    most
}

/// Feeds the pipe so every splice completes, and checks each moved its byte.
fn release(ex: Pin<&Ex>, b: Blockers) {
    let bytes = vec![0u8; b.tasks.len()];
    assert_eq!(rustix::io::write(&b.pipe_w, &bytes), Ok(bytes.len()));
    run_all(ex);
    for t in b.tasks {
        assert_eq!(ex.result(t), Ok(Some(Ok(1))));
    }
}

/// Iowq rule 2: with the unbound cap at 2, six blocking operations run on at most two
/// workers (the rest wait in the pool's queue) and all complete; the driver reports the
/// cap as the previous limit when it is changed.
#[test]
fn iowq_the_cap_bounds_the_threads_workers_and_queues_the_rest() {
    if ring_only("io-wq worker-pool settings") {
        return;
    }
    let ex = executor(RingConfig { iowq_max_workers: [0, 2], ..RingConfig::default() });
    let ex = ex.as_ref();
    let b = blockers(ex, 6);
    let most = run_and_count(ex, tid(), 2);
    eprintln!("iowq: cap [0, 2], 6 blocking splices: at most {most} workers");
    assert!((1..=2).contains(&most), "workers seen: {most}");
    release(ex, b);
    let before = ex.with_driver(|d| d.set_iowq_max_workers([0, 0])).unwrap();
    assert_eq!(before.map(|m| m[1]), Ok(2), "the unbound cap was 2");
}

/// Iowq rule 1: a second executor on the same thread submits to the same pool, so the
/// first one's cap bounds its work too.
#[test]
fn iowq_executors_on_one_thread_share_one_pool() {
    if ring_only("io-wq worker-pool settings") {
        return;
    }
    let a = executor(RingConfig { iowq_max_workers: [0, 2], ..RingConfig::default() });
    let c = executor(RingConfig::default());
    let (a, c) = (a.as_ref(), c.as_ref());
    let ba = blockers(a, 3);
    let bc = blockers(c, 3);
    let mut most = 0;
    for _ in 0..60 {
        let _ = a.run(64, Some(Duration::from_millis(5)));
        let _ = c.run(64, Some(Duration::from_millis(5)));
        most = most.max(workers_of(tid()));
    }
    eprintln!("iowq: two executors on one thread, cap [0, 2] on one, 3 blocking splices each: at most {most} workers");
    assert!((1..=2).contains(&most), "one pool under one cap: {most} workers");
    release(a, ba);
    release(c, bc);
}

/// Iowq rule 3: `ATTACH_WQ` naming a live ring is accepted; one naming a descriptor that
/// is not a ring is `EINVAL`, a closed number `ENXIO`. An executor so attached on another
/// thread still gets its own workers, named after its thread, beyond the first's cap.
#[test]
fn iowq_attach_wq_is_checked_and_shares_no_pool_across_threads() {
    if ring_only("io-wq worker-pool settings") {
        return;
    }
    let a = executor(RingConfig { iowq_max_workers: [0, 1], ..RingConfig::default() });
    let pool = a.as_ref().with_driver(|d| d.worker_pool()).unwrap();
    let devnull = std::fs::File::open("/dev/null").unwrap();
    let not_ring = WorkerPool::from_raw_for_tests(devnull.as_raw_fd());
    let e = RingDriver::new(RingConfig { attach_wq: Some(not_ring), ..RingConfig::default() }).err().unwrap();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
    let closed = WorkerPool::from_raw_for_tests(4000);
    let e = RingDriver::new(RingConfig { attach_wq: Some(closed), ..RingConfig::default() }).err().unwrap();
    assert_eq!(e.raw_os_error(), Some(libc::ENXIO), "{e}");
    let (seen, other) = std::thread::spawn(move || {
        let b = executor(RingConfig { attach_wq: Some(pool), ..RingConfig::default() });
        let b = b.as_ref();
        let blk = blockers(b, 3);
        let seen = run_and_count(b, tid(), 3);
        release(b, blk);
        (seen, tid())
    })
    .join()
    .unwrap();
    eprintln!(
        "iowq: ATTACH_WQ to a ring capped at [0, 1], on another thread, 3 blocking splices: {seen} workers of its own"
    );
    assert!(seen >= 2, "the attached executor's thread has a pool of its own, uncapped: {seen} workers of {other}");
    drop(devnull);
}
