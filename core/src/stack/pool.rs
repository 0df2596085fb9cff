//! The executor's pool of spare stacks, kthread style: a finished fiber's
//! stack goes back to the pool, and the next fiber takes it with no call to the
//! provider (no syscall). The stack a fiber ran on is put back only after the switch
//! away from it, by the executor on its own stack (deferred free).
//!
//! The pool is an intrusive LIFO threaded through the spares themselves: each spare
//! keeps a `SpareNode` in the top bytes of its own (unused) memory, so the pool needs
//! no storage and no capacity of its own. LIFO keeps the most recently used, cache-warm
//! stack on top.
//!
//! Rules (cited elsewhere as "pool rule N"):
//! 1. Executor-local (`Cell`s); the provider is reached through a raw pointer with no
//!    other borrow live (as the driver is, sched rule 3).
//! 2. At most `max_spares` spares are kept; a stack put back beyond that is released.
//! 3. `take` looks at no more than `max_spares` spares for one large enough.
//! 4. `trim` decommits spares older than a threshold, below their top page (where the
//!    node lives), once each.

use super::{Stack, StackProvider};
use crate::clock::Instant;
use crate::error::Errno;
use core::cell::Cell;
use core::ptr;

#[repr(C, align(16))]
struct SpareNode {
    next: *mut SpareNode,
    stack: Stack,
    since: Instant,
    decommitted: bool,
}

/// The bytes of a spare's node: a stack smaller than this is never pooled (`put`).
#[cfg(any(test, keel_fuzz))]
pub(crate) const SPARE_NODE_SIZE: usize = core::mem::size_of::<SpareNode>();

/// Bytes a spare reserves at its top for the node, rounded to a page so decommit can
/// spare it.
const NODE_KEEP: usize = 4096;

/// Pool counters.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct StackStats {
    /// Stacks taken from the provider.
    pub created: u64,
    /// Stacks taken from the pool instead.
    pub reused: u64,
    /// Stacks given back to the provider.
    pub released: u64,
    /// The most stacks in use at once.
    pub high_water: u64,
    /// Stacks in use now.
    pub in_use: u64,
    /// Spares in the pool now.
    pub spares: u64,
    /// Spares decommitted by `trim`.
    pub decommitted: u64,
}

type AllocFn = unsafe fn(*mut (), usize) -> Result<Stack, Errno>;
type StackFn = unsafe fn(*mut (), Stack);
type DecommitFn = unsafe fn(*mut (), &Stack, *mut u8);
type AssignFn = unsafe fn(*mut (), &Stack, u32);

pub(crate) struct ProviderVt {
    alloc: AllocFn,
    release: StackFn,
    decommit: DecommitFn,
    assigned: AssignFn,
}

pub(crate) struct VtFor<S>(core::marker::PhantomData<S>);

impl<S: StackProvider> VtFor<S> {
    // SAFETY (for the functions below): the pool stores a pointer to its executor's own
    // `S` with this vtable and calls through it only on the executor's thread, with no
    // other borrow of the provider live (rule 1).
    pub(crate) const VT: ProviderVt = ProviderVt {
        alloc: |provider, size| {
            // SAFETY: see above.
            unsafe { (*(provider as *mut S)).allocate(size) }
        },
        release: |provider, stack| {
            // SAFETY: see above; `stack` came from this provider (the pool only holds those).
            unsafe { (*(provider as *mut S)).release(stack) }
        },
        decommit: |provider, stack, keep| {
            // SAFETY: see above.
            unsafe { (*(provider as *mut S)).decommit(stack, keep) }
        },
        assigned: |provider, stack, id| {
            // SAFETY: see above.
            unsafe { (*(provider as *mut S)).assigned(stack, id) }
        },
    };
}

