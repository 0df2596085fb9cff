//! The receiving side of a ring (transfer rules 5-7): descriptors that arrived and wait
//! to be taken, the task waiting for each key, the mailbox, the probe answers, and the
//! indices of dropped handles (closed by the driver, shared rule 2). Lives in the ring's
//! shared state, so futures and handles reach it from their `Drop` (shared rule 1: one
//! thread; never borrowed across user code).

use super::op::ARRIVAL;
use super::{Mailbox, TransferError};
use crate::ring::RingDriver;
use crate::ring::shared::Shared;
use keel_core::TaskHandle;
use std::sync::atomic::{AtomicU64, Ordering};

/// Process-unique inbox ids (a send to the sender's own ring is refused).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A receive waiting for a key (rule 6): FIFO per key; `got` is the arrival handed to it,
/// which it takes at its next look.
struct Waiter {
    key: u32,
    ticket: Ticket,
    task: TaskHandle,
    got: Option<u32>,
}

/// One receive's place among the waiters of its key (rule 6).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ticket(u64);

/// What a look at the inbox found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Look {
    /// An arrival's index, taken (the caller's wait, if any, has left the queue).
    Got(u32),
    /// Nothing for the caller yet: it waits with this ticket.
    Waiting(Ticket),
    /// Nothing, and the caller does not wait (`me` was `None`).
    Nothing,
}

pub(crate) struct Inbox {
    /// Process-unique (Relaxed: only uniqueness matters).
    pub(crate) id: u64,
    mailbox: Option<Mailbox>,
    /// (key, index) not handed to any receive, oldest first (rule 5).
    arrivals: Vec<(u32, u32)>,
    /// The waiting receives, oldest first (rule 6).
    waiters: Vec<Waiter>,
    next_ticket: u64,
    /// Indices of dropped handles, for the driver to close (rule 6).
    pub(crate) closing: Vec<u32>,
    /// Probe answers (rule 2): FIXED_FD_INSTALL, MSG_RING.
    probed: Option<(bool, bool)>,
    /// Test hook (`RingDriver::pretend_transfer_unsupported`).
    pub(crate) pretend_unsupported: bool,
}

impl Inbox {
    pub(crate) fn new() -> Self {
        Inbox {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            mailbox: None,
            arrivals: Vec::new(),
            waiters: Vec::new(),
            next_ticket: 0,
            closing: Vec::new(),
            probed: None,
            pretend_unsupported: false,
        }
    }

    /// Whether a mailbox was handed out (rule 7).
    pub(crate) fn has_mailbox(&self) -> bool {
        self.mailbox.is_some()
    }

    /// The driver goes: senders see the target gone (rule 7).
    pub(crate) fn close(&mut self) {
        if let Some(m) = &self.mailbox {
            m.set_gone();
        }
    }

    /// A receive of `key` looks (rule 6). `ticket`: its place if it waits already (then
    /// its wake is pointed at `me`, which may be another task run than the one that queued
    /// it: waitq rule 6's reasoning). A waiting receive takes the arrival handed to it; a
    /// new one takes the oldest arrival nobody was handed (there is one only when every
    /// older waiter of the key has its own), else, with `me`, queues behind the others.
    pub(crate) fn look(&mut self, key: u32, me: Option<TaskHandle>, ticket: Option<Ticket>) -> Look {
        if let Some(t) = ticket
            && let Some(i) = self.waiters.iter().position(|w| w.ticket == t)
        {
            if let Some(index) = self.waiters[i].got {
                self.waiters.remove(i);
                return Look::Got(index);
            }
            match me {
                Some(me) => {
                    self.waiters[i].task = me;
                    return Look::Waiting(t);
                }
                None => return Look::Nothing, // the caller leaves (`leave`)
            }
        }
        // New, or its place was cleared by the executor's end (`clear_waiters`).
        if let Some(i) = self.arrivals.iter().position(|a| a.0 == key) {
            return Look::Got(self.arrivals.remove(i).1);
        }
        let Some(me) = me else { return Look::Nothing };
        let t = Ticket(self.next_ticket);
        self.next_ticket += 1;
        self.waiters.push(Waiter { key, ticket: t, task: me, got: None });
        Look::Waiting(t)
    }

    /// Rule 5: `index` arrived for `key`: handed to the oldest waiter of the key that has
    /// none yet, which is woken; else kept for the next receive.
    fn hand(&mut self, key: u32, index: u32, front: bool) {
        if let Some(w) = self.waiters.iter_mut().find(|w| w.key == key && w.got.is_none()) {
            w.got = Some(index);
            w.task.wake(); // a wake for an ended run is a no-op (keel-core wake rule 2)
        } else if front {
            self.arrivals.insert(0, (key, index)); // it was the oldest of its key
        } else {
            self.arrivals.push((key, index));
        }
    }

