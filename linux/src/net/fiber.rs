//! Blocking-style socket calls for fiber tasks (`FiberNet`), see the `net` module doc.
#![allow(unsafe_code)] // SQEs point at the fiber's borrowed buffers and addresses

use super::*;
use crate::fs::FiberFs;
use crate::ring::RingOp;
use core::pin::pin;
use keel_core::{Fiber, InitiateError, IoStatus};

/// Blocking-style socket operations for fiber tasks. Each doc opens with the C form.
pub trait FiberNet {
    /// `socket(domain, type | SOCK_CLOEXEC, protocol)` through `IORING_OP_SOCKET`.
    fn socket(&mut self, domain: AddressFamily, ty: SocketType, protocol: Option<Protocol>) -> Result<Socket, Errno>;
    /// `socket(...)` straight into the fixed-file table (a direct descriptor).
    fn socket_direct(
        &mut self,
        domain: AddressFamily,
        ty: SocketType,
        protocol: Option<Protocol>,
    ) -> Result<FixedSocket, Errno>;
    /// `setsockopt(fd, level, name, &value, 4)` of an int option (`SockOpt`) through the ring.
    fn set_option(&mut self, s: &impl AsSock, opt: SockOpt) -> Result<(), Errno>;
    /// `bind(fd, addr, len)` (`IORING_OP_BIND`).
    fn bind(&mut self, s: &impl AsSock, addr: &SockAddr) -> Result<(), Errno>;
    /// `listen(fd, backlog)` (`IORING_OP_LISTEN`).
    fn listen(&mut self, s: &impl AsSock, backlog: i32) -> Result<(), Errno>;
    /// `accept4(fd, NULL, NULL, SOCK_CLOEXEC)`.
    fn accept(&mut self, s: &impl AsSock) -> Result<Socket, Errno>;
    /// `accept` into the fixed-file table.
    fn accept_direct(&mut self, s: &impl AsSock) -> Result<FixedSocket, Errno>;
    /// Multishot accept (net rule 2); take connections with `next_accept`.
    fn accept_multi(&mut self, s: &impl AsSock) -> Multishot;
    /// Multishot accept into the fixed-file table; take them with `next_accept_direct`.
    fn accept_multi_direct(&mut self, s: &impl AsSock) -> Multishot;
    /// The next connection of a multishot accept.
    fn next_accept(&mut self, m: &mut Multishot) -> Result<Socket, Errno>;
    /// The next connection of a direct multishot accept.
    fn next_accept_direct(&mut self, m: &mut Multishot) -> Result<FixedSocket, Errno>;
    /// `connect(fd, addr, len)`.
    fn connect(&mut self, s: &impl AsSock, addr: &SockAddr) -> Result<(), Errno>;
    /// `send(fd, buf, len, MSG_NOSIGNAL)`: may send fewer bytes.
    fn send(&mut self, s: &impl AsSock, buf: &[u8]) -> Result<u32, Errno>;
    /// `send` until all of `buf` has gone.
    fn send_all(&mut self, s: &impl AsSock, buf: &[u8]) -> Result<(), Errno>;
    /// `IORING_OP_SEND_ZC` of `len` bytes from registered buffer `buf`; returns after the
    /// kernel's notification, so the buffer may be reused at once (net rule 4). Errors as
    /// for `FiberFs::read_fixed` (`EXDEV`: another executor's buffer, regbuf rule 1).
    fn send_zc_fixed(&mut self, s: &impl AsSock, buf: &crate::fs::FixedBuf, len: u32) -> Result<u32, Errno>;
    /// `recv(fd, buf, len, 0)`: `Ok(0)` is end of stream.
    fn recv(&mut self, s: &impl AsSock, buf: &mut [u8]) -> Result<u32, Errno>;
    /// Sends all of `buf[..len]`, then receives into `buf` (`Ok(0)`: end of stream): a
    /// request/response exchange in one suspension. The send (`MSG_WAITALL`) links the
    /// receive (`IOSQE_IO_LINK`), so both go to the kernel in one submission and the
    /// receive, armed only once the send is done, cannot overwrite bytes still being
    /// sent. With no room for both at once it does the two one after the other.
    fn send_then_recv(&mut self, s: &impl AsSock, buf: &mut [u8], len: usize) -> Result<u32, Errno>;
    /// `recv` into a buffer the kernel picks from the provided-buffer ring (net rule 3);
    /// `Ok(None)` is end of stream.
    fn recv_provided(&mut self, s: &impl AsSock) -> Result<Option<ProvidedBuf>, Errno>;
    /// Multishot receive into provided buffers; take data with `next_recv`.
    fn recv_multi(&mut self, s: &impl AsSock) -> Result<Multishot, Errno>;
    /// The next buffer of a multishot receive; `Ok(None)` is end of stream.
    fn next_recv(&mut self, m: &mut Multishot) -> Result<Option<ProvidedBuf>, Errno>;
    /// `shutdown(fd, how)`.
    fn shutdown(&mut self, s: &impl AsSock, how: Shutdown) -> Result<(), Errno>;
    /// Cancels the socket's operations in flight, then `close(fd)` (net rule 1).
    fn close_socket(&mut self, s: Socket) -> Result<(), Errno>;
    /// Cancels the direct socket's operations in flight, then closes it through the ring;
    /// in a cancelled task, synchronously (the index is removed from the table all the same).
    fn close_fixed_socket(&mut self, s: FixedSocket) -> Result<(), Errno>;
}

