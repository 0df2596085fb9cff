//! Alternate signal stacks (overflow rule 2): one per thread that runs fibers, so the
//! fault handler can run when a fiber's stack is exhausted; mapped with a guard page,
//! unmapped when the thread exits.
#![allow(unsafe_code)] // sigaltstack and mmap through libc and rustix

use core::cell::Cell;
use core::mem::MaybeUninit;
use core::ptr;
use keel_core::Errno;
use libc::c_void;

use super::{ALT_STACK_MIN, last_errno};

/// The alternate stack keel mapped for this thread, unmapped when the thread exits.
struct AltStack {
    /// The mapping: a guard page, then the stack.
    map: Cell<*mut c_void>,
    map_len: Cell<usize>,
    /// The stack itself (what `sigaltstack` was given).
    sp: Cell<*mut c_void>,
}

impl Drop for AltStack {
    fn drop(&mut self) {
        if self.map.get().is_null() {
            return;
        }
        let mut cur = MaybeUninit::<libc::stack_t>::zeroed();
        // SAFETY: a query (null new stack) into a valid out-pointer.
        let rc = unsafe { libc::sigaltstack(ptr::null(), cur.as_mut_ptr()) };
        // SAFETY: zero-initialised, and filled by the kernel if rc == 0.
        let cur = unsafe { cur.assume_init() };
        if rc == 0 && cur.ss_flags & libc::SS_DISABLE == 0 && cur.ss_sp == self.sp.get() {
            if cur.ss_flags & libc::SS_ONSTACK != 0 {
                return; // running on it (cannot happen in a destructor): leak it
            }
            let off = libc::stack_t { ss_sp: ptr::null_mut(), ss_flags: libc::SS_DISABLE, ss_size: 0 };
            // SAFETY: disabling this thread's alternate stack, which is ours.
            unsafe { libc::sigaltstack(&off, ptr::null_mut()) };
        }
        // SAFETY: our own mapping, no longer this thread's alternate stack (disabled
        // above, or replaced by someone else), and the thread is exiting.
        let _ = unsafe { rustix::mm::munmap(self.map.get(), self.map_len.get()) };
    }
}

thread_local! {
    static ALT: AltStack = const {
        AltStack { map: Cell::new(ptr::null_mut()), map_len: Cell::new(0), sp: Cell::new(ptr::null_mut()) }
    };
}

/// Gives the current thread an alternate signal stack of at least [`ALT_STACK_MIN`]
/// bytes unless it has one (overflow rule 2), so the overflow handler can run when a
/// fiber on this thread exhausts its stack. `MmapStacks::new` calls it; call it yourself
/// on any other thread that will run fibers on `MmapStacks`' stacks.
pub fn set_alt_stack() -> Result<(), Errno> {
    let mut cur = MaybeUninit::<libc::stack_t>::zeroed();
    // SAFETY: a query (null new stack) into a valid out-pointer.
    if unsafe { libc::sigaltstack(ptr::null(), cur.as_mut_ptr()) } != 0 {
        return Err(last_errno());
    }
    // SAFETY: filled by the kernel (rc == 0 above).
    let cur = unsafe { cur.assume_init() };
    if cur.ss_flags & libc::SS_ONSTACK != 0 || (cur.ss_flags & libc::SS_DISABLE == 0 && cur.ss_size >= ALT_STACK_MIN) {
        return Ok(());
    }
    ALT.try_with(|alt| {
        if !alt.map.get().is_null() {
            return Ok(()); // ours, replaced since by a smaller one: leave the caller's choice
        }
        let page = rustix::param::page_size();
        let len = ALT_STACK_MIN.next_multiple_of(page) + page;
        use rustix::mm::{MapFlags, MprotectFlags, ProtFlags, mmap_anonymous, mprotect, munmap};
        // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing.
        let map = unsafe {
            mmap_anonymous(
                ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::STACK,
            )
        }
        .map_err(|e| Errno(e.raw_os_error()))?;
        // SAFETY: the first page of the mapping made above, used by nothing.
        let sp = unsafe { map.cast::<u8>().add(page) }.cast::<c_void>();
        let st = libc::stack_t { ss_sp: sp, ss_flags: 0, ss_size: len - page };
        // SAFETY: the guard page is ours; `st` describes the rest of our mapping, which
        // stays mapped until this thread's `AltStack` is dropped.
        let rc =
            unsafe { mprotect(map, page, MprotectFlags::empty()).map(|()| libc::sigaltstack(&st, ptr::null_mut())) };
        if rc != Ok(0) {
            let e = rc.map_or_else(|e| Errno(e.raw_os_error()), |_| last_errno());
            // SAFETY: our mapping, never handed out.
            let _ = unsafe { munmap(map, len) };
            return Err(e);
        }
        alt.map.set(map);
        alt.map_len.set(len);
        alt.sp.set(sp);
        Ok(())
    })
    .unwrap_or(Err(Errno::EINVAL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_gets_an_alternate_stack_of_at_least_the_minimum() {
        std::thread::spawn(|| {
            set_alt_stack().unwrap();
            set_alt_stack().unwrap(); // idempotent
            let mut cur = MaybeUninit::<libc::stack_t>::zeroed();
            // SAFETY: a query into a valid out-pointer.
            assert_eq!(unsafe { libc::sigaltstack(ptr::null(), cur.as_mut_ptr()) }, 0);
            // SAFETY: filled by the kernel.
            let cur = unsafe { cur.assume_init() };
            assert_eq!(cur.ss_flags & libc::SS_DISABLE, 0);
            assert!(cur.ss_size >= ALT_STACK_MIN, "{}", cur.ss_size);
            ALT.with(|a| assert_eq!(a.sp.get(), cur.ss_sp, "keel's own: std's is smaller"));
        })
        .join()
        .unwrap();
    }
}
