//! Descriptor transfer: moving an open file into a ring's fixed-file table, back out as a
//! process descriptor, and from one executor's ring to another's, two ways as in `fs`:
//! fibers ([`FiberTransfer`]) and futures ([`register`], [`install`], [`send`],
//! [`receive`], [`close`], [`mailbox`]). Needs `RingConfig::registered_files` on every
//! ring involved.
//!
//! Each operation is a plain description ([`TransferOp`]: descriptor or index, key,
//! flags) that one function encodes as an SQE, so another driver can perform the same
//! description its own way.
//!
//! Rules (cited as "transfer rule N"):
//! 1. **Register** (`IORING_OP_FILES_UPDATE` at `IORING_FILE_INDEX_ALLOC`): the kernel
//!    takes its own reference to the open file, picks a free index and writes it into the
//!    operation's buffer. The caller's descriptor stays the caller's: it may be closed at
//!    once, the index lives on. A registration whose future went away after the kernel
//!    ran it has its index closed through the ring (`Slot::index_in_buf`, completion
//!    rule 3), so no index is stranded.
//! 2. **Install** (`IORING_OP_FIXED_FD_INSTALL`, Linux 6.8): a new process descriptor for
//!    the same open file (`O_CLOEXEC` unless asked otherwise); the index stays. The opcode
//!    is probed once per ring (`IORING_REGISTER_PROBE`); without it the call is
//!    [`TransferError::Unsupported`]. An install whose future went away has the descriptor
//!    it made closed (completion rule 3).
//! 3. **Handles.** A [`FixedFd`] owns one index of one ring's table and names that ring
//!    (it holds the ring's shared state, so it is `!Send`). Every call here checks that
//!    the handle is of the calling task's ring and hands it back with
//!    [`TransferError::WrongExecutor`] otherwise. `into_file`/`into_socket` turn it into
//!    the `fs`/`net` handles (which carry no ring and are closed explicitly).
//! 4. **Send** (`IORING_OP_MSG_RING` with `IORING_MSG_SEND_FD`, Linux 6.0): (a) the
//!    checks: the handle's ring, the target alive and not the sender's own ring, the
//!    opcode present; (b) quiesce: an `ASYNC_CANCEL` of every operation on the index
//!    (`CANCEL_FD_FIXED | CANCEL_ALL`), waited for; fiber calls borrow the handle, so none
//!    of this executor's is running when `send` takes it by value, and what a dropped
//!    future left in flight is cancelled; (c) the message: the kernel installs the file
//!    at a free index of the target's table and posts a CQE there carrying the key;
//!    (d) on delivery the sender's index is closed through the ring. A send refused
//!    before delivery (target gone, target table full, cancelled before it started)
//!    hands the handle back in [`SendError::fixed`]. The three SQEs run to their
//!    completions even in a cancelled task (each ends promptly), so the kernel never
//!    holds a half-done hand-off.
//! 5. **Arrival.** The target's CQE carries `ARRIVAL | key` and the new index. The
//!    driver records it in the ring's inbox (FIFO per key) and wakes the task waiting for
//!    that key, directly (`TaskHandle::wake`), whether the CQE is reaped by the run loop
//!    or drained by a park. A waiting receive counts as an operation in flight
//!    (`Driver::in_flight`), so while one waits the run loop reaps every pass even if the
//!    executor never parks (and `max_io_in_flight` counts it); arrivals with no receiver
//!    waiting are recorded at the next reap or park. Each recorded arrival holds an index of the table, so the
//!    inbox holds at most the table's size (room for 64 is made with the mailbox; more
//!    grows the list, cold).
//! 6. **Receive and drop.** Any number of receives may wait for one key, oldest first: an
//!    arrival is handed to the oldest waiting receive of its key that has none yet and
//!    wakes that one task (each arrival goes to exactly one receive); a new receive takes an
//!    arrival nobody was handed (there is one only when every older receive of the key has
//!    its own), else queues behind them. A receive that leaves (cancelled, dropped, timed
//!    out) with an arrival handed to it passes it to the next waiter of the key, or back to
//!    the front of the inbox. A receive may have a timeout: an `IORING_OP_TIMEOUT` beside the wait
//!    (a fiber's status block on its stack, waited out before it returns; a future's kept
//!    operation, abandoned with it), checked after the inbox, so an arrival that came
//!    before the timer's completion was seen wins; `Duration::ZERO` only looks. A receive cancelled or dropped leaves the inbox; an arrival it did
//!    not take goes to the next receive of that key, so none is lost to a cancel. A
//!    dropped [`FixedFd`] has its index closed through the ring at the driver's next
//!    reap, park or slot submission (shared rule 2); arrivals nobody takes stay in the
//!    table until the ring goes, which closes them.
//! 7. **Mailbox.** Only a ring with a fixed-file table has one (the kernel answers a send
//!    to a ring without one as to a full table, so keel refuses the mailbox instead:
//!    [`TransferError::NoTable`]). [`Mailbox`] (`Send + Sync`, cheap to clone) holds a close-on-exec
//!    duplicate of the target ring's descriptor, so the number a `MSG_RING` names is
//!    always that ring, never a reused number, and an alive flag the driver clears when
//!    it goes. A send to a gone target is [`TransferError::TargetGone`]. A send racing
//!    the target's drop may reach the ring after its driver left: the kernel installs
//!    the file there and closes it when the last duplicate goes (the sender sees success
//!    or `TargetGone`; no descriptor is leaked). The duplicate keeps the kernel's ring
//!    alive, not its files: the driver unregisters its table when it goes, so what it
//!    held is closed then, as for a ring that never made a mailbox. Making a mailbox tells the driver that
//!    another thread may end its park (an arrival), so a receiver waiting with nothing in
//!    flight is not a stall.
//! 8. Not on the hot path: each call is one to three SQEs; a mailbox is made once per
//!    ring (one `dup`); a future send duplicates the target's descriptor for the life of
//!    its message (fd rule 1 holds it until the CQE).
#![allow(unsafe_code)] // SQEs pointing at the registration's buffer; wrapping installed descriptors

