//! Operations on descriptors epoll can wait for (sockets, pipes, eventfds, ttys...), each
//! an attempt that never blocks: it completes, or says which readiness to wait for before
//! the next attempt (io_uring's own "try non-blocking, then arm a poll" path).
//!
//! Net rules (cited as "net rule N"):
//! 1. Reads and writes use `preadv2`/`pwritev2` with `RWF_NOWAIT`; a file that refuses it
//!    (`EOPNOTSUPP`: a tty, some character devices) is polled with a zero timeout and read
//!    or written only when ready. Sends and receives add `MSG_DONTWAIT`.
//! 2. A caller's own `RWF_NOWAIT`, `MSG_DONTWAIT` or `IORING_ACCEPT_DONTWAIT` makes
//!    `EAGAIN` the result instead of a wait, as in io_uring.
//! 3. Accept makes the listening socket `O_NONBLOCK` (for good: a listener is used for
//!    accepting, and a blocking `accept4` after readiness could still block when another
//!    process takes the connection); the accepted socket gets exactly the SQE's
//!    `SOCK_NONBLOCK`/`SOCK_CLOEXEC`. Connect sets `O_NONBLOCK` on a blocking socket for
//!    the connect's duration and restores the flags when it ends (`Op::saved_fl`).
//! 4. `MSG_WAITALL` on a stream socket is retried until all bytes moved, EOF or an error
//!    (the bytes moved so far are the result if there were some), as io_uring does for
//!    SEND, RECV, SENDMSG and RECVMSG; a message's later parts go through a copy of its
//!    iovecs past the bytes moved (`msg_rest`), as io_uring's retry: a SENDMSG's with its
//!    address and no ancillary data (that went with the first part), a RECVMSG's writing
//!    the caller's `msg_namelen`, `msg_flags` and `msg_controllen` as each pass does (the
//!    last pass's values stay). A RECVMSG with an ancillary buffer (`msg_controllen`
//!    nonzero) is never retried (`Op::cmsg`): its first transfer is its result, and a
//!    short one fails no link (link rule 2), since ancillary data that came with a later
//!    part would find no buffer (io_uring 6.10 and later, and the stable kernels since:
//!    "disable partial retries for recvmsg with cmsg").
//! 5. Socket, bind, listen, shutdown and setsockopt never wait: performed at once (after
//!    the kernel's prep checks, start rule 5 in `start.rs`, refused what io_uring refuses).
//! 6. A multishot accept (`IORING_ACCEPT_MULTISHOT`, plain descriptors only) posts each
//!    accepted descriptor with `IORING_CQE_F_MORE` and goes on: at most `MULTI_BURST`
//!    accepts per readiness, then it waits again (pending: it tries again in the next
//!    pass, readiness rule 4, as more connections may wait); an error, or its cancel, ends it with a last CQE
//!    without `IORING_CQE_F_MORE`.

use super::ops::Op;
use super::perform_fs::{neg_errno, res, rw};
use super::sqe::{IORING_ACCEPT_DONTWAIT, IORING_ACCEPT_MULTISHOT, SOCKET_URING_OP_SETSOCKOPT};
use io_uring::opcode;
use std::os::fd::RawFd;

/// What an attempt came to.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Completes with this result.
    Done(i32),
    /// Waits for these epoll events on the descriptor, then tries again.
    Wait(RawFd, u32),
    /// A multishot op's result (its CQE has `IORING_CQE_F_MORE`); it goes on.
    More(i32),
}

/// Net rule 6: accepts per readiness of a multishot accept.
pub(crate) const MULTI_BURST: u32 = 16;

const IN: u32 = libc::EPOLLIN as u32;
const OUT: u32 = libc::EPOLLOUT as u32;
/// What a poll always reports (io_uring's `IO_POLL_UNMASK`).
pub(crate) const UNMASK: u32 = (libc::EPOLLERR | libc::EPOLLHUP | libc::EPOLLRDHUP) as u32 | libc::POLLNVAL as u32;

/// One attempt at op `op` (`revents`: what the descriptor reported, for a poll).
#[inline]
pub(crate) fn attempt(op: &mut Op, revents: u32) -> Step {
    match op.sqe.opcode {
        opcode::Send::CODE => send_recv(op, true),
        opcode::Recv::CODE => send_recv(op, false),
        opcode::Read::CODE | opcode::Readv::CODE => rw_nowait(op, IN),
        opcode::Write::CODE | opcode::Writev::CODE => rw_nowait(op, OUT),
        opcode::SendMsg::CODE | opcode::RecvMsg::CODE => msg(op),
        opcode::Accept::CODE => accept(op),
        opcode::Connect::CODE => connect(op),
        opcode::PollAdd::CODE => poll(op, revents),
        _ => Step::Done(-libc::EOPNOTSUPP),
    }
}

