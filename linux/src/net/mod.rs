//! Socket i/o on the ring: the whole stream-socket lifecycle (socket, bind, listen,
//! accept, connect, send, recv, shutdown, close) for IPv4, IPv6 and Unix-domain sockets,
//! two ways, as in `fs`:
//!
//! - **Fibers** ([`FiberNet`], implemented for `keel_core::Fiber`): blocking-style calls
//!   with borrowed buffers (`fs::FiberFs::run_op`: a pinned `IoStatus`, waited for even
//!   when the task is cancelled).
//! - **Futures** ([`future`]): owned buffers that the driver slot keeps until the kernel
//!   is done (`kept::Kept`).
//!
//! Every call is one io_uring opcode: `IORING_OP_SOCKET`, `BIND` and `LISTEN` (kernel
//! 6.11+, io-uring crate 0.7.16 has both, so no direct syscall is needed and a direct
//! descriptor can be bound and listened on by index), `ACCEPT` (one-shot and multishot),
//! `CONNECT`, `SEND`, `SEND_ZC`, `RECV` (plain, buffer-select, multishot), `SHUTDOWN`,
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
//!    `IORING_CQE_F_MORE` is set; the driver queues them in the slot in order (its rule 1)
//!    and wakes the task on each. When the kernel ends the op without an error (or the
//!    driver ended it to bound its queue, driver rule 2, or the buffer ring ran dry), the
//!    next call re-arms it; an error ends it for good and is returned (then again on every
//!    later call). A zero-length receive is end of stream. A task cancelled while it
//!    waits for the next result cancels the op and keeps waiting: results the kernel
//!    posted before the cancel took are returned in order, then the op's end
//!    (`ECANCELED`), so none is lost to the cancel.
//! 3. **Provided buffers**: a buffer-selecting receive returns a [`ProvidedBuf`] (id and
//!    length) that goes back to the ring when dropped. On `ENOBUFS` the task waits for a
//!    buffer to come back (pbuf rule 3, waitq rules) and tries again; it never fails for
//!    it. A receive cancelled in flight returns what the kernel received first (`kept`).
//! 4. **Zero-copy send** from a registered buffer: the call returns the first CQE's result
//!    only after the kernel's notification (driver rule 4), so the buffer may be reused as
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
#![allow(unsafe_code)] // SQEs that point at addresses and buffers; each use says why they outlive the op

mod fiber;
pub mod future;

pub use fiber::FiberNet;

use crate::ring::RingDriver;
use crate::ring::shared::Shared;
use crate::ring::{KEEL_REARM, MultiNext, cqueue_more as more_flag};
use io_uring::{opcode, squeue, types};
use keel_core::{Errno, OpId};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::rc::Rc;

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

/// Which half of a connection to shut (shutdown(2)'s `how`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// `SHUT_RD`.
    Read,
    /// `SHUT_WR`: the peer reads end of stream.
    Write,
    /// `SHUT_RDWR`.
    Both,
}

impl Shutdown {
    fn how(self) -> i32 {
        match self {
            Shutdown::Read => libc::SHUT_RD,
            Shutdown::Write => libc::SHUT_WR,
            Shutdown::Both => libc::SHUT_RDWR,
        }
    }
}

/// A socket address in the kernel's form (`sockaddr_storage` and its length): IPv4, IPv6
/// or a Unix-domain path.
#[derive(Copy, Clone)]
pub struct SockAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl core::fmt::Debug for SockAddr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.to_std() {
            Some(a) => write!(f, "SockAddr({a})"),
            None => write!(f, "SockAddr(family {}, {} bytes)", self.family(), self.len),
        }
    }
}

impl SockAddr {
    fn zeroed() -> Self {
        // SAFETY: `sockaddr_storage` is plain old data; all-zero is a valid value.
        SockAddr { storage: unsafe { core::mem::zeroed() }, len: 0 }
    }

