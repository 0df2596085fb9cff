//! [`Channel`]: a bounded queue of `T` over storage the caller provides.
//!
//! Two pools of units (wait rules): free slots (senders wait for one) and written items
//! (receivers wait for one). A sender granted a slot writes its value and gives an item;
//! a receiver granted an item reads the oldest value and gives a slot. Values never sit
//! in a waiter: a sender keeps its value in its own future (or frame) until it has a
//! slot, so a cancelled or dropped sender takes its value with it, and a closed channel
//! hands it back.

use super::state::{Guarded, WaitFor, block};
use super::waiter::{Pool, Queue, Source, Stage};
use super::{Flavour, Local, Shared, WaitError};
use crate::fiber::Fiber;
use core::future::Future;
use core::mem::MaybeUninit;
use core::pin::Pin;
use core::task::{Context, Poll};

const SLOT: usize = 0;
const ITEM: usize = 1;

/// A bounded multi-producer channel of `T` in `storage.len()` slots the caller
/// provides (a `&mut [MaybeUninit<T>]`: on a stack, in a `static`, leaked). Senders wait
/// while it is full, receivers while it is empty; both are served by priority, then
/// FIFO (wait rule 4). Several receivers may share it too; each value goes to one.
/// `Channel` is the cross-thread flavour, [`LocalChannel`] the same-thread one.
///
/// Storage of length 0 makes every send wait until the channel is closed.
pub struct Channel<'s, T, F: Flavour = Shared> {
    state: Guarded<F, ChanState<'s, T>>,
}

/// The same-thread [`Channel`] (wait rule 1).
pub type LocalChannel<'s, T> = Channel<'s, T, Local>;

pub(super) struct ChanState<'s, T> {
    buf: &'s mut [MaybeUninit<T>],
    head: usize,
    len: usize,
    closed: bool,
    slots: Pool,
    items: Pool,
}

// SAFETY: the values move between threads through the channel: `T: Send` is needed and
// enough; the rest is wait rule 3's.
unsafe impl<T: Send> Send for ChanState<'_, T> {}

impl<T> ChanState<'_, T> {
    /// Writes `value` into the slot this caller was given.
    fn push(&mut self, value: T) {
        let cap = self.buf.len();
        let at = (self.head + self.len) % cap;
        self.buf[at].write(value);
        self.len += 1;
    }

    /// Reads the oldest value, whose item this caller was given.
    fn pop(&mut self) -> T {
        let value = self.buf[self.head].as_ptr();
        self.head = (self.head + 1) % self.buf.len();
        self.len -= 1;
        // SAFETY: an item is given only after its value was written (`push`), and each
        // item is taken once: the slot at `head` holds a value, now moved out.
        unsafe { value.read() }
    }

    /// A sender with a slot: in it goes, or back it comes if the channel is closed.
    fn send_granted<F: Flavour>(&mut self, value: T) -> Result<(), T> {
        if self.closed {
            self.slots.give::<F>();
            return Err(value);
        }
        self.push(value);
        self.items.give::<F>();
        Ok(())
    }

    fn recv_granted<F: Flavour>(&mut self) -> T {
        let value = self.pop();
        self.slots.give::<F>();
        value
    }
}

impl<T> Source for ChanState<'_, T> {
    fn try_take(&mut self, kind: usize) -> Result<bool, WaitError> {
        if kind == SLOT {
            if self.closed { Err(WaitError::Closed) } else { Ok(self.slots.try_take()) }
        } else if self.items.try_take() {
            Ok(true)
        } else if self.closed {
            Err(WaitError::Closed)
        } else {
            Ok(false)
        }
    }
    fn queue(&self, kind: usize) -> &Queue {
        if kind == SLOT { &self.slots.queue } else { &self.items.queue }
    }
    fn pass_on<F: Flavour>(&mut self, kind: usize) {
        if kind == SLOT { self.slots.give::<F>() } else { self.items.give::<F>() }
    }
}

/// A send that found the channel closed (or whose task was cancelled, or that ran
/// outside its task): the value comes back.
#[derive(Debug, PartialEq, Eq)]
pub struct SendError<T> {
    /// Why.
    pub reason: WaitError,
    /// The value that was not sent.
    pub value: T,
}

impl<T> core::fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "not sent: {}", self.reason)
    }
}

/// Why [`Channel::try_send`] did not send; the value comes back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// No free slot (or senders wait first): `send` to wait.
    Full(T),
    /// The channel was closed.
    Closed(T),
}

/// Why [`Channel::try_recv`] got nothing.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TryRecvError {
    /// Nothing to receive now: `recv` to wait.
    Empty,
    /// Closed, and every value sent has been received.
    Closed,
}

impl<'s, T, F: Flavour> Channel<'s, T, F> {
    /// A channel with one slot per element of `storage`.
    #[cfg(not(keel_loom))]
    pub const fn new(storage: &'s mut [MaybeUninit<T>]) -> Self {
        let cap = storage.len();
        Channel { state: Guarded::new(Self::fresh(storage, cap)) }
    }

    /// A channel with one slot per element of `storage` (loom: not `const`).
    #[cfg(keel_loom)]
    pub fn new(storage: &'s mut [MaybeUninit<T>]) -> Self {
        let cap = storage.len();
        Channel { state: Guarded::new(Self::fresh(storage, cap)) }
    }