fn rw_nowait(op: &Op, events: u32) -> Step {
    let s = &op.sqe;
    let user_nowait = s.op_flags as i32 & libc::RWF_NOWAIT != 0;
    let r = rw(s, s.op_flags as i32 | libc::RWF_NOWAIT);
    match r {
        _ if r == -libc::EAGAIN && user_nowait => Step::Done(r),
        _ if r == -libc::EAGAIN => Step::Wait(s.fd, events),
        // Net rule 1: no RWF_NOWAIT on this file: poll, then a plain call.
        _ if r == -libc::EOPNOTSUPP && !user_nowait => {
            if ready_now(s.fd, events) {
                Step::Done(rw(s, s.op_flags as i32))
            } else {
                Step::Wait(s.fd, events)
            }
        }
        _ => Step::Done(r),
    }
}

/// poll(2) with a zero timeout: whether `fd` has one of `events` (or an error) now.
fn ready_now(fd: RawFd, events: u32) -> bool {
    let mut p = libc::pollfd { fd, events: events as i16, revents: 0 };
    // SAFETY: one pollfd on this frame.
    unsafe { libc::poll(&mut p, 1, 0) > 0 }
}

/// One attempt at a SEND or RECV (`send`: a SEND).
#[inline(always)]
pub(crate) fn send_recv(op: &mut Op, send: bool) -> Step {
    let (fd, addr, len, to, to_len) = (op.sqe.fd, op.sqe.addr, op.sqe.len, op.sqe.off, op.sqe.file_index & 0xffff);
    let flags = op.sqe.op_flags as i32;
    let waitall = flags & libc::MSG_WAITALL != 0 && !op.cmsg;
    loop {
        let (buf, rest) = (addr + u64::from(op.done), (len - op.done) as usize);
        let (sfd, fl) = (fd as libc::c_long, (flags | libc::MSG_DONTWAIT) as libc::c_long);
        // `sendto`/`recvfrom` through `syscall(2)`, not libc's wrappers, which are
        // cancellation points and pay for it on every call; same system call, same result.
        // SAFETY: `buf`/`rest` lie inside the SQE's buffer (done <= len), valid until the
        // CQE; a destination address is the SQE's `addr2` with its `addr_len` (null and 0
        // without one, as `send` passes them); a receive names no source address.
        let r = unsafe {
            if send {
                let to_len = if to == 0 { 0 } else { to_len as libc::c_long };
                libc::syscall(libc::SYS_sendto, sfd, buf, rest, fl, to, to_len)
            } else {
                libc::syscall(libc::SYS_recvfrom, sfd, buf, rest, fl, 0 as libc::c_long, 0 as libc::c_long)
            }
        };
        let r = res(r);
        if r > 0 && waitall && op.done + (r as u32) < len && is_stream(fd) {
            op.done += r as u32; // net rule 4: each pass moves bytes, so at most `len` passes
            continue;
        }
        let events = if send { OUT } else { IN };
        return match r {
            _ if r >= 0 => Step::Done(op.done as i32 + r),
            _ if r == -libc::EAGAIN && flags & libc::MSG_DONTWAIT == 0 => Step::Wait(fd, events),
            _ if op.done > 0 => Step::Done(op.done as i32),
            _ if r == -libc::EINTR => continue,
            _ => Step::Done(r),
        };
    }
}

fn is_stream(fd: RawFd) -> bool {
    let mut ty: libc::c_int = 0;
    let mut len = core::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `ty` and `len` are on this frame, `len` its size.
    let r = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_TYPE, (&mut ty as *mut i32).cast(), &mut len) };
    r == 0 && (ty == libc::SOCK_STREAM || ty == libc::SOCK_SEQPACKET)
}

