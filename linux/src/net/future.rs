//! Socket calls for future tasks: buffers (and addresses) passed by ownership, kept by
//! the driver slot until the kernel is done with them (see the `net` and `fs` module
//! docs). Dropping a future mid-operation cancels it and leaves its memory with the slot.
#![allow(unsafe_code)] // SQEs point into owned buffers the slot keeps

use super::*;
use crate::buf::RawBuf;
use crate::fd::SharedFd;
use crate::fs::OwnedOp;
use crate::ring::RingOp;
use crate::slot_op::SlotOp;
use keel_core::io_status::NotSubmitted;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

mod exchange;
pub use super::msg_future::{recv_from, recv_msg, send_msg, send_to};
pub use exchange::{send_then_recv, send_zc_fixed};

/// An SQE that references no memory, holding `fd` (if any) until it completes (fd rule 1).
async fn plain(fd: Option<&SharedFd>, e: squeue::Entry) -> Result<u32, Errno> {
    // SAFETY: callers pass SQEs that reference no memory.
    OwnedOp::new(unsafe { RingOp::owned(e, None) }).holding(fd).await.0
}

/// An address copied into an owned buffer, and the SQE pointing into it.
async fn with_addr(
    fd: Option<&SharedFd>,
    addr: &SockAddr,
    make: impl FnOnce(&SockAddr) -> squeue::Entry,
) -> Result<u32, Errno> {
    // SAFETY: `SockAddr` is plain old data.
    let bytes =
        unsafe { core::slice::from_raw_parts(addr as *const SockAddr as *const u8, core::mem::size_of::<SockAddr>()) };
    let mut v: Vec<u8> = Vec::with_capacity(bytes.len() + 8);
    let pad = v.as_ptr().align_offset(core::mem::align_of::<SockAddr>());
    v.resize(pad, 0);
    v.extend_from_slice(bytes);
    let raw = RawBuf::from_vec(v);
    // SAFETY: aligned above; the bytes are a valid `SockAddr` copied from one.
    let e = make(unsafe { &*(raw.ptr().add(pad) as *const SockAddr) });
    // SAFETY: the SQE references only `raw`, which the slot keeps until completion.
    OwnedOp::new(unsafe { RingOp::owned(e, Some(raw)) }).holding(fd).await.0
}

/// `socket(domain, type | SOCK_CLOEXEC, protocol)` through `IORING_OP_SOCKET`.
pub async fn socket(domain: AddressFamily, ty: SocketType, protocol: Option<Protocol>) -> Result<Socket, Errno> {
    plain(None, socket_sqe(domain, ty, protocol, false)).await.map(|fd| Socket::from_new(fd as RawFd))
}

/// `socket(...)` straight into the fixed-file table.
pub async fn socket_direct(
    domain: AddressFamily,
    ty: SocketType,
    protocol: Option<Protocol>,
) -> Result<FixedSocket, Errno> {
    plain(None, socket_sqe(domain, ty, protocol, true)).await.map(|index| FixedSocket { index })
}

/// `setsockopt(fd, level, name, &value, 4)` of an int option (`SockOpt`).
pub async fn set_option(s: &impl AsSock, opt: SockOpt) -> Result<(), Errno> {
    let raw = RawBuf::from_vec(opt.to_raw().2.to_ne_bytes().to_vec());
    let e = setsockopt_sqe(s.sock(), opt, raw.ptr() as *const i32);
    // SAFETY: the SQE references only `raw` (4 bytes; read unaligned-safe by the kernel's
    // copy_from_user), kept by the slot until completion.
    OwnedOp::new(unsafe { RingOp::owned(e, Some(raw)) }).holding(s.held()).await.0.map(drop)
}

/// `bind(fd, addr, len)` (`IORING_OP_BIND`).
pub async fn bind(s: &impl AsSock, addr: &SockAddr) -> Result<(), Errno> {
    let sock = s.sock();
    with_addr(s.held(), addr, |a| bind_sqe(sock, a)).await.map(drop)
}

/// `listen(fd, backlog)` (`IORING_OP_LISTEN`).
pub async fn listen(s: &impl AsSock, backlog: i32) -> Result<(), Errno> {
    plain(s.held(), listen_sqe(s.sock(), backlog)).await.map(drop)
}

/// `accept4(fd, NULL, NULL, SOCK_CLOEXEC)`. A descriptor accepted after the future was
/// dropped is closed (completion rule 3).
pub async fn accept(s: &impl AsSock) -> Result<Socket, Errno> {
    plain(s.held(), accept_sqe(s.sock(), false)).await.map(|fd| Socket::from_new(fd as RawFd))
}

