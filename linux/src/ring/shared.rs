//! What the ring driver shares with the values that outlive a poll of theirs: an
//! abandoned-operation queue and the provided-buffer ring. Values that hold a driver's
//! operation or buffer (`kept::Kept`, `net::Multishot`, `net::ProvidedBuf`) hold an
//! `Rc<Shared>` instead of a pointer to the driver, so any of them may be dropped at any
//! time (inside a task, in `main`, after the executor and its driver are gone) without
//! touching freed memory.
//!
//! Rules (cited as "shared rule N"):
//! 1. **One thread.** The driver is `!Send`, and so is every holder (`Rc`): all access is
//!    on the driver's thread. Nothing here ever hands out a `&mut RingDriver`: a value's
//!    `Drop` may run while the driver is borrowed (inside `Executor::with_driver`, inside
//!    a reap), so it only touches this state.
//! 2. **Abandoning is queued.** A value dropped with its operation in flight pushes the
//!    operation's id on `abandoned`; the driver takes the queue at the start of every
//!    `reap`, `park` and slot submission (and in its `Drop`) and abandons each (cancelled, its slot and
//!    buffer kept until its completion, driver rule 3). Until then the operation stays
//!    in flight as it was, so nothing is freed early. At most one entry per slot in use,
//!    so the queue (capacity: the slot count) never grows on the hot path.
//! 3. **Provided buffers** (`pbuf.rs`): the ring and its memory live here, so a
//!    `ProvidedBuf` keeps the memory it points at alive; dropping one gives its buffer
//!    back at once while the driver lives (pbuf rule 2), and does nothing after.
//! 4. **After the driver.** The driver's `Drop` cancels every operation and waits for
//!    their completions (bounded), then sets `alive` false: later drops do nothing. If the
//!    kernel did not finish in time, the driver leaks this state (and its slots, with
//!    their buffers and descriptors) rather than free memory the kernel may still write.

use crate::pbuf::PbufRing;
use keel_core::OpId;
use std::cell::{Cell, RefCell, RefMut};

pub(crate) struct Shared {
    /// The driver lives (rule 4).
    alive: Cell<bool>,
    /// Some operation waits in `abandoned` (rule 2): the driver's hot check.
    any_abandoned: Cell<bool>,
    abandoned: RefCell<Vec<u64>>,
    /// The provided-buffer ring, once registered (rule 3).
    pbuf: RefCell<Option<PbufRing>>,
}

impl Shared {
    pub(crate) fn new(slots: usize) -> Self {
        Shared { alive: Cell::new(true), any_abandoned: Cell::new(false), abandoned: RefCell::new(Vec::with_capacity(slots)), pbuf: RefCell::new(None) }
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
