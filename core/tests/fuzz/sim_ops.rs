//! Fuzz harness: the simulated driver's own operation sequences, through the `Driver`
//! trait as an executor calls it: submit (scripted latency and result), cancel (of a live,
//! a reaped or a never-issued id), retarget, reap (bounded), park (with and without a
//! deadline), injected refusals and capacity limits. A model written apart from
//! `sim.rs` predicts every answer:
//! - a submission is refused with the injected errno while refusals are pending, then
//!   with `EBUSY` at the capacity limit, else accepted with the next id;
//! - every accepted operation is reaped exactly once, with its latest token, in (due
//!   time, submission order), never before it is due, with its scripted result, or
//!   `ECANCELED` if a cancel reached it before it was due (a later cancel changes
//!   nothing: the completion won);
//! - `in_flight` and `submit_capacity` agree with the model after every call; the clock
//!   never goes back and a park moves it to the earliest of the next due time and the
//!   deadline (`Stalled` with neither);
//! - at the end every operation is drained and the trace hash is a function of the input.
//!
//! Used by the cargo-fuzz target `sim_ops` (fuzz/) and its proptest twin
//! (core/tests/fuzz_sim_ops.rs).

use super::bytes::Bytes;
use core::time::Duration;
use keel_core::driver::{Driver, IoToken, OpId, Park};
use keel_core::sim::{SimDriverN, SimOp};
use keel_core::{Errno, Instant, IoResult};

const OPS: usize = 8;
type D = SimDriverN<OPS, 16>;
/// Calls a program makes at most.
pub const MAX_CALLS: usize = 512;

#[derive(Clone, Copy, Debug)]
struct Pending {
    id: OpId,
    token: u64,
    due: Instant,
    result: IoResult,
}

/// What a program did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub hash: u64,
    pub submitted: u64,
    pub refused: u64,
    pub cancelled: u64,
    pub reaped: u64,
}

fn token(bits: u64) -> IoToken {
    // SAFETY: the token goes only to this driver and comes back through `reap` to the
    // harness, which compares its bits; no executor ever dereferences it.
    unsafe { IoToken::unpack(bits & ((1 << 48) - 1) & !3) }
}

fn bits(t: IoToken) -> u64 {
    t.pack().expect("a generation-0 token fits 48 bits")
}

const ERRNOS: [Errno; 4] = [Errno::EIO, Errno::EAGAIN, Errno::EINTR, Errno(28)];

struct Model {
    d: D,
    now: Instant,
    pending: Vec<Pending>,
    next_id: u64,
    refuse: (u32, Errno),
    capacity: usize,
    out: Outcome,
}

impl Model {
    fn check_counts(&self) -> Result<(), String> {
        let (n, cap) = (self.pending.len(), self.capacity.saturating_sub(self.pending.len()));
        if self.d.in_flight() != n || self.d.submit_capacity() != cap || self.d.now() != self.now {
            return Err(format!(
                "driver says {} in flight, room {}, now {:?}; model {n}, {cap}, {:?}",
                self.d.in_flight(),
                self.d.submit_capacity(),
                self.d.now(),
                self.now
            ));
        }
        Ok(())
    }

    fn submit(&mut self, b: &mut Bytes) -> Result<(), String> {
        let latency = Duration::from_micros(b.u16() as u64 % 5000);
        let result = if b.u8().is_multiple_of(4) { Err(ERRNOS[b.below(ERRNOS.len())]) } else { Ok(b.u16() as u32) };
        let label = b.u8() as u32;
        let tok = token(b.u64());
        let op = SimOp::new(label).after(latency).with_result(result);
        let want = if self.refuse.0 > 0 {
            self.refuse.0 -= 1;
            Err(self.refuse.1)
        } else if self.pending.len() >= self.capacity {
            Err(Errno::EBUSY)
        } else {
            Ok(OpId(self.next_id))
        };
        match (self.d.submit(op, tok), want) {
            (Ok(id), Ok(w)) if id == w => {
                self.next_id += 1;
                let due = self.now.saturating_add(latency);
                self.pending.push(Pending { id, token: bits(tok), due, result });
                self.out.submitted += 1;
            }
            (Err((back, e)), Err(w)) if e == w && back == op => self.out.refused += 1,
            (got, want) => return Err(format!("submit gave {:?}, the model {want:?}", got.map_err(|(_, e)| e))),
        }
        Ok(())
    }

    fn pick(&self, b: &mut Bytes) -> OpId {
        let n = b.u8() as usize;
        match self.pending.get(n % (self.pending.len() + 2)) {
            Some(p) => p.id,
            // A reaped id, or one never issued: nothing happens.
            None => OpId(self.next_id.wrapping_sub(1 + n as u64 % 4)),
        }
    }

