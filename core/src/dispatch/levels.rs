//! The three priority levels of a dispatcher: lock-free stacks of tasks threaded through
//! their inbox links, each head a (top task, tag) pair changed by one double-word CAS
//! (dispatch rule 1).

use super::*;
use crate::Priority;
use crate::task::header::Header;
use core::ptr::{self, NonNull};

/// Dispatch rule 1: a level's top task and its tag, as loaded or to be stored.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Top {
    pub(crate) task: Option<NonNull<Header>>,
    pub(crate) tag: u64,
}

#[cfg(keel_loom)]
pub(super) use narrow::Head;
#[cfg(not(keel_loom))]
pub(super) use wide::Head;

/// Dispatch rule 1's head as one 16-byte pair: `[top address, tag]`.
#[cfg(not(keel_loom))]
pub(super) mod wide {
    use super::{Header, NonNull, Top};
    use crate::sync::{AtomicU8, AtomicU64Like, Ordering};

    /// The pair. The halves are read with 8-byte atomic loads (aligned 8-byte loads
    /// are atomic on x86_64, and a torn pair is harmless: see `load`) and written only
    /// by `lock cmpxchg16b` on the whole 16 bytes.
    #[repr(C, align(16))]
    pub(crate) struct Head([AtomicU64Like; 2]);

    /// ThreadSanitizer does not see `cmpxchg16b` (inline asm is not instrumented), so
    /// under `--cfg keel_tsan` (`make test-tsan`) the head tells it what the instruction
    /// and the loads do: each CAS releases and acquires the head, each load acquires it.
    /// Without this every pop looks unordered with the push that published its task.
    #[cfg(keel_tsan)]
    mod tsan {
        unsafe extern "C" {
            fn __tsan_acquire(addr: *mut core::ffi::c_void);
            fn __tsan_release(addr: *mut core::ffi::c_void);
        }
        pub(super) fn acquire(head: &super::Head) {
            // SAFETY: an annotation of ThreadSanitizer's runtime (linked by
            // `-Zsanitizer=thread`); it reads nothing at the address, only keys on it.
            unsafe { __tsan_acquire(head as *const super::Head as *mut core::ffi::c_void) }
        }
        pub(super) fn release(head: &super::Head) {
            // SAFETY: as in `acquire`.
            unsafe { __tsan_release(head as *const super::Head as *mut core::ffi::c_void) }
        }
    }

    /// Whether the CPU has `cmpxchg16b`: 0 not looked yet, 1 yes, 2 no.
    static CX16: AtomicU8 = AtomicU8::new(0);

    /// Whether this CPU can run dispatch rule 1 (`cmpxchg16b`, CPUID.1:ECX bit 13).
    pub(crate) fn supported() -> bool {
        // Relaxed: a cached fact about the CPU; any thread may compute it again.
        match CX16.load(Ordering::Relaxed) {
            1 => true,
            2 => false,
            _ => {
                let yes = core::arch::x86_64::__cpuid(1).ecx & (1 << 13) != 0;
                // Relaxed: as above.
                CX16.store(if yes { 1 } else { 2 }, Ordering::Relaxed);
                yes
            }
        }
    }

    impl Head {
        pub(crate) const fn new() -> Self {
            Head([AtomicU64Like::new(0), AtomicU64Like::new(0)])
        }

        /// An empty head whose tag starts at `tag` (tests of the tag's edges).
        #[cfg(test)]
        pub(crate) const fn with_tag(tag: u64) -> Self {
            Head([AtomicU64Like::new(0), AtomicU64Like::new(tag)])
        }

        /// The pair, read tag first. A pair torn by a CAS in between names a top and a
        /// tag the head never held together; every tag is held once (it only grows), so
        /// a CAS expecting that pair fails and returns the real one.
        #[inline(always)]
        pub(crate) fn load(&self) -> Top {
            // Acquire (both): pair with the CAS that wrote them (a `lock`ed instruction,
            // which orders everything before it), so the top's link and the task's body
            // and fields (the push) are visible.
            let tag = self.0[1].load(Ordering::Acquire);
            let addr = self.0[0].load(Ordering::Acquire);
            #[cfg(keel_tsan)]
            tsan::acquire(self);
            Top { task: NonNull::new(addr as *mut Header), tag }
        }

        /// Whether a task is on top.
        #[inline(always)]
        pub(crate) fn has_task(&self) -> bool {
            // Acquire: as in `load`.
            let has = self.0[0].load(Ordering::Acquire) != 0;
            #[cfg(keel_tsan)]
            tsan::acquire(self);
            has
        }

