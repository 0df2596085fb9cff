//! A deterministic simulated driver: a virtual clock and scripted operations, so task
//! code (keel's tests and users' own) runs reproducibly.
//!
//! - The clock starts at zero and moves only when the executor parks, that is when
//!   every task is blocked: it jumps to the earliest of the next timer deadline, the
//!   next scripted completion, and the run's timeout.
//! - Each [`SimOp`] says what it completes with and after how long, so a test injects
//!   errors, delays and short transfers per operation; [`SimDriver::fail_next_submits`]
//!   makes submissions themselves fail, and [`SimDriverN::limit_capacity`] makes it
//!   report no room (`submit_capacity` 0, `submit` refused with `EBUSY`, as a full SQ
//!   does) while that many operations are in flight, so initiators wait for room.
//! - Completions are delivered in (due time, submission order). Nothing depends on the
//!   host: two runs of one program give the same trace ([`SimDriver::trace`],
//!   [`SimDriver::trace_hash`]).
//!
//! Capacities are const parameters: `OPS` operations in flight, the last `TRACE` events
//! kept (the hash covers every event).

use crate::clock::Instant;
use crate::driver::{Driver, IoResult, IoToken, OpId, Park};
use crate::error::Errno;
use core::time::Duration;
use heapless::{Deque, Vec};

/// A scripted operation.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SimOp {
    /// A label for traces and for the test's own bookkeeping.
    pub label: u32,
    /// Time from submission to completion.
    pub latency: Duration,
    /// What it completes with.
    pub result: IoResult,
}

impl SimOp {
    /// An operation labelled `label` that completes at once with `Ok(0)`.
    pub const fn new(label: u32) -> Self {
        SimOp { label, latency: Duration::ZERO, result: Ok(0) }
    }

    /// Completes `latency` after submission.
    pub const fn after(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Completes with `result` (a byte count, possibly short, or an errno).
    pub const fn with_result(mut self, result: IoResult) -> Self {
        self.result = result;
        self
    }
}

/// One thing the simulated driver did.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum SimEvent {
    /// An operation was submitted.
    Submit {
        /// Its label.
        label: u32,
        /// Virtual time.
        at: Instant,
    },
    /// A submission was refused (injected).
    Refuse {
        /// Its label.
        label: u32,
        /// The errno.
        errno: Errno,
    },
    /// An operation was cancelled before it was due.
    Cancel {
        /// Its label.
        label: u32,
        /// Virtual time.
        at: Instant,
    },
    /// A completion was reaped.
    Complete {
        /// Its label.
        label: u32,
        /// Virtual time.
        at: Instant,
        /// Its result.
        result: IoResult,
    },
    /// The clock moved while parked.
    Advance {
        /// The new time.
        to: Instant,
    },
}

#[derive(Copy, Clone, Debug)]
struct Pending {
    id: OpId,
    token: IoToken,
    due: Instant,
    seq: u64,
    label: u32,
    result: IoResult,
}

/// The simulated driver with default capacities (64 operations in flight, 256 events kept).
pub type SimDriver = SimDriverN<64, 256>;

/// The simulated driver with chosen capacities.
pub struct SimDriverN<const OPS: usize, const TRACE: usize> {
    now: Instant,
    pending: Vec<Pending, OPS>,
    next_seq: u64,
    refuse: u32,
    refuse_errno: Errno,
    /// Operations it takes in flight at once (at most `OPS`).
    capacity: usize,
    trace: Deque<SimEvent, TRACE>,
    hash: u64,
    events: u64,
}

impl<const OPS: usize, const TRACE: usize> Default for SimDriverN<OPS, TRACE> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const OPS: usize, const TRACE: usize> SimDriverN<OPS, TRACE> {
    /// A driver at virtual time zero with nothing in flight.
    pub const fn new() -> Self {
        SimDriverN {
            now: Instant::ZERO,
            pending: Vec::new(),
            next_seq: 0,
            refuse: 0,
            refuse_errno: Errno::EAGAIN,
            capacity: OPS,
            trace: Deque::new(),
            hash: 0xcbf2_9ce4_8422_2325,
            events: 0,
        }
    }

    /// The next `count` submissions are refused with `errno`.
    pub fn fail_next_submits(&mut self, count: u32, errno: Errno) {
        self.refuse = count;
        self.refuse_errno = errno;
    }

    /// At most `count` operations in flight at once (and never more than `OPS`, the
    /// default): with `count` in flight `submit_capacity` is 0 and `submit` refuses with
    /// `EBUSY`, as a ring with a full SQ does, so initiators queue for room until a
    /// completion is reaped.
    pub fn limit_capacity(&mut self, count: usize) {
        self.capacity = count.min(OPS);
    }

    /// The last `TRACE` events, oldest first.
    pub fn trace(&self) -> impl Iterator<Item = &SimEvent> {
        self.trace.iter()
    }

    /// A hash of every event so far (FNV-1a): equal for equal traces.
    pub fn trace_hash(&self) -> u64 {
        self.hash
    }

    /// How many events happened.
    pub fn trace_len(&self) -> u64 {
        self.events
    }