    fn cancel(&mut self, b: &mut Bytes) {
        let id = self.pick(b);
        self.d.cancel(id);
        let now = self.now;
        if let Some(p) = self.pending.iter_mut().find(|p| p.id == id && p.due > now) {
            p.due = now;
            p.result = Err(Errno::ECANCELED);
            self.out.cancelled += 1;
        }
    }

    fn retarget(&mut self, b: &mut Bytes) {
        let id = self.pick(b);
        let tok = token(b.u64());
        self.d.retarget(id, tok);
        if let Some(p) = self.pending.iter_mut().find(|p| p.id == id) {
            p.token = bits(tok);
        }
    }

    fn reap(&mut self, max: usize) -> Result<(), String> {
        let mut got = Vec::new();
        let n = self.d.reap(max, &mut |t, r| got.push((bits(t), r)));
        if n != got.len() || n > max {
            return Err(format!("reap said {n} for {} completions (max {max})", got.len()));
        }
        for (tok, result) in got {
            // The earliest due, first submitted among equals.
            let next = (0..self.pending.len()).min_by_key(|&i| (self.pending[i].due, self.pending[i].id.0));
            let Some(i) = next.filter(|&i| self.pending[i].due <= self.now) else {
                return Err(format!("a completion ({tok:#x}, {result:?}) reaped with none due"));
            };
            let p = self.pending.remove(i);
            if (p.token, p.result) != (tok, result) {
                return Err(format!("reaped ({tok:#x}, {result:?}), the model's next is {p:?}"));
            }
            self.out.reaped += 1;
        }
        if n < max && self.pending.iter().any(|p| p.due <= self.now) {
            return Err(format!("reap stopped at {n} of {max} with a completion due"));
        }
        Ok(())
    }

    fn park(&mut self, deadline: Option<Instant>) -> Result<(), String> {
        let next = self.pending.iter().map(|p| p.due).min();
        let want = match next.into_iter().chain(deadline).min() {
            None => Park::Stalled,
            Some(t) => {
                self.now = self.now.max(t);
                Park::Woke
            }
        };
        match self.d.park(deadline) {
            Ok(p) if p == want => Ok(()),
            r => Err(format!("park({deadline:?}) gave {r:?}, the model {want:?}")),
        }
    }

    fn step(&mut self, b: &mut Bytes) -> Result<(), String> {
        match b.u8() % 10 {
            0..=2 => self.submit(b)?,
            3 => self.cancel(b),
            4 => self.retarget(b),
            5 | 6 => {
                let max = b.below(OPS + 2);
                self.reap(max)?;
            }
            7 => {
                let deadline = match b.u8() % 3 {
                    0 => None,
                    // In the past, or ahead.
                    1 => Some(Instant::ZERO),
                    _ => Some(self.now.saturating_add(Duration::from_micros(b.u16() as u64))),
                };
                self.park(deadline)?;
            }
            8 => {
                let (count, errno) = (b.u8() as u32 % 4, ERRNOS[b.below(ERRNOS.len())]);
                self.d.fail_next_submits(count, errno);
                self.refuse = (count, errno);
            }
            _ => {
                let cap = b.below(OPS + 3);
                self.d.limit_capacity(cap);
                self.capacity = cap.min(OPS);
            }
        }
        self.check_counts()
    }
}

/// Plays `data` as a driver program; `Err` says which check failed.
pub fn run(data: &[u8]) -> Result<Outcome, String> {
    let mut b = Bytes::new(data);
    let mut m = Model {
        d: D::new(),
        now: Instant::ZERO,
        pending: Vec::new(),
        next_id: 0,
        refuse: (0, Errno::EAGAIN),
        capacity: OPS,
        out: Outcome::default(),
    };
    let mut calls = 0;
    while !b.is_empty() && calls < MAX_CALLS {
        calls += 1;
        m.step(&mut b).map_err(|why| format!("call {calls}: {why}"))?;
    }
    // Drain: park and reap until nothing is left.
    for _ in 0..=OPS {
        if m.pending.is_empty() {
            break;
        }
        m.park(None).and_then(|()| m.reap(OPS)).map_err(|why| format!("drain: {why}"))?;
    }
    if !m.pending.is_empty() || m.d.in_flight() != 0 {
        return Err(format!("{} operations never completed", m.pending.len()));
    }
    if m.out.submitted != m.out.reaped {
        return Err(format!("{} submitted, {} reaped", m.out.submitted, m.out.reaped));
    }
    m.out.hash = m.d.trace_hash();
    Ok(m.out)
}