/// `accept` into the fixed-file table. An index installed after the future was dropped
/// is closed through the ring (completion rule 3).
pub async fn accept_direct(s: &impl AsSock) -> Result<FixedSocket, Errno> {
    plain(s.held(), accept_sqe(s.sock(), true)).await.map(|index| FixedSocket { index })
}

/// Multishot accept (net rule 2); take connections with [`next_accept`].
pub fn accept_multi(s: &impl AsSock) -> Multishot {
    Multishot::new(s, accept_multi_sqe(s.sock(), false), MultiKind::Accept)
}

/// The next connection of a multishot accept.
pub async fn next_accept(m: &mut Multishot) -> Result<Socket, Errno> {
    if m.kind() != MultiKind::Accept {
        return Err(Errno::EINVAL);
    }
    next_multi(m).await.map(|(fd, _)| Socket::from_new(fd))
}

/// Multishot accept into the fixed-file table (net rule 2); take them with
/// [`next_accept_direct`]. Indexes queued when it is dropped are closed through the ring
/// (completion rule 3).
pub fn accept_multi_direct(s: &impl AsSock) -> Multishot {
    Multishot::new(s, accept_multi_sqe(s.sock(), true), MultiKind::AcceptDirect)
}

/// The next connection of a direct multishot accept.
pub async fn next_accept_direct(m: &mut Multishot) -> Result<FixedSocket, Errno> {
    if m.kind() != MultiKind::AcceptDirect {
        return Err(Errno::EINVAL);
    }
    next_multi(m).await.map(|(i, _)| FixedSocket { index: i as u32 })
}

/// `connect(fd, addr, len)`.
pub async fn connect(s: &impl AsSock, addr: &SockAddr) -> Result<(), Errno> {
    let sock = s.sock();
    with_addr(s.held(), addr, |a| connect_sqe(sock, a)).await.map(drop)
}

/// `send(fd, buf, len, MSG_NOSIGNAL)`; the buffer comes back unchanged.
pub async fn send(s: &impl AsSock, buf: Vec<u8>) -> (Result<u32, Errno>, Vec<u8>) {
    let raw = RawBuf::from_vec(buf);
    let e = send_sqe(s.sock(), raw.ptr(), raw.len().min(u32::MAX as usize) as u32);
    // SAFETY: the SQE references only `raw`, kept by the slot until completion.
    let (res, raw) = OwnedOp::new(unsafe { RingOp::owned(e, Some(raw)) }).holding(s.held()).await;
    let len = raw.as_ref().map(|r| r.len()).unwrap_or(0);
    (res, raw.map(|r| r.into_vec(len)).unwrap_or_default())
}

