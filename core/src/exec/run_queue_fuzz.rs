//! Fuzz harness for the run queue (`run_queue.rs`) and the intrusive lists it is made of
//! (`list.rs`), on real task headers with no executor. A byte string is read as pushes
//! (each with a CPU priority set while the task is in no run list), pops, removals from
//! anywhere, and the same on a second list kind through other links of the same headers
//! (the owned-task list: push at the back, pop at the front, remove, `contains`). A model
//! of plain `VecDeque`s written apart from the lists checks after every step:
//! - `pop` gives the oldest task of the highest non-empty level (FIFO within a level,
//!   High before Normal before Low), `None` only when every level is empty;
//! - `remove` takes a task out of the middle, front or back, the others keep their order;
//! - `len` and `lens` agree with the model; the owned list walked with `front` and
//!   `next_of` is the model's order exactly (so no link is stale), its `len`, `is_empty`
//!   and `contains` agree;
//! - a header is in the run queue and the owned list at once through separate links (list
//!   rule 1), and one kind's operations never disturb the other.
//!
//! Used by the cargo-fuzz target `run_queue` (fuzz/, under `--cfg keel_fuzz`) and by its
//! proptest twin below, which runs in `make test`. Not part of the API.

extern crate std;

use super::run_queue::RunQueue;
use crate::list::List;
use crate::priority::{Priorities, Priority};
use crate::task::TaskSlot;
use crate::task::header::{Header, OwnedLink};
use core::ptr::NonNull;
use std::collections::VecDeque;
use std::format;
use std::string::String;
use std::vec::Vec;

/// Headers a program uses.
const NODES: usize = 12;
/// Steps a program takes at most.
pub const MAX_STEPS: usize = 1024;
const PRIOS: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

/// What a program did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Run-queue pushes.
    pub pushed: u64,
    /// Run-queue pops that gave a task.
    pub popped: u64,
    /// Removals from the run queue or the owned list that were not at the front.
    pub removed_inside: u64,
    /// Owned-list operations.
    pub owned_ops: u64,
}

struct Model<'a> {
    slots: &'a [TaskSlot<0>],
    rq: RunQueue,
    owned: List<Header, OwnedLink>,
    levels: [VecDeque<usize>; 3],
    in_owned: VecDeque<usize>,
    out: Outcome,
}

fn reader(data: &[u8]) -> impl FnMut() -> u8 + '_ {
    let mut at = 0;
    move || {
        let b = data.get(at).copied().unwrap_or(0);
        at += 1;
        b
    }
}

