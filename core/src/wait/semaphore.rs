//! [`Semaphore`]: a count of permits; a task takes one or waits for one (wait rules).

use super::state::{Guarded, WaitFor, block};
use super::waiter::{Pool, Queue, Source};
use super::{Flavour, Local, Shared, WaitError};
use crate::fiber::Fiber;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

/// A counting semaphore: [`acquire`](Semaphore::acquire) takes a permit or waits for
/// one; dropping the [`Permit`] gives it to the next waiter (priority, then FIFO: wait
/// rules 4 and 6). `Semaphore` is the cross-thread flavour (`Sync`, put it in a
/// `static`), [`LocalSemaphore`] the same-thread one (no atomics).
pub struct Semaphore<F: Flavour = Shared> {
    state: Guarded<F, SemState>,
}

/// The same-thread [`Semaphore`]: no lock, no atomic read-modify-write; `!Send`,
/// `!Sync` (wait rule 1).
pub type LocalSemaphore = Semaphore<Local>;

pub(super) struct SemState {
    pool: Pool,
    closed: bool,
}

impl Source for SemState {
    #[inline(always)]
    fn try_take(&mut self, _: usize) -> Result<bool, WaitError> {
        if self.closed { Err(WaitError::Closed) } else { Ok(self.pool.try_take()) }
    }
    #[inline(always)]
    fn queue(&self, _: usize) -> &Queue {
        &self.pool.queue
    }
    #[inline(always)]
    fn pass_on<F: Flavour>(&mut self, _: usize) {
        self.pool.give::<F>();
    }
}

/// Why [`Semaphore::try_acquire`] got no permit.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TryAcquireError {
    /// No permit is free, or others wait for one first: `acquire` to wait.
    NoPermits,
    /// The semaphore was closed.
    Closed,
}

impl core::fmt::Display for TryAcquireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TryAcquireError::NoPermits => f.write_str("no permit is free: await `acquire` to wait for one"),
            TryAcquireError::Closed => f.write_str("the semaphore was closed: stop acquiring from it"),
        }
    }
}

impl<F: Flavour> Semaphore<F> {
    /// A semaphore with `permits` free permits.
    #[cfg(not(keel_loom))]
    pub const fn new(permits: usize) -> Self {
        Semaphore { state: Guarded::new(SemState { pool: Pool::new(permits), closed: false }) }
    }

    /// A semaphore with `permits` free permits (loom: not `const`).
    #[cfg(keel_loom)]
    pub fn new(permits: usize) -> Self {
        Semaphore { state: Guarded::new(SemState { pool: Pool::new(permits), closed: false }) }
    }

    /// Waits for a permit (future tasks). `Err(Cancelled)` if the task is cancelled
    /// while it waits, `Err(Closed)` once the semaphore is closed, `Err(NotInTask)` if it
    /// would wait outside its task (wait rule 5).
    pub fn acquire(&self) -> Acquire<'_, F> {
        Acquire { sem: self, wait: WaitFor::new(&self.state, 0) }
    }

    /// Waits for a permit (fiber tasks), suspending the fiber; errors as for `acquire`.
    pub fn acquire_blocking(&self, fiber: &mut Fiber) -> Result<Permit<'_, F>, WaitError> {
        block(&self.state, 0, fiber).map(|()| Permit { sem: self })
    }

    /// Takes a permit if one is free and nobody waits for one (wait rule 4); never waits.
    pub fn try_acquire(&self) -> Result<Permit<'_, F>, TryAcquireError> {
        match self.state.with(|s| s.try_take(0)) {
            Ok(true) => Ok(Permit { sem: self }),
            Ok(false) => Err(TryAcquireError::NoPermits),
            Err(_) => Err(TryAcquireError::Closed),
        }
    }

    /// Adds `n` permits: each goes to the next waiter, the rest to the free count
    /// (saturating at `usize::MAX`). Wakes at most `n` waiters.
    pub fn add_permits(&self, n: usize) {
        self.state.with(|s| {
            let mut left = n;
            while left > 0 && s.pool.queue.wake_one::<F>(super::waiter::Stage::Granted) {
                left -= 1;
            }
            s.pool.free = s.pool.free.saturating_add(left);
        });
    }

    /// Permits free now.
    pub fn available_permits(&self) -> usize {
        self.state.with(|s| s.pool.free)
    }

    /// Tasks waiting for a permit now.
    pub fn waiters(&self) -> usize {
        self.state.with(|s| s.pool.queue.len())
    }

    /// Closes the semaphore: every waiter's wait ends with `Closed`, and so does every
    /// later `acquire`. Permits held stay valid, and give back to the free count.
    pub fn close(&self) {
        self.state.with(|s| {
            s.closed = true;
            s.pool.queue.wake_all::<F>(super::waiter::Stage::Closed);
        });
    }

    /// Whether [`close`](Semaphore::close) was called.
    pub fn is_closed(&self) -> bool {
        self.state.with(|s| s.closed)
    }

    /// Gives one permit back (a permit's drop).
    #[inline(always)]
    pub(super) fn give(&self) {
        self.state.with(|s| s.pool.give::<F>());
    }
}

impl<F: Flavour> core::fmt::Debug for Semaphore<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Semaphore")
            .field("available", &self.available_permits())
            .field("waiters", &self.waiters())
            .finish()
    }
}

/// A permit of a [`Semaphore`]; dropping it gives the permit back (to the next waiter
/// first). It may move to another task (and, cross-thread flavour, another thread):
/// wherever it is dropped, the permit goes on.
#[must_use = "dropping the permit gives it back at once"]
pub struct Permit<'a, F: Flavour = Shared> {
    sem: &'a Semaphore<F>,
}

impl<F: Flavour> Permit<'_, F> {
    /// Keeps the permit taken for good (the semaphore has one fewer).
    pub fn forget(self) {
        core::mem::forget(self);
    }
}

impl<F: Flavour> Drop for Permit<'_, F> {
    #[inline(always)]
    fn drop(&mut self) {
        self.sem.give();
    }
}

impl<F: Flavour> core::fmt::Debug for Permit<'_, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Permit")
    }
}

/// The future [`Semaphore::acquire`] returns. Dropped while waiting, it leaves the
/// queue; dropped after it was handed a permit but before it returned it, the permit
/// goes on (wait rule 6).
#[must_use = "futures do nothing unless polled"]
pub struct Acquire<'a, F: Flavour = Shared> {
    sem: &'a Semaphore<F>,
    wait: WaitFor<'a, F, SemState>,
}

impl<'a, F: Flavour> Future for Acquire<'a, F> {
    type Output = Result<Permit<'a, F>, WaitError>;
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: structural pinning of `wait`; `sem` is a shared reference, never moved
        // out of a pinned `Acquire`.
        let (sem, wait) = unsafe {
            let this = self.get_unchecked_mut();
            (this.sem, Pin::new_unchecked(&mut this.wait))
        };
        wait.poll_wait(cx).map(|r| r.map(|()| Permit { sem }))
    }
}

impl<F: Flavour> core::fmt::Debug for Acquire<'_, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Acquire")
    }
}
