//! The `'static` slot an `ExecutorHandle` names its executor through, bound to one
//! executor's mailbox at a time: remote rule 1 (in the mailbox module).

use super::Mailbox;
use crate::sync::{AtomicPtr, AtomicU32, AtomicU64Like, Ordering};
use core::ptr;

/// `'static` storage an [`ExecutorHandle`](crate::ExecutorHandle) names its executor
/// through (remote rule 1).
pub struct HandleSlot {
    mailbox: AtomicPtr<Mailbox>,
    active: AtomicU32,
    /// Remote rule 1: bumped by every unbind.
    epoch: AtomicU64Like,
}

impl HandleSlot {
    crate::sync::maybe_const_fn! {
        /// An unbound slot.
        pub fn new() -> Self {
            HandleSlot { mailbox: AtomicPtr::new(ptr::null_mut()), active: AtomicU32::new(0), epoch: AtomicU64Like::new(0) }
        }
    }

    /// Binds to the executor whose mailbox is at `mailbox`; fails if the slot is bound already. Returns the epoch.
    pub(crate) fn bind(&'static self, mailbox: *mut Mailbox) -> Option<u64> {
        #[cfg(keel_loom)]
        return self.bind_with::<crate::sync::Strong>(mailbox);
        #[cfg(not(keel_loom))]
        self.bind_with(mailbox)
    }

    /// `bind`, with the epoch step a loom model may move (`sync::Weaken::EPOCH_AT_UNBIND`).
    pub(crate) fn bind_with<#[cfg(keel_loom)] W: crate::sync::Weaken>(
        &'static self,
        mailbox: *mut Mailbox,
    ) -> Option<u64> {
        #[cfg(not(keel_loom))]
        use crate::sync::Strong as W;
        // SeqCst: remote rule 1 (reads the null the last unbind stored after its bump).
        self.mailbox.compare_exchange(ptr::null_mut(), mailbox, Ordering::SeqCst, Ordering::SeqCst).ok()?;
        if !W::EPOCH_AT_UNBIND {
            // A weakened twin's bump, after publishing the address (never in `Strong`).
            // SeqCst: as below.
            return Some(self.epoch.fetch_add(1, Ordering::SeqCst).wrapping_add(1));
        }
        // SeqCst: remote rule 1. Only the bound executor's unbind writes the epoch, so
        // this is the epoch of our binding.
        Some(self.epoch.load(Ordering::SeqCst))
    }

    /// Runs `f` with the bound executor's mailbox and `arg` if the slot is still bound by
    /// the binding `epoch` names; hands `arg` back if that executor is gone (remote rule
    /// 1). The executor stays alive while `f` runs.
    #[inline]
    pub(crate) fn with_bound<T, R>(&self, epoch: u64, arg: T, f: impl FnOnce(&Mailbox, T) -> R) -> Result<R, T> {
        // SeqCst: remote rule 1 (the increment is ordered before reading `mailbox`).
        self.active.fetch_add(1, Ordering::SeqCst);
        // SeqCst: remote rule 1 (the address, then the epoch).
        let mailbox = self.mailbox.load(Ordering::SeqCst);
        // SeqCst: as above.
        let result = if mailbox.is_null() || self.epoch.load(Ordering::SeqCst) != epoch {
            Err(arg)
        } else {
            // SAFETY: bound and not yet unbound: the executor is alive until we leave
            // (remote rule 1).
            Ok(f(unsafe { &*mailbox }, arg))
        };
        // Release: the unbinder's SeqCst load of zero sees everything we did.
        self.active.fetch_sub(1, Ordering::Release);
        result
    }

    /// Unbinds and waits for attachers inside (remote rule 1). Blocking, cold.
    pub(crate) fn unbind(&self) {
        #[cfg(keel_loom)]
        self.unbind_with::<crate::sync::Strong>();
        #[cfg(not(keel_loom))]
        self.unbind_with();
    }

    /// `unbind`, with the epoch step a loom model may move (`sync::Weaken::EPOCH_AT_UNBIND`).
    pub(crate) fn unbind_with<#[cfg(keel_loom)] W: crate::sync::Weaken>(&self) {
        #[cfg(not(keel_loom))]
        use crate::sync::Strong as W;
        if W::EPOCH_AT_UNBIND {
            // SeqCst: remote rule 1: before the null, so a binder that reads the null
            // (and an attacher that then sees its address) sees the bump.
            self.epoch.fetch_add(1, Ordering::SeqCst);
        }
        // SeqCst: remote rule 1.
        self.mailbox.store(ptr::null_mut(), Ordering::SeqCst);
        let mut spins: u64 = 0;
        // SeqCst: remote rule 1.
        while self.active.load(Ordering::SeqCst) != 0 {
            spins += 1;
            crate::sync::spin_loop();
            debug_assert!(spins < 1 << 40, "keel bug: an attacher never left");
        }
    }
}

impl Default for HandleSlot {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for HandleSlot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HandleSlot").finish_non_exhaustive()
    }
}