impl Model<'_> {
    fn header(&self, i: usize) -> NonNull<Header> {
        NonNull::from(&self.slots[i].core.header)
    }

    fn index(&self, h: NonNull<Header>) -> Result<usize, String> {
        (0..NODES).find(|&i| self.header(i) == h).ok_or_else(|| format!("a list gave {h:?}, not one of its headers"))
    }

    fn queued(&self, i: usize) -> Option<usize> {
        self.levels.iter().position(|l| l.contains(&i))
    }

    fn pop(&mut self) -> Result<(), String> {
        let want = self.levels.iter_mut().find_map(|l| l.pop_front());
        let got = self.rq.pop().map(|h| self.index(h)).transpose()?;
        if got != want {
            return Err(format!("pop gave {got:?}, the model {want:?}"));
        }
        self.out.popped += got.is_some() as u64;
        Ok(())
    }

    fn step(&mut self, next: &mut impl FnMut() -> u8) -> Result<(), String> {
        let i = next() as usize % NODES;
        match next() % 10 {
            0..=2 => {
                if self.queued(i).is_none() {
                    let cpu = PRIOS[next() as usize % 3];
                    // Only while in no run list (the run queue's `remove` contract).
                    self.slots[i].core.header.prio.set(Priorities { cpu, io: Priority::Normal });
                    // SAFETY: a header of a slot that outlives the program (drained at its
                    // end), in no run list (the model says so; `pop` and the counts hold the
                    // model to the queue).
                    unsafe { self.rq.push(self.header(i)) };
                    self.levels[cpu.index()].push_back(i);
                    self.out.pushed += 1;
                }
            }
            3 | 4 => self.pop()?,
            5 => {
                if let Some(level) = self.queued(i) {
                    // SAFETY: queued here, priority unchanged since its push (set only above,
                    // while in no run list).
                    unsafe { self.rq.remove(self.header(i)) };
                    let at = self.levels[level].iter().position(|&n| n == i).expect("queued");
                    self.out.removed_inside += (at > 0) as u64;
                    self.levels[level].remove(at);
                }
            }
            6 | 7 => {
                if !self.in_owned.contains(&i) {
                    // SAFETY: in no owned list (the model says so), outlives the program.
                    unsafe { self.owned.push_back(self.header(i)) };
                    self.in_owned.push_back(i);
                    self.out.owned_ops += 1;
                }
            }
            8 => {
                let got = self.owned.pop_front().map(|h| self.index(h)).transpose()?;
                let want = self.in_owned.pop_front();
                if got != want {
                    return Err(format!("owned pop gave {got:?}, the model {want:?}"));
                }
                self.out.owned_ops += 1;
            }
            _ => {
                if let Some(at) = self.in_owned.iter().position(|&n| n == i) {
                    // SAFETY: linked in this list (the model says so; `check` walks it).
                    unsafe { self.owned.remove(self.header(i)) };
                    self.in_owned.remove(at);
                    self.out.removed_inside += (at > 0) as u64;
                    self.out.owned_ops += 1;
                }
            }
        }
        self.check()
    }

    fn check(&self) -> Result<(), String> {
        let lens = [self.levels[0].len(), self.levels[1].len(), self.levels[2].len()];
        if self.rq.lens() != lens || self.rq.len() != lens.iter().sum::<usize>() {
            return Err(format!("run queue lens {:?} (len {}), the model {lens:?}", self.rq.lens(), self.rq.len()));
        }
        let mut walked = Vec::new();
        let mut cur = self.owned.front();
        while let Some(h) = cur {
            walked.push(self.index(h)?);
            if walked.len() > NODES {
                return Err(format!("the owned list loops: {walked:?}"));
            }
            // SAFETY: `h` came from walking this list.
            cur = unsafe { self.owned.next_of(h) };
        }
        if walked.iter().ne(self.in_owned.iter())
            || self.owned.len() != self.in_owned.len()
            || self.owned.is_empty() != self.in_owned.is_empty()
        {
            return Err(format!(
                "owned list walks {walked:?} (len {}), the model {:?}",
                self.owned.len(),
                self.in_owned
            ));
        }
        for i in 0..NODES {
            // SAFETY: a valid header, linked through its owned links only in `owned`.
            let contains = unsafe { self.owned.contains(self.header(i)) };
            if contains != self.in_owned.contains(&i) {
                return Err(format!("owned contains({i}) says {contains}"));
            }
        }
        Ok(())
    }
}

/// Plays `data` against a run queue and an owned list; `Err` says which check failed.
pub fn run(data: &[u8]) -> Result<Outcome, String> {
    let slots: Vec<TaskSlot<0>> = (0..NODES).map(|_| TaskSlot::new()).collect();
    let mut m = Model {
        slots: &slots,
        rq: RunQueue::new(),
        owned: List::new(),
        levels: Default::default(),
        in_owned: VecDeque::new(),
        out: Outcome::default(),
    };
    let mut next = reader(data);
    let mut r = Ok(());
    for step in 1..=MAX_STEPS.min(data.len()) {
        if let Err(why) = m.step(&mut next) {
            r = Err(format!("step {step}: {why}"));
            break;
        }
    }
    // Drain both (also after a failure: no header stays linked past `slots`).
    if r.is_ok() {
        while m.levels.iter().any(|l| !l.is_empty()) {
            if let Err(why) = m.pop() {
                r = Err(format!("drain: {why}"));
                break;
            }
        }
    }
    while m.rq.pop().is_some() {}
    while m.owned.pop_front().is_some() {}
    r.map(|()| m.out)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use proptest::prelude::*;
    use std::vec::Vec;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        /// Twin of the cargo-fuzz target `run_queue`.
        #[test]
        fn run_queue_and_lists_match_the_model(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
            super::run(&data).map_err(TestCaseError::fail)?;
        }
    }

    /// Over a fixed set of inputs the harness pushes, pops and removes from the middle.
    #[test]
    fn run_queue_harness_reaches_each_path() {
        let mut rng = 0x7a11_u64;
        let (mut pushed, mut popped, mut inside, mut owned) = (0, 0, 0, 0);
        for _ in 0..200 {
            let data: Vec<u8> = (0..600)
                .map(|_| {
                    rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (rng >> 33) as u8
                })
                .collect();
            let out = super::run(&data).unwrap_or_else(|why| panic!("{why}"));
            (pushed, popped, inside, owned) =
                (pushed + out.pushed, popped + out.popped, inside + out.removed_inside, owned + out.owned_ops);
        }
        assert!(pushed > 1000 && popped > 1000 && inside > 100 && owned > 1000, "{pushed} {popped} {inside} {owned}");
    }
}