#[inline(always)] // the SQE is built in place and the suspend stays in the fiber's frame (arch doc)
fn run(f: &mut Fiber, e: squeue::Entry) -> Result<u32, Errno> {
    // SAFETY: every caller's SQE points only at memory that outlives `run_op`, which
    // returns only after the completion has been reaped (fs module doc).
    f.run_op(unsafe { RingOp::from_entry(e) })
}

/// Submits `op` with a wake token (net rule 6): through the executor's admission
/// (`Fiber::try_submit`: the I/O-priority queue for room and `max_io_in_flight`), waiting
/// while there is no room.
/// The slot holds `fd` (if any) until the op's last CQE (fd rule 1).
fn submit_wake(
    f: &mut Fiber,
    op: RingOp,
    fd: Option<&crate::fd::SharedFd>,
) -> Result<(OpId, std::rc::Rc<crate::ring::shared::Shared>), Errno> {
    let id = f.try_submit::<RingDriver>(op).map_err(|e| match e {
        InitiateError::Cancelled(_) => Errno::ECANCELED,
        InitiateError::Refused(_, e) => e,
        _ => Errno::EINVAL,
    })?;
    let fd = fd.cloned();
    let shared = f
        .with_driver::<RingDriver, _>(|d| {
            // SAFETY: keel-core driver rule 2: this crate's own state in the driver (and at most
            // a cancel of an op it keeps itself); not replaced, no other code runs meanwhile.
            let d = unsafe { d.get_mut() };
            if let Some(fd) = fd {
                d.hold_fd(id, fd, false); // before the fiber suspends: no enter between
            }
            d.shared.clone()
        })
        .ok_or(Errno::EINVAL)?;
    Ok((id, shared))
}

/// Waits for a buffer to come back to the provided-buffer ring (pbuf rule 3). Every way
/// out of the wait goes through the queue (waitq rule 3).
fn wait_buffer(f: &mut Fiber) -> Result<(), Errno> {
    let me = f.task();
    // `None`: a buffer is there (or the queue is full): re-arm at once.
    let t = match f
        .with_driver::<RingDriver, _>(|d| d.pbuf().map(|mut p| if p.available() > 0 { None } else { p.wait(me) }))
    {
        Some(Some(None)) => return Ok(()),
        Some(Some(Some(t))) => t,
        _ => return Err(Errno::EINVAL),
    };
    loop {
        let woke = f.wait();
        let r = f.with_driver::<RingDriver, _>(|d| {
            let mut p = d.pbuf()?;
            if woke.is_err() {
                p.leave(t); // a turn handed to it goes on
                return Some(Err(Errno::ECANCELED));
            }
            Some(Ok(p.has_turn(t, None)))
        });
        match r.flatten() {
            Some(Ok(true)) => return Ok(()),
            Some(Ok(false)) => {} // a spurious wake: keep the place (waitq rule 2)
            Some(Err(e)) => return Err(e),
            None => return Err(Errno::EINVAL),
        }
    }
}

