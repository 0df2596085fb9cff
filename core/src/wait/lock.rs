//! The two locks a wait primitive's state sits behind, one per flavour.
//!
//! - [`NoLock`] (the same-thread flavour, [`Local`](super::Local)): no lock at all. It
//!   is neither `Send` nor `Sync`, so a primitive holding it stays on the thread that
//!   made it and every access is from that thread (wait rule 1).
//! - [`SpinLock`] (the cross-thread flavour, [`Shared`](super::Shared)): one byte, a
//!   CAS to take it and a store to give it back. Written by hand rather than taken from
//!   `spin`: it must run on `crate::sync`'s atomics so the loom models
//!   (`loom-tests/tests/loom_wait.rs`) see it, and its Acquire is the step their weakened
//!   twin weakens. A holder runs only keel's own bounded code (wait rule 3), so a
//!   spinning thread waits for at most one critical section per holder ahead of it:
//!   blocking, not lock-free, and off the same-thread hot path.

use crate::sync::{AtomicU8, Ordering, spin_loop};
use core::marker::PhantomData;

/// What a primitive's state is guarded by. Implemented by [`NoLock`] and [`SpinLock`]
/// only.
pub trait RawLock: Sized {
    /// An unlocked lock.
    #[cfg(not(keel_loom))]
    const NEW: Self;
    /// An unlocked lock (loom's atomics have no const constructors).
    #[cfg(keel_loom)]
    fn new() -> Self;
    /// Takes the lock (blocks while another thread holds it).
    fn lock(&self);
    /// Gives the lock back; only its holder calls it.
    fn unlock(&self);
}

/// The same-thread flavour's lock: nothing. `!Send` and `!Sync` (wait rule 1).
#[derive(Debug)]
pub struct NoLock(PhantomData<*const ()>);

impl RawLock for NoLock {
    #[cfg(not(keel_loom))]
    const NEW: Self = NoLock(PhantomData);
    #[cfg(keel_loom)]
    fn new() -> Self {
        NoLock(PhantomData)
    }
    #[inline(always)]
    fn lock(&self) {}
    #[inline(always)]
    fn unlock(&self) {}
}

/// The cross-thread flavour's lock: a test-and-test-and-set spin lock on one byte (CAS to take it).
#[derive(Debug)]
pub struct SpinLock(AtomicU8);

impl SpinLock {
    /// Takes the lock with `acquire` as the successful CAS's ordering (`Acquire` in
    /// production; a loom twin weakens it).
    #[inline(always)]
    pub(crate) fn lock_with(&self, acquire: Ordering) {
        // Acquire (`acquire`): pairs with the last holder's Release in `unlock`, so this
        // holder sees every write made under the lock before. Relaxed on failure: nothing
        // is read. A CAS, not a swap: a failed try stores nothing.
        while self.0.compare_exchange(0, 1, acquire, Ordering::Relaxed).is_err() {
            // Relaxed: only a hint that the lock looks free; the CAS above orders. (Under
            // loom a plain load may read the old value for ever, each read a new branch:
            // the model retries the CAS instead.)
            #[cfg(not(keel_loom))]
            while self.0.load(Ordering::Relaxed) != 0 {
                spin_loop();
            }
            #[cfg(keel_loom)]
            spin_loop();
        }
    }
}

impl RawLock for SpinLock {
    #[cfg(not(keel_loom))]
    const NEW: Self = SpinLock(AtomicU8::new(0));
    #[cfg(keel_loom)]
    fn new() -> Self {
        SpinLock(AtomicU8::new(0))
    }
    #[inline(always)]
    fn lock(&self) {
        #[cfg(not(keel_loom))]
        self.lock_with(Ordering::Acquire);
        #[cfg(keel_loom)]
        self.lock_with(super::loom_lock_ordering());
    }
    #[inline(always)]
    fn unlock(&self) {
        // Release: publishes this holder's writes to the next holder's Acquire CAS.
        self.0.store(0, Ordering::Release);
    }
}
