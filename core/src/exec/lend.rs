//! Reaching the driver: through a vtable and a raw pointer (sched rule 3), and lent to
//! one closure at a time.
//!
//! # The driver (cited as "driver rule N")
//!
//! 1. The driver is *lent* to one closure at a time (`Executor::with_driver`,
//!    `io_status::with_driver`, `Fiber::with_driver`): a flag in the scheduler, set for
//!    the closure's whole call, and a nested call gets `DriverBusy` (never a second
//!    reference). While it is set, no keel path forms a reference to the driver (sched
//!    rule 3): `now` answers the run loop's last clock reading, initiating is refused
//!    (`InitiateError::DriverBusy`), `run` is refused, and a run loop that meets it (a
//!    fiber suspended inside a closure) keeps off the driver and does not park.
//! 2. The closure gets a [`DriverMut`], never `&mut D`: it reads as `&D`, and mutation
//!    is the driver's own methods on it (the simulated driver's scripting) or, for driver
//!    crates, the `unsafe` [`DriverMut::get_mut`]. So safe code cannot replace the
//!    driver, with or without operations in flight: not only would in-flight operations
//!    name memory the old driver frees, but the unparker other threads call was taken
//!    from this driver once (park rule 3) and values of driver crates point into it.
//!    A check after the closure would come too late (the old driver already dropped),
//!    so replacement is ruled out by type instead.
//! 3. A keel value dropped inside such a closure (an in-flight `IoStatus` orphaning its
//!    operation, a cancel of a task, a driver crate's value calling through
//!    `DriverPtr::call_or_defer`) cannot wait: its cancel, retarget or call is held back,
//!    at most [`DEFERRED_DRIVER_OPS`] of them, and applied in order when the flag clears,
//!    before any reap can deliver a completion. More than that in one closure poisons the
//!    executor: a retarget it could not apply leaves a token naming freed memory, so it
//!    never reaps again (`RunError::Poisoned`; its drop does not drain), which is sound,
//!    if unhelpful.
//!
//! Cost: one flag load on each path that reaches the driver (submit, `now`, cancel), a
//! store on each side of a reap, nothing per completion.

use crate::clock::Instant;
use crate::driver::{DriverVt, IoToken};
use crate::exec::sched::Sched;
use core::cell::Cell;

