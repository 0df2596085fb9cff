//! Guarded fiber stacks from `mmap`: [`MmapStacks`], keel-linux's `StackProvider`.
//!
//! Each stack is one anonymous mapping, `MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE |
//! MAP_STACK`:
//!
//! ```text
//!   guard_lo                 base                               top = base + size
//!   | guard: PROT_NONE       | usable: read/write, grows down <- |
//!   |<------ guard --------->|<------------- size -------------->|
//! ```
//!
//! Both sizes are whole pages (the requested size is rounded up; the usable region is
//! exactly that, so a fiber asking for 16 KiB gets exactly 16 KiB). `MAP_NORESERVE`
//! commits no swap up front: only pages a fiber touches use memory, so thousands of
//! mostly idle stacks are cheap. The guard turns an overflow into a fault, which the
//! handler in [`overflow`](mod@crate::overflow) reports with the task's id and aborts on.
//!
//! Rules (cited as "stack rule N"):
//! 1. A stack is registered with the overflow handler while it is mapped: registered
//!    after `mmap`, unregistered before `munmap` (overflow rule 3). Its `Stack::tag` is
//!    its registry index, or [`UNREGISTERED`] when the registry was full: such a stack
//!    works, but an overflow in it is reported as a plain SIGSEGV, with no task id.
//! 2. `assigned` records the task id for the report (one relaxed store, overflow rule 4);
//!    it is the only call on the pool's reuse path, and makes no syscall.
//! 3. `decommit` gives the pages of `[base, keep_from)` back with `madvise(MADV_DONTNEED)`
//!    (`keep_from` rounded down to a page); they read as zero when touched again.
//! 4. An `MmapStacks` is `!Send`: creating one installs the overflow handler (once per
//!    process) and an alternate signal stack on the creating thread, which is the
//!    thread its executor (also `!Send`) runs fibers on. Another thread that runs fibers
//!    on these stacks needs [`set_alt_stack`](crate::overflow::set_alt_stack).
// mmap, mprotect, madvise and munmap on mappings this module creates and owns, and the
// `unsafe trait StackProvider` contract.
#![allow(unsafe_code)]

use crate::overflow;
use core::marker::PhantomData;
use core::ptr::{self, NonNull};
use keel_core::{Errno, Stack, StackProvider};
use rustix::mm::{Advice, MapFlags, MprotectFlags, ProtFlags, madvise, mmap_anonymous, mprotect, munmap};

/// The `Stack::tag` of a stack the overflow registry had no room for (stack rule 1).
pub const UNREGISTERED: usize = usize::MAX;

/// Fiber stacks from `mmap`, each with a `PROT_NONE` guard region below it (see the
/// module doc).
#[derive(Debug)]
pub struct MmapStacks {
    guard: usize,
    page: usize,
    /// Stack rule 4.
    _not_send: PhantomData<*mut ()>,
}

fn errno(e: rustix::io::Errno) -> Errno {
    Errno(e.raw_os_error())
}

impl MmapStacks {
    /// Stacks with a one-page guard. Installs the overflow handler (once per process) and
    /// an alternate signal stack on this thread (stack rule 4).
    pub fn new() -> Result<Self, Errno> {
        Self::with_guard(rustix::param::page_size())
    }

    /// Stacks with a guard of `guard` bytes, rounded up to pages. A guard of 0 leaves the
    /// stacks unguarded: an overflow then runs silently into whatever lies below.
    pub fn with_guard(guard: usize) -> Result<Self, Errno> {
        let page = rustix::param::page_size();
        let guard = guard.checked_next_multiple_of(page).ok_or(Errno::EINVAL)?;
        overflow::install()?;
        overflow::set_alt_stack()?;
        Ok(MmapStacks { guard, page, _not_send: PhantomData })
    }

    /// Guard bytes below each stack.
    pub fn guard(&self) -> usize {
        self.guard
    }

    /// The page size stacks are rounded to.
    pub fn page_size(&self) -> usize {
        self.page
    }
}

// SAFETY: each stack is a fresh private mapping of `guard + size` bytes; the usable part
// `[base, base + size)` is read/write, page-aligned at both ends (so 16-aligned), and
// disjoint from every other mapping until `release` unmaps it.
unsafe impl StackProvider for MmapStacks {
    fn allocate(&mut self, size: usize) -> Result<Stack, Errno> {
        let size = size.max(1).checked_next_multiple_of(self.page).ok_or(Errno::ENOMEM)?;
        let total = size.checked_add(self.guard).ok_or(Errno::ENOMEM)?;
        let flags = MapFlags::PRIVATE | MapFlags::NORESERVE | MapFlags::STACK;
        // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing.
        let map = unsafe { mmap_anonymous(ptr::null_mut(), total, ProtFlags::READ | ProtFlags::WRITE, flags) }
            .map_err(errno)?;
        if self.guard > 0 {
            // SAFETY: the low `guard` bytes of the mapping just made, used by nothing.
            if let Err(e) = unsafe { mprotect(map, self.guard, MprotectFlags::empty()) } {
                // SAFETY: our mapping, never handed out.
                let _ = unsafe { munmap(map, total) };
                return Err(errno(e));
            }
        }
        let lo = map as usize;
        // SAFETY: `guard` < `total`, inside the mapping; mmap never returns null.
        let base = unsafe { NonNull::new_unchecked(map.cast::<u8>().add(self.guard)) };
        // Stack rule 1: an unguarded stack has nothing to register.
        let tag = if self.guard > 0 { overflow::register(lo, lo + self.guard, size) } else { None };
        Ok(Stack { base, size, guard: self.guard, tag: tag.unwrap_or(UNREGISTERED) })
    }

    unsafe fn release(&mut self, stack: Stack) {
        // Stack rule 1: unregister before the range can be mapped again.
        overflow::unregister(stack.tag);
        // SAFETY: `stack` came from `allocate` (caller), so this is exactly its mapping,
        // and nothing uses it any more.
        let r = unsafe { munmap(stack.base.as_ptr().sub(stack.guard).cast(), stack.guard + stack.size) };
        debug_assert!(r.is_ok(), "keel: munmap of a fiber stack failed: {r:?}");
    }

    fn decommit(&mut self, stack: &Stack, keep_from: *mut u8) {
        let base = stack.base.as_ptr() as usize;
        let end = (keep_from as usize).clamp(base, base + stack.size) / self.page * self.page;
        if end > base {
            // SAFETY: `[base, end)` lies inside this stack's usable region, which the
            // pool owns while the stack is spare and does not use below `keep_from`;
            // DONTNEED on a private anonymous mapping just drops the pages (stack rule 3).
            let _ = unsafe { madvise(stack.base.as_ptr().cast(), end - base, Advice::LinuxDontNeed) };
        }
    }

    fn assigned(&mut self, stack: &Stack, task_id: u32) {
        // Stack rule 2 (an unregistered tag is ignored).
        overflow::set_task(stack.tag, task_id);
    }
}