/// Runs a driver-kept op to completion (net rule 6): (result, CQE flags). Cancelled,
/// it cancels the op and still waits for its completion, which it returns: data the
/// kernel had already received is reported, never lost (the `slot_op` module doc).
fn run_kept(f: &mut Fiber, op: RingOp, fd: Option<&crate::fd::SharedFd>) -> Result<(i32, u32), Errno> {
    let (id, _) = submit_wake(f, op, fd)?;
    let mut cancel_sent = false;
    loop {
        let cancel = !cancel_sent && f.is_cancelled();
        match f.with_driver::<RingDriver, _>(|d| {
            // SAFETY: keel-core driver rule 2: this crate's own state in the driver (and at most
            // a cancel of an op it keeps itself); not replaced, no other code runs meanwhile.
            let d = unsafe { d.get_mut() };
            let done = d.take_full(id);
            if done.is_none() && cancel {
                keel_core::Driver::cancel(d, id);
            }
            done
        }) {
            Some(Some((res, flags, _))) => return Ok((res, flags)),
            Some(None) => {}
            None => return Err(Errno::EINVAL),
        }
        cancel_sent |= cancel;
        f.wait_io();
    }
}

/// The next step of a multishot op, re-arming and waiting as net rule 2 says. Cancelled
/// with nothing queued, it cancels the op and waits on: results the kernel posted first
/// are returned in order, then the op's end (`ECANCELED`), so none is lost.
pub(crate) fn next_multi(f: &mut Fiber, m: &mut Multishot) -> Result<(i32, u32), Errno> {
    next_multi_until(f, m, |_| false)
}

/// [`next_multi`] that gives up with `ETIME` when `expired` says so, asked each time it
/// would wait (not once it has cancelled the op for a cancelled task: then it waits for
/// the op's end). Results keep arriving in the `Multishot` for the next call.
pub(crate) fn next_multi_until(
    f: &mut Fiber,
    m: &mut Multishot,
    mut expired: impl FnMut(&mut Fiber) -> bool,
) -> Result<(i32, u32), Errno> {
    let mut cancel_sent = false;
    let me = Some(f.task());
    loop {
        let step = f
            .with_driver::<RingDriver, _>(|d| {
                // SAFETY: keel-core driver rule 2: this crate's own state in the driver
                // (and at most a cancel of an op it keeps itself); not replaced, no other
                // code runs meanwhile.
                let d = unsafe { d.get_mut() };
                m.step(d, me)
            })
            .ok_or(Errno::EINVAL)?;
        match step {
            MStep::Item(r, fl) => return Ok((r, fl)),
            MStep::Done(e) => return Err(e),
            MStep::Submit => {
                let (id, shared) = submit_wake(f, m.op(), m.fd())?;
                m.armed(id, Some(shared));
            }
            MStep::WaitBuffer => wait_buffer(f)?,
            MStep::Pending => {
                if !cancel_sent && f.is_cancelled() {
                    f.with_driver::<RingDriver, _>(|d| {
                        // SAFETY: keel-core driver rule 2: this crate's own state in the
                        // driver (and at most a cancel of an op it keeps itself); not
                        // replaced, no other code runs meanwhile.
                        let d = unsafe { d.get_mut() };
                        m.cancel(d)
                    });
                    cancel_sent = true;
                }
                if !cancel_sent && expired(f) {
                    return Err(Errno::ETIME);
                }
                f.wait_io();
            }
        }
    }
}

fn bgid(f: &mut Fiber) -> Result<u16, Errno> {
    f.with_driver::<RingDriver, _>(|d| d.pbuf().map(|p| p.bgid())).flatten().ok_or(Errno::ENOBUFS)
}

impl FiberNet for Fiber {
    fn socket(&mut self, domain: AddressFamily, ty: SocketType, protocol: Option<Protocol>) -> Result<Socket, Errno> {
        run(self, socket_sqe(domain, ty, protocol, false)).map(|fd| Socket::from_new(fd as RawFd))
    }

    fn socket_direct(
        &mut self,
        domain: AddressFamily,
        ty: SocketType,
        protocol: Option<Protocol>,
    ) -> Result<FixedSocket, Errno> {
        run(self, socket_sqe(domain, ty, protocol, true)).map(|index| FixedSocket { index })
    }

    fn set_option(&mut self, s: &impl AsSock, opt: SockOpt) -> Result<(), Errno> {
        let value = opt.to_raw().2; // the kernel reads it before `run` returns
        run(self, setsockopt_sqe(s.sock(), opt, &value)).map(drop)
    }

    fn bind(&mut self, s: &impl AsSock, addr: &SockAddr) -> Result<(), Errno> {
        run(self, bind_sqe(s.sock(), addr)).map(drop)
    }