    /// The receive with `ticket` stops waiting (rule 6); an arrival handed to it goes to
    /// the next waiter of its key, or stays for the next receive.
    pub(crate) fn leave(&mut self, ticket: Ticket) {
        if let Some(i) = self.waiters.iter().position(|w| w.ticket == ticket) {
            let w = self.waiters.remove(i);
            if let Some(index) = w.got {
                self.hand(w.key, index, true);
            }
        }
    }

    /// Waiting receives (rule 5: each counts as an operation in flight).
    fn receivers(&self) -> usize {
        self.waiters.len()
    }

    /// Whether `FIXED_FD_INSTALL` (`install`) or descriptor passing (`!install`) is
    /// available on `d` (rule 2: probed once).
    pub(crate) fn supports(&mut self, d: &RingDriver, install: bool) -> bool {
        if self.pretend_unsupported {
            return false;
        }
        let (i, m) = *self.probed.get_or_insert_with(|| {
            (d.has_opcode(io_uring::opcode::FixedFdInstall::CODE), d.has_opcode(io_uring::opcode::MsgRingData::CODE))
        });
        if install { i } else { m }
    }

    /// Arrivals not taken yet (tests and listings).
    pub(crate) fn pending(&self) -> usize {
        self.arrivals.len()
    }
}

/// `Inbox::look` on `shared`'s inbox, keeping the waiting-receiver count (rule 5).
pub(crate) fn look(
    shared: &Shared,
    key: u32,
    me: Option<TaskHandle>,
    ticket: Option<Ticket>,
) -> Result<Look, TransferError> {
    let mut inbox = shared.inbox().ok_or(TransferError::NotOnRing)?;
    let r = inbox.look(key, me, ticket);
    shared.set_receivers(inbox.receivers());
    Ok(r)
}

/// The receive with `ticket` on `shared` stops waiting (rule 6).
pub(crate) fn leave(shared: &Shared, ticket: Ticket) {
    if let Some(mut inbox) = shared.inbox() {
        inbox.leave(ticket);
        shared.set_receivers(inbox.receivers());
    }
}

/// The executor ends (`Driver::cancel_all`): no receiver waits any more, so the final
/// drain ends (its tasks are cancelled; a later look queues again and finds no ring).
/// Arrivals handed to waiters stay, oldest first, for the ring to close when it goes.
pub(crate) fn clear_waiters(shared: &Shared) {
    if let Some(mut inbox) = shared.inbox() {
        let handed: Vec<(u32, u32)> = inbox.waiters.iter().filter_map(|w| Some((w.key, w.got?))).collect();
        inbox.waiters.clear();
        inbox.arrivals.splice(0..0, handed);
        shared.set_receivers(0);
    }
}

/// Whether `user_data` announces an arrival (rule 5).
#[inline(always)]
pub(crate) fn is_arrival(ud: u64) -> bool {
    ud & ARRIVAL == ARRIVAL && ud & (1 << 62) == 0
}

/// Rule 5: an arrival's CQE (`res`: the new index) is handed to its key's oldest waiter
/// without one, or recorded. A negative `res` carries no file (the kernel posts none such; ignored).
#[cold]
pub(crate) fn arrived(shared: &Shared, ud: u64, res: i32) {
    if res < 0 {
        return;
    }
    let Some(mut inbox) = shared.inbox() else {
        debug_assert!(false, "keel bug: the transfer inbox is borrowed during a reap");
        return;
    };
    inbox.hand(ud as u32, res as u32, false); // at most one per index of the table (rule 5)
}

/// `RingDriver::mailbox` (rule 7).
pub(crate) fn mailbox_of(d: &mut RingDriver) -> std::io::Result<Mailbox> {
    let mut inbox = d.shared.inbox().ok_or_else(|| std::io::Error::other("keel bug: the inbox is borrowed"))?;
    if let Some(m) = &inbox.mailbox {
        return Ok(m.clone());
    }
    if !d.has_file_table() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the ring has no fixed-file table, so nothing can arrive: set RingConfig::registered_files",
        ));
    }
    let dup = rustix::io::fcntl_dupfd_cloexec(d.ring_fd(), 0)?;
    let m = Mailbox::new(dup, inbox.id);
    // Cold: arrivals are at most the table's size (rule 5); room for a typical burst now.
    inbox.arrivals.reserve(64);
    inbox.waiters.reserve(16);
    inbox.mailbox = Some(m.clone());
    drop(inbox);
    d.expect_remote_wakes();
    Ok(m)
}