    fn record(&mut self, event: SimEvent) {
        let words: [u64; 3] = match event {
            SimEvent::Submit { label, at } => [1, label as u64, at.as_nanos()],
            SimEvent::Refuse { label, errno } => [2, label as u64, errno.0 as u64],
            SimEvent::Cancel { label, at } => [3, label as u64, at.as_nanos()],
            SimEvent::Complete { label, at, result } => [
                4,
                label as u64 ^ at.as_nanos().rotate_left(17),
                match result {
                    Ok(bytes) => bytes as u64,
                    Err(errno) => (1 << 40) | errno.0 as u64,
                },
            ],
            SimEvent::Advance { to } => [5, 0, to.as_nanos()],
        };
        for word in words {
            for byte in word.to_le_bytes() {
                self.hash = (self.hash ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
            }
        }
        self.events += 1;
        if self.trace.is_full() {
            self.trace.pop_front();
        }
        let _ = self.trace.push_back(event);
    }

    fn find(&self, id: OpId) -> Option<usize> {
        self.pending.iter().position(|p| p.id == id)
    }

    fn next_due(&self) -> Option<usize> {
        (0..self.pending.len()).min_by_key(|&i| (self.pending[i].due, self.pending[i].seq))
    }
}

// SAFETY: the `Driver` contract (items 1-5 of its Safety section) holds: each accepted
// operation sits in `pending` with its token until `reap` hands it out once and removes it;
// `in_flight` is `pending`'s length; operations own no memory; ids are looked up, so a stale
// one does nothing; no unparker.
unsafe impl<const OPS: usize, const TRACE: usize> Driver for SimDriverN<OPS, TRACE> {
    type Op = SimOp;

    fn now(&self) -> Instant {
        self.now
    }

    fn submit(&mut self, op: SimOp, token: IoToken) -> Result<OpId, (SimOp, Errno)> {
        // Injected refusals first, then no room (`capacity` is at most `OPS`, so a push
        // past this check cannot fail).
        let refused = if self.refuse > 0 {
            self.refuse -= 1;
            Some(self.refuse_errno)
        } else if self.pending.len() >= self.capacity {
            Some(Errno::EBUSY)
        } else {
            None
        };
        if let Some(errno) = refused {
            self.record(SimEvent::Refuse { label: op.label, errno });
            return Err((op, errno));
        }
        let seq = self.next_seq;
        let pending = Pending {
            id: OpId(seq),
            token,
            due: self.now.saturating_add(op.latency),
            seq,
            label: op.label,
            result: op.result,
        };
        if self.pending.push(pending).is_err() {
            unreachable!("keel bug: the simulated driver's capacity passed OPS");
        }
        self.next_seq += 1;
        self.record(SimEvent::Submit { label: op.label, at: self.now });
        Ok(OpId(seq))
    }

    fn cancel(&mut self, id: OpId) {
        let now = self.now;
        if let Some(i) = self.find(id) {
            let pending = &mut self.pending[i];
            // A planted bug for the fuzz target `sim_ops` (off in every normal build): a
            // cancel after the completion was due still turns it into ECANCELED.
            if pending.due > now || cfg!(keel_planted = "sim_ops") {
                pending.due = now;
                pending.result = Err(Errno::ECANCELED);
                let label = pending.label;
                self.record(SimEvent::Cancel { label, at: now });
            }
        }
    }

    fn retarget(&mut self, id: OpId, token: IoToken) {
        if let Some(i) = self.find(id) {
            self.pending[i].token = token;
        }
    }

    fn reap<F: FnMut(IoToken, IoResult)>(&mut self, max: usize, sink: &mut F) -> usize {
        let mut reaped = 0;
        while reaped < max {
            let Some(i) = self.next_due() else { break };
            if self.pending[i].due > self.now {
                break;
            }
            let done = self.pending.swap_remove(i);
            self.record(SimEvent::Complete { label: done.label, at: self.now, result: done.result });
            sink(done.token, done.result);
            reaped += 1;
        }
        reaped
    }

    fn in_flight(&self) -> usize {
        self.pending.len()
    }

    fn submit_capacity(&self) -> usize {
        self.capacity.saturating_sub(self.pending.len())
    }

    fn debug_descriptor(&self) -> crate::driver_debug::DriverDebug {
        crate::driver_debug::DriverDebug { op_slots: OPS as u32, ..crate::driver_debug::DriverDebug::named("sim") }
    }

    fn park(&mut self, deadline: Option<Instant>) -> Result<Park, Errno> {
        let next = self.next_due().map(|i| self.pending[i].due);
        let target = match (next, deadline) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(earliest) => earliest,
                None => return Ok(Park::Stalled),
            },
        };
        if target > self.now {
            self.now = target;
            self.record(SimEvent::Advance { to: target });
        }
        Ok(Park::Woke)
    }
}

/// Scripting a simulated driver lent to a `with_driver` closure (driver rule 2,
/// exec/lend.rs: the closure cannot replace it, so what it may change is these).
impl<const OPS: usize, const TRACE: usize> crate::driver::DriverMut<'_, SimDriverN<OPS, TRACE>> {
    /// [`SimDriverN::fail_next_submits`].
    pub fn fail_next_submits(&mut self, count: u32, errno: Errno) {
        // SAFETY: sets two fields; no replacement, no Driver method, no user code.
        unsafe { self.get_mut() }.fail_next_submits(count, errno);
    }

    /// [`SimDriverN::limit_capacity`].
    pub fn limit_capacity(&mut self, count: usize) {
        // SAFETY: sets one field; no replacement, no Driver method, no user code.
        unsafe { self.get_mut() }.limit_capacity(count);
    }
}