    fn listen(&mut self, s: &impl AsSock, backlog: i32) -> Result<(), Errno> {
        run(self, listen_sqe(s.sock(), backlog)).map(drop)
    }

    fn accept(&mut self, s: &impl AsSock) -> Result<Socket, Errno> {
        run(self, accept_sqe(s.sock(), false)).map(|fd| Socket::from_new(fd as RawFd))
    }

    fn accept_direct(&mut self, s: &impl AsSock) -> Result<FixedSocket, Errno> {
        run(self, accept_sqe(s.sock(), true)).map(|index| FixedSocket { index })
    }

    fn accept_multi(&mut self, s: &impl AsSock) -> Multishot {
        Multishot::new(s, accept_multi_sqe(s.sock(), false), MultiKind::Accept)
    }

    fn accept_multi_direct(&mut self, s: &impl AsSock) -> Multishot {
        Multishot::new(s, accept_multi_sqe(s.sock(), true), MultiKind::AcceptDirect)
    }

    fn next_accept(&mut self, m: &mut Multishot) -> Result<Socket, Errno> {
        if m.kind() != MultiKind::Accept {
            return Err(Errno::EINVAL);
        }
        next_multi(self, m).map(|(fd, _)| Socket::from_new(fd))
    }

    fn next_accept_direct(&mut self, m: &mut Multishot) -> Result<FixedSocket, Errno> {
        if m.kind() != MultiKind::AcceptDirect {
            return Err(Errno::EINVAL);
        }
        next_multi(self, m).map(|(i, _)| FixedSocket { index: i as u32 })
    }

    fn connect(&mut self, s: &impl AsSock, addr: &SockAddr) -> Result<(), Errno> {
        run(self, connect_sqe(s.sock(), addr)).map(drop)
    }

    #[inline(always)] // the fiber's suspend must not straddle an out-of-line frame (arch doc)
    fn send(&mut self, s: &impl AsSock, buf: &[u8]) -> Result<u32, Errno> {
        run(self, send_sqe(s.sock(), buf.as_ptr(), buf.len().min(u32::MAX as usize) as u32))
    }

    fn send_all(&mut self, s: &impl AsSock, buf: &[u8]) -> Result<(), Errno> {
        let mut off = 0;
        while off < buf.len() {
            off += self.send(s, &buf[off..])? as usize;
        }
        Ok(())
    }