    /// A Unix-domain address for `path` (at most 107 bytes, no NUL).
    pub fn unix(path: &str) -> Result<Self, Errno> {
        let mut a = Self::zeroed();
        let p = path.as_bytes();
        // SAFETY: `sockaddr_un` fits in `sockaddr_storage` (that is what the storage is for).
        let un = unsafe { &mut *(&mut a.storage as *mut _ as *mut libc::sockaddr_un) };
        if p.len() >= un.sun_path.len() || p.contains(&0) {
            return Err(Errno::EINVAL);
        }
        un.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in un.sun_path.iter_mut().zip(p) {
            *d = *s as libc::c_char;
        }
        a.len = (core::mem::offset_of!(libc::sockaddr_un, sun_path) + p.len() + 1) as libc::socklen_t;
        Ok(a)
    }

    /// The address family (`AF_INET`, `AF_INET6`, `AF_UNIX`), for `socket`'s domain.
    pub fn family(&self) -> i32 {
        self.storage.ss_family as i32
    }

    /// Bytes of the address the kernel reads.
    pub fn len(&self) -> libc::socklen_t {
        self.len
    }

    /// Whether the address is empty (never for one made by keel).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn as_ptr(&self) -> *const libc::sockaddr {
        &self.storage as *const _ as *const libc::sockaddr
    }

    /// Back to a std address (IPv4 and IPv6 only).
    pub fn to_std(&self) -> Option<SocketAddr> {
        match self.family() {
            libc::AF_INET => {
                // SAFETY: the family says the storage holds a `sockaddr_in`.
                let a = unsafe { &*(self.as_ptr() as *const libc::sockaddr_in) };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says the storage holds a `sockaddr_in6`.
                let a = unsafe { &*(self.as_ptr() as *const libc::sockaddr_in6) };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

impl From<SocketAddr> for SockAddr {
    fn from(addr: SocketAddr) -> Self {
        let mut a = Self::zeroed();
        match addr {
            SocketAddr::V4(v4) => {
                // SAFETY: `sockaddr_in` fits in `sockaddr_storage`.
                let s = unsafe { &mut *(&mut a.storage as *mut _ as *mut libc::sockaddr_in) };
                s.sin_family = libc::AF_INET as libc::sa_family_t;
                s.sin_port = v4.port().to_be();
                s.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
                a.len = core::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
            SocketAddr::V6(v6) => {
                // SAFETY: `sockaddr_in6` fits in `sockaddr_storage`.
                let s = unsafe { &mut *(&mut a.storage as *mut _ as *mut libc::sockaddr_in6) };
                s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                s.sin6_port = v6.port().to_be();
                s.sin6_addr.s6_addr = v6.ip().octets();
                s.sin6_flowinfo = v6.flowinfo();
                s.sin6_scope_id = v6.scope_id();
                a.len = core::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            }
        }
        a
    }
}

/// The local address of an IPv4 or IPv6 socket (getsockname(2) through rustix: cold, and
/// io_uring has no opcode for it). For finding the port the kernel chose for port 0.
/// Unix-domain sockets give `EAFNOSUPPORT`: their address is the path they were bound to.
pub fn local_addr(s: &Socket) -> Result<SockAddr, Errno> {
    // SAFETY: the socket's descriptor is open for as long as `s` is borrowed.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(s.fd()) };
    let any = rustix::net::getsockname(fd).map_err(|e| Errno(e.raw_os_error()))?;
    SocketAddr::try_from(any).map(SockAddr::from).map_err(|_| Errno(libc::EAFNOSUPPORT))
}

macro_rules! on_sock {
    ($s:expr, |$t:ident| $e:expr) => {
        match $s {
            Sock::Fd(fd) => {
                let $t = types::Fd(fd);
                $e
            }
            Sock::Fixed(i) => {
                let $t = types::Fixed(i);
                $e
            }
        }
    };
}

// ---- SQE builders (pointers: the caller keeps them valid until completion) ----

pub(crate) fn socket_sqe(domain: i32, ty: i32, proto: i32, direct: bool) -> squeue::Entry {
    let b = opcode::Socket::new(domain, ty | if direct { 0 } else { libc::SOCK_CLOEXEC }, proto);
    if direct { b.file_index(Some(types::DestinationSlot::auto_target())).build() } else { b.build() }
}

pub(crate) fn setsockopt_sqe(s: Sock, level: i32, name: i32, val: *const i32) -> squeue::Entry {
    on_sock!(s, |t| opcode::SetSockOpt::new(t, level as u32, name as u32, val.cast(), 4).build())
}

pub(crate) fn bind_sqe(s: Sock, addr: &SockAddr) -> squeue::Entry {
    on_sock!(s, |t| opcode::Bind::new(t, addr.as_ptr(), addr.len()).build())
}

pub(crate) fn listen_sqe(s: Sock, backlog: i32) -> squeue::Entry {
    on_sock!(s, |t| opcode::Listen::new(t, backlog).build())
}

pub(crate) fn accept_sqe(s: Sock, direct: bool) -> squeue::Entry {
    let slot = direct.then(types::DestinationSlot::auto_target);
    on_sock!(s, |t| opcode::Accept::new(t, core::ptr::null_mut(), core::ptr::null_mut())
        .flags(if direct { 0 } else { libc::SOCK_CLOEXEC })
        .file_index(slot)
        .build())
}

pub(crate) fn accept_multi_sqe(s: Sock, direct: bool) -> squeue::Entry {
    on_sock!(s, |t| opcode::AcceptMulti::new(t)
        .flags(if direct { 0 } else { libc::SOCK_CLOEXEC })
        .allocate_file_index(direct)
        .build())
}

pub(crate) fn connect_sqe(s: Sock, addr: &SockAddr) -> squeue::Entry {
    on_sock!(s, |t| opcode::Connect::new(t, addr.as_ptr(), addr.len()).build())
}

/// A send of all `len` bytes (`MSG_WAITALL`: the kernel retries partial sends; fewer
/// only on error).
#[inline(always)]
pub(crate) fn send_all_sqe(s: Sock, buf: *const u8, len: u32) -> squeue::Entry {
    on_sock!(s, |t| opcode::Send::new(t, buf, len).flags(libc::MSG_NOSIGNAL | libc::MSG_WAITALL).build())
}

#[inline(always)]
pub(crate) fn send_sqe(s: Sock, buf: *const u8, len: u32) -> squeue::Entry {
    on_sock!(s, |t| opcode::Send::new(t, buf, len).flags(libc::MSG_NOSIGNAL).build())
}

pub(crate) fn send_zc_fixed_sqe(s: Sock, buf: *const u8, len: u32, index: u16) -> squeue::Entry {
    on_sock!(s, |t| opcode::SendZc::new(t, buf, len).buf_index(Some(index)).flags(libc::MSG_NOSIGNAL).build())
}

#[inline(always)]
pub(crate) fn recv_sqe(s: Sock, buf: *mut u8, len: u32) -> squeue::Entry {
    on_sock!(s, |t| opcode::Recv::new(t, buf, len).build())
}

pub(crate) fn recv_select_sqe(s: Sock, bgid: u16) -> squeue::Entry {
    on_sock!(s, |t| opcode::Recv::new(t, core::ptr::null_mut(), 0)
        .buf_group(bgid)
        .build()
        .flags(squeue::Flags::BUFFER_SELECT))
}

pub(crate) fn recv_multi_sqe(s: Sock, bgid: u16) -> squeue::Entry {
    on_sock!(s, |t| opcode::RecvMulti::new(t, bgid).build())
}

pub(crate) fn shutdown_sqe(s: Sock, how: Shutdown) -> squeue::Entry {
    on_sock!(s, |t| opcode::Shutdown::new(t, how.how()).build())
}

/// Net rule 1: cancel every operation on the descriptor.
pub(crate) fn cancel_fd_sqe(s: Sock) -> squeue::Entry {
    on_sock!(s, |t| opcode::AsyncCancel2::new(types::CancelBuilder::fd(t).all()).build())
}

pub(crate) fn close_sqe(s: Sock) -> squeue::Entry {
    on_sock!(s, |t| opcode::Close::new(t).build())
}

/// Treats "nothing to cancel" and a count of cancelled operations alike.
pub(crate) fn cancel_ok(r: Result<u32, Errno>) -> Result<(), Errno> {
    match r {
        Ok(_) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

// ---- provided buffers ----

/// A buffer the kernel picked from the provided-buffer ring for a receive: `len` bytes of
/// data in buffer `id`. Dropping it gives it back to the ring (pbuf rule 2). It may be
/// kept and dropped at any time, after its executor and driver too (shared rule 3: it
/// holds the ring's memory, and its bytes never change while it lives); `!Send`.
pub struct ProvidedBuf {
    shared: Rc<Shared>,
    ptr: *const u8,
    id: u16,
    len: u32,
}

impl core::fmt::Debug for ProvidedBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ProvidedBuf").field("id", &self.id).field("len", &self.len).finish()
    }
}

impl ProvidedBuf {
    /// The buffer's id in the ring.
    pub fn id(&self) -> u16 {
        self.id
    }
    /// Bytes received.
    pub fn len(&self) -> usize {
        self.len as usize
    }
    /// Whether nothing was received.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl core::ops::Deref for ProvidedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the kernel wrote `len` bytes at `ptr` (the buffer's start) and handed the
        // buffer to us; it is not in the ring again until we give it back (pbuf rule 2),
        // and `shared` keeps the memory alive (shared rule 3).
        unsafe { core::slice::from_raw_parts(self.ptr, self.len as usize) }
    }
}

impl Drop for ProvidedBuf {
    fn drop(&mut self) {
        self.shared.give_back(self.id); // shared rule 3
    }
}

/// Turns a buffer-selecting receive's result into a buffer (`None`: end of stream, or a
/// result with no buffer).
pub(crate) fn provided(d: &mut RingDriver, res: i32, flags: u32) -> Option<ProvidedBuf> {
    let id = io_uring::cqueue::buffer_select(flags)?;
    let mut p = d.pbuf()?;
    if res <= 0 {
        // No data, but a buffer was picked: give it back (not expected from the kernel).
        p.give_back(id);
        return None;
    }
    let ptr = p.ptr(id);
    drop(p);
    Some(ProvidedBuf { shared: d.shared.clone(), ptr, id, len: res as u32 })
}

// ---- multishot ----

/// What the multishot op is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum MultiKind {
    Accept,
    AcceptDirect,
    Recv,
}

/// A multishot accept or receive (net rule 2): made by `accept_multi`/`recv_multi`; each
/// `next` returns one result in order. Dropping it cancels the operation; results nobody
/// took are given back (descriptors closed, buffers returned). It holds its socket open
/// while it lives (fd rule 1): `close_socket` cancels it, and the descriptor closes when
/// the `Multishot` goes. It may be dropped anywhere on its thread, after its executor too
/// (shared rule 2).
pub struct Multishot {
    entry: squeue::Entry,
    kind: MultiKind,
    id: Option<OpId>,
    /// The driver's shared state while armed (shared rule 2).
    shared: Option<Rc<Shared>>,
    /// The socket, held open while this lives (fd rule 1).
    fd: Option<crate::fd::SharedFd>,
    /// Ended for good: `Errno(0)` is end of stream.
    done: Option<Errno>,
}

impl core::fmt::Debug for Multishot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Multishot")
            .field("kind", &self.kind)
            .field("armed", &self.id.is_some())
            .field("done", &self.done)
            .finish()
    }
}

