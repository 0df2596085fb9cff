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

pub(crate) struct Inbox {
    /// Process-unique (Relaxed: only uniqueness matters).
    pub(crate) id: u64,
    mailbox: Option<Mailbox>,
    /// (key, index), oldest first (rule 5).
    arrivals: Vec<(u32, u32)>,
    /// (key, the task run waiting for it): at most one per key (rule 6).
    waiters: Vec<(u32, TaskHandle)>,
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

    /// Takes the oldest arrival for `key`; else, with `me`, waits for it: `waiting` says
    /// whether this caller's wait is already queued (then it is pointed at `me`, which may
    /// be another task run than the one that queued it: waitq rule 6's reasoning).
    pub(crate) fn take_or_wait(
        &mut self,
        key: u32,
        me: Option<TaskHandle>,
        waiting: bool,
    ) -> Result<Option<u32>, TransferError> {
        if let Some(i) = self.arrivals.iter().position(|a| a.0 == key) {
            let (_, index) = self.arrivals.remove(i);
            if waiting {
                self.leave(key);
            }
            return Ok(Some(index));
        }
        let Some(me) = me else { return Ok(None) };
        match self.waiters.iter_mut().find(|w| w.0 == key) {
            Some(w) if waiting => w.1 = me,
            Some(_) => return Err(TransferError::KeyBusy),
            // Not queued (first poll, or the queue was cleared by the executor's end).
            None => self.waiters.push((key, me)),
        }
        Ok(None)
    }

    /// The waiter for `key` stops waiting (rule 6); an arrival stays for the next receive.
    pub(crate) fn leave(&mut self, key: u32) {
        self.waiters.retain(|w| w.0 != key);
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

/// `Inbox::take_or_wait` on `shared`'s inbox, keeping the waiting-receiver count (rule 5).
pub(crate) fn take_or_wait(
    shared: &Shared,
    key: u32,
    me: Option<TaskHandle>,
    waiting: bool,
) -> Result<Option<u32>, TransferError> {
    let mut inbox = shared.inbox().ok_or(TransferError::NotOnRing)?;
    let r = inbox.take_or_wait(key, me, waiting);
    shared.set_receivers(inbox.waiters.len());
    r
}

/// The waiter for `key` on `shared` stops waiting (rule 6).
pub(crate) fn leave(shared: &Shared, key: u32) {
    if let Some(mut inbox) = shared.inbox() {
        inbox.leave(key);
        shared.set_receivers(inbox.waiters.len());
    }
}

/// The executor ends (`Driver::cancel_all`): no receiver waits any more, so the final
/// drain ends (its tasks are cancelled; a later poll queues again and finds no ring).
pub(crate) fn clear_waiters(shared: &Shared) {
    if let Some(mut inbox) = shared.inbox() {
        inbox.waiters.clear();
        shared.set_receivers(0);
    }
}

/// Whether `user_data` announces an arrival (rule 5).
#[inline(always)]
pub(crate) fn is_arrival(ud: u64) -> bool {
    ud & ARRIVAL == ARRIVAL && ud & (1 << 62) == 0
}

/// Rule 5: an arrival's CQE (`res`: the new index) is recorded and its key's waiter
/// woken. A negative `res` carries no file (the kernel posts none such; ignored).
#[cold]
pub(crate) fn arrived(shared: &Shared, ud: u64, res: i32) {
    if res < 0 {
        return;
    }
    let Some(mut inbox) = shared.inbox() else {
        debug_assert!(false, "keel bug: the transfer inbox is borrowed during a reap");
        return;
    };
    let key = ud as u32;
    inbox.arrivals.push((key, res as u32)); // at most one per index of the table (rule 5)
    if let Some(w) = inbox.waiters.iter().find(|w| w.0 == key) {
        w.1.wake(); // a wake for an ended run is a no-op (keel-core wake rule 2)
    }
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
