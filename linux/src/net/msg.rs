//! `sendmsg`/`recvmsg` through the ring (`IORING_OP_SENDMSG`, `IORING_OP_RECVMSG`), for
//! datagram sockets (UDP, Unix datagram: an address per message) and for passing
//! descriptors over Unix sockets (`SCM_RIGHTS`), fibers ([`FiberMsg`](super::FiberMsg))
//! and futures (`net::future::send_msg`, ...).
//!
//! Rules (cited as "msg rule N"):
//! 1. **One message header, never moved.** A [`MsgHdr`] holds the `msghdr`, its one
//!    `iovec`, the address and the control buffer; the `msghdr` points into the rest, so it
//!    is filled in place ([`MsgHdr::point`]) where it stays until the completion is reaped:
//!    a fiber's on its stack (the call waits for the completion, cancelled or not), a
//!    future's boxed in the operation's slot (`RawBuf::from_box`), so a future dropped in
//!    flight leaves it there until the kernel is done.
//! 2. **Received descriptors are owned.** recvmsg always passes `MSG_CMSG_CLOEXEC`. The
//!    kernel writes the `msghdr`'s `msg_controllen`, `msg_flags` and `msg_namelen` back
//!    when it completes; the `SCM_RIGHTS` descriptors within `msg_controllen` become
//!    `OwnedFd`s ([`MsgHdr::take_fds`], which then empties the control area). A `MsgHdr`
//!    dropped with descriptors still in it (a future dropped in flight whose completion the
//!    slot reaps, a result never taken, a fiber unwound) closes them in its `Drop`: none
//!    leaks, whichever way the receive ends.
//! 3. **Short control buffers.** With room for fewer descriptors than were sent the kernel
//!    installs those that fit, discards the rest (they were never ours) and sets
//!    `MSG_CTRUNC` ([`Received::flags`]); `max_fds == 0` asks for none (all discarded). So a
//!    receiver bounds how many descriptors it can be handed. At most `SCM_MAX_FD` (253) per
//!    message, as the kernel: more is `EINVAL` before anything is submitted.
//! 4. **Sent descriptors stay open until the completion**: the kernel reads their numbers
//!    when it runs the send, which may be after a retry, so a fiber borrows them for the
//!    call and a future takes them by value (`OwnedFd`) and hands them back with the result;
//!    one dropped in flight leaves them with the slot until the completion.
//! 5. **Cancellation** is the socket calls' (net module doc): a cancelled task's call
//!    returns the operation's own result; a message received before the cancel took is
//!    returned with its descriptors.
//!
//! The operation is described apart from the driver: a [`MsgHdr`] (the socket's `msghdr`
//! with its data, address and control) and the direction. The ring driver encodes it as one
//! SQE (`sendmsg_sqe`, `recvmsg_sqe`); a readiness driver performs the same header with
//! sendmsg(2)/recvmsg(2) (`MSG_CMSG_CLOEXEC` included) once the socket is ready, and the
//! msg rules hold as they are.
//!
//! Cold paths: each call allocates its control buffer (none when it passes no
//! descriptors), a future also its boxed header; nothing here is on the hot path.
#![allow(unsafe_code)] // msghdr pointers into the header's own fields; parsing cmsgs; owning received fds

use super::{Sock, SockAddr};
use crate::flags::{AddressFamily, SocketFlags, SocketType};
use io_uring::{opcode, squeue, types};
use keel_core::Errno;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

pub use rustix::net::ReturnFlags;

/// The most descriptors one message carries (the kernel's `SCM_MAX_FD`).
pub const MAX_FDS: usize = 253;

const HDR: usize = core::mem::size_of::<libc::cmsghdr>();

const fn align(n: usize) -> usize {
    (n + core::mem::size_of::<usize>() - 1) & !(core::mem::size_of::<usize>() - 1)
}

/// `CMSG_SPACE(4 * n)`.
const fn space(n: usize) -> usize {
    align(HDR) + align(4 * n)
}

/// What a receive got besides its bytes (msg rule 2).
#[derive(Debug)]
pub struct Received {
    /// Bytes received (`0` on a stream socket: end of stream).
    pub len: u32,
    /// The sender's address (a datagram socket's); `None` on a connected stream and for an
    /// unbound Unix sender (the kernel gives no name).
    pub from: Option<SockAddr>,
    /// The descriptors passed with `SCM_RIGHTS`, now this process's (close-on-exec).
    pub fds: Vec<OwnedFd>,
    /// `MSG_TRUNC` (a datagram longer than the buffer: the rest is gone), `MSG_CTRUNC` (more
    /// control data than room: descriptors beyond `max_fds` were discarded, msg rule 3).
    pub flags: ReturnFlags,
}

