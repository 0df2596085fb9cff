//! Socket i/o from a task's function, on its executor's ring: each call builds its SQE
//! and suspends the task until the operation completes (as `fs.rs`; keel-linux's
//! `FiberFs::run_op`). Descriptors are plain `int`s the C program owns; options are set
//! with `setsockopt(2)` directly.
//!
//! Thread safety of every call: only from inside the task's own function (body rule 1).
//! Errors of every call: `-ESTALE`, `-KEEL_ENOTINTASK`, `-EOPNOTSUPP` (no ring),
//! `-ECANCELED`, `-EFAULT` (a NULL pointer where one is needed), or the operation's own
//! negated errno.

use crate::fs::{neg, run};
use crate::result::{buf_len, err, guard, keel_result};
use crate::task::keel_task;
use core::ffi::{c_int, c_void};
use io_uring::{opcode, types};
use keel_linux::flags::{SocketFlags, raw};
use libc::{sockaddr, socklen_t};

/// `socket(domain, type | SOCK_CLOEXEC, protocol)` through the ring; returns the
/// descriptor (the caller's: close it with `keel_socket_close` or `close(2)`). `-EINVAL`
/// for a `type` that is no `SOCK_*` type or has a flag bit other than `SOCK_NONBLOCK` and
/// `SOCK_CLOEXEC`, a negative protocol, or a domain outside 0..=65535 (keel-linux's
/// `flags::raw` conversions), before anything is submitted.
#[unsafe(no_mangle)]
pub extern "C" fn keel_socket_open(task: keel_task, domain: c_int, kind: c_int, protocol: c_int) -> keel_result {
    guard(|| {
        let domain = raw::address_family(domain).map_err(neg)?;
        let (ty, flags) = raw::socket_type(kind).map_err(neg)?;
        let proto = raw::protocol(protocol).map_err(neg)?.map_or(0, |p| p.as_raw().get() as c_int);
        let kind = (ty.as_raw() | (flags | SocketFlags::CLOEXEC).bits()) as c_int;
        let e = opcode::Socket::new(domain.as_raw() as c_int, kind, proto).build();
        // SAFETY: the entry points at no memory.
        unsafe { run(task, e, false) }
    })
}

/// `bind(fd, addr, len)` through the ring.
///
/// # Safety
/// `addr` is NULL or `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_socket_bind(
    task: keel_task,
    fd: c_int,
    addr: *const sockaddr,
    len: socklen_t,
) -> keel_result {
    guard(|| {
        if addr.is_null() {
            return Err(err(libc::EFAULT));
        }
        let e = opcode::Bind::new(types::Fd(fd), addr, len).build();
        // SAFETY: `addr` is the caller's until `run` returns, after the completion.
        unsafe { run(task, e, false) }
    })
}

/// `listen(fd, backlog)` through the ring.
#[unsafe(no_mangle)]
pub extern "C" fn keel_socket_listen(task: keel_task, fd: c_int, backlog: c_int) -> keel_result {
    let e = opcode::Listen::new(types::Fd(fd), backlog).build();
    // SAFETY: the entry points at no memory.
    guard(|| unsafe { run(task, e, false) })
}

/// `accept4(fd, addr, len, SOCK_CLOEXEC)` through the ring; returns the new descriptor.
/// `addr` and `len` may both be NULL.
///
/// # Safety
/// `addr` is NULL or `*len` writable bytes; `len` is NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_socket_accept(
    task: keel_task,
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> keel_result {
    guard(|| {
        if addr.is_null() != len.is_null() {
            return Err(err(libc::EFAULT));
        }
        let e = opcode::Accept::new(types::Fd(fd), addr, len).flags(libc::SOCK_CLOEXEC).build();
        // SAFETY: `addr` and `len` are the caller's until `run` returns.
        unsafe { run(task, e, false) }
    })
}

/// `connect(fd, addr, len)` through the ring.
///
/// # Safety
/// `addr` is NULL or `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_socket_connect(
    task: keel_task,
    fd: c_int,
    addr: *const sockaddr,
    len: socklen_t,
) -> keel_result {
    guard(|| {
        if addr.is_null() {
            return Err(err(libc::EFAULT));
        }
        let e = opcode::Connect::new(types::Fd(fd), addr, len).build();
        // SAFETY: `addr` is the caller's until `run` returns.
        unsafe { run(task, e, false) }
    })
}

/// `send(fd, buf, len, flags)` through the ring; returns the bytes sent. `-EINVAL` for a
/// flag bit that is no `MSG_*` flag of send(2).
///
/// # Safety
/// `buf` is NULL with `len` 0, or `len` readable bytes valid until this returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_socket_send(
    task: keel_task,
    fd: c_int,
    buf: *const c_void,
    len: usize,
    flags: c_int,
) -> keel_result {
    guard(|| {
        let flags = raw::send_flags(flags).map_err(neg)?;
        let len = buf_len(buf, len)?;
        let e = opcode::Send::new(types::Fd(fd), buf.cast(), len).flags(flags.bits() as c_int).build();
        // SAFETY: `buf` is the caller's until `run` returns.
        unsafe { run(task, e, false) }
    })
}

/// `recv(fd, buf, len, flags)` through the ring; returns the bytes received (0: the
/// peer shut its side down). `-EINVAL` for a flag bit that is no `MSG_*` flag of recv(2).
///
/// # Safety
/// `buf` is NULL with `len` 0, or `len` writable bytes unused by anything else until this
/// returns.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn keel_socket_recv(
    task: keel_task,
    fd: c_int,
    buf: *mut c_void,
    len: usize,
    flags: c_int,
) -> keel_result {
    guard(|| {
        let flags = raw::recv_flags(flags).map_err(neg)?;
        let len = buf_len(buf, len)?;
        let e = opcode::Recv::new(types::Fd(fd), buf.cast(), len).flags(flags.bits() as c_int).build();
        // SAFETY: `buf` is the caller's until `run` returns.
        unsafe { run(task, e, false) }
    })
}

/// `shutdown(fd, how)` through the ring; `-EINVAL` for a `how` other than `SHUT_RD`,
/// `SHUT_WR` and `SHUT_RDWR`.
#[unsafe(no_mangle)]
pub extern "C" fn keel_socket_shutdown(task: keel_task, fd: c_int, how: c_int) -> keel_result {
    guard(|| {
        let how = raw::shutdown(how).map_err(neg)?;
        let e = opcode::Shutdown::new(types::Fd(fd), how as c_int).build();
        // SAFETY: the entry points at no memory.
        unsafe { run(task, e, false) }
    })
}

/// `close(fd)` through the ring (as `keel_file_close`).
#[unsafe(no_mangle)]
pub extern "C" fn keel_socket_close(task: keel_task, fd: c_int) -> keel_result {
    crate::fs::keel_file_close(task, fd)
}