/// The pool's counters, one `Cell` each (a take or put then touches the words it
/// changes, not a copy of all seven), `#[repr(C)]` in `StackStats`'s order: debuggers read
/// created, reused, released, high_water, in_use, spares 8 bytes apart (`exec/debug.rs`).
#[repr(C)]
#[derive(Default)]
struct Counters {
    created: Cell<u64>,
    reused: Cell<u64>,
    released: Cell<u64>,
    high_water: Cell<u64>,
    in_use: Cell<u64>,
    spares: Cell<u64>,
    decommitted: Cell<u64>,
}

#[inline(always)]
fn inc(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

#[inline(always)]
fn dec(c: &Cell<u64>) {
    c.set(c.get() - 1);
}

pub(crate) struct StackPool {
    head: Cell<*mut SpareNode>,
    provider: Cell<*mut ()>,
    vt: Cell<Option<&'static ProviderVt>>,
    pub(crate) max_spares: usize,
    stats: Counters,
}

impl StackPool {
    /// Where the counters are, for debuggers (`exec/debug.rs`).
    pub(crate) const DEBUG_STATS: usize = core::mem::offset_of!(Self, stats);

    pub(crate) fn new(max_spares: usize) -> Self {
        StackPool {
            head: Cell::new(ptr::null_mut()),
            provider: Cell::new(ptr::null_mut()),
            vt: Cell::new(None),
            max_spares,
            stats: Counters::default(),
        }
    }

    pub(crate) fn init(&self, provider: *mut (), provider_vt: &'static ProviderVt) {
        self.provider.set(provider);
        self.vt.set(Some(provider_vt));
    }

    fn vt(&self) -> &'static ProviderVt {
        self.vt.get().expect("keel bug: stack pool used before init")
    }

    pub(crate) fn stats(&self) -> StackStats {
        let c = &self.stats;
        StackStats {
            created: c.created.get(),
            reused: c.reused.get(),
            released: c.released.get(),
            high_water: c.high_water.get(),
            in_use: c.in_use.get(),
            spares: c.spares.get(),
            decommitted: c.decommitted.get(),
        }
    }

    /// One more stack in use (taken from the pool or the provider).
    #[inline(always)]
    fn one_more_in_use(&self) {
        let c = &self.stats;
        inc(&c.in_use);
        c.high_water.set(c.high_water.get().max(c.in_use.get()));
    }

    /// A stack of at least `size` bytes for task `task_id`: a spare if one fits (rule 3),
    /// else a new one. Inlined: the top spare, when it fits, is taken here (a fiber's
    /// attach usually finds the stack the last fiber gave back on top: LIFO); a search
    /// below it, or a new stack, is `take_below`'s.
    #[inline(always)]
    pub(crate) fn take(&self, size: usize, task_id: u32) -> Result<Stack, Errno> {
        let top = self.head.get();
        // SAFETY: spares' nodes are valid while pooled (as in `take_below`). Looking at
        // the top spare is looking at one: a pooled spare means `max_spares >= 1` (rule 2),
        // so rule 3 holds.
        if !top.is_null() && unsafe { (*top).stack.size } >= size {
            // SAFETY: as above.
            let node = unsafe { &*top };
            let stack = node.stack;
            self.head.set(node.next);
            self.reused_one();
            self.assign(&stack, task_id);
            return Ok(stack);
        }
        self.take_below(size, task_id)
    }

    /// A spare taken from the pool instead of the provider: the counters.
    #[inline(always)]
    fn reused_one(&self) {
        inc(&self.stats.reused);
        dec(&self.stats.spares);
        self.one_more_in_use();
    }

    /// `take` when the top spare is missing or too small: the first spare that fits
    /// (rule 3), else a new stack from the provider.
    #[inline(never)]
    fn take_below(&self, size: usize, task_id: u32) -> Result<Stack, Errno> {
        let mut prev: *mut SpareNode = ptr::null_mut();
        let mut cur = self.head.get();
        let mut looked = 0;
        while !cur.is_null() && looked < self.max_spares {
            // SAFETY: spares' nodes are valid while pooled (they sit in the spares' own
            // memory, which the pool owns).
            let node = unsafe { &*cur };
            if node.stack.size >= size {
                let stack = node.stack;
                let next = node.next;
                if prev.is_null() {
                    self.head.set(next);
                } else {
                    // SAFETY: `prev` is a pooled node, as above.
                    unsafe { (*prev).next = next };
                }
                self.reused_one();
                self.assign(&stack, task_id);
                return Ok(stack);
            }
            prev = cur;
            cur = node.next;
            looked += 1;
        }
        // SAFETY: rule 1.
        let stack = unsafe { (self.vt().alloc)(self.provider.get(), size) }?;
        // A valgrind build tells memcheck the new stack is one, so a switch onto it is a
        // change of stack. Never deregistered (the id has nowhere to live while a fiber
        // owns the stack): a released range that comes back is registered again.
        #[cfg(keel_valgrind)]
        super::valgrind::stack_register(stack.base.as_ptr(), stack.top());
        inc(&self.stats.created);
        self.one_more_in_use();
        self.assign(&stack, task_id);
        Ok(stack)
    }

    #[inline(always)]
    fn assign(&self, stack: &Stack, task_id: u32) {
        // SAFETY: rule 1.
        unsafe { (self.vt().assigned)(self.provider.get(), stack, task_id) }
    }

    /// Takes back a stack no fiber runs on any more (rule 2).
    ///
    /// # Safety
    /// `stack` came from `take` and nothing will touch its memory again.
    pub(crate) unsafe fn put(&self, stack: Stack, now: Instant) {
        let spares = self.stats.spares.get() as usize;
        // A planted bug for the fuzz target `stack_pool` (off in every normal build): one
        // spare more than `max_spares` is kept (breaks rule 2).
        let max_spares = if cfg!(keel_planted = "stack_pool") { self.max_spares + 1 } else { self.max_spares };
        if spares >= max_spares || stack.size < core::mem::size_of::<SpareNode>() {
            // SAFETY: rule 1; the caller gives the stack up.
            unsafe { (self.vt().release)(self.provider.get(), stack) };
            inc(&self.stats.released);
            dec(&self.stats.in_use);
            return;
        }
        let node = (stack.top() as usize - core::mem::size_of::<SpareNode>()) as *mut SpareNode;
        // SAFETY: the node fits at the top of the stack's usable memory, 16-aligned
        // (top is 16-aligned and the node's size is a multiple of 16), and nothing
        // else uses that memory now (caller).
        unsafe { node.write(SpareNode { next: self.head.get(), stack, since: now, decommitted: false }) };
        self.head.set(node);
        inc(&self.stats.spares);
        dec(&self.stats.in_use);
    }

    /// Decommits spares pooled since before `older_than` (rule 4). Bounded by the spares.
    pub(crate) fn trim(&self, older_than: Instant) {
        let mut cur = self.head.get();
        while !cur.is_null() {
            // SAFETY: pooled node, as in `take`.
            let node = unsafe { &mut *cur };
            if !node.decommitted && node.since <= older_than && node.stack.size > NODE_KEEP {
                let keep_from = (node.stack.top() as usize - NODE_KEEP) as *mut u8;
                // SAFETY: rule 1.
                unsafe { (self.vt().decommit)(self.provider.get(), &node.stack, keep_from) };
                node.decommitted = true;
                inc(&self.stats.decommitted);
            }
            cur = node.next;
        }
    }

    /// Gives every spare back to the provider (executor drop).
    pub(crate) fn release_all(&self) {
        while !self.head.get().is_null() {
            // SAFETY: pooled node, as in `take`.
            let node = unsafe { &*self.head.get() };
            let stack = node.stack;
            self.head.set(node.next);
            // SAFETY: rule 1; pooled stacks are unused.
            unsafe { (self.vt().release)(self.provider.get(), stack) };
            dec(&self.stats.spares);
            inc(&self.stats.released);
        }
    }
}
