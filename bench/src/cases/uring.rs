//! What the io_uring cases (`nop_*`, `read1_*`, `read4k_qd32`) share: keel's fiber on a
//! ring executor, and the raw `io-uring` crate loops they are compared with.
//!
//! Every raw loop uses `IoUring::split`, so that a ring fd registered with
//! `register_ring_fd` stays registered for the whole trial (the crate keeps the
//! registration in the `Submitter`, and `IoUring::submitter()` makes a fresh one each
//! call). The registration is undone at the end of the trial: the kernel keeps a
//! registered ring alive (and its slot, one of 16 per thread, taken) until then.

use crate::harness::Timed;
use core::pin::{Pin, pin};
use io_uring::{IoUring, squeue};
use keel_core::{
    Accounting, Config, Executor, Fiber, IoStatus, NoAccounting, RegionStacks, TaskError, TaskResult, TaskSlot,
};
use keel_linux::{RingConfig, RingDriver, RingOp};
use std::time::Instant;

std::thread_local! {
    /// This thread's task slot for the ring cases (created and destroyed by every trial).
    static SLOT: &'static TaskSlot = Box::leak(Box::new(TaskSlot::new()));
}

/// SQ entries of every raw ring (`IoUring::new(256)`, the crate's usual size).
const RAW_ENTRIES: u32 = 256;

/// A raw ring: default set-up, or tuned (SINGLE_ISSUER + DEFER_TASKRUN; the loops
/// register its fd). Made on the thread that uses it, as SINGLE_ISSUER wants.
pub(super) fn raw_ring(tuned: bool) -> Result<IoUring, String> {
    let ring = if tuned {
        IoUring::builder().setup_single_issuer().setup_defer_taskrun().build(RAW_ENTRIES)
    } else {
        IoUring::new(RAW_ENTRIES)
    };
    ring.map_err(|e| format!("io_uring set-up: {e}"))
}

/// `iters` operations in batches of `b`: push a batch (`op(i)` for its i-th entry), one
/// `submit_and_wait` for all of it, drain the CQ (every result must be `expect`).
/// `register_fd`: register the ring fd for the trial (the tuned ring).
pub(super) fn raw_batches(
    ring: &mut IoUring,
    register_fd: bool,
    iters: u64,
    b: usize,
    mut op: impl FnMut(usize) -> squeue::Entry,
    expect: i32,
) -> Timed {
    let (mut sub, mut sq, mut cq) = ring.split();
    if register_fd {
        sub.register_ring_fd().map_err(|e| format!("register_ring_fd: {e}"))?;
    }
    let start = Instant::now();
    let mut left = iters;
    let mut bad = None;
    while left > 0 {
        let n = left.min(b as u64) as usize;
        for i in 0..n {
            // SAFETY: `op`'s entries reference memory the caller keeps valid for the
            // whole trial (or none).
            unsafe { sq.push(&op(i)) }.map_err(|_| "the SQ is full".to_string())?;
        }
        sq.sync();
        let mut got = 0;
        while got < n {
            sub.submit_and_wait(n - got).map_err(|e| format!("submit_and_wait: {e}"))?;
            cq.sync();
            for cqe in &mut cq {
                got += 1;
                if cqe.result() != expect {
                    bad = Some(cqe.result());
                }
            }
        }
        left -= n as u64;
    }
    let elapsed = start.elapsed();
    finish_raw(register_fd, &mut sub, bad, expect)?;
    Ok(elapsed)
}

/// `iters` operations keeping up to `depth` (<= 64) in flight: fill the free slots
/// (`prep(slot)`), `submit_and_wait(1)`, drain the CQ (`check(slot, result)` must hold),
/// and again. `register_fd` as in [`raw_batches`].
pub(super) fn raw_depth(
    ring: &mut IoUring,
    register_fd: bool,
    iters: u64,
    depth: usize,
    mut prep: impl FnMut(usize) -> squeue::Entry,
    mut check: impl FnMut(usize, i32) -> bool,
) -> Timed {
    let (mut sub, mut sq, mut cq) = ring.split();
    if register_fd {
        sub.register_ring_fd().map_err(|e| format!("register_ring_fd: {e}"))?;
    }
    let depth = depth.min(64);
    let mut free = [0usize; 64];
    for (i, f) in free[..depth].iter_mut().enumerate() {
        *f = i;
    }
    let mut nfree = depth;
    let (mut issued, mut completed) = (0u64, 0u64);
    let mut bad = None;
    let start = Instant::now();
    while completed < iters {
        while nfree > 0 && issued < iters {
            nfree -= 1;
            let slot = free[nfree];
            // SAFETY: `prep`'s entries reference memory the caller keeps valid for the
            // whole trial; a slot is reused only after its completion.
            unsafe { sq.push(&prep(slot).user_data(slot as u64)) }.map_err(|_| "the SQ is full".to_string())?;
            issued += 1;
        }
        sq.sync();
        sub.submit_and_wait(1).map_err(|e| format!("submit_and_wait: {e}"))?;
        cq.sync();
        for cqe in &mut cq {
            let slot = cqe.user_data() as usize;
            if !check(slot, cqe.result()) {
                bad = Some(cqe.result());
            }
            free[nfree] = slot;
            nfree += 1;
            completed += 1;
        }
    }
    let elapsed = start.elapsed();
    finish_raw(register_fd, &mut sub, bad, 0)?;
    Ok(elapsed)
}