mod fiber;
mod future;
mod inbox;
mod op;

pub use fiber::FiberTransfer;
pub use future::{
    Receive, adopt_file, adopt_index, adopt_socket, close, install, mailbox, receive, register, send, try_receive,
};
pub(crate) use inbox::{Inbox, arrived, clear_waiters, is_arrival};
pub use op::TransferOp;

use crate::fs::FixedFile;
use crate::net::FixedSocket;
use crate::ring::shared::Shared;
use keel_core::Errno;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// One index of one ring's fixed-file table, owned (transfer rule 3). Dropping it closes
/// the index through the ring (rule 6); [`into_file`](Self::into_file) and
/// [`into_socket`](Self::into_socket) hand the index to the `fs`/`net` handles.
#[must_use = "dropping a FixedFd closes its index"]
pub struct FixedFd {
    index: u32,
    shared: Rc<Shared>,
}

impl std::fmt::Debug for FixedFd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FixedFd").field("index", &self.index).finish_non_exhaustive()
    }
}

impl FixedFd {
    pub(crate) fn new(index: u32, shared: &Rc<Shared>) -> Self {
        FixedFd { index, shared: shared.clone() }
    }

    /// Its index in the fixed-file table.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Whether it belongs to the ring whose shared state is `shared` (rule 3).
    pub(crate) fn is_of(&self, shared: &Rc<Shared>) -> bool {
        Rc::ptr_eq(&self.shared, shared)
    }

    /// Gives the index up without closing it.
    pub(crate) fn into_index(self) -> u32 {
        let me = std::mem::ManuallyDrop::new(self);
        // SAFETY: `me` is never used or dropped again; its `Rc` is moved out once.
        drop(unsafe { std::ptr::read(&me.shared) });
        me.index
    }

    /// The index as an [`fs::FixedFile`](crate::fs::FixedFile), for the direct file
    /// operations (`read_direct`, `write_direct`, `close_direct`).
    pub fn into_file(self) -> FixedFile {
        FixedFile::from_index(self.into_index())
    }

    /// The index as a [`net::FixedSocket`](crate::net::FixedSocket), for socket operations
    /// by index (`send`, `recv`, `close_fixed_socket`).
    pub fn into_socket(self) -> FixedSocket {
        FixedSocket::from_index(self.into_index())
    }
}

impl Drop for FixedFd {
    fn drop(&mut self) {
        self.shared.close_fixed_later(self.index); // rule 6
    }
}

