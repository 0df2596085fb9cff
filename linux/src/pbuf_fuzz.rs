//! Fuzz harness for the provided-buffer ring's accounting (`pbuf.rs`) without a kernel:
//! the harness plays the kernel's side on an unregistered ring set, reading entries from
//! the ring memory between its own head and the published tail as the kernel does. A
//! byte string is read as receives (the kernel picks the buffer at its head, or posts
//! `ENOBUFS` on an empty ring), reaps of those completions (`note_taken`), buffers given
//! back (also out-of-range buffer ids, which are ignored), and waits for a buffer (push,
//! turn checks, leaving queued or after the turn, taking the turn). A model written apart
//! from `pbuf.rs` checks after every step:
//! - ownership (pbuf rule 2): every buffer id is in exactly one place: in the ring between
//!   the kernel's head and the published tail, picked by a completion not yet reaped, or
//!   held by a task; each ring entry names its own buffer's address and length;
//! - `in_use` counts the reaped and not given back, `returned` and `exhausted` count
//!   their events, `available` is `count - in_use` on a kernel without PBUF_STATUS
//!   (pbuf rule 4), and a buffer's pointer is inside the buffer memory at its slot;
//! - the wait queue (pbuf rule 3, waitq rules 2-3): each buffer given back hands the turn
//!   to the oldest queued waiter; a waiter that leaves after being handed the turn passes
//!   it to the next; `has_turn` is true exactly for the waiters handed the turn.
//!
//! Used by the cargo-fuzz target `pbuf_ring` (fuzz/, under `--cfg keel_fuzz`) and by its
//! proptest twin below, which runs in `make test`. Not part of the API.
#![allow(unsafe_code)] // reads the ring memory as the kernel does

use super::PbufRing;
use crate::waitq::Ticket;
use keel_core::{TaskAttrs, TaskHandle, TaskSlot};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU16, Ordering};

/// Steps a program takes at most.
pub const MAX_STEPS: usize = 1024;

/// What a program did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Buffers the kernel picked.
    pub picked: u64,
    /// Receives that found the ring empty.
    pub exhausted: u64,
    /// Buffers given back.
    pub returned: u64,
    /// Turns handed to a waiter by a buffer given back or passed on by a leaving one.
    pub turns: u64,
}

thread_local! {
    /// Task handles for waiters, created once per thread (a wake of a created task that no
    /// executor owns is a no-op).
    static HANDLES: Vec<TaskHandle> = (0..4)
        .map(|_| Box::leak(Box::new(TaskSlot::<64>::new())).create(TaskAttrs::default()).expect("a fresh slot"))
        .collect();
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    Queued,
    Turn,
}

struct Model {
    ring: PbufRing,
    /// The kernel's head.
    head: u16,
    /// Picked by a completion not reaped yet.
    cqes: VecDeque<u16>,
    /// Reaped and held by a task.
    held: Vec<u16>,
    /// Live waits in ticket order.
    waits: Vec<(Ticket, Wait)>,
    exhausted: u64,
    returned: u64,
    out: Outcome,
}

impl Model {
    fn published_tail(&self) -> u16 {
        // SAFETY: offset 14 of the ring memory is the tail (`io_uring_buf_ring.tail`), a
        // 2-aligned u16 that lives as long as `ring`.
        let tail = unsafe { &*(self.ring.ring.add(14) as *const AtomicU16) };
        tail.load(Ordering::Acquire)
    }

    /// The entry at ring index `i`: (address, length, buffer id).
    fn entry(&self, i: u16) -> (u64, u32, u16) {
        let idx = (i & (self.ring.count - 1)) as usize;
        // SAFETY: `idx < count`: the 16-byte entry is inside the ring memory; the harness
        // reads it only while the ring set is alive.
        unsafe {
            let e = self.ring.ring.add(idx * 16);
            ((e as *const u64).read(), (e.add(8) as *const u32).read(), (e.add(12) as *const u16).read())
        }
    }

    fn buf_addr(&self, bid: u16) -> u64 {
        self.ring.bufs.as_ptr() as u64 + bid as u64 * self.ring.size as u64
    }

    /// The kernel's receive: a buffer from the head, or `ENOBUFS`.
    fn receive(&mut self) -> Result<(), String> {
        if self.published_tail() == self.head {
            self.ring.note_exhausted();
            self.exhausted += 1;
            self.out.exhausted += 1;
            return Ok(());
        }
        let (addr, len, bid) = self.entry(self.head);
        if bid >= self.ring.count || addr != self.buf_addr(bid) || len != self.ring.size {
            return Err(format!("ring entry {} is ({addr:#x}, {len}, {bid}): not a buffer of this set", self.head));
        }
        self.head = self.head.wrapping_add(1);
        self.cqes.push_back(bid);
        self.out.picked += 1;
        Ok(())
    }

    fn reap(&mut self) -> Result<(), String> {
        if let Some(bid) = self.cqes.pop_front() {
            self.ring.note_taken();
            if self.ring.ptr(bid) as u64 != self.buf_addr(bid) {
                return Err(format!("buffer {bid}'s pointer is {:?}", self.ring.ptr(bid)));
            }
            self.held.push(bid);
        }
        Ok(())
    }

    /// The oldest queued wait gets the turn (waitq rule 2).
    fn hand_turn(&mut self) {
        if let Some(w) = self.waits.iter_mut().find(|w| w.1 == Wait::Queued) {
            w.1 = Wait::Turn;
            self.out.turns += 1;
        }
    }

