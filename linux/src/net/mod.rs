//! Socket i/o on the ring: the whole stream-socket lifecycle (socket, bind, listen,
//! accept, connect, send, recv, shutdown, close) for IPv4, IPv6 and Unix-domain sockets,
//! two ways, as in `fs`:
//!
//! - **Fibers** ([`FiberNet`], implemented for `keel_core::Fiber`): blocking-style calls
//!   with borrowed buffers (`fs::FiberFs::run_op`: a pinned `IoStatus`, waited for even
//!   when the task is cancelled).
//! - **Futures** ([`future`]): owned buffers that the driver slot keeps until the kernel
//!   is done (`slot_op::SlotOp`).
//!
//! Messages ([`FiberMsg`], `future::send_msg`, `recv_msg`, `send_to`, `recv_from`):
//! sendmsg/recvmsg for datagram sockets (UDP, Unix datagram: an address per message) and
//! for passing descriptors with `SCM_RIGHTS` over Unix sockets ([`socket_pair`]); the msg
//! rules are in `msg.rs`.
//!
//! Every call is one io_uring opcode: `IORING_OP_SOCKET`, `BIND` and `LISTEN` (kernel
//! 6.11+, io-uring crate 0.7.16 has both, so no direct syscall is needed and a direct
//! descriptor can be bound and listened on by index), `ACCEPT` (one-shot and multishot),
//! `CONNECT`, `SEND`, `SEND_ZC`, `SENDMSG`, `RECV` (plain, buffer-select, multishot), `RECVMSG`, `SHUTDOWN`,
//! `ASYNC_CANCEL`, `CLOSE`, and `URING_CMD` setsockopt for `SO_REUSEADDR`/`SO_REUSEPORT`.
//!
//! Rules (cited as "net rule N"):
//! 1. **Close cancels first.** `close(2)` does not cancel operations in flight on the ring,
//!    so keel's close submits `ASYNC_CANCEL` with the descriptor and
//!    `IORING_ASYNC_CANCEL_FD | IORING_ASYNC_CANCEL_ALL` (they complete with `ECANCELED`),
//!    waits for it, then closes, and the descriptor is closed whatever close returns (fd
//!    rule 3 in `fd.rs`: a cancelled task cancels synchronously and closes with `close(2)`).
//!    Dropping a [`Socket`] closes it with `close(2)` once no operation holds it (no cancel:
//!    operations still in flight keep it open until they complete, fd rule 1).
//! 2. **Multishot** ([`Multishot`]): accept and recv post one CQE per result while
//!    `IORING_CQE_F_MORE` is set; the driver queues them in the slot in order (completion rule 1)
//!    and wakes the task on each. When the kernel ends the op without an error (or the
//!    driver ended it to bound its queue, completion rule 2, or the buffer ring ran dry), the
//!    next call re-arms it; an error ends it for good and is returned (then again on every
//!    later call). A zero-length receive is end of stream. A task cancelled while it
//!    waits for the next result cancels the op and keeps waiting: results the kernel
//!    posted before the cancel took are returned in order, then the op's end
//!    (`ECANCELED`), so none is lost to the cancel.
//! 3. **Provided buffers**: a buffer-selecting receive returns a [`ProvidedBuf`] (id and
//!    length) that goes back to the ring when dropped. On `ENOBUFS` the task waits for a
//!    buffer to come back (pbuf rule 3, waitq rules) and tries again; it never fails for
//!    it. A receive cancelled in flight returns what the kernel received first (`slot_op.rs`).
//! 4. **Zero-copy send** from a registered buffer: the call returns the first CQE's result
//!    only after the kernel's notification (completion rule 4), so the buffer may be reused as
//!    soon as the call returns.
//! 5. **Bounded memory**: nothing here queues data. A send to a peer that does not read
//!    stays in flight (the task waits) once the socket's send buffer is full; a receive
//!    uses the caller's buffer or one provided buffer; a connection flood waits in the
//!    kernel's listen backlog until a task accepts.
//! 6. Ops whose result the driver keeps (multishot, buffer-select) submit with a wake
//!    token through the executor's admission like every other op (`Fiber::try_submit`,
//!    `keel_core::try_submit` for futures): they wait in I/O-priority order while the SQ
//!    or the slots are full or `max_io_in_flight` is reached, and count in that limit (an
//!    armed multishot counts until it ends). They own no memory of the task's, so a
//!    fiber may return with one in flight (its slot is abandoned: cancelled, results given
//!    back).
#![allow(unsafe_code)] // `Socket::from_raw_fd` is an unsafe constructor

mod addr;
mod fiber;
pub mod future;
mod msg;
mod msg_fiber;
mod msg_future;
mod multishot;
mod provided;
mod sqe;

pub use crate::flags::{AddressFamily, Protocol, Shutdown, SockOpt, SocketType, ipproto};
pub use addr::{SockAddr, local_addr};
pub use fiber::FiberNet;
pub(crate) use fiber::next_multi_until as next_multi_fiber_until;
pub use msg::{MAX_FDS, Received, ReturnFlags, socket_pair};
pub use msg_fiber::FiberMsg;
pub use multishot::Multishot;
pub(crate) use multishot::{MStep, MultiKind};
pub use provided::ProvidedBuf;
pub(crate) use provided::provided;
pub(crate) use sqe::*;

use crate::ring::RingDriver;
use io_uring::squeue;
use keel_core::{Errno, OpId};
use std::os::fd::RawFd;

/// What an operation names: a descriptor or a fixed-file index.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Sock {
    /// A descriptor in the process's table.
    Fd(RawFd),
    /// A direct descriptor (an index in the ring's fixed-file table).
    Fixed(u32),
}