fn msg(op: &mut Op) -> Step {
    let s = op.sqe;
    let flags = s.op_flags as i32;
    let send = s.opcode == opcode::SendMsg::CODE;
    let hdr = s.addr as *mut libc::msghdr;
    loop {
        if op.done == 0 && !send {
            // Net rule 4: the caller's ancillary buffer, read before the kernel writes back
            // what it used.
            // SAFETY: `addr` is the caller's msghdr, valid until the CQE.
            op.cmsg = unsafe { (*hdr).msg_controllen } != 0;
        }
        let r = if op.done == 0 {
            // SAFETY: `addr` is the caller's msghdr, valid (with what it names) until the CQE.
            res(unsafe {
                if send {
                    libc::sendmsg(s.fd, hdr, flags | libc::MSG_DONTWAIT)
                } else {
                    libc::recvmsg(s.fd, hdr, flags | libc::MSG_DONTWAIT)
                }
            } as i64)
        } else {
            msg_rest(s.fd, hdr, op.done, send, flags)
        };
        let waitall = flags & libc::MSG_WAITALL != 0 && !op.cmsg;
        if r > 0 && waitall && u64::from(op.done) + (r as u64) < msg_len(hdr) && is_stream(s.fd) {
            op.done += r as u32; // net rule 4: each pass moves bytes, so at most `len` passes
            continue;
        }
        return match r {
            _ if r >= 0 => Step::Done(op.done as i32 + r),
            _ if r == -libc::EAGAIN && flags & libc::MSG_DONTWAIT == 0 => Step::Wait(s.fd, if send { OUT } else { IN }),
            _ if op.done > 0 => Step::Done(op.done as i32),
            _ if r == -libc::EINTR => continue,
            _ => Step::Done(r),
        };
    }
}

/// The bytes a msghdr's iovecs hold (net rule 4's target).
pub(crate) fn msg_len(hdr: *const libc::msghdr) -> u64 {
    // SAFETY: the caller's msghdr and its iovecs, valid until the CQE (`Engine::push`).
    let (iov, n) = unsafe { ((*hdr).msg_iov, (*hdr).msg_iovlen) };
    if iov.is_null() {
        return 0;
    }
    // SAFETY: as above: `n` iovecs at `iov`.
    unsafe { core::slice::from_raw_parts(iov, n) }.iter().map(|v| v.iov_len as u64).sum()
}

/// Net rule 4: the rest of a `MSG_WAITALL` SENDMSG/RECVMSG after `done` bytes moved: the
/// caller's msghdr with its iovecs past those bytes (a copy: the caller's own are left as
/// they are, as io_uring copies them at prep), its address, and no ancillary buffer (a
/// SENDMSG's ancillary data went with the first part; a RECVMSG with an ancillary buffer
/// is never retried, and one without gets `MSG_CTRUNC` for ancillary data that comes, as
/// its first part would). A receive writes back `msg_namelen`, `msg_flags` and
/// `msg_controllen` (0) as recvmsg(2) does for each io_uring pass. Allocates the copy of
/// the iovecs, on this retry path only.
fn msg_rest(fd: RawFd, hdr: *mut libc::msghdr, done: u32, send: bool, flags: i32) -> i32 {
    // SAFETY: the caller's msghdr, valid until the CQE.
    let mut m = unsafe { *hdr };
    let iovs = if m.msg_iov.is_null() {
        &[][..]
    } else {
        // SAFETY: the msghdr's `msg_iovlen` iovecs at `msg_iov`, valid until the CQE.
        unsafe { core::slice::from_raw_parts(m.msg_iov, m.msg_iovlen) }
    };
    let mut skip = done as usize;
    let mut rest = Vec::with_capacity(iovs.len());
    for v in iovs {
        if skip >= v.iov_len {
            skip -= v.iov_len;
            continue;
        }
        rest.push(libc::iovec {
            iov_base: v.iov_base.cast::<u8>().wrapping_add(skip).cast(),
            iov_len: v.iov_len - skip,
        });
        skip = 0;
    }
    m.msg_iov = rest.as_mut_ptr();
    m.msg_iovlen = rest.len();
    (m.msg_control, m.msg_controllen) = (core::ptr::null_mut(), 0);
    m.msg_flags = 0;
    // SAFETY: `m` and `rest` are on this frame; the buffers they name (iovecs, address)
    // are the caller's, valid until the CQE.
    let r = res(unsafe {
        if send {
            libc::sendmsg(fd, &m, flags | libc::MSG_DONTWAIT)
        } else {
            libc::recvmsg(fd, &mut m, flags | libc::MSG_DONTWAIT)
        }
    } as i64);
    if !send && r >= 0 {
        // SAFETY: the caller's msghdr, as above.
        unsafe { ((*hdr).msg_namelen, (*hdr).msg_flags, (*hdr).msg_controllen) = (m.msg_namelen, m.msg_flags, 0) };
    }
    r
}

