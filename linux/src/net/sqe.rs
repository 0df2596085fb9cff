//! SQE builders for every socket opcode, over a descriptor or a fixed-file index
//! ([`Sock`](super::Sock)). Builders that take pointers leave them to the caller, who keeps
//! them valid until the operation's completion is reaped (the `RingOp` constructors'
//! contracts).

use super::{Shutdown, Sock, SockAddr};
use crate::flags::{AddressFamily, Protocol, RecvFlags, SendFlags, SockOpt, SocketFlags, SocketType};
use io_uring::{opcode, squeue, types};
use keel_core::Errno;

/// `SOCK_CLOEXEC` for an accepted descriptor in the process's table; none for a direct
/// one (the kernel refuses it there).
fn cloexec(direct: bool) -> i32 {
    if direct { 0 } else { SocketFlags::CLOEXEC.bits() as i32 }
}

/// Send flags as the SQE's `msg_flags`.
fn msg(f: SendFlags) -> i32 {
    f.bits() as i32
}

/// `MSG_WAITALL` (rustix files it under receive flags; send(2) honours it on stream sockets
/// too, as `io_uring`'s send retries partial sends with it).
fn msg_waitall() -> i32 {
    RecvFlags::WAITALL.bits() as i32
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

pub(crate) fn socket_sqe(
    domain: AddressFamily,
    ty: SocketType,
    proto: Option<Protocol>,
    direct: bool,
) -> squeue::Entry {
    // No SOCK_CLOEXEC for a direct descriptor: it is not in the process's table.
    let flags = if direct { SocketFlags::empty() } else { SocketFlags::CLOEXEC };
    let proto = proto.map_or(0, |p| p.as_raw().get() as i32);
    let b = opcode::Socket::new(domain.as_raw() as i32, (ty.as_raw() | flags.bits()) as i32, proto);
    if direct { b.file_index(Some(types::DestinationSlot::auto_target())).build() } else { b.build() }
}

pub(crate) fn setsockopt_sqe(s: Sock, opt: SockOpt, val: *const i32) -> squeue::Entry {
    let (level, name, _) = opt.to_raw();
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
        .flags(cloexec(direct))
        .file_index(slot)
        .build())
}

pub(crate) fn accept_multi_sqe(s: Sock, direct: bool) -> squeue::Entry {
    on_sock!(s, |t| opcode::AcceptMulti::new(t).flags(cloexec(direct)).allocate_file_index(direct).build())
}

pub(crate) fn connect_sqe(s: Sock, addr: &SockAddr) -> squeue::Entry {
    on_sock!(s, |t| opcode::Connect::new(t, addr.as_ptr(), addr.len()).build())
}

/// A send of all `len` bytes (`MSG_WAITALL`: the kernel retries partial sends; fewer
/// only on error).
#[inline(always)]
pub(crate) fn send_all_sqe(s: Sock, buf: *const u8, len: u32) -> squeue::Entry {
    on_sock!(s, |t| opcode::Send::new(t, buf, len).flags(msg(SendFlags::NOSIGNAL) | msg_waitall()).build())
}

#[inline(always)]
pub(crate) fn send_sqe(s: Sock, buf: *const u8, len: u32) -> squeue::Entry {
    on_sock!(s, |t| opcode::Send::new(t, buf, len).flags(msg(SendFlags::NOSIGNAL)).build())
}

pub(crate) fn send_zc_fixed_sqe(s: Sock, buf: *const u8, len: u32, index: u16) -> squeue::Entry {
    on_sock!(s, |t| opcode::SendZc::new(t, buf, len).buf_index(Some(index)).flags(msg(SendFlags::NOSIGNAL)).build())
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
    on_sock!(s, |t| opcode::Shutdown::new(t, how as i32).build())
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
