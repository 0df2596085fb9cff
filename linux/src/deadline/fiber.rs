//! Deadlines for fiber tasks ([`FiberDeadline`]), see the `deadline` module doc.

use super::Deadline;
use super::scope::Scope;
use crate::fs::FiberFs;
use crate::ring::RingOp;
use keel_core::{Fiber, IoResult};

/// Deadlines for fiber tasks.
pub trait FiberDeadline {
    /// Runs `body`; every operation this fiber submits inside it (a `read`, a `recv`, an
    /// `accept`, ... of `FiberFs`, `FiberNet`, `FiberReady` without a timeout) carries
    /// deadline `d` (or an earlier one, scopes nested), and one the deadline cancels
    /// returns [`TIMED_OUT`](super::TIMED_OUT) (deadline rule 3). Other tasks are not
    /// affected while this one waits inside `body` (scope rule 1).
    fn within<R>(&mut self, d: Deadline, body: impl FnOnce(&mut Fiber) -> R) -> R;
    /// Runs `op` with deadline `d` and waits for its completion (as `FiberFs::run_op`);
    /// a multishot `op` gets `EINVAL` without being submitted.
    fn run_op_until(&mut self, op: RingOp, d: Deadline) -> IoResult;
}

impl FiberDeadline for Fiber {
    fn within<R>(&mut self, d: Deadline, body: impl FnOnce(&mut Fiber) -> R) -> R {
        let _scope = Scope::open(self.task(), d.instant()); // closed on every way out (scope rule 1)
        body(self)
    }

    fn run_op_until(&mut self, op: RingOp, d: Deadline) -> IoResult {
        match op.with_deadline(d) {
            Ok(op) => self.run_op(op),
            Err(_) => Err(keel_core::Errno::EINVAL),
        }
    }
}