/// Where descriptors are sent to: one ring executor's inbox (transfer rule 7). Get it on
/// the receiving executor ([`RingDriver::mailbox`](crate::RingDriver::mailbox),
/// [`FiberTransfer::mailbox`], [`mailbox`]) and hand clones to any thread.
#[derive(Clone, Debug)]
pub struct Mailbox(pub(crate) Arc<MailboxInner>);

#[derive(Debug)]
pub(crate) struct MailboxInner {
    /// A duplicate of the target ring's descriptor (rule 7).
    pub(crate) ring: OwnedFd,
    /// Cleared when the target's driver goes. Relaxed: a hint checked before a send; the
    /// kernel's answer (and rule 7's race) decides, so nothing is published through it.
    alive: AtomicBool,
    /// The target's inbox id (a send to its own ring is refused).
    pub(crate) id: u64,
}

impl Mailbox {
    pub(crate) fn new(ring: OwnedFd, id: u64) -> Self {
        Mailbox(Arc::new(MailboxInner { ring, alive: AtomicBool::new(true), id }))
    }

    /// Whether the receiving executor's driver still lives (a hint: rule 7).
    pub fn is_alive(&self) -> bool {
        self.0.alive.load(Ordering::Relaxed)
    }

    pub(crate) fn set_gone(&self) {
        self.0.alive.store(false, Ordering::Relaxed);
    }
}

/// What went wrong with a transfer, and what to change.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransferError {
    /// This ring has no fixed-file table: set `RingConfig::registered_files`.
    NoTable,
    /// Every index of this ring's table is taken: close one, or make the table larger.
    TableFull,
    /// The index holds no file (closed already).
    BadSlot,
    /// The descriptor to register is not open.
    BadDescriptor,
    /// The handle belongs to another executor's ring: use it in a task of that executor.
    WrongExecutor,
    /// The receiving executor's driver has gone (or its thread exited).
    TargetGone,
    /// The receiving ring's table is full: it must close or take some first.
    TargetTableFull,
    /// A send to the sender's own ring: keep the handle instead.
    SameExecutor,
    /// The kernel lacks the operation (`op`, which needs `needs`).
    Unsupported {
        /// The io_uring operation.
        op: &'static str,
        /// The kernel it needs.
        needs: &'static str,
    },
    /// Not called from a task of a ring executor.
    NotOnRing,
    /// The task was cancelled before the operation could start.
    Cancelled,
    /// Nothing arrived for the key before the receive's timeout.
    TimedOut,
    /// Any other error the kernel returned.
    Os(Errno),
}

impl std::fmt::Display for TransferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransferError::NoTable => f.write_str("the ring has no fixed-file table: set RingConfig::registered_files"),
            TransferError::TableFull => {
                f.write_str("the fixed-file table is full: close an index or raise RingConfig::registered_files")
            }
            TransferError::BadSlot => f.write_str("the fixed-file index holds no file (closed already)"),
            TransferError::BadDescriptor => f.write_str("the descriptor to register is not open"),
            TransferError::WrongExecutor => f.write_str(
                "the fixed descriptor belongs to another executor's ring: use it in a task of that executor",
            ),
            TransferError::TargetGone => f.write_str("the receiving executor has gone"),
            TransferError::TargetTableFull => {
                f.write_str("the receiving ring's fixed-file table is full: it must close or take some first")
            }
            TransferError::SameExecutor => f.write_str("a send to the sender's own ring: keep the handle instead"),
            TransferError::Unsupported { op, needs } => write!(f, "this kernel lacks {op} (needs {needs})"),
            TransferError::NotOnRing => f.write_str("not in a task of a ring executor"),
            TransferError::Cancelled => f.write_str("the task was cancelled before the transfer could start"),
            TransferError::TimedOut => f.write_str("nothing arrived for the key before the timeout"),
            TransferError::Os(e) => write!(f, "the kernel refused the transfer: errno {}", e.0),
        }
    }
}

impl std::error::Error for TransferError {}

