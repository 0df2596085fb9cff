//! Fuzz harness for the executor's spare-stack pool (`pool.rs`) with a provider that hands
//! out real memory from an arena and records every call. A byte string is read as takes
//! (a size for a task id), puts (of a stack the harness holds, at a clock time), clock
//! moves, trims and a final `release_all`, with `max_spares` from the input (0 included).
//! The harness uses each stack it holds as a fiber would: it fills it, top bytes
//! included, and checks the fill is intact when it puts the stack back (the pool writes
//! only into spares, never into a stack in use). A model of the pool written apart from
//! it (a LIFO of spares) checks:
//! - `take` reuses the newest spare large enough among the `max_spares` newest (pool rule
//!   3), else asks the provider for exactly that size; the provider's refusal comes back
//!   as its errno; `assigned` is told the task id of every stack taken;
//! - `put` pools a stack while fewer than `max_spares` are pooled and it can hold the
//!   node, else releases it to the provider (rule 2); the provider never sees a stack
//!   released twice, nor one the harness holds;
//! - `trim` decommits each spare pooled at or before its time, larger than a page, once,
//!   below its top page (rule 4);
//! - the counters (`created`, `reused`, `released`, `high_water`, `in_use`, `spares`,
//!   `decommitted`) agree with the model after every step; after `release_all` every
//!   stack is back with the provider.
//!
//! Used by the cargo-fuzz target `stack_pool` (fuzz/, under `--cfg keel_fuzz`) and by its
//! proptest twin below, which runs in `make test`. Not part of the API.

extern crate std;

use super::pool::{SPARE_NODE_SIZE, StackPool, VtFor};
use super::{Stack, StackProvider, StackStats};
use crate::clock::Instant;
use crate::error::Errno;
use core::cell::{Cell, RefCell};
use core::ptr::NonNull;
use std::boxed::Box;
use std::format;
use std::rc::Rc;
use std::string::String;
use std::vec;
use std::vec::Vec;

/// Arena slots (stacks the provider can have out at once) and each slot's bytes.
const SLOTS: usize = 8;
const SLOT: usize = 16 * 1024;
/// Steps a program takes at most.
pub const MAX_STEPS: usize = 512;
/// Stack sizes a take asks for: below a spare's node, one page, over a page, a slot.
const SIZES: [usize; 6] = [32, 1024, 4096, 4112, 8192, SLOT];

/// What the provider saw, shared with the harness (which reads it between pool calls).
#[derive(Default)]
struct Seen {
    /// Per arena slot: the size handed out, or `None` while free.
    out: [Cell<Option<usize>>; SLOTS],
    /// Calls the harness has not checked yet.
    log: RefCell<Vec<Call>>,
    /// A contract broken by the pool, seen inside a provider call.
    broken: RefCell<Option<String>>,
}

#[derive(Debug, PartialEq, Eq)]
enum Call {
    Alloc(usize),
    Release(usize),
    Decommit(usize, usize),
    Assigned(usize, u32),
}

struct ArenaStacks {
    base: *mut u8,
    seen: Rc<Seen>,
}

impl ArenaStacks {
    fn slot_of(&self, stack: &Stack) -> Option<usize> {
        let off = (stack.base.as_ptr() as usize).checked_sub(self.base as usize)?;
        (off % SLOT == 0 && off / SLOT < SLOTS).then_some(off / SLOT)
    }

    fn broke(&self, why: String) {
        self.seen.broken.borrow_mut().get_or_insert(why);
    }
}

// SAFETY: slots are disjoint 16 KiB pieces of a 16-aligned arena that outlives the pool;
// a slot is handed out once until released (`out`); sizes are multiples of 16.
unsafe impl StackProvider for ArenaStacks {
    fn allocate(&mut self, size: usize) -> Result<Stack, Errno> {
        self.seen.log.borrow_mut().push(Call::Alloc(size));
        if size > SLOT || size == 0 || !size.is_multiple_of(16) {
            return Err(Errno::EINVAL);
        }
        let i = (0..SLOTS).find(|&i| self.seen.out[i].get().is_none()).ok_or(Errno::ENOMEM)?;
        self.seen.out[i].set(Some(size));
        // SAFETY: slot `i` is inside the arena.
        let base = unsafe { NonNull::new_unchecked(self.base.add(i * SLOT)) };
        Ok(Stack { base, size, guard: 0, tag: i })
    }

    unsafe fn release(&mut self, stack: Stack) {
        match self.slot_of(&stack) {
            Some(i) if self.seen.out[i].get() == Some(stack.size) && stack.tag == i => {
                self.seen.out[i].set(None);
                self.seen.log.borrow_mut().push(Call::Release(i));
            }
            _ => self.broke(format!("released {stack:?}, which is not out")),
        }
    }

