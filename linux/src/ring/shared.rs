//! What the ring driver shares with the values that outlive a poll of theirs: an
//! abandoned-operation queue, the provided-buffer ring and the registered buffer set.
//! Values that hold a driver's operation or buffer (`slot_op::SlotOp`, `net::Multishot`,
//! `net::ProvidedBuf`, `fs::FixedBuf`) hold an `Rc<Shared>` instead of a pointer to the
//! driver, so any of them may be dropped at any time (inside a task, in `main`, after the
//! executor and its driver are gone) without touching freed memory.
//!
//! Rules (cited as "shared rule N"):
//! 1. **One thread.** The driver is `!Send`, and so is every holder (`Rc`): all access is
//!    on the driver's thread. Nothing here ever hands out a `&mut RingDriver`: a value's
//!    `Drop` may run while the driver is borrowed (inside `Executor::with_driver`, inside a
//!    reap), so it only touches this state.
//! 2. **Abandoning is queued.** A value dropped with its operation in flight pushes the
//!    operation's id on `abandoned`; the driver takes the queue at the start of every
//!    `reap`, `park` and slot submission (and in its `Drop`) and abandons each (cancelled,
//!    its slot and buffer kept until its completion, completion rule 3). Until then the
//!    operation stays in flight as it was, so nothing is freed early. At most one entry per
//!    slot in use, so the queue (capacity: the slot count) never grows on the hot path. An
//!    operation that uses a registered buffer is abandoned with its `FixedBuf`, which the
//!    driver puts in the slot: the buffer is released when the slot is freed, after the
//!    kernel is done with it (regbuf rule 5).
//! 3. **Provided buffers** (`pbuf.rs`): the ring and its memory live here, so a
//!    `ProvidedBuf` keeps the memory it points at alive; dropping one gives its buffer back
//!    at once while the driver lives (pbuf rule 2), and does nothing after.
//! 4. **After the driver.** The driver's `Drop` cancels every operation and waits for their
//!    completions (bounded), then sets `alive` false: later drops do nothing. If the kernel
//!    did not finish in time, the driver leaks this state (and its slots, with their
//!    buffers and descriptors) rather than free memory the kernel may still write.
//! 5. **Registered buffers** (`regbuf.rs`): the set lives here, so a `FixedBuf` keeps the
//!    memory it points at alive; dropping one releases its buffer (to the oldest waiter,
//!    regbuf rule 3) while the driver lives, and does nothing after.

use crate::pbuf::PbufRing;
use crate::regbuf::Registered;
use keel_core::OpId;
use std::cell::{Cell, RefCell, RefMut};

pub(crate) struct Shared {
    /// The driver lives (rule 4).
    alive: Cell<bool>,
    /// Some operation waits in `abandoned` (rule 2): the driver's hot check.
    any_abandoned: Cell<bool>,
    abandoned: RefCell<Vec<u64>>,
    /// Registered buffers of abandoned operations that use one, until the driver moves
    /// them into the operations' slots (rule 2, regbuf rule 5).
    abandoned_fixed: RefCell<Vec<(u64, crate::regbuf::FixedBuf)>>,
    /// The provided-buffer ring, once registered (rule 3).
    pbuf: RefCell<Option<PbufRing>>,
    /// The registered buffer set, if any (rule 5).
    regbuf: RefCell<Option<Registered>>,
    /// Descriptor transfer: arrivals, their waiters, the mailbox, and fixed-file indices
    /// whose handles went away (`transfer` module, rules 4-6; closed like abandoned
    /// operations, rule 2).
    inbox: RefCell<crate::transfer::Inbox>,
    /// Tasks waiting for an arrival (transfer rule 5): each counts as an operation in
    /// flight, so the run loop keeps reaping (an arrival is a CQE).
    receivers: Cell<usize>,
}

impl Shared {
    pub(crate) fn new(slots: usize) -> Self {
        Shared {
            alive: Cell::new(true),
            any_abandoned: Cell::new(false),
            abandoned: RefCell::new(Vec::with_capacity(slots)),
            abandoned_fixed: RefCell::new(Vec::with_capacity(slots)),
            pbuf: RefCell::new(None),
            regbuf: RefCell::new(None),
            inbox: RefCell::new(crate::transfer::Inbox::new()),
            receivers: Cell::new(0),
        }
    }

    /// A value let go of operation `id` while it may be in flight (rule 2).
    pub(crate) fn abandon(&self, id: OpId) {
        if !self.alive.get() {
            return; // rule 4: the driver completed or leaked it already
        }
        // Rule 1: only the driver's `take_abandoned` borrows the queue, and it drops no
        // value while it does; a failed borrow would be a keel bug, and leaving the op to
        // its slot (it still completes) is the safe answer.
        if let Ok(mut q) = self.abandoned.try_borrow_mut() {
            q.push(id.0);
            self.any_abandoned.set(true);
        }
    }

    /// A value let go of operation `id`, which uses registered buffer `buf`, while it may
    /// be in flight: as `abandon`, and the buffer goes to the operation's slot, released
    /// only when the slot is freed at the completion (rule 2, regbuf rule 5).
    pub(crate) fn abandon_holding(&self, id: OpId, buf: crate::regbuf::FixedBuf) {
        if !self.alive.get() {
            return; // rule 4: the driver completed the op; `buf`'s drop releases nothing
        }
        match self.abandoned_fixed.try_borrow_mut() {
            Ok(mut q) => q.push((id.0, buf)), // within capacity: one entry per slot in use
            // As in `abandon`: a keel bug; the kernel may still use the buffer, so it is
            // never released (leaked) rather than handed to another holder.
            Err(_) => core::mem::forget(buf),
        }
        self.abandon(id);
    }