        /// Replaces `old` with `new` if the head holds `old`; the head's pair if not.
        /// Sequentially consistent (a `lock`ed read-modify-write): it publishes what the
        /// caller wrote before (a push's link and task) and acquires what the last
        /// writer published (a pop's task).
        #[inline(always)]
        pub(crate) fn cas(&self, old: Top, new: Top) -> Result<(), Top> {
            debug_assert!(supported(), "keel bug: dispatch rule 1 used without cmpxchg16b");
            let addr = |top: Top| top.task.map_or(0, |task| task.as_ptr() as u64);
            let (mut lo, mut hi) = (addr(old), old.tag);
            let ok: u8;
            #[cfg(keel_tsan)]
            tsan::release(self);
            // SAFETY: `self.0` is 16 bytes, 16-aligned (`repr(align(16))`), valid for the
            // `'static` dispatcher; `cmpxchg16b` exists (`supported`, checked before any
            // task reaches a level: `submit` and `serve`). rbx, which cmpxchg16b takes
            // the new low half in, is reserved by LLVM: it is swapped with a scratch
            // register around the instruction and restored before the block ends.
            unsafe {
                core::arch::asm!(
                    "xchg {new_lo}, rbx",
                    "lock cmpxchg16b xmmword ptr [{dst}]",
                    "sete {ok}",
                    "mov rbx, {new_lo}",
                    dst = in(reg) self.0.as_ptr(),
                    new_lo = inout(reg) addr(new) => _,
                    ok = out(reg_byte) ok,
                    in("rcx") new.tag,
                    inout("rax") lo,
                    inout("rdx") hi,
                    options(nostack),
                );
            }
            #[cfg(keel_tsan)]
            tsan::acquire(self);
            if ok != 0 { Ok(()) } else { Err(Top { task: NonNull::new(lo as *mut Header), tag: hi }) }
        }
    }
}

/// Dispatch rule 1's head packed in one word (loom has no 128-bit atomics): the task
/// header's address shifted right by 6 (64-byte aligned, below 2^48: 42 bits) under a
/// `TAG_BITS`-bit tag that wraps.
#[cfg(keel_loom)]
pub(super) mod narrow {
    use super::{Header, NonNull, Top};
    use crate::sync::{AtomicU64Like, Ordering};

    const ADDR_SHIFT: u32 = 6;
    const PTR_MASK: u64 = (1 << 42) - 1;
    /// Bits of tag above the address.
    pub(super) const TAG_BITS: u32 = 22;

    pub(crate) fn supported() -> bool {
        true
    }

    pub(crate) struct Head(AtomicU64Like);

    pub(super) fn pack(top: Top) -> u64 {
        let addr = top.task.map_or(0, |task| task.as_ptr() as u64 >> ADDR_SHIFT);
        (top.tag & ((1 << TAG_BITS) - 1)) << 42 | addr
    }

    pub(super) fn unpack(word: u64) -> Top {
        Top { task: NonNull::new(((word & PTR_MASK) << ADDR_SHIFT) as *mut Header), tag: word >> 42 }
    }

    impl Head {
        pub(crate) fn new() -> Self {
            Head(AtomicU64Like::new(0))
        }

        pub(crate) fn load(&self) -> Top {
            // Acquire: pairs with the CAS that wrote it.
            unpack(self.0.load(Ordering::Acquire))
        }

        pub(crate) fn has_task(&self) -> bool {
            // Acquire: as in `load`.
            self.0.load(Ordering::Acquire) & PTR_MASK != 0
        }

        pub(crate) fn cas(&self, old: Top, new: Top) -> Result<(), Top> {
            // AcqRel: as the wide head's `lock cmpxchg16b` (publishes and acquires);
            // Acquire on failure: the caller decides again on what it returns.
            self.0
                .compare_exchange_weak(pack(old), pack(new), Ordering::AcqRel, Ordering::Acquire)
                .map(|_| ())
                .map_err(unpack)
        }
    }
}

impl Dispatcher {
    /// Dispatch rule 1: push.
    pub(super) fn push(&self, priority: Priority, task: NonNull<Header>) {
        let node = node_of(task);
        debug_assert!(task.as_ptr() as u64 >> 48 == 0, "keel bug: task header above 2^48");
        debug_assert!((task.as_ptr() as u64).is_multiple_of(64), "keel bug: task header not 64-byte aligned");
        let head = &self.levels[priority.index()];
        let mut old = head.load();
        loop {
            let next = old.task.map_or(ptr::null_mut(), node_of);
            // SAFETY: `'static` node; we own the task (claimed), so its link is ours.
            // Relaxed: published by the CAS.
            unsafe { (*node).next_store(next) };
            // The CAS publishes the task (body, fields, link) to the popper.
            match head.cas(old, Top { task: Some(task), tag: old.tag.wrapping_add(1) }) {
                Ok(()) => return,
                Err(now) => old = now,
            }
        }
    }

    /// Dispatch rule 1: pop the highest priority's newest task.
    pub(crate) fn pop(&self) -> Option<NonNull<Header>> {
        for head in &self.levels {
            // The load acquires the pusher's link.
            let mut old = head.load();
            while let Some(task) = old.task {
                // SAFETY: `'static` node (a stale one's link is garbage the CAS rejects).
                let next = unsafe { (*node_of(task)).next_load() };
                let next = (!next.is_null()).then(|| header_of(next));
                // The CAS acquires the task's body and fields, published by the push.
                match head.cas(old, Top { task: next, tag: old.tag.wrapping_add(1) }) {
                    Ok(()) => return Some(task),
                    Err(now) => old = now,
                }
            }
        }
        None
    }

    /// Whether any task waits (the worker's park re-check, dispatch rule 4; the token
    /// take's drain check, dispatch rule 5).
    pub(crate) fn has_work(&self) -> bool {
        // Acquire: pairs with the pushes' Release CAS; for the token take it is what the
        // quit word's Acquire made visible (rule 5); for the park re-check the caller's
        // SeqCst fence orders it (rule 4).
        self.levels.iter().any(Head::has_task)
    }
}
