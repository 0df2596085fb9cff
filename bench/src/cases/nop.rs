//! `nop_b1`, `nop_b8`, `nop_b32`: NOPs through io_uring in batches of B, each batch
//! submitted together and waited for as a whole (ops/s).
//!
//! - keel: one fiber task on an executor over `RingDriver::new(RingConfig::default())`
//!   (SINGLE_ISSUER, DEFER_TASKRUN, COOP_TASKRUN, SUBMIT_ALL where the kernel has them):
//!   B `IoStatus` blocks pinned on its stack, `initiate(RingOp::nop())` for each, then
//!   `suspend_until_completed_io` until all B are back. The whole executor path: the
//!   run loop's one `io_uring_enter` per pass submits and reaps, completions wake the
//!   task, the task is resumed. Every result must be `Ok(0)`, and the count is checked.
//! - keel-acct (`nop_b32` only): the same on an executor with time accounting
//!   (`with_accounting::<TscAccounting>()`).
//! - io-uring: the raw crate loop on `IoUring::new(256)`: push B NOPs, one
//!   `submit_and_wait(B)`, drain the CQ (each result checked).
//! - io-uring-tuned: the same on a ring with SINGLE_ISSUER + DEFER_TASKRUN and its fd
//!   registered (`register_ring_fd`, so `io_uring_enter` skips the fd lookup).
//!
//! monoio has no NOP: see the `read1_*` cases for it.

use super::uring;
use crate::goals::{Goal, Op};
use crate::harness::{Case, Impl, Timed, Unit};
use io_uring::opcode;
use keel_core::{Accounting, NoAccounting, TscAccounting};
use keel_linux::{RingConfig, RingOp};

const fn case<const B: usize>(name: &'static str) -> Case {
    Case {
        name,
        unit: Unit::OpsPerSec,
        impls: &[
            Impl { name: "keel", run: keel::<B, NoAccounting> },
            Impl { name: "io-uring", run: raw::<B, false> },
            Impl { name: "io-uring-tuned", run: raw::<B, true> },
        ],
    }
}

/// Batch 1.
pub const B1: Case = case::<1>("nop_b1");
/// Batch 8.
pub const B8: Case = case::<8>("nop_b8");
/// Batch 32, also with keel's time accounting on.
pub const B32: Case = Case {
    name: "nop_b32",
    unit: Unit::OpsPerSec,
    impls: &[
        Impl { name: "keel", run: keel::<32, NoAccounting> },
        Impl { name: "keel-acct", run: keel::<32, TscAccounting> },
        Impl { name: "io-uring", run: raw::<32, false> },
        Impl { name: "io-uring-tuned", run: raw::<32, true> },
    ],
};

/// The goals of this module's cases (see `crate::goals`).
pub const GOALS: &[Goal] = &[
    Goal::vs("nop_b32", "keel", "io-uring-tuned", Op::AtLeast, 0.92),
    Goal::vs("nop_b1", "keel", "io-uring-tuned", Op::AtLeast, 0.95),
    // Time accounting costs at most 3%.
    Goal::vs("nop_b32", "keel-acct", "keel", Op::AtLeast, 0.97),
];

fn keel<const B: usize, A: Accounting>(iters: u64) -> Timed {
    let body = uring::keel_batches::<B>(iters, |_, _| RingOp::nop(), 0);
    uring::keel_fiber_acct::<A, _>(RingConfig::default(), iters, 0, body)
}

fn raw<const B: usize, const TUNED: bool>(iters: u64) -> Timed {
    let mut ring = uring::raw_ring(TUNED)?;
    uring::raw_batches(&mut ring, TUNED, iters, B, |_| opcode::Nop::new().build(), 0)
}