    #[inline(always)] // the suspend stays in the fiber's frame (arch doc)
    fn send_then_recv(&mut self, s: &impl AsSock, buf: &mut [u8], len: usize) -> Result<u32, Errno> {
        let len = len.min(buf.len()).min(u32::MAX as usize);
        let cap = buf.len().min(u32::MAX as usize) as u32;
        let p = buf.as_mut_ptr();
        let send = send_all_sqe(s.sock(), p, len as u32);
        let recv = recv_sqe(s.sock(), p, cap);
        // Deadline scopes (scope rule 2) reach both links: the pair goes in directly, not
        // through `run_op` (deadline rule 1 keeps the chain: each link's timer goes on it).
        let scope = crate::deadline::scope::deadline_of(|| Some(self.task()));
        // The receive always completes after the send (linked: on a failed send it is
        // cancelled), so only its completion wakes this fiber. Without a deadline, on a
        // kernel ring with CQE skips or the epoll engine, the two go in as one skip pair
        // (`ring/pair.rs`): the send posts no
        // CQE when it sends all `len` bytes, and one CQE completes both status blocks.
        let (ss, sr) = (pin!(IoStatus::new_silent()), pin!(IoStatus::new()));
        // SAFETY: `buf` outlives both operations: this function waits for both below. The
        // receive writes into `buf` only after the send has finished reading it (linked).
        let (mut head, mut tail) = unsafe { (RingOp::from_entry(send).linked().pair_head(), RingOp::from_entry(recv)) };
        if let Some(at) = scope {
            (head, tail) = (head.scoped(at), tail.scoped(at));
        }
        if let Err(refused) = self.initiate_pair::<RingDriver>((ss.as_ref(), head), (sr.as_ref(), tail)) {
            return match refused.reason {
                // No room for the linked pair now (`EBUSY`), or ever on this ring (`EINVAL`:
                // an SQ too small for a chain with deadlines): one after the other.
                InitiateError::Refused((), Errno::EBUSY | Errno::EINVAL) => {
                    self.send_all(s, &buf[..len])?;
                    self.recv(s, buf)
                }
                InitiateError::Cancelled(()) => Err(Errno::ECANCELED),
                InitiateError::Refused((), e) => Err(e),
                _ => Err(Errno::EINVAL),
            };
        }
        let mut cancel_sent = false;
        while ss.is_in_flight() || sr.is_in_flight() {
            if self.is_cancelled() && !cancel_sent {
                // Cancelled: wake on the send's completion too, not only on the receive's
                // (which the link orders after it; this does not rely on that).
                ss.wake_on_completion();
                self.cancel_io(ss.as_ref());
                self.cancel_io(sr.as_ref());
                cancel_sent = true;
            }
            self.wait_io();
        }
        match (ss.result(), sr.result()) {
            (Some(Ok(n)), r) if n as usize == len => r.unwrap_or(Err(Errno::EIO)),
            // A failed or short send broke the chain: the receive was cancelled unrun.
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(n)), _) => {
                self.send_all(s, &buf[n as usize..len])?;
                self.recv(s, buf)
            }
            (None, _) => Err(Errno::EIO),
        }
    }

    fn send_zc_fixed(&mut self, s: &impl AsSock, buf: &crate::fs::FixedBuf, len: u32) -> Result<u32, Errno> {
        crate::fs::fixed_check(self, buf, len)?;
        // `buf` is this ring's registered buffer (checked) and stays borrowed while `run`
        // waits, and the op completes only after its notification (completion rule 4).
        run(self, send_zc_fixed_sqe(s.sock(), buf.as_ptr(), len, buf.index()))
    }

    #[inline(always)] // the fiber's suspend must not straddle an out-of-line frame (arch doc)
    fn recv(&mut self, s: &impl AsSock, buf: &mut [u8]) -> Result<u32, Errno> {
        run(self, recv_sqe(s.sock(), buf.as_mut_ptr(), buf.len().min(u32::MAX as usize) as u32))
    }

    fn recv_provided(&mut self, s: &impl AsSock) -> Result<Option<ProvidedBuf>, Errno> {
        let group = bgid(self)?;
        loop {
            // SAFETY: a buffer-select receive references no memory of ours.
            let op = unsafe { RingOp::owned(recv_select_sqe(s.sock(), group), None) };
            let (res, flags) = run_kept(self, op, s.held())?;
            if res == -Errno::ENOBUFS.0 {
                self.with_driver::<RingDriver, _>(|d| d.pbuf().map(|mut p| p.note_exhausted()));
                wait_buffer(self)?;
                continue;
            }
            if res < 0 {
                return Err(Errno(-res));
            }
            return Ok(self
                .with_driver::<RingDriver, _>(|d| {
                    // SAFETY: keel-core driver rule 2: this crate's own state in the driver
                    // (and at most a cancel of an op it keeps itself); not replaced, no
                    // other code runs meanwhile.
                    let d = unsafe { d.get_mut() };
                    provided(d, res, flags)
                })
                .flatten());
        }
    }

    fn recv_multi(&mut self, s: &impl AsSock) -> Result<Multishot, Errno> {
        let group = bgid(self)?;
        Ok(Multishot::new(s, recv_multi_sqe(s.sock(), group), MultiKind::Recv))
    }

    fn next_recv(&mut self, m: &mut Multishot) -> Result<Option<ProvidedBuf>, Errno> {
        if m.kind() != MultiKind::Recv {
            return Err(Errno::EINVAL);
        }
        match next_multi(self, m) {
            Ok((res, flags)) => Ok(self
                .with_driver::<RingDriver, _>(|d| {
                    // SAFETY: keel-core driver rule 2: this crate's own state in the driver
                    // (and at most a cancel of an op it keeps itself); not replaced, no
                    // other code runs meanwhile.
                    let d = unsafe { d.get_mut() };
                    provided(d, res, flags)
                })
                .flatten()),
            Err(Errno(0)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn shutdown(&mut self, s: &impl AsSock, how: Shutdown) -> Result<(), Errno> {
        run(self, shutdown_sqe(s.sock(), how)).map(drop)
    }

    fn close_socket(&mut self, s: Socket) -> Result<(), Errno> {
        crate::fs::close_fiber(self, s.into_shared())
    }

    fn close_fixed_socket(&mut self, s: FixedSocket) -> Result<(), Errno> {
        crate::fs::close_fixed_fiber(self, s.index)
    }
}
