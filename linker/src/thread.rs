//! Thread identity for the same-thread checks (boundary rule 3): each thread gets a
//! nonzero token the first time it asks, from a process-wide counter. A `const`
//! thread-local with no destructor: no allocation, no registration, one TLS load after
//! the first call.

use core::cell::Cell;
use core::sync::atomic::{AtomicU64, Ordering};

static NEXT: AtomicU64 = AtomicU64::new(1);

std::thread_local! {
    static ME: Cell<u64> = const { Cell::new(0) };
}

/// This thread's token (never 0).
#[inline]
pub(crate) fn current() -> u64 {
    ME.with(|me| {
        let t = me.get();
        if t != 0 {
            return t;
        }
        // Relaxed: a unique label, nothing is published with it.
        let t = NEXT.fetch_add(1, Ordering::Relaxed);
        me.set(t);
        t
    })
}

/// A fresh, process-unique object generation (never 0: 0 marks storage holding no
/// object). Handles carry one; a destroyed or re-made object has another.
pub(crate) fn next_generation() -> u64 {
    static GEN: AtomicU64 = AtomicU64::new(1);
    // Relaxed: uniqueness only; the object's own atomics publish its contents.
    GEN.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_differ_across_threads_and_stay_put() {
        let here = super::current();
        assert_eq!(here, super::current());
        let there = std::thread::spawn(super::current).join().unwrap();
        assert_ne!(here, there);
        assert_ne!(here, 0);
    }
}