impl Sched {
    pub(super) fn vt(&self) -> &'static DriverVt {
        self.driver_vt.get().expect("keel bug: executor used before init")
    }

    /// The driver pointer if its type is `D`.
    pub(crate) fn driver_as<D: 'static>(&self) -> Option<*mut D> {
        (self.vt().type_id == core::any::TypeId::of::<D>()).then(|| self.driver.get() as *mut D)
    }

    /// The driver's clock; while the driver is lent, the run loop's last reading (sched
    /// rule 3).
    #[inline(always)]
    pub(crate) fn now(&self) -> Instant {
        // SAFETY: sched rule 3: not lent, this is the driver's `now` (no reference to
        // the driver is live, and it runs no user code); lent, it reads `clock`.
        unsafe { (self.now_fn.get())(self.now_ctx.get()) }
    }

    /// `now`, remembered as what `now` answers while the driver is lent: the run loop's
    /// own readings (timers, parking, before a reap that may pool a stack).
    pub(crate) fn read_clock(&self) -> Instant {
        let now = self.now();
        self.clock.set(now);
        now
    }

    pub(crate) fn driver_cancel(&self, id: crate::driver::OpId) {
        if self.is_lent() {
            return self.defer(Deferred::Cancel(id));
        }
        self.debug_not_reaping();
        // SAFETY: as in `now`.
        unsafe { (self.vt().cancel)(self.driver.get(), id) }
    }

    pub(crate) fn driver_retarget(&self, id: crate::driver::OpId, token: IoToken) {
        if self.is_lent() {
            return self.defer(Deferred::Retarget(id, token));
        }
        self.debug_not_reaping();
        // SAFETY: as in `now`.
        unsafe { (self.vt().retarget)(self.driver.get(), id, token) }
    }

    /// Driver rule 3: hold `op` back until the driver is no longer lent.
    #[cold]
    pub(super) fn defer(&self, op: Deferred) {
        let len = self.deferred_len.get();
        match self.deferred.get(len) {
            Some(slot) => {
                slot.set(Some(op));
                self.deferred_len.set(len + 1);
            }
            // A retarget that cannot be held back leaves a token naming memory that may
            // be freed: never reap again (no completion is routed through it).
            None => self.driver_state.set(self.driver_state.get() | POISONED),
        }
    }

    /// Runs a driver crate's `func(driver, id)` through `tramp` now, or holds it back while
    /// the driver is lent (driver rule 3).
    pub(crate) fn driver_call(&self, tramp: DriverCall, func: *const (), id: crate::driver::OpId) {
        if self.is_lent() {
            return self.defer(Deferred::Call(tramp, func, id));
        }
        self.debug_not_reaping();
        // SAFETY: as in `now`; `tramp` was made for this driver's type with `func`
        // (`DriverPtr::call_or_defer`).
        unsafe { tramp(self.driver.get(), func, id) }
    }

    /// Sets the lend flag (sched rule 3) until the guard drops; `DriverBusy` if it is set.
    #[inline(always)]
    pub(crate) fn lend(&self) -> Result<Lent<'_>, crate::error::DriverBusy> {
        let state = self.driver_state.get();
        if state & LENT != 0 {
            return Err(crate::error::DriverBusy);
        }
        self.set_lent(state | LENT);
        Ok(Lent(self))
    }

    /// Sets `driver_state` and points `now` at the driver or, lent, at `clock`.
    #[inline(always)]
    pub(crate) fn set_lent(&self, state: u8) {
        self.driver_state.set(state);
        if state & LENT != 0 {
            self.now_fn.set(read_clock_cell);
            self.now_ctx.set(&self.clock as *const Cell<Instant> as *mut ());
        } else {
            self.now_fn.set(self.vt().now);
            self.now_ctx.set(self.driver.get());
        }
    }

    /// Whether the driver is lent (sched rule 3).
    #[inline(always)]
    pub(crate) fn is_lent(&self) -> bool {
        self.driver_state.get() & LENT != 0
    }

    /// Whether too much was held back (driver rule 3): never reap again.
    #[inline(always)]
    pub(crate) fn is_poisoned(&self) -> bool {
        self.driver_state.get() & POISONED != 0
    }

    /// Sched rule 3: a reap's sink reaches no driver (debug builds).
    #[inline(always)]
    pub(super) fn debug_not_reaping(&self) {
        #[cfg(debug_assertions)]
        assert!(!self.reaping.get(), "keel bug: a reap's sink reached the driver (sched rule 3)");
    }

    /// Applies what was held back while the driver was lent, if anything (driver rule 3):
    /// after a reap whose sink held something back.
    #[inline(always)]
    pub(crate) fn apply_held_back(&self) {
        if self.deferred_len.get() != 0 && !self.is_lent() {
            self.apply_deferred();
        }
    }

    /// Applies what was held back while the driver was lent, in order (driver rule 3).
    #[cold]
    pub(super) fn apply_deferred(&self) {
        let len = self.deferred_len.replace(0);
        for slot in &self.deferred[..len] {
            match slot.take() {
                Some(Deferred::Cancel(id)) => self.driver_cancel(id),
                Some(Deferred::Retarget(id, token)) => self.driver_retarget(id, token),
                Some(Deferred::Call(tramp, func, id)) => self.driver_call(tramp, func, id),
                None => {}
            }
        }
    }
}

/// Cancels and retargets an executor holds back while its driver is lent, at most
/// (driver rule 3, exec/lend.rs).
pub const DEFERRED_DRIVER_OPS: usize = 16;

/// `now` before initialisation (sched rule 1: never reached).
///
/// # Safety
/// None; unsafe only to fit `now_fn`.
pub(super) unsafe fn not_initialised(_: *mut ()) -> Instant {
    panic!("keel bug: executor used before init")
}

/// `now` while the driver is lent: the run loop's last reading, in the `Cell` at `cell`.
///
/// # Safety
/// `cell` is a live `Cell<Instant>` of this thread.
pub(super) unsafe fn read_clock_cell(cell: *mut ()) -> Instant {
    // SAFETY: the caller's contract (`set_lent` passes the scheduler's `clock`).
    unsafe { (*(cell as *const Cell<Instant>)).get() }
}

/// `driver_state` bits.
pub(crate) const LENT: u8 = 1;

pub(crate) const POISONED: u8 = 2;

/// A driver call held back while the driver was lent.
#[derive(Copy, Clone)]
pub(super) enum Deferred {
    Cancel(crate::driver::OpId),
    Retarget(crate::driver::OpId, IoToken),
    Call(DriverCall, *const (), crate::driver::OpId),
}

/// A driver crate's call on its driver, type-erased: `(driver, f, id)` runs `f` (a
/// `fn(&mut D, OpId)` for the driver's type `D`) on the driver.
pub(crate) type DriverCall = unsafe fn(*mut (), *const (), crate::driver::OpId);

/// The lend flag, set (sched rule 3); clearing it applies what was held back.
pub(crate) struct Lent<'a>(&'a Sched);

impl Drop for Lent<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.0.set_lent(self.0.driver_state.get() & !LENT);
        if self.0.deferred_len.get() != 0 {
            self.0.apply_deferred();
        }
    }
}