    const fn fresh(buf: &'s mut [MaybeUninit<T>], cap: usize) -> ChanState<'s, T> {
        ChanState { buf, head: 0, len: 0, closed: false, slots: Pool::new(cap), items: Pool::new(0) }
    }

    /// Sends `value`, waiting for a free slot (future tasks). On `Closed`, `Cancelled`
    /// or `NotInTask` the value comes back in the error.
    pub fn send(&self, value: T) -> Sending<'_, 's, T, F> {
        Sending { chan: self, value: Some(value), wait: WaitFor::new(&self.state, SLOT) }
    }

    /// Sends `value`, waiting for a free slot (fiber tasks).
    pub fn send_blocking(&self, fiber: &mut Fiber, value: T) -> Result<(), SendError<T>> {
        match block(&self.state, SLOT, fiber) {
            Ok(()) => self
                .state
                .with(|s| s.send_granted::<F>(value))
                .map_err(|value| SendError { reason: WaitError::Closed, value }),
            Err(reason) => Err(SendError { reason, value }),
        }
    }

    /// Sends `value` if a slot is free and no sender waits; never waits.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        self.state.with(|s| match s.try_take(SLOT) {
            Ok(true) => s.send_granted::<F>(value).map_err(TrySendError::Closed),
            Ok(false) => Err(TrySendError::Full(value)),
            Err(_) => Err(TrySendError::Closed(value)),
        })
    }

    /// Receives the oldest value, waiting for one (future tasks). `Err(Closed)` once the
    /// channel is closed and empty.
    pub fn recv(&self) -> Recv<'_, 's, T, F> {
        Recv { chan: self, wait: WaitFor::new(&self.state, ITEM) }
    }

    /// Receives the oldest value, waiting for one (fiber tasks).
    pub fn recv_blocking(&self, fiber: &mut Fiber) -> Result<T, WaitError> {
        block(&self.state, ITEM, fiber)?;
        Ok(self.state.with(|s| s.recv_granted::<F>()))
    }

    /// Receives the oldest value if one is there and no receiver waits; never waits.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.state.with(|s| match s.try_take(ITEM) {
            Ok(true) => Ok(s.recv_granted::<F>()),
            Ok(false) => Err(TryRecvError::Empty),
            Err(_) => Err(TryRecvError::Closed),
        })
    }

    /// Closes the channel: waiting senders get their values back (`Closed`), later
    /// sends fail the same way; receivers get what was sent before, then `Closed`.
    pub fn close(&self) {
        self.state.with(|s| {
            s.closed = true;
            s.slots.queue.wake_all::<F>(Stage::Closed);
            // A receiver waits only while no value is there; none can come now.
            s.items.queue.wake_all::<F>(Stage::Closed);
        });
    }

    /// Whether [`close`](Channel::close) was called.
    pub fn is_closed(&self) -> bool {
        self.state.with(|s| s.closed)
    }

    /// Values in the channel now.
    pub fn len(&self) -> usize {
        self.state.with(|s| s.len)
    }

    /// Whether no value is in the channel now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tasks waiting now, to send or to receive.
    pub fn waiters(&self) -> usize {
        self.state.with(|s| s.slots.queue.len() + s.items.queue.len())
    }

    /// Slots: the storage's length.
    pub fn capacity(&self) -> usize {
        self.state.with(|s| s.buf.len())
    }
}

impl<T, F: Flavour> Drop for Channel<'_, T, F> {
    fn drop(&mut self) {
        // No waiter exists (wait rule 2); drop the values still in, outside any lock.
        let s = self.state.get_mut();
        while s.len > 0 {
            drop(s.pop());
        }
    }
}

impl<T, F: Flavour> core::fmt::Debug for Channel<'_, T, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Channel").field("len", &self.len()).field("capacity", &self.capacity()).finish()
    }
}

/// The future [`Channel::send`] returns. Dropped before it had a slot, it takes its
/// value with it and leaves the queue; a slot granted to it and not used goes on (wait
/// rule 6). Polled again after it completed, it stays pending.
#[must_use = "futures do nothing unless polled"]
pub struct Sending<'a, 's, T, F: Flavour = Shared> {
    chan: &'a Channel<'s, T, F>,
    value: Option<T>,
    wait: WaitFor<'a, F, ChanState<'s, T>>,
}

impl<T, F: Flavour> Future for Sending<'_, '_, T, F> {
    type Output = Result<(), SendError<T>>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: structural pinning of `wait` only; `value` is not pinned (moved out).
        let this = unsafe { self.get_unchecked_mut() };
        if this.value.is_none() {
            return Poll::Pending;
        }
        // SAFETY: as above: `wait` never moves.
        let wait = unsafe { Pin::new_unchecked(&mut this.wait) };
        let done = core::task::ready!(wait.poll_wait(cx));
        let Some(value) = this.value.take() else { return Poll::Pending };
        Poll::Ready(match done {
            Ok(()) => this
                .chan
                .state
                .with(|s| s.send_granted::<F>(value))
                .map_err(|value| SendError { reason: WaitError::Closed, value }),
            Err(reason) => Err(SendError { reason, value }),
        })
    }
}

impl<T, F: Flavour> core::fmt::Debug for Sending<'_, '_, T, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Sending")
    }
}

/// The future [`Channel::recv`] returns. Dropped while waiting, it leaves the queue; an
/// item granted to it and not taken goes on (wait rule 6).
#[must_use = "futures do nothing unless polled"]
pub struct Recv<'a, 's, T, F: Flavour = Shared> {
    chan: &'a Channel<'s, T, F>,
    wait: WaitFor<'a, F, ChanState<'s, T>>,
}

impl<T, F: Flavour> Future for Recv<'_, '_, T, F> {
    type Output = Result<T, WaitError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: structural pinning of `wait`; `chan` is a shared reference.
        let (chan, wait) = unsafe {
            let this = self.get_unchecked_mut();
            (this.chan, Pin::new_unchecked(&mut this.wait))
        };
        wait.poll_wait(cx).map(|r| r.map(|()| chan.state.with(|s| s.recv_granted::<F>())))
    }
}

impl<T, F: Flavour> core::fmt::Debug for Recv<'_, '_, T, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Recv")
    }
}