/// One step of a multishot op, for the fiber and future wrappers.
pub(crate) enum MStep {
    /// A result (a descriptor/index for accept; bytes, with a buffer, for recv).
    Item(i32, u32),
    /// Ended for good.
    Done(Errno),
    /// Nothing yet: wait for a completion.
    Pending,
    /// Not armed: submit `entry` (again).
    Submit,
    /// The buffer ring is empty: wait for a buffer to come back, then submit.
    WaitBuffer,
}

impl Multishot {
    pub(crate) fn new(s: &impl AsSock, entry: squeue::Entry, kind: MultiKind) -> Self {
        Multishot { entry, kind, id: None, shared: None, fd: s.held().cloned(), done: None }
    }

    pub(crate) fn armed(&mut self, id: OpId, shared: Option<Rc<Shared>>) {
        self.id = Some(id);
        self.shared = shared;
    }

    pub(crate) fn op(&self) -> crate::ring::RingOp {
        // SAFETY: multishot accept passes no address; multishot recv selects provided
        // buffers: no memory of ours is referenced.
        unsafe { crate::ring::RingOp::multishot(self.entry.clone()) }
    }

    /// The socket the op names, for its slot to hold at each arming (fd rule 1).
    pub(crate) fn fd(&self) -> Option<&crate::fd::SharedFd> {
        self.fd.as_ref()
    }

