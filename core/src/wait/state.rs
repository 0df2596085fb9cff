//! A primitive's state behind its flavour's lock, and the two ways to wait on it: a
//! future ([`WaitFor`]) and a fiber's blocking call ([`block`]).

use super::waiter::{Source, Waiter, abandon, try_wait};
use super::{Flavour, WaitError};
use crate::fiber::Fiber;
use crate::sync::UnsafeCell;
use core::pin::Pin;
use core::task::{Context, Poll};

/// State `S` behind `F`'s lock (wait rule 3).
pub(crate) struct Guarded<F: Flavour, S> {
    lock: F::Lock,
    state: UnsafeCell<S>,
}

impl<F: Flavour, S> Guarded<F, S> {
    #[cfg(not(keel_loom))]
    pub(crate) const fn new(state: S) -> Self {
        Guarded { lock: <F::Lock as super::lock::RawLock>::NEW, state: UnsafeCell::new(state) }
    }

    #[cfg(keel_loom)]
    pub(crate) fn new(state: S) -> Self {
        Guarded { lock: <F::Lock as super::lock::RawLock>::new(), state: UnsafeCell::new(state) }
    }

    /// Runs `f` on the state under the lock. `f` is keel's own code: it runs no user
    /// code (no `T`'s drop, no waker but keel's), so it never re-enters (wait rule 3).
    #[inline(always)]
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        use super::lock::RawLock;
        self.lock.lock();
        // SAFETY: wait rule 3: the lock (or, same-thread, the one thread) makes this the
        // only reference to the state, and `f` does not re-enter.
        let r = self.state.with_mut(|state| f(unsafe { &mut *state }));
        self.lock.unlock();
        r
    }

    /// The state, for `Drop` of the primitive (no waiter can exist: they borrow it).
    pub(crate) fn get_mut(&mut self) -> &mut S {
        // SAFETY: `&mut self`: nobody else refers to the state.
        self.state.with_mut(|state| unsafe { &mut *state })
    }
}

// SAFETY: the state is touched only under the spin lock (wait rule 3); the queued
// nodes it points at are touched only there too. `S: Send` covers what it owns.
unsafe impl<S: Send> Send for Guarded<super::Shared, S> {}
// SAFETY: as for `Send`: `&Guarded` reaches the state only through the lock.
unsafe impl<S: Send> Sync for Guarded<super::Shared, S> {}

/// The part of every waiting future that waits for one unit of `kind` (wait rules 5-6).
pub(crate) struct WaitFor<'a, F: Flavour, S: Source> {
    on: &'a Guarded<F, S>,
    kind: usize,
    node: Waiter,
}

impl<'a, F: Flavour, S: Source> WaitFor<'a, F, S> {
    pub(crate) const fn new(on: &'a Guarded<F, S>, kind: usize) -> Self {
        WaitFor { on, kind, node: Waiter::new() }
    }

    /// Polls the wait: `Ready(Ok)` once a unit is this waiter's.
    #[inline(always)]
    pub(crate) fn poll_wait(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), WaitError>> {
        // Rt rules 1-2: `cx` says whether the poll is inside the task (moved out, polled
        // by hand, another thread: not), resolved inside the try as far as it needs.
        let this = self.into_ref().get_ref();
        let who: &Context<'_> = cx;
        match this.on.with(|state| try_wait::<F, S>(state, this.kind, &this.node, who)) {
            Some(result) => Poll::Ready(result),
            None => Poll::Pending,
        }
    }
}

impl<F: Flavour, S: Source> Drop for WaitFor<'_, F, S> {
    #[inline(always)]
    fn drop(&mut self) {
        // Wait rule 6: out of the queue; a unit granted and not taken goes on.
        let (kind, node) = (self.kind, &self.node);
        self.on.with(|state| abandon::<F, S>(state, kind, node));
    }
}

/// A fiber waits for one unit of `kind` (wait rules 5-6, fiber rule 5).
pub(crate) fn block<F: Flavour, S: Source>(
    on: &Guarded<F, S>,
    kind: usize,
    fiber: &mut Fiber,
) -> Result<(), WaitError> {
    if fiber.is_cancelled() {
        // Fiber rule 5: it switches out once even so.
        let _ = fiber.wait();
        return Err(WaitError::Cancelled);
    }
    let task = fiber.task().header();
    // Pinned on the fiber's stack for the whole wait; `Unlink` takes it out of the queue
    // on every way out of this frame, unwinding included.
    let wait = WaitFor::new(on, kind);
    let wait = core::pin::pin!(wait);
    let wait = wait.into_ref().get_ref();
    if let Some(result) = on.with(|state| try_wait::<F, S>(state, kind, &wait.node, &task)) {
        return result;
    }
    loop {
        // Bounded by wakes: each pass suspends once.
        // A cancel shows in the task's flag, which the try reads.
        let _ = fiber.wait();
        if let Some(result) = on.with(|state| try_wait::<F, S>(state, kind, &wait.node, &task)) {
            return result;
        }
    }
}
