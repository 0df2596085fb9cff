//! A dispatcher's workers: their registration and unparking (dispatch rule 4) and the
//! quit tokens that end their `run` (dispatch rule 5).

use super::*;
use crate::mailbox::park::{PARKED, ParkWord};
use crate::sync::{AtomicPtr, AtomicU32, Ordering};
use core::ptr;

/// Dispatch rule 5: one token added, in the quit word's high half.
pub(super) const QUIT_ADDED_ONE: u64 = 1 << 32;

/// Tokens added and taken, from the quit word (dispatch rule 5).
pub(super) fn quit_halves(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

/// A worker's registration (dispatch rule 4).
pub(super) struct WorkerSlot {
    pub(super) remote: AtomicPtr<ParkWord>,
    pub(super) active: AtomicU32,
}

impl Dispatcher {
    /// Registers a worker (dispatch rule 4). `None` if all slots are taken, or the CPU
    /// cannot run the dispatcher (`supported`).
    pub(crate) fn register(&self, remote: &ParkWord) -> Option<usize> {
        if !Self::supported() {
            return None;
        }
        let remote_ptr = remote as *const ParkWord as *mut ParkWord;
        let slot = self
            .workers
            .iter()
            // SeqCst: dispatch rule 4 (as remote rule 1).
            .position(|worker| {
                worker.remote.compare_exchange(ptr::null_mut(), remote_ptr, Ordering::SeqCst, Ordering::SeqCst).is_ok()
            })?;
        // SeqCst: dispatch rule 4: before this worker's first idle count and announce
        // fence, so a submitter that sees it counted scans up to its slot.
        self.slots_end.fetch_max(slot as u32 + 1, Ordering::SeqCst);
        Some(slot)
    }

    /// Unregisters the worker in `slot` and waits until no submitter is looking at it (cold).
    pub(crate) fn unregister(&self, slot: usize) {
        let worker = &self.workers[slot];
        // SeqCst: dispatch rule 4.
        worker.remote.store(ptr::null_mut(), Ordering::SeqCst);
        let mut spins: u64 = 0;
        // SeqCst: dispatch rule 4.
        while worker.active.load(Ordering::SeqCst) != 0 {
            spins += 1;
            crate::sync::spin_loop();
            debug_assert!(spins < 1 << 40, "keel bug: a submitter never left");
        }
    }

    /// Dispatch rule 4, the submitter's half: unpark one parked worker, after the fence a
    /// loom model may leave out (`sync::Weaken::PUSH_FENCE`).
    pub(super) fn unpark_one<#[cfg(keel_loom)] W: crate::sync::Weaken>(&self) {
        #[cfg(not(keel_loom))]
        use crate::sync::Strong as W;
        // SeqCst fence: the push (store) is ordered before the park-word loads; pairs with
        // the worker's announce fence.
        if W::PUSH_FENCE {
            crate::sync::fence(Ordering::SeqCst);
        }
        // Relaxed: ordered by the fence above, which pairs with the worker's announce
        // fence: a worker counted after it re-checks after it and sees the push.
        if self.idle.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.unpark_where(|_| true, 1);
    }

    /// Dispatch rule 4, the worker's half: it counts itself idle before its announce
    /// (whose `SeqCst` fence orders this store before its re-check).
    pub(crate) fn idle_enter(&self) {
        // Relaxed: ordered by the worker's announce fence that follows (see above).
        self.idle.fetch_add(1, Ordering::Relaxed);
    }

    /// Dispatch rule 4: the worker runs again (after its park, or a re-check that found
    /// work); pairs with `idle_enter`.
    pub(crate) fn idle_leave(&self) {
        // Relaxed: a submitter that still counts this worker only scans once for nothing.
        self.idle.fetch_sub(1, Ordering::Relaxed);
    }

    /// Unparks up to `max` parked workers (bounded by MAX_WORKERS).
    pub(super) fn unpark_where(&self, _filter: impl Fn(usize) -> bool, max: usize) {
        let mut left = max;
        // Relaxed: ordered by the caller's SeqCst fence, as the slots' loads below: a
        // worker registered past it registered after that fence (dispatch rule 4).
        let end = (self.slots_end.load(Ordering::Relaxed) as usize).min(MAX_WORKERS);
        for worker in &self.workers[..end] {
            if left == 0 {
                return;
            }
            // Relaxed: a slot with no worker is skipped without the two RMWs below (they
            // cost a submit ~100 atomic operations over the 64 slots). Sound after the
            // caller's SeqCst fence: a worker whose registration we miss registered after
            // that fence, so its own announce fence comes later too and its park re-check
            // sees the push (dispatch rule 4).
            if worker.remote.load(Ordering::Relaxed).is_null() {
                continue;
            }
            // SeqCst: dispatch rule 4 (increment before reading the pointer).
            worker.active.fetch_add(1, Ordering::SeqCst);
            // SeqCst: as above.
            let remote_ptr = worker.remote.load(Ordering::SeqCst);
            if !remote_ptr.is_null() {
                // SAFETY: registered and we are inside `active`: the worker's executor
                // waits for us before going away.
                let remote = unsafe { &*remote_ptr };
                // Relaxed: ordered by the fence above.
                if remote.park.load(Ordering::Relaxed) == PARKED {
                    remote.after_push();
                    left -= 1;
                }
            }
            // Release: the unregistering worker sees everything we did.
            worker.active.fetch_sub(1, Ordering::Release);
        }
    }

    /// Makes `count` worker executors return `RunError::Quit` from `run` once they are idle
    /// (dispatch rule 5): each quitting worker first finishes the tasks it owns and keeps
    /// taking dispatched tasks while any wait, so no task submitted before this call is
    /// left queued by it. Tasks submitted later may outlive every worker: they stay
    /// queued, counted by `remaining()`, for the next executor that serves. Tokens beyond
    /// the workers serving now wait for later workers. Returns at once; `quit_count`
    /// (or keel-linux's `pool::quit`) tells when the workers have gone.
    pub fn quit(&self, count: u32) {
        #[cfg(keel_loom)]
        self.quit_with::<crate::sync::Strong>(count);
        #[cfg(not(keel_loom))]
        self.quit_with(count);
    }

    /// `quit`, with the fence a loom model may leave out (`sync::Weaken::PUSH_FENCE`).
    pub(crate) fn quit_with<#[cfg(keel_loom)] W: crate::sync::Weaken>(&self, count: u32) {
        #[cfg(not(keel_loom))]
        use crate::sync::Strong as W;
        // Release: pairs with the worker's Acquire load in `take_quit` (rule 5): the
        // tasks submitted before this call are visible to its dispatcher check. The added
        // half is the high one, so it wraps at 2^32 without touching the taken half.
        self.quit.fetch_add(u64::from(count).wrapping_mul(QUIT_ADDED_ONE), Ordering::Release);
        // SeqCst fence: the tokens (store) are ordered before the park-word loads; pairs
        // with the worker's announce fence (dispatch rule 4, park rule 2).
        if W::PUSH_FENCE {
            crate::sync::fence(Ordering::SeqCst);
        }
        self.unpark_where(|_| true, MAX_WORKERS);
    }

    /// Whether quit tokens wait to be taken (the worker's park re-check).
    pub(crate) fn quit_pending(&self) -> bool {
        // Relaxed: ordered by the SeqCst fence the caller issued.
        let (added, taken) = quit_halves(self.quit.load(Ordering::Relaxed));
        added != taken
    }

    /// An idle worker (no task of its own) takes a quit token if there is one and no
    /// dispatched task waits (dispatch rule 5).
    pub(crate) fn take_quit(&self) -> bool {
        #[cfg(keel_loom)]
        return self.take_quit_with::<crate::sync::Strong>();
        #[cfg(not(keel_loom))]
        self.take_quit_with()
    }

    /// `take_quit`, with the drain check a loom model may leave out
    /// (`sync::Weaken::QUIT_DRAINS`).
    pub(crate) fn take_quit_with<#[cfg(keel_loom)] W: crate::sync::Weaken>(&self) -> bool {
        #[cfg(not(keel_loom))]
        use crate::sync::Strong as W;
        // Acquire: synchronises with every `quit` counted in `word` (all operations on the
        // word are read-modify-writes: one release sequence), so the check below sees
        // the tasks submitted before them (rule 5).
        let mut word = self.quit.load(Ordering::Acquire);
        loop {
            let (added, taken) = quit_halves(word);
            if added == taken {
                return false;
            }
            // Rule 5: a task waits: take it instead (the caller's next pass does).
            if W::QUIT_DRAINS && self.has_work() {
                return false;
            }
            let new = (word & !(u32::MAX as u64)) | u64::from(taken.wrapping_add(1));
            // AcqRel: Release pairs with `quit_count`'s Acquire; Acquire as for the load
            // above, on success (nothing landed between: the check stands) and failure.
            match self.quit.compare_exchange_weak(word, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => word = now,
            }
        }
    }
}
