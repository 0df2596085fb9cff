//! [`Mutex`]: a value one task at a time, with a guard (a one-permit semaphore).

use super::semaphore::{Acquire, Semaphore};
use super::{Flavour, Local, Shared, WaitError};
use crate::fiber::Fiber;
use core::cell::UnsafeCell;
use core::future::Future;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::pin::Pin;
use core::task::{Context, Poll};

/// A mutual-exclusion lock around a `T` for tasks: [`lock`](Mutex::lock) waits (priority,
/// then FIFO: wait rule 4), and the [`MutexGuard`]'s drop hands the lock to the next
/// waiter (wait rule 6). `Mutex` is the cross-thread flavour, [`LocalMutex`] the
/// same-thread one.
pub struct Mutex<T, F: Flavour = Shared> {
    sem: Semaphore<F>,
    value: UnsafeCell<T>,
}

/// The same-thread [`Mutex`] (wait rule 1).
pub type LocalMutex<T> = Mutex<T, Local>;

// SAFETY: the semaphore's one permit gives one guard at a time `&mut T`, on whichever
// thread holds it: `T: Send` is what moving access between threads needs.
unsafe impl<T: Send> Sync for Mutex<T, Shared> {}

impl<T, F: Flavour> Mutex<T, F> {
    /// An unlocked mutex around `value`.
    #[cfg(not(keel_loom))]
    pub const fn new(value: T) -> Self {
        Mutex { sem: Semaphore::new(1), value: UnsafeCell::new(value) }
    }

    /// An unlocked mutex around `value` (loom: not `const`).
    #[cfg(keel_loom)]
    pub fn new(value: T) -> Self {
        Mutex { sem: Semaphore::new(1), value: UnsafeCell::new(value) }
    }

    /// Waits for the lock (future tasks); errors as `Semaphore::acquire`'s (never
    /// `Closed`).
    pub fn lock(&self) -> Lock<'_, T, F> {
        Lock { mutex: self, acquire: self.sem.acquire() }
    }

    /// Waits for the lock (fiber tasks), suspending the fiber.
    pub fn lock_blocking(&self, fiber: &mut Fiber) -> Result<MutexGuard<'_, T, F>, WaitError> {
        self.sem.acquire_blocking(fiber).map(|permit| self.guard(permit))
    }

    /// Takes the lock if it is free and nobody waits for it; never waits.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T, F>> {
        self.sem.try_acquire().ok().map(|permit| self.guard(permit))
    }

    /// Tasks waiting for the lock now.
    pub fn waiters(&self) -> usize {
        self.sem.waiters()
    }

    /// The value, through `&mut self` (no guard can exist).
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }

    /// The value.
    pub fn into_inner(self) -> T {
        self.value.into_inner()
    }

    fn guard(&self, permit: super::Permit<'_, F>) -> MutexGuard<'_, T, F> {
        // The guard gives the permit back in its own drop.
        permit.forget();
        MutexGuard { mutex: self, _value: PhantomData }
    }
}

impl<T, F: Flavour> core::fmt::Debug for Mutex<T, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Mutex").field("locked", &(self.sem.available_permits() == 0)).finish_non_exhaustive()
    }
}

/// The lock of a [`Mutex`], held: derefs to the value; its drop unlocks (to the next
/// waiter first). It may move to another task, and (cross-thread flavour, `T: Send`)
/// another thread; wherever it is dropped, the lock goes on.
#[must_use = "dropping the guard unlocks at once"]
pub struct MutexGuard<'a, T, F: Flavour = Shared> {
    mutex: &'a Mutex<T, F>,
    /// Send iff `T: Send`, Sync iff `T: Sync` (as `&mut T`).
    _value: PhantomData<&'a mut T>,
}

impl<T, F: Flavour> Deref for MutexGuard<'_, T, F> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard holds the one permit: no other reference to the value.
        unsafe { &*self.mutex.value.get() }
    }
}

impl<T, F: Flavour> DerefMut for MutexGuard<'_, T, F> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes it unique.
        unsafe { &mut *self.mutex.value.get() }
    }
}

impl<T, F: Flavour> Drop for MutexGuard<'_, T, F> {
    #[inline(always)]
    fn drop(&mut self) {
        self.mutex.sem.give();
    }
}

impl<T: core::fmt::Debug, F: Flavour> core::fmt::Debug for MutexGuard<'_, T, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        (**self).fmt(f)
    }
}

/// The future [`Mutex::lock`] returns (as `Acquire`: wait rules 5-6).
#[must_use = "futures do nothing unless polled"]
pub struct Lock<'a, T, F: Flavour = Shared> {
    mutex: &'a Mutex<T, F>,
    acquire: Acquire<'a, F>,
}

impl<'a, T, F: Flavour> Future for Lock<'a, T, F> {
    type Output = Result<MutexGuard<'a, T, F>, WaitError>;
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: structural pinning of `acquire`; `mutex` is a shared reference.
        let (mutex, acquire) = unsafe {
            let this = self.get_unchecked_mut();
            (this.mutex, Pin::new_unchecked(&mut this.acquire))
        };
        acquire.poll(cx).map(|r| r.map(|permit| mutex.guard(permit)))
    }
}

impl<T, F: Flavour> core::fmt::Debug for Lock<'_, T, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Lock")
    }
}
