//! `c_suspend_io`: a C task body does one read through the ring at a time, N times,
//! with an NT-style status block, beside the Rust fiber doing the same (ns per op).
//!
//! The C API has no NOP, so the operation is the closest cheap one it offers: a 1-byte
//! read of `/dev/zero` (the kernel completes it inline, as it does a NOP).
//!
//! - keel-c: `keel_bench_c_suspend_io` (`bench/c/bodies.c`) on a `keel_executor_create`
//!   executor with a 256-entry ring: `keel_file_read_async` with a `keel_io_status`,
//!   `keel_task_suspend_until_completed_io(task, 1)`, `keel_io_status_result`; each read
//!   must return 1 zero byte, and the run N.
//! - keel: a Rust fiber on an executor over `RingDriver::new(RingConfig::default())`
//!   (the same ring set-up: 256 SQ, 1024 CQ entries): one pinned `IoStatus`,
//!   `initiate` of the same read, `suspend_until_completed_io(1)`, the result checked.
//!
//! Cost (callgrind, `bench/callgrind-per-op.sh -n 20000`; time as medians of interleaved
//! runs on a 2.45 GHz AMD EPYC VM): keel 677 instructions and about 1,180-1,300 ns per
//! read, keel-c 929 instructions (941 before `running` compared `CURRENT` first) and
//! 1.0-1.1x the time. The `io_uring_enter` per read dominates both; keel-c's extra ~250
//! instructions are its three calls per read (`keel_file_read_async`,
//! `keel_task_suspend_until_completed_io`, `keel_io_status_result`), each checking the
//! handle, `CURRENT` and the status block's magic word (body rule 1, status rule 1);
//! building the SQE from `keel_file_read_async`'s arguments and passing it by value into
//! `RingOp::from_entry`; a second driver lookup for the ring's real-time I/O priority
//! permission; and the task's I/O priority written into the SQE (the Rust impl leaves
//! the ring's default). The suspend is an out-of-line call across the switch, so it pays
//! `c_yield`'s return mispredicts, small beside the system call.

use super::{c_api, uring};
use crate::harness::{Case, Impl, Timed, Unit};
use io_uring::{opcode, types};
use keel_core::NoAccounting;
use keel_linux::{RingConfig, RingOp};
use std::os::fd::AsRawFd;

/// The case.
pub const CASE: Case = Case {
    name: "c_suspend_io",
    unit: Unit::NsPerOp,
    impls: &[Impl { name: "keel-c", run: keel_c }, Impl { name: "keel", run: keel }],
};

fn zero() -> Result<std::fs::File, String> {
    std::fs::File::open("/dev/zero").map_err(|e| format!("/dev/zero: {e}"))
}

fn keel_c(iters: u64) -> Timed {
    let file = zero()?;
    let mut args = c_api::Args { iters, fd: file.as_raw_fd() };
    let (elapsed, stats) = c_api::run(256, c_api::keel_bench_c_suspend_io, &mut args)?;
    if stats.io_completed != iters {
        return Err(format!("{} completions for {iters} reads", stats.io_completed));
    }
    Ok(elapsed)
}

fn keel(iters: u64) -> Timed {
    let file = zero()?;
    let fd = file.as_raw_fd();
    let body = uring::keel_batches::<1>(
        iters,
        move |_, p| {
            // SAFETY: `p` is a byte of the body's buffer, live until the read completes
            // (keel_batches waits for every operation it initiates).
            unsafe { RingOp::from_entry(opcode::Read::new(types::Fd(fd), p, 1).build()) }
        },
        1,
    );
    let elapsed = uring::keel_fiber_acct::<NoAccounting, _>(RingConfig::default(), iters, 0, body)?;
    drop(file);
    Ok(elapsed)
}