    pub(crate) fn kind(&self) -> MultiKind {
        self.kind
    }

    /// Asks the driver to cancel the armed op; its results still arrive in order, the
    /// last one ending it (for a task cancelled while it waits: nothing is lost).
    pub(crate) fn cancel(&self, d: &mut RingDriver) {
        if let Some(id) = self.id {
            keel_core::Driver::cancel(d, id);
        }
    }

    /// Takes the next result from the driver (net rule 2). `me`: the task taking it, whose
    /// wake the op's next CQE is for (wake-token rule 3 in the `ring` module doc: the
    /// `Multishot` may have moved to another task, or a later run).
    pub(crate) fn step(&mut self, d: &mut RingDriver, me: Option<keel_core::TaskHandle>) -> MStep {
        if let Some(e) = self.done {
            return MStep::Done(e);
        }
        let Some(id) = self.id else { return MStep::Submit };
        if !self.shared.as_ref().is_some_and(|s| Rc::ptr_eq(s, &d.shared)) {
            return MStep::Done(Errno(libc::EXDEV)); // armed on another executor's driver
        }
        let (res, flags) = match d.take_multi(id) {
            MultiNext::Pending => {
                if let Some(me) = me {
                    d.rewake(id, me);
                }
                return MStep::Pending;
            }
            MultiNext::Gone => {
                self.id = None;
                self.done = Some(Errno::EIO);
                return MStep::Done(Errno::EIO);
            }
            MultiNext::Item(r, f) => (r, f),
        };
        let ended = flags & more_flag() == 0;
        if ended {
            self.id = None;
            if flags & KEEL_REARM != 0 {
                return MStep::Submit;
            }
        }
        if res == -libc::ENOBUFS {
            let mut p = d.pbuf().expect("ENOBUFS without a provided-buffer ring");
            p.note_exhausted();
            return if p.available() > 0 { MStep::Submit } else { MStep::WaitBuffer };
        }
        if res < 0 {
            if ended {
                self.done = Some(Errno(-res));
            }
            return MStep::Done(Errno(-res));
        }
        if self.kind == MultiKind::Recv && res == 0 {
            self.done = Some(Errno(0));
            if let Some(bid) = io_uring::cqueue::buffer_select(flags)
                && let Some(mut p) = d.pbuf()
            {
                p.give_back(bid);
            }
            return MStep::Done(Errno(0));
        }
        MStep::Item(res, flags)
    }
}

impl Drop for Multishot {
    fn drop(&mut self) {
        if let (Some(id), Some(shared)) = (self.id, &self.shared) {
            shared.abandon(id); // shared rule 2; a no-op once the driver is gone
        }
    }
}