fn accept(op: &Op) -> Step {
    let s = &op.sqe;
    let flags = s.op_flags as i32;
    if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 {
        return Step::Done(-libc::EINVAL);
    }
    if let Err(e) = set_nonblock(s.fd) {
        return Step::Done(e);
    }
    // SAFETY: `addr`/`addr2` are the caller's sockaddr and length (or null), valid until
    // the CQE.
    let r =
        res(unsafe { libc::accept4(s.fd, s.addr as *mut libc::sockaddr, s.off as *mut libc::socklen_t, flags) } as i64);
    match r {
        _ if r == -libc::EAGAIN && s.ioprio & IORING_ACCEPT_DONTWAIT == 0 => Step::Wait(s.fd, IN),
        _ if r >= 0 && s.ioprio & IORING_ACCEPT_MULTISHOT != 0 => Step::More(r),
        _ => Step::Done(r),
    }
}

/// Net rule 3: makes `fd` non-blocking; the flags it had before.
fn set_nonblock(fd: RawFd) -> Result<i32, i32> {
    // SAFETY: fcntl on a descriptor number; no memory.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl < 0 {
        return Err(neg_errno());
    }
    // SAFETY: as above.
    if fl & libc::O_NONBLOCK == 0 && unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
        return Err(neg_errno());
    }
    Ok(fl)
}

/// Net rule 3: puts back the flags a connect found (`Op::saved_fl`).
pub(crate) fn restore_flags(op: &mut Op) {
    if op.saved_fl >= 0 {
        // SAFETY: fcntl on the connect's descriptor, still open until its CQE.
        unsafe { libc::fcntl(op.sqe.fd, libc::F_SETFL, op.saved_fl) };
        op.saved_fl = -1;
    }
}

fn connect(op: &mut Op) -> Step {
    let s = op.sqe;
    if op.done == 1 {
        // In progress: the socket reported writable or an error.
        let mut err: libc::c_int = 0;
        let mut len = core::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `err` and `len` are on this frame.
        let r = unsafe {
            libc::getsockopt(s.fd, libc::SOL_SOCKET, libc::SO_ERROR, (&mut err as *mut i32).cast(), &mut len)
        };
        if r < 0 {
            return Step::Done(neg_errno());
        }
        if err != 0 {
            return Step::Done(-err);
        }
    } else {
        match set_nonblock(s.fd) {
            Ok(fl) if fl & libc::O_NONBLOCK == 0 => op.saved_fl = fl,
            Ok(_) => {}
            Err(e) => return Step::Done(e),
        }
    }
    // SAFETY: the caller's sockaddr of `off` bytes, valid until the CQE.
    let r = res(unsafe { libc::connect(s.fd, s.addr as *const libc::sockaddr, s.off as libc::socklen_t) } as i64);
    match r {
        0 => Step::Done(0),
        _ if r == -libc::EISCONN && op.done == 1 => Step::Done(0),
        _ if r == -libc::EINPROGRESS || r == -libc::EALREADY || r == -libc::EAGAIN => {
            op.done = 1;
            Step::Wait(s.fd, OUT)
        }
        _ => Step::Done(r),
    }
}

fn poll(op: &Op, revents: u32) -> Step {
    let s = &op.sqe;
    let want = s.op_flags | UNMASK;
    let got = if revents != 0 {
        revents & want
    } else {
        let mut p = libc::pollfd { fd: s.fd, events: s.op_flags as i16, revents: 0 };
        // SAFETY: one pollfd on this frame.
        if unsafe { libc::poll(&mut p, 1, 0) } < 0 {
            return Step::Done(neg_errno());
        }
        p.revents as u16 as u32 & want
    };
    if got != 0 { Step::Done(got as i32) } else { Step::Wait(s.fd, s.op_flags & 0xffff) }
}

/// Net rule 5: socket, bind, listen, shutdown, setsockopt.
pub(crate) fn immediate(op: &Op) -> i32 {
    let s = &op.sqe;
    // SAFETY: (each call) addresses and option values are the SQE's, valid until the CQE.
    let r = unsafe {
        match s.opcode {
            opcode::Socket::CODE => libc::socket(s.fd, s.off as i32, s.len as i32),
            opcode::Bind::CODE => libc::bind(s.fd, s.addr as *const libc::sockaddr, s.off as libc::socklen_t),
            opcode::Listen::CODE => libc::listen(s.fd, s.len as i32),
            opcode::Shutdown::CODE => libc::shutdown(s.fd, s.len as i32),
            opcode::SetSockOpt::CODE if s.cmd_op() == SOCKET_URING_OP_SETSOCKOPT => libc::setsockopt(
                s.fd,
                s.addr as u32 as i32,
                (s.addr >> 32) as u32 as i32,
                s.addr3 as *const libc::c_void,
                s.file_index,
            ),
            _ => return -libc::EOPNOTSUPP,
        }
    };
    res(r.into())
}
