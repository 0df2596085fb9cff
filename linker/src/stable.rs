//! Type-stable storage for the `create`/`destroy` forms: each allocates its object's
//! storage once, and `destroy` puts it on a free list of that type instead of freeing it.
//!
//! Stable rules (cited as "stable rule N"):
//! 1. Memory that once held a keel object of type `T` holds a `T`-shaped storage for the
//!    life of the process, so the generation word of a destroyed object stays readable:
//!    a handle that outlived its object (destroyed, even twice) reads a generation that
//!    is 0 or newer and gets `-ESTALE`, instead of reading freed memory.
//! 2. The free list is intrusive (the `next` word of each storage) under a mutex: `create`
//!    and `destroy` are the expensive calls, off the hot path, and allocate at most once
//!    per object the process ever held at the same time.

use std::alloc::Layout;
use std::sync::Mutex;

/// A free list of storages of one layout, linked through a word inside each.
pub(crate) struct FreeList {
    head: Mutex<usize>,
    layout: Layout,
}

impl FreeList {
    pub(crate) const fn new(layout: Layout) -> Self {
        FreeList { head: Mutex::new(0), layout }
    }

    /// A storage from the list, or a new allocation (stable rule 2), and whether it is new
    /// (holds no storage yet). `next_of` names the word of a storage that links the list.
    pub(crate) fn take(&self, next_of: impl Fn(*mut u8) -> *mut usize) -> Option<(*mut u8, bool)> {
        let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        if *head != 0 {
            let p = *head as *mut u8;
            // SAFETY: every pointer on the list is a storage of this layout that `put`
            // linked, and the lock is held.
            *head = unsafe { *next_of(p) };
            return Some((p, false));
        }
        drop(head);
        // SAFETY: the layout has a nonzero size (the storages are never empty).
        let p = unsafe { std::alloc::alloc(self.layout) };
        (!p.is_null()).then_some((p, true))
    }

    /// Puts a storage back (stable rule 1: it is never freed).
    ///
    /// # Safety
    /// `p` came from `take` on this list and holds no live object.
    pub(crate) unsafe fn put(&self, p: *mut u8, next_of: impl Fn(*mut u8) -> *mut usize) {
        let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: the caller hands the storage over; its link word is ours to write.
        unsafe { *next_of(p) = *head };
        *head = p as usize;
    }
}