fn finish_raw(
    registered: bool,
    sub: &mut io_uring::Submitter<'_>,
    bad: Option<i32>,
    expect: i32,
) -> Result<(), String> {
    if registered {
        sub.unregister_ring_fd().map_err(|e| format!("unregister_ring_fd: {e}"))?;
    }
    match bad {
        Some(r) => Err(format!("a completion had result {r} (expected {expect})")),
        None => Ok(()),
    }
}

/// Runs one fiber task `body` on a fresh ring executor (`cfg`, one 64 KiB stack) and
/// returns the time of the run loop. The body must return `iters` (its count of
/// verified completions); the ring must have reaped exactly `iters` CQEs.
pub(super) fn keel_fiber<F>(cfg: RingConfig, iters: u64, body: F) -> Timed
where
    F: FnOnce(&mut Fiber) -> TaskResult + 'static,
{
    keel_fiber_acct::<NoAccounting, F>(cfg, iters, 0, body)
}

/// [`keel_fiber`] for a body that also runs `setup_ops` operations of its own (an open
/// and a close) besides the `iters` it counts.
pub(super) fn keel_fiber_setup<F>(cfg: RingConfig, iters: u64, setup_ops: u64, body: F) -> Timed
where
    F: FnOnce(&mut Fiber) -> TaskResult + 'static,
{
    keel_fiber_acct::<NoAccounting, F>(cfg, iters, setup_ops, body)
}

/// [`keel_fiber`] on an executor with accounting `A` (`TscAccounting`: the `keel-acct`
/// impls).
pub(super) fn keel_fiber_acct<A: Accounting, F>(cfg: RingConfig, iters: u64, setup_ops: u64, body: F) -> Timed
where
    F: FnOnce(&mut Fiber) -> TaskResult + 'static,
{
    let driver = RingDriver::new(cfg).map_err(|e| format!("ring driver: {e}"))?;
    let ex: Executor<RingDriver, RegionStacks, A> =
        Executor::with_stacks(driver, super::region_stacks(1)?, Config::default())
            .map_err(|e| e.to_string())?
            .with_accounting::<A>();
    let ex = pin!(ex);
    let ex = ex.into_ref();
    let h = super::create_task(SLOT.with(|s| *s), "ring")?;
    let h = ex.attach_fiber(h, super::FIBER_ATTRS, body).map_err(|e| format!("attach: {e}"))?;
    let start = Instant::now();
    while ex.attached() > 0 {
        ex.run(usize::MAX, None).map_err(|e| format!("run: {e}"))?;
    }
    let elapsed = start.elapsed();
    match ex.result(h) {
        Ok(Some(Ok(n))) if n == iters => {}
        other => return Err(format!("task ended with {other:?} (expected Ok({iters}))")),
    }
    let st = ex.with_driver(|d| d.stats()).unwrap();
    if st.completed != iters + setup_ops || st.stale != 0 {
        return Err(format!(
            "ring reaped {} CQEs ({} stale) for {} operations",
            st.completed,
            st.stale,
            iters + setup_ops
        ));
    }
    ex.destroy(h).map_err(|e| format!("destroy: {e}"))?;
    Ok(elapsed)
}

/// A fiber body doing `iters` operations in batches of `B`: initiate `B` operations
/// (`make(i, p)`, where `p` points at byte `i` of a `B`-byte buffer on the fiber's
/// stack) with `B` pinned status blocks, then `suspend_until_completed_io` until all
/// `B` have completed; each result must be `Ok(expect)`. Returns the count.
pub(super) fn keel_batches<const B: usize>(
    iters: u64,
    make: impl Fn(usize, *mut u8) -> RingOp + 'static,
    expect: u32,
) -> impl FnOnce(&mut Fiber) -> TaskResult + 'static {
    move |f: &mut Fiber| {
        let sts = pin!([const { IoStatus::new() }; B]);
        let mut buf = [0u8; B];
        let mut left = iters;
        let mut good = 0u64;
        while left > 0 {
            let n = left.min(B as u64) as usize;
            for (i, st) in sts[..n].iter().enumerate() {
                // SAFETY: the array is pinned on this fiber's stack; the body waits for
                // every operation it initiates before it returns (or, on an error path,
                // keel drains orphaned operations before the stack is reused).
                let st = unsafe { Pin::new_unchecked(st) };
                if f.initiate::<RingDriver>(st, make(i, buf.as_mut_ptr().wrapping_add(i))).is_err() {
                    return Err(TaskError::Failed(-1));
                }
            }
            let mut done = 0;
            while done < n {
                match f.suspend_until_completed_io(n)? {
                    0 => return Err(TaskError::Failed(-2)),
                    k => done += k,
                }
            }
            for st in &sts[..n] {
                match st.result() {
                    Some(Ok(r)) if r == expect => good += 1,
                    Some(Ok(r)) => return Err(TaskError::Failed(r as i64)),
                    Some(Err(e)) => return Err(TaskError::Failed(-(e.0 as i64))),
                    None => return Err(TaskError::Failed(-3)),
                }
            }
            left -= n as u64;
        }
        Ok(good)
    }
}