mod sealed {
    /// Keeps [`AsSock`](super::AsSock) to keel's own socket types, whose operations hold
    /// the descriptor open (fd rule 1).
    pub trait Sealed {
        /// The shared descriptor a future operation holds until its completion (`None`
        /// for a fixed-file index, which only the ring closes, in order).
        fn held(&self) -> Option<&crate::fd::SharedFd>;
    }
}

/// Anything a socket operation can name: [`Socket`] and [`FixedSocket`] (sealed, so that
/// every descriptor an operation names is held open until it completes: fd rule 1).
pub trait AsSock: sealed::Sealed {
    /// The descriptor or fixed index.
    fn sock(&self) -> Sock;
}

/// A socket descriptor, shared with the future operations that name it (fd rule 1 in
/// `fd.rs`: it stays open until every one of them has completed). Close it with
/// `close_socket` (through the ring, cancelling its operations first: net rule 1);
/// dropping it closes it with `close(2)` once no operation holds it. `!Send`: it belongs
/// to the executor's thread.
#[derive(Debug)]
pub struct Socket {
    fd: crate::fd::SharedFd,
}

impl Socket {
    /// Wraps a descriptor this `Socket` will own (one allocation: the shared count). Safe
    /// code converts an [`OwnedFd`](std::os::fd::OwnedFd) instead (`Socket::from(owned)`,
    /// for example from a `std::net::TcpListener`), which proves the ownership.
    ///
    /// # Safety
    ///
    /// As for [`File::from_raw_fd`](crate::File::from_raw_fd): the caller owns `fd` (open,
    /// and nothing else closes it or wraps it as an owner, now or later); the `Socket`
    /// closes it when it and the last operation naming it are gone (fd rule 3).
    ///
    /// ```compile_fail,E0133
    /// // Rejected: wrapping a descriptor is unsafe (stdout is not ours to close).
    /// let s = keel_linux::net::Socket::from_raw_fd(1);
    /// ```
    pub unsafe fn from_raw_fd(fd: RawFd) -> Self {
        Socket { fd: crate::fd::Fd::new(fd) }
    }
    /// A descriptor the kernel just made for this crate (a socket or accept result).
    pub(crate) fn from_new(fd: RawFd) -> Self {
        Socket { fd: crate::fd::Fd::new(fd) }
    }
    /// The descriptor.
    pub fn fd(&self) -> RawFd {
        self.fd.raw()
    }
    /// Gives the descriptor up without closing it; the `Socket` comes back in `Err` while
    /// an operation still holds it (a future dropped mid-operation whose completion has
    /// not been reaped yet: run the executor, then try again; fd rule 4).
    pub fn into_raw_fd(self) -> Result<RawFd, Self> {
        crate::fd::Fd::try_into_raw(self.fd).map_err(|fd| Socket { fd })
    }
    /// [`into_raw_fd`](Self::into_raw_fd) as an [`OwnedFd`](std::os::fd::OwnedFd).
    pub fn into_owned_fd(self) -> Result<std::os::fd::OwnedFd, Self> {
        crate::fd::Fd::try_into_owned(self.fd).map_err(|fd| Socket { fd })
    }
    pub(crate) fn into_shared(self) -> crate::fd::SharedFd {
        self.fd
    }
}

impl From<std::os::fd::OwnedFd> for Socket {
    /// Takes the descriptor over (one allocation: the shared count).
    fn from(fd: std::os::fd::OwnedFd) -> Self {
        Socket { fd: crate::fd::Fd::from_owned(fd) }
    }
}

impl std::os::fd::AsRawFd for Socket {
    /// Lends the number; closing it is still the `Socket`'s (fd rule 3).
    fn as_raw_fd(&self) -> RawFd {
        self.fd.raw()
    }
}

impl std::os::fd::AsFd for Socket {
    /// Open for as long as the borrow: a live `Socket` holds the descriptor (fd rule 1),
    /// and only `close_socket`, which takes the `Socket`, closes it through the ring.
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.borrowed()
    }
}

impl sealed::Sealed for Socket {
    fn held(&self) -> Option<&crate::fd::SharedFd> {
        Some(&self.fd)
    }
}

impl AsSock for Socket {
    fn sock(&self) -> Sock {
        Sock::Fd(self.fd.raw())
    }
}

/// A socket installed in the ring's fixed-file table (needs `RingConfig::registered_files`).
/// Close it through the ring (`close_fixed_socket`); one never closed stays in the table
/// until the ring goes.
#[derive(Debug, PartialEq, Eq)]
pub struct FixedSocket {
    index: u32,
}

impl FixedSocket {
    /// Its index in the fixed-file table.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Owns index `index` of the table (`transfer::FixedFd::into_socket`).
    pub(crate) fn from_index(index: u32) -> Self {
        FixedSocket { index }
    }

    /// Names index `index` without owning anything there (for tests that probe a closed
    /// index).
    #[doc(hidden)]
    pub fn from_index_for_tests(index: u32) -> Self {
        FixedSocket { index }
    }
}

impl sealed::Sealed for FixedSocket {
    fn held(&self) -> Option<&crate::fd::SharedFd> {
        None
    }
}

impl AsSock for FixedSocket {
    fn sock(&self) -> Sock {
        Sock::Fixed(self.index)
    }
}

impl sealed::Sealed for crate::transfer::FixedFd {
    fn held(&self) -> Option<&crate::fd::SharedFd> {
        None
    }
}

/// A transferable fixed descriptor names its index, as a [`FixedSocket`] does.
impl AsSock for crate::transfer::FixedFd {
    fn sock(&self) -> Sock {
        Sock::Fixed(self.index())
    }
}