/// A `msghdr` with the memory it points at (msg rule 1).
pub(crate) struct MsgHdr {
    hdr: libc::msghdr,
    iov: libc::iovec,
    name: libc::sockaddr_storage,
    /// `cmsghdr`-aligned control bytes.
    control: Vec<usize>,
    /// A receive: the kernel may put descriptors in `control` (msg rule 2).
    receiving: bool,
}

impl MsgHdr {
    /// A header for a send of `data` to `to` (if any) passing `fds` (their numbers:
    /// msg rule 4 keeps them open), or `EINVAL` past `MAX_FDS`.
    pub(crate) fn for_send(data: (*const u8, usize), to: Option<&SockAddr>, fds: &[RawFd]) -> Result<Self, Errno> {
        if fds.len() > MAX_FDS {
            return Err(Errno::EINVAL);
        }
        let mut m = Self::empty(data.0 as *mut u8, data.1, 0, false);
        if let Some(to) = to {
            // SAFETY: both are plain old data and `to.len()` is at most the storage's size.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    to.as_ptr().cast::<u8>(),
                    (&raw mut m.name).cast::<u8>(),
                    to.len() as usize,
                )
            };
            m.hdr.msg_namelen = to.len();
        }
        if !fds.is_empty() {
            m.control = vec![0usize; space(fds.len()).div_ceil(core::mem::size_of::<usize>())];
            let c = m.control.as_mut_ptr().cast::<u8>();
            let h = libc::cmsghdr {
                cmsg_len: align(HDR) + 4 * fds.len(),
                cmsg_level: libc::SOL_SOCKET,
                cmsg_type: libc::SCM_RIGHTS,
            };
            // SAFETY: `control` has room for the header and the numbers (`space`), aligned
            // for a `cmsghdr` (usize alignment).
            unsafe {
                c.cast::<libc::cmsghdr>().write(h);
                core::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), c.add(align(HDR)), 4 * fds.len());
            }
            m.hdr.msg_controllen = space(fds.len());
        }
        Ok(m)
    }

    /// A header for a receive into `data` with room for `max_fds` descriptors, or `EINVAL`
    /// past `MAX_FDS`.
    pub(crate) fn for_recv(data: (*mut u8, usize), max_fds: usize) -> Result<Self, Errno> {
        if max_fds > MAX_FDS {
            return Err(Errno::EINVAL);
        }
        Ok(Self::empty(data.0, data.1, max_fds, true))
    }

    fn empty(base: *mut u8, len: usize, max_fds: usize, receiving: bool) -> Self {
        let control =
            if max_fds > 0 { vec![0usize; space(max_fds) / core::mem::size_of::<usize>()] } else { Vec::new() };
        let mut m = MsgHdr {
            // SAFETY: `msghdr` and `sockaddr_storage` are plain old data: all-zero is valid.
            hdr: unsafe { core::mem::zeroed() },
            iov: libc::iovec { iov_base: base.cast(), iov_len: len },
            // SAFETY: as above.
            name: unsafe { core::mem::zeroed() },
            control,
            receiving,
        };
        // `CMSG_LEN`, not `CMSG_SPACE`: the kernel fits `(controllen - header) / 4`
        // descriptors, so this offers exactly `max_fds` (msg rule 3).
        m.hdr.msg_controllen = if max_fds > 0 { align(HDR) + 4 * max_fds } else { 0 };
        m
    }

    /// Points the `msghdr` at its fields where `self` now is (msg rule 1: it must not move
    /// until the completion is reaped). A receive offers the whole address storage.
    pub(crate) fn point(&mut self) -> *mut libc::msghdr {
        self.hdr.msg_iov = &raw mut self.iov;
        self.hdr.msg_iovlen = 1;
        if self.receiving {
            self.hdr.msg_namelen = core::mem::size_of::<libc::sockaddr_storage>() as u32;
        }
        self.hdr.msg_name = if self.hdr.msg_namelen > 0 { (&raw mut self.name).cast() } else { core::ptr::null_mut() };
        self.hdr.msg_control =
            if self.control.is_empty() { core::ptr::null_mut() } else { self.control.as_mut_ptr().cast() };
        &raw mut self.hdr
    }

    /// The `SCM_RIGHTS` descriptors the kernel put in the control area (msg rule 2), owned;
    /// the area is emptied so they are taken once. Call only once the completion is reaped.
    pub(crate) fn take_fds(&mut self) -> Vec<OwnedFd> {
        let mut out = Vec::new();
        let len = self.hdr.msg_controllen.min(self.control.len() * core::mem::size_of::<usize>());
        self.hdr.msg_controllen = 0;
        if !self.receiving || len == 0 {
            return out;
        }
        let c = self.control.as_ptr().cast::<u8>();
        let mut off = 0;
        while off + HDR <= len {
            // SAFETY: `off + HDR <= len`, within `control`; read unaligned-safe.
            let h = unsafe { c.add(off).cast::<libc::cmsghdr>().read_unaligned() };
            if h.cmsg_len < HDR || off + h.cmsg_len > len {
                break; // not a header the kernel wrote (a zeroed area: nothing received)
            }
            if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS {
                let n = (h.cmsg_len - align(HDR)) / 4;
                for i in 0..n {
                    // SAFETY: within this cmsg's data (`cmsg_len` checked against `len`).
                    let fd = unsafe { c.add(off + align(HDR) + 4 * i).cast::<RawFd>().read_unaligned() };
                    if fd >= 0 {
                        // SAFETY: msg rule 2: the kernel installed it for this receive and
                        // nothing else knows it; taken once (the area is emptied above).
                        out.push(unsafe { OwnedFd::from_raw_fd(fd) });
                    }
                }
            }
            off += align(h.cmsg_len);
        }
        out
    }

    /// What the kernel wrote back: the sender's address and the message flags.
    pub(crate) fn received(&mut self, len: u32) -> Received {
        let from = (self.hdr.msg_namelen > 0 && self.receiving)
            .then(|| SockAddr::from_storage(self.name, self.hdr.msg_namelen));
        // Without the `MSG_CMSG_CLOEXEC` keel passed itself: the flags say what happened.
        let flags = ReturnFlags::from_bits_retain(self.hdr.msg_flags as u32) - ReturnFlags::CMSG_CLOEXEC;
        Received { len, from, fds: self.take_fds(), flags }
    }
}