/// A refused [`send`]: why, and the handle if it is still the sender's (rule 4: refused
/// before delivery). `fixed` is `None` when the index was empty (`BadSlot`) or the
/// file was delivered without the target being told (`Os(EOVERFLOW)`: the target's CQ
/// overflowed; its index stays until its ring goes).
#[derive(Debug)]
pub struct SendError {
    /// What went wrong.
    pub error: TransferError,
    /// The handle, still owned by the sender.
    pub fixed: Option<FixedFd>,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for SendError {}

/// The ring's shared state, for a register into its fixed-file table; `NoTable` on the
/// epoll backend, which never has one (`RingConfig::registered_files` is refused there),
/// so both backends give a ring without a table the same error.
pub(crate) fn table_of(d: &crate::RingDriver) -> Result<Rc<Shared>, TransferError> {
    match d.backend() {
        crate::Backend::Epoll => Err(TransferError::NoTable),
        crate::Backend::Ring => Ok(d.shared.clone()),
    }
}

/// The typed error for a kernel result of register (rule 1).
pub(crate) fn register_error(e: Errno) -> TransferError {
    match e.0 {
        libc::ENXIO => TransferError::NoTable,
        libc::ENFILE => TransferError::TableFull,
        libc::EBADF => TransferError::BadDescriptor,
        libc::ECANCELED => TransferError::Cancelled,
        libc::EPERM => TransferError::NotOnRing,
        _ => TransferError::Os(e),
    }
}

/// The typed error for a kernel result of an operation on an index.
pub(crate) fn index_error(e: Errno) -> TransferError {
    match e {
        Errno::EBADF => TransferError::BadSlot,
        Errno::ECANCELED => TransferError::Cancelled,
        Errno::EPERM => TransferError::NotOnRing,
        e => TransferError::Os(e),
    }
}

/// A send's message result as its typed error.
pub(crate) fn send_error(e: Errno) -> TransferError {
    match e.0 {
        libc::ENFILE => TransferError::TargetTableFull,
        libc::EOWNERDEAD | libc::EBADFD => TransferError::TargetGone,
        libc::EBADF => TransferError::BadSlot,
        // The probe sees MSG_RING (5.18); descriptor passing came in 6.0, before which the
        // kernel refuses the message kind (keel's checks rule out the other causes).
        libc::EINVAL => SEND_FD,
        libc::ECANCELED => TransferError::Cancelled,
        libc::EPERM => TransferError::NotOnRing,
        _ => TransferError::Os(e),
    }
}

/// `RingDriver::mailbox`'s error as a typed one (`NoTable` for a ring without a table).
pub(crate) fn mailbox_error(e: std::io::Error) -> TransferError {
    match e.raw_os_error() {
        Some(n) => TransferError::Os(Errno(n)),
        None if e.kind() == std::io::ErrorKind::InvalidInput => TransferError::NoTable,
        None => TransferError::Os(Errno::EIO),
    }
}

/// The probed opcodes (rule 2).
pub(crate) const INSTALL: TransferError =
    TransferError::Unsupported { op: "IORING_OP_FIXED_FD_INSTALL", needs: "Linux 6.8" };
pub(crate) const SEND_FD: TransferError =
    TransferError::Unsupported { op: "IORING_OP_MSG_RING with IORING_MSG_SEND_FD", needs: "Linux 6.0" };

impl crate::RingDriver {
    /// This ring's [`Mailbox`] (transfer rule 7): made on the first call (one `dup` of the
    /// ring's descriptor), the same one after. A ring without a fixed-file table has none
    /// (`InvalidInput`: nothing could arrive). Before the executor runs, or through
    /// `Executor::with_driver`; tasks use [`FiberTransfer::mailbox`] or [`mailbox`].
    pub fn mailbox(&mut self) -> std::io::Result<Mailbox> {
        inbox::mailbox_of(self)
    }

    /// Descriptors that arrived from other rings and wait to be received (rule 5).
    pub fn arrivals_pending(&self) -> usize {
        self.shared.inbox().map_or(0, |i| i.pending())
    }

    /// Test hook: transfer calls on this ring act as on a kernel without
    /// `IORING_OP_FIXED_FD_INSTALL` and `MSG_RING` descriptor passing (rule 2's
    /// `Unsupported`).
    #[doc(hidden)]
    pub fn pretend_transfer_unsupported(&mut self) {
        if let Some(mut i) = self.shared.inbox() {
            i.pretend_unsupported = true;
        }
    }
}