    fn give_back(&mut self, k: usize) {
        let bid = self.held.remove(k);
        self.ring.give_back(bid);
        self.returned += 1;
        self.out.returned += 1;
        self.hand_turn();
    }

    fn step(&mut self, next: &mut impl FnMut() -> u8) -> Result<(), String> {
        match next() % 12 {
            0..=2 => self.receive()?,
            3 | 4 => self.reap()?,
            5 | 6 => {
                if !self.held.is_empty() {
                    let k = next() as usize % self.held.len();
                    self.give_back(k);
                }
            }
            7 => {
                // An id past the set: ignored.
                let bid = self.ring.count.saturating_add(next() as u16);
                self.ring.give_back(bid);
            }
            8 | 9 => {
                let task = HANDLES.with(|h| h[next() as usize % h.len()]);
                match self.ring.wait(task) {
                    Some(t) => self.waits.push((t, Wait::Queued)),
                    None => return Err(format!("wait refused with {} waiting", self.waits.len())),
                }
            }
            10 => {
                // A wait ends without its turn: cancelled or dropped (waitq rule 3).
                if !self.waits.is_empty() {
                    let (t, w) = self.waits.remove(next() as usize % self.waits.len());
                    self.ring.leave(t);
                    if w == Wait::Turn {
                        self.hand_turn();
                    }
                }
            }
            _ => {
                // A waiter with the turn takes it (re-arms its receive: nothing to call).
                if let Some(i) = self.waits.iter().position(|w| w.1 == Wait::Turn) {
                    self.waits.remove(i);
                }
            }
        }
        self.check()
    }

    fn check(&mut self) -> Result<(), String> {
        let count = self.ring.count;
        let in_ring = self.published_tail().wrapping_sub(self.head);
        let mut places = vec![0u32; count as usize];
        for i in 0..in_ring {
            let (addr, len, bid) = self.entry(self.head.wrapping_add(i));
            if bid >= count || addr != self.buf_addr(bid) || len != self.ring.size {
                return Err(format!("ring entry {i} past the head is ({addr:#x}, {len}, {bid})"));
            }
            places[bid as usize] += 1;
        }
        for &bid in self.cqes.iter().chain(&self.held) {
            places[bid as usize] += 1;
        }
        if let Some(bid) = places.iter().position(|&n| n != 1) {
            return Err(format!(
                "buffer {bid} is in {} places ({in_ring} in the ring, picked {:?}, held {:?})",
                places[bid], self.cqes, self.held
            ));
        }
        let st = self.ring.stats();
        let in_use = self.held.len() as u16;
        if (st.count, st.size, st.in_use, st.exhausted, st.returned, st.available)
            != (count, self.ring.size, in_use, self.exhausted, self.returned, count - in_use)
        {
            return Err(format!("stats {st:?}; the model: {in_use} in use, {} returned", self.returned));
        }
        for (t, w) in &self.waits {
            let turn = self.ring.has_turn(*t, None);
            if turn != (*w == Wait::Turn) {
                return Err(format!("wait {t:?} has the turn: {turn} in the ring; the model: {w:?}"));
            }
        }
        Ok(())
    }
}

/// Plays `data` against an unregistered ring set; `Err` says which check failed.
pub fn run(data: &[u8]) -> Result<Outcome, String> {
    let mut at = 0;
    let mut next = move || {
        let b = data.get(at).copied().unwrap_or(0);
        at += 1;
        b
    };
    let count = 1u16 << (next() % 4);
    let size = 1 + next() as u32 % 64;
    let ring = PbufRing::unregistered(count, size).map_err(|e| format!("unregistered({count}, {size}): {e}"))?;
    let mut m = Model {
        ring,
        head: 0,
        cqes: VecDeque::new(),
        held: Vec::new(),
        waits: Vec::new(),
        exhausted: 0,
        returned: 0,
        out: Outcome::default(),
    };
    m.check().map_err(|why| format!("fresh: {why}"))?;
    for step in 1..=MAX_STEPS.min(data.len()) {
        m.step(&mut next).map_err(|why| format!("step {step}: {why}"))?;
    }
    // Everything comes back: reaped, given back, and every wait ended.
    while !m.cqes.is_empty() {
        m.reap()?;
    }
    while !m.held.is_empty() {
        m.give_back(0);
    }
    while let Some((t, _)) = m.waits.pop() {
        m.ring.leave(t);
    }
    m.check().map_err(|why| format!("at the end: {why}"))?;
    if m.published_tail().wrapping_sub(m.head) != m.ring.count {
        return Err("a buffer never came back to the ring".into());
    }
    Ok(m.out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        /// Twin of the cargo-fuzz target `pbuf_ring`.
        #[test]
        fn pbuf_ring_accounting_matches_the_model(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
            super::run(&data).map_err(TestCaseError::fail)?;
        }
    }

    /// Over a fixed set of inputs the kernel side picks and runs dry, buffers come back,
    /// and turns are handed and passed on.
    #[test]
    fn pbuf_ring_harness_reaches_each_path() {
        let mut rng = 0x9b0f_u64;
        let mut total = super::Outcome::default();
        for _ in 0..200 {
            let data: Vec<u8> = (0..400)
                .map(|_| {
                    rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (rng >> 33) as u8
                })
                .collect();
            let out = super::run(&data).unwrap_or_else(|why| panic!("{why}"));
            total.picked += out.picked;
            total.exhausted += out.exhausted;
            total.returned += out.returned;
            total.turns += out.turns;
        }
        assert!(
            total.picked > 1000 && total.exhausted > 100 && total.returned > 1000 && total.turns > 500,
            "{total:?}"
        );
    }
}
