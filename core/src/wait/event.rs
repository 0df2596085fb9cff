//! [`Event`]: a flag tasks wait to see set; `set` wakes them all.

use super::state::{Guarded, WaitFor, block};
use super::waiter::{Queue, Source, Stage};
use super::{Flavour, Local, Shared, WaitError};
use crate::fiber::Fiber;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};

/// A manual-reset event: [`wait`](Event::wait) returns once the event is set; `set`
/// wakes every waiter (priority, then FIFO: wait rule 4) and leaves it set until
/// `reset`. `Event` is the cross-thread flavour, [`LocalEvent`] the same-thread one.
pub struct Event<F: Flavour = Shared> {
    state: Guarded<F, EventState>,
}

/// The same-thread [`Event`] (wait rule 1).
pub type LocalEvent = Event<Local>;

pub(super) struct EventState {
    set: bool,
    queue: Queue,
}

impl Source for EventState {
    fn try_take(&mut self, _: usize) -> Result<bool, WaitError> {
        // While set, nobody is queued (`set` woke them all), so this does not barge.
        Ok(self.set)
    }
    fn queue(&self, _: usize) -> &Queue {
        &self.queue
    }
    fn pass_on<F: Flavour>(&mut self, _: usize) {
        // Every waiter was woken: nothing to pass on.
    }
}

impl<F: Flavour> Event<F> {
    /// An event, set or not.
    #[cfg(not(keel_loom))]
    pub const fn new(set: bool) -> Self {
        Event { state: Guarded::new(EventState { set, queue: Queue::new() }) }
    }

    /// An event, set or not (loom: not `const`).
    #[cfg(keel_loom)]
    pub fn new(set: bool) -> Self {
        Event { state: Guarded::new(EventState { set, queue: Queue::new() }) }
    }

    /// Sets the event and wakes every waiter (once each, bounded by the waiters queued).
    pub fn set(&self) {
        self.state.with(|s| {
            s.set = true;
            s.queue.wake_all::<F>(Stage::Granted);
        });
    }

    /// Clears the event: later waits wait for the next `set`. Waiters woken by an
    /// earlier `set` still return `Ok`.
    pub fn reset(&self) {
        self.state.with(|s| s.set = false);
    }

    /// Whether the event is set.
    pub fn is_set(&self) -> bool {
        self.state.with(|s| s.set)
    }

    /// Tasks waiting now.
    pub fn waiters(&self) -> usize {
        self.state.with(|s| s.queue.len())
    }

    /// Waits until the event is set (future tasks). `Err(Cancelled)`, `Err(NotInTask)`
    /// as for `Semaphore::acquire`.
    pub fn wait(&self) -> EventWait<'_, F> {
        EventWait { wait: WaitFor::new(&self.state, 0) }
    }

    /// Waits until the event is set (fiber tasks), suspending the fiber.
    pub fn wait_blocking(&self, fiber: &mut Fiber) -> Result<(), WaitError> {
        block(&self.state, 0, fiber)
    }
}

impl<F: Flavour> core::fmt::Debug for Event<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Event").field("set", &self.is_set()).finish()
    }
}

/// The future [`Event::wait`] returns.
#[must_use = "futures do nothing unless polled"]
pub struct EventWait<'a, F: Flavour = Shared> {
    wait: WaitFor<'a, F, EventState>,
}

impl<F: Flavour> Future for EventWait<'_, F> {
    type Output = Result<(), WaitError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: structural pinning of `wait`.
        unsafe { self.map_unchecked_mut(|this| &mut this.wait) }.poll_wait(cx)
    }
}

impl<F: Flavour> core::fmt::Debug for EventWait<'_, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("EventWait")
    }
}
