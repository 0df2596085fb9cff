//! The engine's operations in flight: a slab of [`Op`]s, each an SQE taken from the SQ
//! and not yet completed, with its place in a link chain and its state.
//!
//! Op rules (cited as "op rule N"):
//! 1. An op lives from the `enter` that takes its SQE until its CQE is posted (or, for
//!    `IOSQE_CQE_SKIP_SUCCESS`, skipped); then its entry is freed. Its `serial` is unique
//!    over the engine's life, so a timer or pool result naming a freed or reused entry
//!    (index and serial) is recognised as stale and ignored.
//! 2. An op is in exactly one state: `Linked` (waiting for its chain predecessor),
//!    `Waiting` (on a descriptor's readiness: its entry is in that descriptor's waiter
//!    list), `Pool` (a job of the blocking pool, queued or running), `Timer` (a TIMEOUT in
//!    the timer heap), `MultiPoll` (a multishot poll, until cancelled), `LinkTimer` (a LINK_TIMEOUT: armed in the heap once its op has
//!    started) or `Starting` (chosen to start in this pass).
//! 3. Chains: `next` names the member that starts when this one completes (successfully,
//!    or at all for a hard link); `prev` the member this one waits for. A LINK_TIMEOUT is
//!    not a member: its op names it in `ltimeout` and it names its op in `prev`.

use super::sqe::RawSqe;
use std::os::fd::RawFd;

/// Where an op is (op rule 2).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Free,
    Starting,
    Linked,
    Waiting {
        fd: RawFd,
        events: u32,
    },
    /// A multishot poll (`multi_poll.rs`).
    MultiPoll {
        fd: RawFd,
    },
    Pool,
    Timer,
    LinkTimer {
        armed: bool,
    },
}

/// One operation (module doc).
#[derive(Debug)]
pub(crate) struct Op {
    pub sqe: RawSqe,
    pub serial: u64,
    pub state: State,
    pub next: Option<u32>,
    pub prev: Option<u32>,
    pub ltimeout: Option<u32>,
    /// Bytes moved so far by a send/recv with `MSG_WAITALL` (retried until all).
    pub done: u32,
    /// A connect's descriptor flags before the engine set `O_NONBLOCK` (restored when
    /// the connect ends); -1: nothing to restore.
    pub saved_fl: i32,
    /// A timer's instant (ns, `CLOCK_MONOTONIC`).
    pub deadline: u64,
    /// A `Linked` op a cancel found: it completes with `-ECANCELED` when its predecessor
    /// completes, in chain order (cancel rule 1).
    pub cancelled: bool,
}

/// The slab (module doc).
#[derive(Debug, Default)]
pub(crate) struct Ops {
    ops: Vec<Op>,
    free: Vec<u32>,
    serial: u64,
    live: usize,
}

impl Ops {
    /// A slab with room for `n` ops before it grows.
    pub(crate) fn with_capacity(n: usize) -> Ops {
        Ops { ops: Vec::with_capacity(n), free: Vec::with_capacity(n), ..Ops::default() }
    }

    /// A new op for `sqe` in state `Starting`.
    pub(crate) fn alloc(&mut self, sqe: RawSqe) -> u32 {
        self.serial += 1;
        self.live += 1;
        let op = Op {
            sqe,
            serial: self.serial,
            state: State::Starting,
            next: None,
            prev: None,
            ltimeout: None,
            done: 0,
            saved_fl: -1,
            deadline: 0,
            cancelled: false,
        };
        match self.free.pop() {
            Some(i) => {
                self.ops[i as usize] = op;
                i
            }
            None => {
                self.ops.push(op);
                (self.ops.len() - 1) as u32
            }
        }
    }

    /// Op rule 1: frees `i`.
    pub(crate) fn free(&mut self, i: u32) {
        let op = &mut self.ops[i as usize];
        debug_assert!(op.state != State::Free, "keel bug: an engine op freed twice");
        op.state = State::Free;
        op.serial = 0;
        self.live -= 1;
        self.free.push(i);
    }

    /// Whether `(i, serial)` still names a live op (op rule 1).
    pub(crate) fn is(&self, i: u32, serial: u64) -> bool {
        self.ops.get(i as usize).is_some_and(|op| op.serial == serial && op.state != State::Free)
    }

    /// Ops in flight.
    pub(crate) fn live(&self) -> usize {
        self.live
    }

    /// Every live op's index, oldest first (by serial).
    pub(crate) fn live_by_age(&self) -> Vec<u32> {
        let mut v: Vec<u32> =
            (0..self.ops.len() as u32).filter(|&i| self.ops[i as usize].state != State::Free).collect();
        v.sort_by_key(|&i| self.ops[i as usize].serial);
        v
    }
}

impl core::ops::Index<u32> for Ops {
    type Output = Op;
    fn index(&self, i: u32) -> &Op {
        &self.ops[i as usize]
    }
}

impl core::ops::IndexMut<u32> for Ops {
    fn index_mut(&mut self, i: u32) -> &mut Op {
        &mut self.ops[i as usize]
    }
}
