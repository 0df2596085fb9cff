//! The park word and the driver's unparker: how another thread makes a parked executor
//! run again (park rules, in the mailbox module), and the count of other threads working
//! on the executor that its drop waits for (park rule 4).

use crate::sync::{AtomicU32, Ordering};
use core::cell::Cell;

pub(crate) const RUNNING: u32 = 0;
pub(crate) const PARKED: u32 = 1;
pub(crate) const UNPARKING: u32 = 2;

/// How another thread makes a parked executor return from `Driver::park` (park rule 3).
#[derive(Copy, Clone, Debug)]
pub struct Unparker {
    /// The driver's context (a descriptor, an address).
    pub ctx: usize,
    /// Called with `ctx` from any thread; must be async-safe enough to run anywhere a
    /// waker may be fired (a single syscall, no locks).
    pub unpark: fn(usize),
}

/// The park word, the count of threads inside, and the unparker. Cache-padded.
#[repr(C, align(64))]
pub(crate) struct ParkWord {
    pub(crate) park: AtomicU32,
    pub(crate) active: AtomicU32,
    /// Written once at initialisation, before publication (park rule 3).
    unparker: Cell<Option<Unparker>>,
}

impl Unparker {
    /// The park word's value while the executor is parked: a futex-based driver waits
    /// while the word still holds it.
    pub const PARKED: u32 = PARKED;
}

impl ParkWord {
    pub(crate) fn new() -> Self {
        ParkWord { park: AtomicU32::new(RUNNING), active: AtomicU32::new(0), unparker: Cell::new(None) }
    }

    /// The park word's address (for a futex-based unparker).
    pub(crate) fn park_word(&self) -> *const u32 {
        &self.park as *const AtomicU32 as *const u32
    }

    pub(crate) fn set_unparker(&self, unparker: Option<Unparker>) {
        self.unparker.set(unparker);
    }

    /// Park rule 2, the executor's half: announce. Returns after the fence.
    #[inline]
    pub(crate) fn announce(&self) {
        #[cfg(keel_loom)]
        self.announce_with::<crate::sync::Strong>();
        #[cfg(not(keel_loom))]
        self.announce_with();
    }

    /// `announce`, with the fence a loom model may leave out (`sync::Weaken`).
    #[inline(always)]
    pub(crate) fn announce_with<#[cfg(keel_loom)] W: crate::sync::Weaken>(&self) {
        #[cfg(not(keel_loom))]
        use crate::sync::Strong as W;
        // Relaxed: ordered by the fence below.
        self.park.store(PARKED, Ordering::Relaxed);
        // SeqCst fence: the announce (store) is ordered before the inbox re-check (load);
        // pairs with the fence in `after_push`.
        if W::ANNOUNCE_FENCE {
            crate::sync::fence(Ordering::SeqCst);
        }
    }

    /// The executor is running again (after parking, or after a re-check found work).
    #[inline]
    pub(crate) fn running(&self) {
        // Relaxed: other threads only need to see PARKED promptly, which the fences do.
        self.park.store(RUNNING, Ordering::Relaxed);
    }

    /// Park rule 2, a pusher's half: after pushing onto the inbox, unpark if parked.
    #[inline]
    pub(crate) fn after_push(&self) {
        #[cfg(keel_loom)]
        self.after_push_with::<crate::sync::Strong>();
        #[cfg(not(keel_loom))]
        self.after_push_with();
    }

    /// `after_push`, with the fence a loom model may leave out (`sync::Weaken`).
    #[inline(always)]
    pub(crate) fn after_push_with<#[cfg(keel_loom)] W: crate::sync::Weaken>(&self) {
        #[cfg(not(keel_loom))]
        use crate::sync::Strong as W;
        // SeqCst fence: the push (store) is ordered before the park-word load; pairs with
        // the fence in `announce`.
        if W::PUSH_FENCE {
            crate::sync::fence(Ordering::SeqCst);
        }
        // Relaxed: ordered by the fence; the CAS decides who unparks (park rule 1).
        if self.park.load(Ordering::Relaxed) == PARKED
            && self.park.compare_exchange(PARKED, UNPARKING, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            && let Some(unparker) = self.unparker.get()
        {
            (unparker.unpark)(unparker.ctx);
        }
    }

    /// Park rule 4: a thread that found the executor. Pair with `leave`.
    #[inline]
    pub(crate) fn enter(&self) {
        // Acquire: nothing to acquire really; SeqCst-free because the finder already
        // holds something that keeps the executor alive until this increment is visible
        // to the dropper (a QUEUED bit, or a handle slot it checked after incrementing).
        self.active.fetch_add(1, Ordering::AcqRel);
    }

    #[inline]
    pub(crate) fn leave(&self) {
        // Release: the dropper's Acquire load of zero sees every access we made.
        self.active.fetch_sub(1, Ordering::Release);
    }

    /// The dropper waits until no other thread is inside (park rule 4). Blocking, cold.
    pub(crate) fn wait_quiet(&self) {
        let mut spins: u64 = 0;
        // Acquire: pairs with `leave`'s Release.
        while self.active.load(Ordering::Acquire) != 0 {
            spins += 1;
            crate::sync::spin_loop();
            debug_assert!(spins < 1 << 40, "keel bug: a thread never left the executor");
        }
    }
}
