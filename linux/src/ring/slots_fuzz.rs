//! Fuzz harness for the ring's completion routing that runs without a kernel: the
//! operation-slot table and its `user_data` encoding (slot rules 1, 2 and 5 in
//! `slots.rs`) and a multishot slot's result queue (completion rule 1). A byte string is
//! read as allocations (with and without `keep`), completions arriving with any
//! `user_data` (a current one, a stale one of a freed slot, the driver's own tags, any
//! 64-bit value), frees, and queue pushes and pops. A model written apart from `slots.rs`
//! checks after every step:
//! - a `user_data` reaches a slot only while that allocation is current: never after its
//!   free (a stale completion is dropped), never for a tag with bit 63 or 62 set, never
//!   for an index or generation the table did not hand out;
//! - every `user_data` handed out has bits 63 and 62 clear, generation below 2^30, and
//!   was never handed out before (within a program: generations wrap only after 2^30
//!   frees of one slot); allocation fails only with every slot in use;
//! - `in_flight` and the free count agree with the model; a completion marks a slot
//!   done once (a second or a stale one changes nothing);
//! - the result queue is a FIFO of 16 that refuses the 17th.
//!
//! Used by the cargo-fuzz target `ring_slots` (fuzz/, through `keel_linux::__fuzz` under
//! `--cfg keel_fuzz`) and by its proptest twin below, which runs in `make test`.

use super::slots::{CANCEL_TAG, CLOSE_TAG, EVENTFD_TAG, INTERNAL, MULTI_Q, ResultQ, SlotState, Slots};
use std::collections::VecDeque;

/// Reads a byte string front to back; 0 past the end.
struct Bytes<'a>(&'a [u8], usize);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let b = self.0.get(self.1).copied().unwrap_or(0);
        self.1 += 1;
        b
    }
    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |v, i| v | (self.u8() as u64) << (8 * i))
    }
}

const N: u32 = 8;
/// Steps a program takes at most.
pub const MAX_STEPS: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Live {
    InFlight,
    Done(i32, u32),
}

/// Plays `data` against the slot table and a result queue; `Err` names the failed check.
pub fn run(data: &[u8]) -> Result<(), String> {
    let mut b = Bytes(data, 0);
    let mut slots = Slots::new(N);
    // Model: the live allocations by user_data, and every user_data ever freed.
    let mut live: Vec<(u64, Live)> = Vec::new();
    let mut freed: Vec<u64> = Vec::new();
    let mut q = ResultQ::default();
    let mut model_q: VecDeque<(i32, u32)> = VecDeque::new();
    let mut steps = 0;
    while b.1 < data.len() && steps < MAX_STEPS {
        steps += 1;
        match b.u8() % 8 {
            0 | 1 => match slots.alloc(None, b.u8() & 1 == 1, None) {
                Some(ud) => {
                    if ud & (INTERNAL | 1 << 62) != 0 || (ud >> 32) >= 1 << 30 || (ud & 0xFFFF_FFFF) >= N as u64 {
                        return Err(format!("alloc handed out {ud:#x}"));
                    }
                    if live.iter().any(|(u, _)| *u == ud) {
                        return Err(format!("alloc handed out {ud:#x}, which is live"));
                    }
                    if freed.contains(&ud) {
                        return Err(format!(
                            "alloc handed out {ud:#x} again: its stale completions would reach this one"
                        ));
                    }
                    live.push((ud, Live::InFlight));
                }
                None if live.len() == N as usize => {}
                None => return Err(format!("alloc failed with {} of {N} slots live", live.len())),
            },
            2 | 3 => {
                // A completion: for a live slot, a freed one, a tag, or any value.
                let ud = match b.u8() % 4 {
                    0 if !live.is_empty() => live[b.u8() as usize % live.len()].0,
                    1 if !freed.is_empty() => freed[b.u8() as usize % freed.len()],
                    2 => [CANCEL_TAG, EVENTFD_TAG, CLOSE_TAG, INTERNAL | 4, 1 << 62][b.u8() as usize % 5],
                    _ => b.u64(),
                };
                let (res, flags) = (b.u8() as i32 - 128, b.u8() as u32);
                let found = slots.get(ud).is_some();
                let want = live.iter().position(|(u, _)| *u == ud);
                if found != want.is_some() {
                    return Err(format!("get({ud:#x}) found a slot: {found}; the model: {want:?}"));
                }
                slots.mark_done(ud, res, flags);
                if let Some(i) = want
                    && live[i].1 == Live::InFlight
                {
                    live[i].1 = Live::Done(res, flags);
                }
            }
            4 => {
                if live.is_empty() {
                    continue;
                }
                let (ud, _) = live.remove(b.u8() as usize % live.len());
                let _ = slots.free(ud);
                freed.push(ud);
            }
            5 => {
                let item = (b.u8() as i32, b.u8() as u32);
                let pushed = q.push(item);
                if pushed != (model_q.len() < MULTI_Q) {
                    return Err(format!("queue push with {} queued gave {pushed}", model_q.len()));
                }
                if pushed {
                    model_q.push_back(item);
                }
            }
            _ => {
                if q.pop() != model_q.pop_front() {
                    return Err("queue pop out of FIFO order".into());
                }
            }
        }
        check(&mut slots, &live, &freed)?;
    }
    Ok(())
}

fn check(slots: &mut Slots, live: &[(u64, Live)], freed: &[u64]) -> Result<(), String> {
    let in_flight = live.iter().filter(|(_, l)| *l == Live::InFlight).count();
    if slots.in_flight != in_flight || slots.free_count() != N as usize - live.len() {
        return Err(format!(
            "in flight {} free {}; the model {in_flight} and {}",
            slots.in_flight,
            slots.free_count(),
            N as usize - live.len()
        ));
    }
    for (ud, want) in live {
        let state = slots.get(*ud).map(|s| match s.state {
            SlotState::InFlight => Some(Live::InFlight),
            SlotState::Done(r, f) => Some(Live::Done(r, f)),
            _ => None,
        });
        if state != Some(Some(*want)) {
            return Err(format!("slot {ud:#x} is {state:?}, the model {want:?}"));
        }
    }
    let mut in_use = slots.in_use();
    let mut want: Vec<u64> = live.iter().map(|(u, _)| *u).collect();
    in_use.sort_unstable();
    want.sort_unstable();
    if in_use != want {
        return Err(format!("in use {in_use:x?}, the model {want:x?}"));
    }
    if let Some(ud) = freed.iter().find(|u| slots.get(**u).is_some() && !want.contains(u)) {
        return Err(format!("the freed {ud:#x} still reaches a slot"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        /// Twin of the cargo-fuzz target `ring_slots`.
        #[test]
        fn ring_slot_routing_matches_the_model(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
            super::run(&data).map_err(TestCaseError::fail)?;
        }
    }
}