impl Drop for MsgHdr {
    fn drop(&mut self) {
        drop(self.take_fds()); // msg rule 2: descriptors nobody took are closed
    }
}

pub(crate) fn sendmsg_sqe(s: Sock, m: *const libc::msghdr) -> squeue::Entry {
    let flags = crate::flags::SendFlags::NOSIGNAL.bits();
    match s {
        Sock::Fd(fd) => opcode::SendMsg::new(types::Fd(fd), m).flags(flags).build(),
        Sock::Fixed(i) => opcode::SendMsg::new(types::Fixed(i), m).flags(flags).build(),
    }
}

pub(crate) fn recvmsg_sqe(s: Sock, m: *mut libc::msghdr) -> squeue::Entry {
    let flags = ReturnFlags::CMSG_CLOEXEC.bits(); // msg rule 2
    match s {
        Sock::Fd(fd) => opcode::RecvMsg::new(types::Fd(fd), m).flags(flags).build(),
        Sock::Fixed(i) => opcode::RecvMsg::new(types::Fixed(i), m).flags(flags).build(),
    }
}

/// `socketpair(domain, type | SOCK_CLOEXEC, 0)`, see socketpair(2): two connected
/// sockets (Unix stream, datagram or seqpacket). A plain syscall: io_uring has no opcode
/// for it, and it does not block.
pub fn socket_pair(domain: AddressFamily, ty: SocketType) -> Result<(super::Socket, super::Socket), Errno> {
    let (a, b) =
        rustix::net::socketpair(domain, ty, SocketFlags::CLOEXEC, None).map_err(|e| Errno(e.raw_os_error()))?;
    Ok((super::Socket::from(a), super::Socket::from(b)))
}

/// The numbers of `fds`, borrowed for a send (msg rule 4).
pub(crate) fn raw_fds<F: std::os::fd::AsRawFd>(fds: &[F]) -> Vec<RawFd> {
    fds.iter().map(|f| f.as_raw_fd()).collect()
}
