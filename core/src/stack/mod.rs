//! Stacks for fibers: where they come from (`StackProvider`) and the executor's pool
//! of spares (`pool.rs`).
//!
//! A [`Stack`] is a usable region `[base, base + size)` growing down from its top,
//! possibly with an inaccessible guard region of `guard` bytes below `base`. Providers:
//! keel-linux's mmap provider (guard pages, `MAP_NORESERVE`), and [`RegionStacks`] here,
//! which carves stacks out of one caller-supplied region for embedders with no mmap.

pub(crate) mod pool;
/// The stack pool's fuzz harness: the proptest twin in `make test`, and under `--cfg
/// keel_fuzz` the cargo-fuzz target `stack_pool` (fuzz/); not part of the API.
#[cfg(any(test, keel_fuzz))]
#[doc(hidden)]
pub mod pool_fuzz;
#[cfg(all(keel_valgrind, target_arch = "x86_64"))]
#[doc(hidden)]
pub mod valgrind;

pub use pool::StackStats;

use crate::error::Errno;
use core::ptr::NonNull;

/// One fiber stack.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Stack {
    /// Lowest usable byte.
    pub base: NonNull<u8>,
    /// Usable bytes (a multiple of 16).
    pub size: usize,
    /// Bytes of guard region below `base` (0 if none).
    pub guard: usize,
    /// The provider's own bookkeeping (an index, say); keel does not interpret it.
    pub tag: usize,
}

// SAFETY: a `Stack` is a description of memory; who may touch the memory is governed by
// the pool and fiber rules, not by which thread holds the description.
unsafe impl Send for Stack {}

impl Stack {
    /// One past the highest usable byte (16-aligned).
    pub fn top(&self) -> *mut u8 {
        // SAFETY: `base + size` is one past the end of the usable region.
        unsafe { self.base.as_ptr().add(self.size) }
    }
}

/// Where fiber stacks come from.
///
/// # Safety
/// `allocate` returns a region of at least `size` usable, writable bytes, 16-aligned at
/// both ends, not overlapping any other stack it has handed out and not released; it
/// stays valid until given back to `release`.
pub unsafe trait StackProvider: 'static {
    /// A stack with at least `size` usable bytes.
    fn allocate(&mut self, size: usize) -> Result<Stack, Errno>;

    /// Takes a stack back.
    ///
    /// # Safety
    /// `stack` came from this provider's `allocate` and is not in use.
    unsafe fn release(&mut self, stack: Stack);

    /// Lets the system reclaim a spare's memory below `keep_from` (the pool keeps its
    /// bookkeeping in the bytes above). Optional: the default does nothing.
    fn decommit(&mut self, stack: &Stack, keep_from: *mut u8) {
        let _ = (stack, keep_from);
    }

    /// A stack now runs task `task_id` (for overflow reports). Optional.
    fn assigned(&mut self, stack: &Stack, task_id: u32) {
        let _ = (stack, task_id);
    }
}

/// No stacks: an executor that runs only stackless tasks.
#[derive(Debug, Default)]
pub struct NoStacks;

// SAFETY: never hands out a stack.
unsafe impl StackProvider for NoStacks {
    fn allocate(&mut self, _: usize) -> Result<Stack, Errno> {
        Err(Errno::ENOMEM)
    }
    unsafe fn release(&mut self, _: Stack) {}
}

/// Carves equal stacks out of one caller-supplied region (no mmap, no allocator), with
/// an optional guard gap left unused below each stack. The gap is only a guard if the
/// caller makes it inaccessible; without that, an overflow runs into the gap silently,
/// then into the next stack.
pub struct RegionStacks {
    region: NonNull<u8>,
    len: usize,
    slot: usize,
    guard: usize,
    stack_size: usize,
    free: u64,
    slots: usize,
}

impl core::fmt::Debug for RegionStacks {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RegionStacks").field("stack_size", &self.stack_size).field("slots", &self.slots).finish()
    }
}

impl RegionStacks {
    /// Splits `region` into stacks of `stack_size` usable bytes, each with `guard` bytes
    /// below it, at most 64 of them.
    pub fn new(region: &'static mut [u8], stack_size: usize, guard: usize) -> Result<Self, Errno> {
        let stack_size = stack_size.next_multiple_of(16);
        let guard = guard.next_multiple_of(16);
        let start = region.as_mut_ptr();
        let skew = start.align_offset(16);
        let len = region.len().saturating_sub(skew);
        let slot = stack_size + guard;
        if stack_size == 0 || slot > len {
            return Err(Errno::EINVAL);
        }
        let slots = (len / slot).min(64);
        // SAFETY: `skew` < 16 <= len of a region holding at least one slot.
        let region = unsafe { NonNull::new_unchecked(start.add(skew)) };
        let free = if slots == 64 { u64::MAX } else { (1u64 << slots) - 1 };
        Ok(RegionStacks { region, len, slot, guard, stack_size, free, slots })
    }

    /// Stacks not handed out.
    pub fn available(&self) -> usize {
        self.free.count_ones() as usize
    }
}

// SAFETY: slots are disjoint, 16-aligned, inside the `'static` region given to `new`, and
// handed out once until released (the `free` bitmap).
unsafe impl StackProvider for RegionStacks {
    fn allocate(&mut self, size: usize) -> Result<Stack, Errno> {
        if size > self.stack_size {
            return Err(Errno::EINVAL);
        }
        if self.free == 0 {
            return Err(Errno::ENOMEM);
        }
        let i = self.free.trailing_zeros() as usize;
        self.free &= !(1 << i);
        debug_assert!(i < self.slots && (i + 1) * self.slot <= self.len);
        // SAFETY: slot `i` lies inside the region (checked at construction).
        let base = unsafe { self.region.add(i * self.slot + self.guard) };
        Ok(Stack { base, size: self.stack_size, guard: self.guard, tag: i })
    }

    unsafe fn release(&mut self, stack: Stack) {
        self.free |= 1 << stack.tag;
    }
}