/// `send` until all of `buf` has gone; the buffer comes back.
pub async fn send_all(s: &impl AsSock, buf: Vec<u8>) -> (Result<(), Errno>, Vec<u8>) {
    let mut off = 0;
    let mut buf = buf;
    while off < buf.len() {
        let raw = RawBuf::from_vec(buf);
        // SAFETY: `off < len`, inside the buffer.
        let p = unsafe { raw.ptr().add(off) };
        let e = send_sqe(s.sock(), p, (raw.len() - off).min(u32::MAX as usize) as u32);
        // SAFETY: the SQE references only `raw`, kept by the slot until completion.
        let (res, raw) = OwnedOp::new(unsafe { RingOp::owned(e, Some(raw)) }).holding(s.held()).await;
        let len = raw.as_ref().map(|r| r.len()).unwrap_or(0);
        buf = raw.map(|r| r.into_vec(len)).unwrap_or_default();
        match res {
            Ok(k) => off += k as usize,
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(()), buf)
}

/// `recv(fd, buf, capacity, 0)`: the buffer comes back with its length set to what was
/// received; `Ok(0)` is end of stream.
pub async fn recv(s: &impl AsSock, buf: Vec<u8>) -> (Result<u32, Errno>, Vec<u8>) {
    let raw = RawBuf::from_vec(buf);
    let e = recv_sqe(s.sock(), raw.ptr(), raw.capacity().min(u32::MAX as usize) as u32);
    // SAFETY: the SQE references only `raw`, kept by the slot until completion.
    let (res, raw) = OwnedOp::new(unsafe { RingOp::owned(e, Some(raw)) }).holding(s.held()).await;
    let len = *res.as_ref().unwrap_or(&0) as usize;
    (res, raw.map(|r| r.into_vec(len)).unwrap_or_default())
}

/// Waits for a buffer to come back to the provided-buffer ring (pbuf rule 3).
fn wait_buffer() -> WaitBuffer {
    WaitBuffer { ticket: None, shared: None }
}

/// The future of [`wait_buffer`]: its wait is a ticket in the buffer ring's queue; every
/// way out of it (ready, cancelled, dropped) goes through the queue (waitq rule 3).
struct WaitBuffer {
    ticket: Option<crate::waitq::Ticket>,
    /// The driver's shared state while queued (shared rule 3: the ring lives there).
    shared: Option<std::rc::Rc<crate::ring::shared::Shared>>,
}

impl Future for WaitBuffer {
    type Output = Result<(), Errno>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Errno>> {
        let tcx = keel_core::TaskCx::of(cx);
        let cancelled = tcx.is_some_and(|tcx| tcx.is_cancelled());
        if let Some(t) = self.ticket {
            let r = tcx.and_then(|tcx| {
                tcx.with_driver::<RingDriver, _>(|d| {
                    let mut p = d.pbuf()?;
                    if cancelled {
                        p.leave(t); // a turn handed to it goes on
                        return Some(Err(Errno::ECANCELED));
                    }
                    Some(Ok(p.has_turn(t, Some(tcx.task()))))
                })
            });
            return match r.flatten() {
                Some(Ok(false)) => Poll::Pending, // a spurious wake: keep the place (waitq rule 2)
                Some(r) => {
                    self.ticket = None;
                    Poll::Ready(r.map(drop))
                }
                None => Poll::Ready(Err(Errno::EINVAL)), // Drop leaves the queue
            };
        }
        if cancelled {
            return Poll::Ready(Err(Errno::ECANCELED));
        }
        let Some(tcx) = tcx else { return Poll::Ready(Err(Errno::EPERM)) };
        let me = tcx.task();
        // `None`: a buffer is there (or the queue is full): re-arm at once.
        let r = tcx
            .with_driver::<RingDriver, _>(|d| d.pbuf().map(|mut p| if p.available() > 0 { None } else { p.wait(me) }));
        match r.flatten() {
            Some(None) => Poll::Ready(Ok(())),
            Some(Some(t)) => {
                self.ticket = Some(t);
                self.shared = tcx.with_driver::<RingDriver, _>(|d| d.shared.clone());
                Poll::Pending
            }
            None => Poll::Ready(Err(Errno::EINVAL)),
        }
    }
}

impl Drop for WaitBuffer {
    fn drop(&mut self) {
        if let (Some(t), Some(shared)) = (self.ticket, &self.shared) {
            shared.leave_pbuf_queue(t); // shared rule 3; a no-op once the driver is gone
        }
    }
}

async fn bgid() -> Result<u16, Errno> {
    core::future::poll_fn(|cx| {
        Poll::Ready(
            keel_core::io_status::with_driver::<RingDriver, _>(cx, |d| d.pbuf().map(|p| p.bgid()))
                .flatten()
                .ok_or(Errno::ENOBUFS),
        )
    })
    .await
}

async fn with_ring<R>(f: impl FnOnce(&mut RingDriver) -> R) -> Option<R> {
    let mut f = Some(f);
    core::future::poll_fn(|cx| {
        Poll::Ready(keel_core::io_status::with_driver::<RingDriver, _>(cx, |d| {
            // SAFETY: keel-core driver rule 2: this crate's own state in the driver (and at most
            // a cancel of an op it keeps itself); not replaced, no other code runs meanwhile.
            let d = unsafe { d.get_mut() };
            (f.take().expect("polled once"))(d)
        }))
    })
    .await
}

/// `recv` into a buffer the kernel picks from the provided-buffer ring (net rule 3);
/// `Ok(None)` is end of stream.
pub async fn recv_provided(s: &impl AsSock) -> Result<Option<ProvidedBuf>, Errno> {
    let group = bgid().await?;
    loop {
        // SAFETY: a buffer-select receive references no memory of ours.
        let op = unsafe { RingOp::owned(recv_select_sqe(s.sock(), group), None) };
        let (res, flags, _) = SlotOp::new(op).holding(s.held()).await;
        if res == -Errno::ENOBUFS.0 {
            with_ring(|d| d.pbuf().map(|mut p| p.note_exhausted())).await;
            wait_buffer().await?;
            continue;
        }
        if res < 0 {
            return Err(Errno(-res));
        }
        return Ok(with_ring(|d| provided(d, res, flags)).await.flatten());
    }
}

/// Multishot receive into provided buffers; take data with [`next_recv`].
pub async fn recv_multi(s: &impl AsSock) -> Result<Multishot, Errno> {
    let group = bgid().await?;
    Ok(Multishot::new(s, recv_multi_sqe(s.sock(), group), MultiKind::Recv))
}

/// The next buffer of a multishot receive; `Ok(None)` is end of stream.
pub async fn next_recv(m: &mut Multishot) -> Result<Option<ProvidedBuf>, Errno> {
    if m.kind() != MultiKind::Recv {
        return Err(Errno::EINVAL);
    }
    match next_multi(m).await {
        Ok((res, flags)) => Ok(with_ring(|d| provided(d, res, flags)).await.flatten()),
        Err(Errno(0)) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) async fn next_multi(m: &mut Multishot) -> Result<(i32, u32), Errno> {
    let mut cancel_sent = false;
    loop {
        let step = core::future::poll_fn(|cx| {
            let Some(tcx) = keel_core::TaskCx::of(cx) else { return Poll::Ready(None) };
            let me = Some(tcx.task());
            Poll::Ready(tcx.with_driver::<RingDriver, _>(|d| {
                // SAFETY: keel-core driver rule 2: this crate's own state in the driver
                // (and at most a cancel of an op it keeps itself); not replaced, no other
                // code runs meanwhile.
                m.step(unsafe { d.get_mut() }, me)
            }))
        })
        .await
        .ok_or(Errno::EINVAL)?;
        match step {
            MStep::Item(r, f) => return Ok((r, f)),
            MStep::Done(e) => return Err(e),
            MStep::Submit => submit_multi(m).await?,
            MStep::WaitBuffer => wait_buffer().await?,
            MStep::Pending => {
                // Cancelled: cancel the op once and wait on for what the kernel posted
                // first, then its end (as the fiber form does), so no result is lost.
                let mut first = true;
                core::future::poll_fn(|cx| {
                    if first {
                        first = false;
                        let tcx = keel_core::TaskCx::of(cx);
                        if !cancel_sent && tcx.is_some_and(|tcx| tcx.is_cancelled()) {
                            tcx.and_then(|tcx| {
                                tcx.with_driver::<RingDriver, _>(|d| {
                                    // SAFETY: keel-core driver rule 2: this crate's own state
                                    // in the driver (and at most a cancel of an op it keeps
                                    // itself); not replaced, no other code runs meanwhile.
                                    let d = unsafe { d.get_mut() };
                                    m.cancel(d)
                                })
                            });
                            cancel_sent = true;
                        }
                        if let Some(tcx) = tcx {
                            tcx.waiting_for_io();
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(())
                })
                .await;
            }
        }
    }
}

async fn submit_multi(m: &mut Multishot) -> Result<(), Errno> {
    let mut op = Some(m.op());
    core::future::poll_fn(|cx| {
        let Some(tcx) = keel_core::TaskCx::of(cx) else { return Poll::Ready(Err(Errno::EPERM)) };
        match tcx.try_submit::<RingDriver>(op.take().expect("submitted once"), true) {
            Ok(id) => {
                let fd = m.fd().cloned();
                let shared = tcx.with_driver::<RingDriver, _>(|d| {
                    // SAFETY: keel-core driver rule 2: this crate's own state in the driver
                    // (and at most a cancel of an op it keeps itself); not replaced, no other
                    // code runs meanwhile.
                    let d = unsafe { d.get_mut() };
                    if let Some(fd) = fd {
                        d.hold_fd(id, fd, false); // fd rule 1, in the poll that submitted it
                    }
                    d.shared.clone()
                });
                m.armed(id, shared);
                Poll::Ready(Ok(()))
            }
            Err(NotSubmitted::Wait(back)) => {
                op = Some(back);
                Poll::Pending
            }
            Err(NotSubmitted::Failed(_, e)) => Poll::Ready(Err(e)),
        }
    })
    .await
}

/// `shutdown(fd, how)`.
pub async fn shutdown(s: &impl AsSock, how: Shutdown) -> Result<(), Errno> {
    plain(s.held(), shutdown_sqe(s.sock(), how)).await.map(drop)
}

/// Cancels the socket's operations in flight, then `close(fd)` (net rule 1, fd rule 3):
/// the descriptor is closed whatever this returns (see `fs::close`).
pub async fn close_socket(s: Socket) -> Result<(), Errno> {
    crate::fs::close_shared(s.into_shared()).await
}

/// Cancels the direct socket's operations in flight, then closes it through the ring; in a
/// cancelled task, synchronously (`IORING_REGISTER_SYNC_CANCEL`, then the index is removed
/// from the table). Only outside a keel task (`EPERM`: no ring to reach) does the index
/// stay until the ring goes.
pub async fn close_fixed_socket(s: FixedSocket) -> Result<(), Errno> {
    crate::fs::close_fixed_shared(s.index).await
}