    /// The registered buffer abandoned with operation `id`, if any (rule 2).
    pub(crate) fn take_abandoned_fixed(&self, id: OpId) -> Option<crate::regbuf::FixedBuf> {
        let mut q = self.abandoned_fixed.try_borrow_mut().ok()?;
        let k = q.iter().position(|e| e.0 == id.0)?;
        Some(q.swap_remove(k).1)
    }

    /// The next queued abandoned operation (rule 2).
    #[inline(always)]
    pub(crate) fn next_abandoned(&self) -> Option<OpId> {
        if !self.any_abandoned.get() {
            return None;
        }
        let mut q = self.abandoned.borrow_mut();
        let id = q.pop();
        self.any_abandoned.set(!q.is_empty());
        id.map(OpId)
    }

    pub(crate) fn set_dead(&self) {
        self.alive.set(false);
        if let Ok(mut inbox) = self.inbox.try_borrow_mut() {
            inbox.close(); // transfer rule 7: senders see the target gone
        }
    }

    /// Whether the driver lives (rule 4).
    pub(crate) fn is_alive(&self) -> bool {
        self.alive.get()
    }

    /// Whether `take_abandoned` has work (rule 2): abandoned operations or fixed-file
    /// indices to close.
    #[inline(always)]
    pub(crate) fn any_abandoned(&self) -> bool {
        self.any_abandoned.get()
    }

    /// Tasks waiting for an arrival (transfer rule 5).
    #[inline(always)]
    pub(crate) fn receivers(&self) -> usize {
        self.receivers.get()
    }

    /// The inbox's waiter count changed (transfer rule 5).
    pub(crate) fn set_receivers(&self, n: usize) {
        self.receivers.set(n);
    }

    /// The transfer inbox, borrowed (rule 1: never held across user code). `None` if it
    /// is borrowed already (a keel bug).
    pub(crate) fn inbox(&self) -> Option<RefMut<'_, crate::transfer::Inbox>> {
        self.inbox.try_borrow_mut().ok()
    }

    /// A fixed-file handle went away holding `index` (a dropped `transfer::FixedFd`): the
    /// driver closes the index through the ring at its next reap, park or slot submission
    /// (rule 2) while it lives; nothing after (rule 4: the table went with the ring).
    pub(crate) fn close_fixed_later(&self, index: u32) {
        if !self.alive.get() {
            return;
        }
        if let Some(mut inbox) = self.inbox() {
            inbox.closing.push(index);
            self.any_abandoned.set(true);
        }
    }

    /// Indices queued by `close_fixed_later` wait for a later `take_abandoned` (rule 2).
    pub(crate) fn keep_closing_queued(&self) {
        if self.inbox().is_some_and(|i| !i.closing.is_empty()) {
            self.any_abandoned.set(true);
        }
    }

    /// The next index queued by `close_fixed_later`.
    pub(crate) fn next_closing(&self) -> Option<u32> {
        self.inbox()?.closing.pop()
    }

    /// The provided-buffer ring, borrowed (rule 3). `None` if not registered, or if it is
    /// borrowed already (a keel bug: no borrow is held across user code).
    #[inline(always)]
    pub(crate) fn pbuf(&self) -> Option<RefMut<'_, PbufRing>> {
        RefMut::filter_map(self.pbuf.try_borrow_mut().ok()?, |p| p.as_mut()).ok()
    }

    pub(crate) fn has_pbuf(&self) -> bool {
        self.pbuf.borrow().is_some()
    }

    pub(crate) fn set_pbuf(&self, p: PbufRing) {
        *self.pbuf.borrow_mut() = Some(p);
    }

    /// A dropped provided-buffer wait leaves the ring's queue (its turn, if handed to it,
    /// goes on: waitq rule 3) while the driver lives; nothing after (rule 4).
    pub(crate) fn leave_pbuf_queue(&self, t: crate::waitq::Ticket) {
        if !self.alive.get() {
            return;
        }
        if let Some(mut p) = self.pbuf() {
            p.leave(t);
        }
    }

    /// The registered buffer set, borrowed (rule 5). `None` if there is none, or if it is
    /// borrowed already (a keel bug: no borrow is held across user code or a `FixedBuf`'s
    /// drop).
    #[inline(always)]
    pub(crate) fn regbuf(&self) -> Option<RefMut<'_, Registered>> {
        RefMut::filter_map(self.regbuf.try_borrow_mut().ok()?, |r| r.as_mut()).ok()
    }

    pub(crate) fn set_regbuf(&self, r: Option<Registered>) {
        *self.regbuf.borrow_mut() = r;
    }

    /// A `FixedBuf` went: its buffer is released (regbuf rule 3) while the driver lives.
    pub(crate) fn release_registered(&self, i: u16) {
        if !self.alive.get() {
            return; // rule 4: nobody is left to hand it to
        }
        match self.regbuf() {
            Some(mut r) => r.release(i),
            None => debug_assert!(false, "keel bug: a FixedBuf dropped while the registered set is borrowed"),
        }
    }

    /// A dropped registered-buffer wait leaves the queue (a buffer granted to it goes on:
    /// regbuf rule 4) while the driver lives; nothing after (rule 4).
    pub(crate) fn leave_regbuf_queue(&self, t: crate::waitq::Ticket) {
        if !self.alive.get() {
            return;
        }
        if let Some(mut r) = self.regbuf() {
            r.leave(t);
        }
    }

    /// A `ProvidedBuf` went: its buffer goes back to the ring while the driver lives
    /// (rule 3, pbuf rule 2).
    pub(crate) fn give_back(&self, bid: u16) {
        if !self.alive.get() {
            return;
        }
        if let Some(mut p) = self.pbuf() {
            p.give_back(bid);
        }
    }
}