    fn decommit(&mut self, stack: &Stack, keep_from: *mut u8) {
        match self.slot_of(stack) {
            Some(i) => self.seen.log.borrow_mut().push(Call::Decommit(i, stack.top() as usize - keep_from as usize)),
            None => self.broke(format!("decommit of {stack:?}, not from this provider")),
        }
    }

    fn assigned(&mut self, stack: &Stack, task_id: u32) {
        match self.slot_of(stack) {
            Some(i) => self.seen.log.borrow_mut().push(Call::Assigned(i, task_id)),
            None => self.broke(format!("assigned {stack:?}, not from this provider")),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Spare {
    slot: usize,
    size: usize,
    since: u64,
    decommitted: bool,
}

struct Model {
    pool: StackPool,
    seen: Rc<Seen>,
    max: usize,
    /// Newest last.
    spares: Vec<Spare>,
    /// Stacks the harness holds, with the byte they are filled with.
    held: Vec<(Stack, u8)>,
    stats: StackStats,
    now: u64,
}

impl Model {
    fn expect_calls(&self, want: &[Call]) -> Result<(), String> {
        if let Some(why) = self.seen.broken.borrow_mut().take() {
            return Err(why);
        }
        let got: Vec<Call> = self.seen.log.borrow_mut().drain(..).collect();
        if got != want {
            return Err(format!("provider calls {got:?}, the model {want:?}"));
        }
        Ok(())
    }

    fn take(&mut self, size: usize, task: u32, fill: u8) -> Result<(), String> {
        let start = self.spares.len().saturating_sub(self.max);
        let hit = (start..self.spares.len()).rev().find(|&k| self.spares[k].size >= size);
        let got = self.pool.take(size, task);
        let stack = match (got, hit) {
            (Ok(stack), Some(k)) => {
                let spare = self.spares.remove(k);
                if stack.tag != spare.slot || stack.size != spare.size {
                    return Err(format!("take({size}) reused {stack:?}, the model's spare {spare:?}"));
                }
                self.expect_calls(&[Call::Assigned(spare.slot, task)])?;
                self.stats.reused += 1;
                self.stats.spares -= 1;
                stack
            }
            (Ok(stack), None) => {
                self.expect_calls(&[Call::Alloc(size), Call::Assigned(stack.tag, task)])?;
                self.stats.created += 1;
                stack
            }
            (Err(e), None) => {
                self.expect_calls(&[Call::Alloc(size)])?;
                let full = (0..SLOTS).all(|i| self.seen.out[i].get().is_some());
                let want =
                    if size > SLOT || !size.is_multiple_of(16) || size == 0 { Errno::EINVAL } else { Errno::ENOMEM };
                if e != want || (want == Errno::ENOMEM && !full) {
                    return Err(format!("take({size}) failed with {e:?}, the provider's answer is {want:?}"));
                }
                return Ok(());
            }
            (Err(e), Some(k)) => return Err(format!("take({size}) failed with {e:?} with spare {:?}", self.spares[k])),
        };
        self.stats.in_use += 1;
        self.stats.high_water = self.stats.high_water.max(self.stats.in_use);
        // SAFETY: the stack is ours until put back: `size` writable bytes at `base`.
        unsafe { core::ptr::write_bytes(stack.base.as_ptr(), fill, stack.size) };
        self.held.push((stack, fill));
        Ok(())
    }

    fn put(&mut self, k: usize) -> Result<(), String> {
        let (stack, fill) = self.held.remove(k);
        // SAFETY: held, so `size` bytes at `base` are ours and initialised (filled at take).
        let bytes = unsafe { core::slice::from_raw_parts(stack.base.as_ptr(), stack.size) };
        if let Some(at) = bytes.iter().position(|&b| b != fill) {
            return Err(format!("stack {} in use was written at byte {at} of {}", stack.tag, stack.size));
        }
        // SAFETY: from `take`, and the harness never touches it again (dropped from `held`).
        unsafe { self.pool.put(stack, Instant::from_nanos(self.now)) };
        self.stats.in_use -= 1;
        if self.spares.len() >= self.max || stack.size < SPARE_NODE_SIZE {
            self.expect_calls(&[Call::Release(stack.tag)])?;
            self.stats.released += 1;
        } else {
            self.expect_calls(&[])?;
            self.spares.push(Spare { slot: stack.tag, size: stack.size, since: self.now, decommitted: false });
            self.stats.spares += 1;
        }
        Ok(())
    }

    fn trim(&mut self, older_than: u64) -> Result<(), String> {
        self.pool.trim(Instant::from_nanos(older_than));
        let mut want = Vec::new();
        for s in self.spares.iter_mut().rev() {
            if !s.decommitted && s.since <= older_than && s.size > 4096 {
                s.decommitted = true;
                want.push(Call::Decommit(s.slot, 4096));
                self.stats.decommitted += 1;
            }
        }
        self.expect_calls(&want)
    }

    fn release_all(&mut self) -> Result<(), String> {
        self.pool.release_all();
        let want: Vec<Call> = self.spares.drain(..).rev().map(|s| Call::Release(s.slot)).collect();
        self.stats.released += want.len() as u64;
        self.stats.spares = 0;
        self.expect_calls(&want)
    }

    fn check(&self) -> Result<(), String> {
        if self.pool.stats() != self.stats {
            return Err(format!("pool stats {:?}, the model {:?}", self.pool.stats(), self.stats));
        }
        let out = (0..SLOTS).filter(|&i| self.seen.out[i].get().is_some()).count();
        if out != self.held.len() + self.spares.len() {
            return Err(format!("{out} stacks out, {} held and {} spare", self.held.len(), self.spares.len()));
        }
        Ok(())
    }

    fn step(&mut self, next: &mut impl FnMut() -> u8) -> Result<(), String> {
        match next() % 8 {
            0..=2 => {
                let size = SIZES[next() as usize % SIZES.len()];
                let task = next() as u32;
                self.take(size, task, next() | 1)?;
            }
            3..=5 => {
                if !self.held.is_empty() {
                    let k = next() as usize % self.held.len();
                    self.put(k)?;
                }
            }
            6 => self.now += next() as u64,
            _ => {
                let older_than = self.now.saturating_sub(next() as u64 % 64);
                self.trim(older_than)?;
            }
        }
        self.check()
    }
}

/// Plays `data` against a stack pool; `Err` says which check failed.
pub fn run(data: &[u8]) -> Result<StackStats, String> {
    let mut at = 0;
    let mut next = move || {
        let b = data.get(at).copied().unwrap_or(0);
        at += 1;
        b
    };
    let max = next() as usize % 6;
    let mut arena = vec![0u128; SLOTS * SLOT / 16];
    let seen = Rc::new(Seen::default());
    let provider = Box::into_raw(Box::new(ArenaStacks { base: arena.as_mut_ptr().cast(), seen: seen.clone() }));
    let mut m = Model {
        pool: StackPool::new(max),
        seen,
        max,
        spares: Vec::new(),
        held: Vec::new(),
        stats: StackStats::default(),
        now: 0,
    };
    m.pool.init(provider.cast(), &VtFor::<ArenaStacks>::VT);
    let mut r = Ok(());
    for step in 1..=MAX_STEPS.min(data.len()) {
        if let Err(why) = m.step(&mut next) {
            r = Err(format!("step {step}: {why}"));
            break;
        }
    }
    if r.is_ok() {
        r = (|| {
            while !m.held.is_empty() {
                m.put(0)?;
                m.check()?;
            }
            m.release_all()?;
            m.check()?;
            match (0..SLOTS).find(|&i| m.seen.out[i].get().is_some()) {
                Some(i) => Err(format!("slot {i} never came back to the provider")),
                None => Ok(()),
            }
        })()
        .map_err(|why| format!("at the end: {why}"));
    }
    let stats = m.pool.stats();
    drop(m);
    // SAFETY: from `Box::into_raw` above; the pool that pointed at it is gone.
    drop(unsafe { Box::from_raw(provider) });
    drop(arena);
    r.map(|()| stats)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use proptest::prelude::*;
    use std::vec::Vec;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        /// Twin of the cargo-fuzz target `stack_pool`.
        #[test]
        fn stack_pool_matches_the_model(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
            super::run(&data).map_err(TestCaseError::fail)?;
        }
    }

    /// Over a fixed set of inputs the pool creates, reuses, releases and decommits.
    #[test]
    fn stack_pool_harness_reaches_each_path() {
        let mut rng = 0x57ac_u64;
        let mut total = super::StackStats::default();
        for _ in 0..200 {
            let data: Vec<u8> = (0..400)
                .map(|_| {
                    rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (rng >> 33) as u8
                })
                .collect();
            let s = super::run(&data).unwrap_or_else(|why| panic!("{why}"));
            total.created += s.created;
            total.reused += s.reused;
            total.released += s.released;
            total.decommitted += s.decommitted;
        }
        assert!(
            total.created > 500 && total.reused > 500 && total.released > 500 && total.decommitted > 50,
            "{total:?}"
        );
    }
}
