//! Fuzz harness: the timer heap (`core/src/timer.rs`) on its own. A byte string is read as
//! inserts (of an unarmed node, a deadline near the clock so deadlines tie often),
//! removals (of an armed node, wherever it is in the heap), pops at the clock, clock
//! advances and full drains, over 16 nodes. A sorted model (`BTreeSet` of (deadline,
//! arming order, node)) written apart from the heap checks:
//! - `pop_expired(now)` gives the model's first node exactly when its deadline is at or
//!   before `now` (never early), in (deadline, arming order) (timer rule 2), and disarms
//!   it; after a pop loop nothing due is left;
//! - `remove` takes a node out from anywhere and the others keep their order;
//! - after every step: `len`, `is_empty`, `next_deadline` and each node's `is_armed` and
//!   `deadline` agree with the model (timer rule 1: armed iff in the heap);
//! - at the end a drain at `Instant::MAX` gives every armed node in model order.
//!
//! Used by the cargo-fuzz target `timer_heap` (fuzz/) and its proptest twin
//! (core/tests/fuzz_timer_heap.rs).

use super::bytes::Bytes;
use core::ptr::NonNull;
use keel_core::Instant;
use keel_core::timer::{TimerHeap, TimerNode};
use std::collections::BTreeSet;

/// Nodes a program arms.
pub const NODES: usize = 16;
/// Steps a program takes at most.
pub const MAX_STEPS: usize = 1024;

/// What a program did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub inserted: u64,
    pub removed: u64,
    pub fired: u64,
    /// Pops whose node tied in deadline with another armed node.
    pub ties: u64,
}

struct Model<'a> {
    heap: TimerHeap,
    nodes: &'a [TimerNode],
    armed: BTreeSet<(u64, u64, usize)>,
    seq: u64,
    now: u64,
    out: Outcome,
}

impl Model<'_> {
    fn ptr(&self, i: usize) -> NonNull<TimerNode> {
        NonNull::from(&self.nodes[i])
    }

    fn index(&self, p: NonNull<TimerNode>) -> Result<usize, String> {
        self.nodes
            .iter()
            .position(|n| core::ptr::eq(n, p.as_ptr()))
            .ok_or_else(|| format!("the heap gave {p:?}, not one of its nodes"))
    }

    fn key_of(&self, i: usize) -> Option<(u64, u64, usize)> {
        self.armed.iter().find(|k| k.2 == i).copied()
    }

    fn pop_until(&mut self, now: Instant) -> Result<(), String> {
        while let Some(p) = self.heap.pop_expired(now) {
            let i = self.index(p)?;
            let Some(&first) = self.armed.iter().next() else {
                return Err(format!("pop at {now:?} gave node {i} with none armed"));
            };
            if first.2 != i {
                return Err(format!(
                    "pop at {now:?} gave node {i} ({:?}), the model's first is {first:?}",
                    self.key_of(i)
                ));
            }
            if Instant::from_nanos(first.0) > now {
                return Err(format!("node {i} due at {} fired early, at {now:?}", first.0));
            }
            if self.nodes[i].is_armed() {
                return Err(format!("node {i} still armed after its pop"));
            }
            if self.armed.iter().nth(1).is_some_and(|k| k.0 == first.0) {
                self.out.ties += 1;
            }
            self.armed.remove(&first);
            self.out.fired += 1;
        }
        if let Some(k) = self.armed.iter().next().filter(|k| Instant::from_nanos(k.0) <= now) {
            return Err(format!("pop at {now:?} stopped with {k:?} due"));
        }
        Ok(())
    }

    fn check(&self) -> Result<(), String> {
        let want = self.armed.iter().next().map(|k| Instant::from_nanos(k.0));
        if self.heap.len() != self.armed.len()
            || self.heap.is_empty() != self.armed.is_empty()
            || self.heap.next_deadline() != want
        {
            return Err(format!(
                "heap: len {} empty {} next {:?}; the model: {} armed, next {want:?}",
                self.heap.len(),
                self.heap.is_empty(),
                self.heap.next_deadline(),
                self.armed.len()
            ));
        }
        for (i, n) in self.nodes.iter().enumerate() {
            let key = self.key_of(i);
            if n.is_armed() != key.is_some() {
                return Err(format!("node {i} armed: {}; the model: {key:?}", n.is_armed()));
            }
            if let Some(k) = key.filter(|k| n.deadline() != Instant::from_nanos(k.0)) {
                return Err(format!("node {i} says deadline {:?}, armed for {}", n.deadline(), k.0));
            }
        }
        Ok(())
    }

    fn step(&mut self, b: &mut Bytes) -> Result<(), String> {
        match b.u8() % 8 {
            0..=2 => {
                let i = b.below(NODES);
                if self.nodes[i].is_armed() {
                    return Ok(());
                }
                // Deadlines near the clock (ties are common), some in the past.
                let d = match b.u8() % 4 {
                    0 => self.now.saturating_sub(b.u8() as u64 % 8),
                    1 => self.now + b.u16() as u64,
                    _ => self.now + b.u8() as u64 % 16,
                };
                // SAFETY: the node is unarmed, lives in `nodes` (not moved) for the whole
                // program, and is removed or popped before `nodes` is dropped (the drain).
                unsafe { self.heap.insert(self.ptr(i), Instant::from_nanos(d)) };
                self.armed.insert((d, self.seq, i));
                self.seq += 1;
                self.out.inserted += 1;
            }
            3 => {
                let i = b.below(NODES);
                if let Some(k) = self.key_of(i) {
                    // SAFETY: armed in this heap (the model says so, and `check` holds it
                    // to `is_armed`).
                    unsafe { self.heap.remove(self.ptr(i)) };
                    self.armed.remove(&k);
                    self.out.removed += 1;
                }
            }
            4 | 5 => {
                self.now += b.u8() as u64 % 8;
                self.pop_until(Instant::from_nanos(self.now))?;
            }
            6 => {
                // A pop in the past: nothing newer than the clock fires.
                let at = self.now.saturating_sub(b.u8() as u64 % 4);
                self.pop_until(Instant::from_nanos(at))?;
            }
            _ => self.now += b.u16() as u64,
        }
        self.check()
    }
}

/// Plays `data` against the timer heap; `Err` says which check failed.
pub fn run(data: &[u8]) -> Result<Outcome, String> {
    let nodes: Vec<TimerNode> = (0..NODES).map(|_| TimerNode::new()).collect();
    let mut m = Model {
        heap: TimerHeap::new(),
        nodes: &nodes,
        armed: BTreeSet::new(),
        seq: 0,
        now: 0,
        out: Outcome::default(),
    };
    let mut b = Bytes::new(data);
    let mut steps = 0;
    let r = (|| {
        while !b.is_empty() && steps < MAX_STEPS {
            steps += 1;
            m.step(&mut b).map_err(|why| format!("step {steps}: {why}"))?;
        }
        m.pop_until(Instant::MAX).map_err(|why| format!("drain: {why}"))?;
        m.check().map_err(|why| format!("after the drain: {why}"))
    })();
    // Whatever happened, no node stays linked past `nodes`.
    for n in nodes.iter().filter(|n| n.is_armed()) {
        // SAFETY: armed, and only this heap arms these nodes.
        unsafe { m.heap.remove(NonNull::from(n)) };
    }
    r.map(|()| m.out)
}
