//! File operations as futures: buffers passed by ownership and returned with the
//! result. The operation and its buffer live in a driver slot (`ring/slots.rs`), not in
//! the future (`slot_op.rs`): a future dropped in flight cancels its operation and the slot
//! keeps the buffer until the completion; a cancelled task's future still returns its
//! completion. Nothing is allocated per operation.
#![allow(unsafe_code)] // building SQEs that point at owned buffers; each use says why the buffer outlives the op

use super::{BufferError, File, claim_on, close_shared, collect_on, cwd, fd, open_how, prio_op};
use crate::buf::RawBuf;
use crate::fd::{Fd, SharedFd};
use crate::flags::{Mode, OFlags, PathArg};
use crate::regbuf::FixedBuf;
use crate::ring::{RingDriver, RingOp, to_result};
use crate::slot_op::SlotOp;
use io_uring::{opcode, types};
use keel_core::{Errno, IoResult, Priority};
use std::future::Future;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// A future for one owned-buffer operation: submitted on first poll (queueing for room
/// if needed), result and buffer taken from the driver slot on completion, cancelled and
/// left to the slot if dropped in flight (`slot_op::SlotOp`, whose result it turns into an
/// `IoResult`).
pub struct OwnedOp(SlotOp);

impl OwnedOp {
    /// An owned operation.
    pub fn new(op: RingOp) -> Self {
        OwnedOp(SlotOp::new(op))
    }

    /// An owned operation that fails with `EBUSY` instead of waiting when there is no room
    /// (every slot taken, the SQ full, or the in-flight limit reached).
    pub fn new_nowait(op: RingOp) -> Self {
        OwnedOp(SlotOp::new_nowait(op))
    }

    /// Holds `fd` (if any) open until the operation's last CQE is reaped (fd rule 1).
    pub(crate) fn holding(self, fd: Option<&SharedFd>) -> Self {
        OwnedOp(self.0.holding(fd))
    }
}

impl Future for OwnedOp {
    type Output = (IoResult, Option<RawBuf>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|(res, _, buf)| (to_result(res), buf))
    }
}

async fn io_priority() -> (Priority, bool) {
    core::future::poll_fn(|cx| {
        let tcx = keel_core::TaskCx::of(cx);
        let p = tcx.map(|tcx| tcx.priorities().io).unwrap_or_default();
        let rt = tcx.and_then(|tcx| tcx.with_driver::<RingDriver, _>(|d| d.realtime_ioprio())).unwrap_or(false);
        Poll::Ready((p, rt))
    })
    .await
}

/// `openat2(AT_FDCWD, path, &how, sizeof how)`, see openat2(2): the future form of
/// [`FiberFs::open`](super::FiberFs::open), taking the same path types (`&str`, `&Path`,
/// `&CStr`, ...; one that holds a NUL byte is `EINVAL`). If the future is dropped before
/// completion, a descriptor the kernel opens anyway is closed.
pub async fn open(path: impl PathArg, flags: OFlags, mode: Mode) -> Result<File, Errno> {
    let path = path.as_cow_c_str().map_err(|e| Errno(e.raw_os_error()))?;
    let path = path.to_bytes_with_nul();
    // One owned buffer holds the open_how and the NUL-terminated path.
    let how_len = core::mem::size_of::<types::OpenHow>();
    let mut bytes = Vec::with_capacity(how_len + path.len());
    let how = open_how(flags, mode);
    #[allow(unsafe_code)]
    // SAFETY: `OpenHow` is plain old data (three u64s).
    bytes.extend_from_slice(unsafe { core::slice::from_raw_parts(&how as *const _ as *const u8, how_len) });
    bytes.extend_from_slice(path);
    let raw = RawBuf::from_vec(bytes);
    let (how_ptr, path_ptr) =
        (raw.ptr() as *const types::OpenHow, raw.ptr().wrapping_add(how_len) as *const core::ffi::c_char);
    let e = opcode::OpenAt2::new(types::Fd(cwd()), path_ptr, how_ptr).build();
    // SAFETY: the SQE references only `raw`, which the slot keeps until completion.
    let op = unsafe { RingOp::owned(e, Some(raw)) };
    let (res, _buf) = OwnedOp::new(op).await;
    res.map(|fd| File { fd: Fd::new(fd as RawFd) }) // the kernel made it for us: ours
}

/// `close(fd)` through the ring, see close(2): first cancels every operation on the
/// descriptor (`ASYNC_CANCEL` with `CANCEL_FD | CANCEL_ALL`, as `close_socket` does, net
/// rule 1), then closes it through the ring if no operation holds it any more, else lets
/// the last one's completion close it (fd rule 3). The descriptor is closed whatever this
/// returns: a close that cannot go through the ring (the task was cancelled; polled outside
/// a keel task: `EPERM`) cancels the descriptor's operations with a synchronous cancel
/// where it can reach the driver and closes with `close(2)`.
pub async fn close(file: File) -> Result<(), Errno> {
    close_shared(file.fd).await
}

/// `pread(fd, buf, capacity, offset)`, see pread(2): reads up to `buf.capacity()` bytes;
/// the buffer comes back with its length set to what was read.
pub async fn read(file: &File, buf: Vec<u8>, offset: u64) -> (Result<u32, Errno>, Vec<u8>) {
    let (p, rt) = io_priority().await;
    let raw = RawBuf::from_vec(buf);
    let cap = raw.capacity().min(u32::MAX as usize) as u32;
    let e = opcode::Read::new(fd(file), raw.ptr(), cap).offset(offset).build();
    // SAFETY: the SQE references only `raw`, kept by the slot until completion.
    let op = prio_op(unsafe { RingOp::owned(e, Some(raw)) }, p, rt);
    let (res, raw) = OwnedOp::new(op).holding(Some(&file.fd)).await;
    let len = *res.as_ref().unwrap_or(&0) as usize;
    (res, raw.map(|r| r.into_vec(len)).unwrap_or_default())
}

/// `pwrite(fd, buf, len, offset)`, see pwrite(2); the buffer comes back unchanged.
pub async fn write(file: &File, buf: Vec<u8>, offset: u64) -> (Result<u32, Errno>, Vec<u8>) {
    let (p, rt) = io_priority().await;
    let raw = RawBuf::from_vec(buf);
    let len = raw.len().min(u32::MAX as usize) as u32;
    let e = opcode::Write::new(fd(file), raw.ptr(), len).offset(offset).build();
    // SAFETY: as in `read`.
    let op = prio_op(unsafe { RingOp::owned(e, Some(raw)) }, p, rt);
    let (res, raw) = OwnedOp::new(op).holding(Some(&file.fd)).await;
    let len = raw.as_ref().map(|r| r.len()).unwrap_or(0);
    (res, raw.map(|r| r.into_vec(len)).unwrap_or_default())
}

/// `READ_FIXED` of up to `len` bytes into registered buffer `buf` at `offset` (the future
/// form of [`FiberFs::read_fixed`](super::FiberFs::read_fixed)): the buffer goes with the
/// operation and comes back with the result. `EINVAL` if `len` exceeds the buffer, `EXDEV`
/// if `buf` belongs to another executor's ring (regbuf rule 1). Dropped in flight, the
/// buffer stays with the operation's slot until the kernel is done with it, then is
/// released (regbuf rule 5).
pub async fn read_fixed(file: &File, mut buf: FixedBuf, len: u32, offset: u64) -> (Result<u32, Errno>, FixedBuf) {
    if len as usize > buf.len() {
        return (Err(Errno::EINVAL), buf);
    }
    let (p, rt) = io_priority().await;
    let e = opcode::ReadFixed::new(fd(file), buf.as_mut_ptr(), len, buf.index()).offset(offset).build();
    // SAFETY: the SQE references only `buf` (`len` bytes, checked), which the operation
    // holds until its completion, and the slot if the future is dropped first (regbuf
    // rule 5); it is submitted only on `buf`'s own ring (`SlotOp::holding_fixed`).
    fixed_op(file, prio_op(unsafe { RingOp::owned(e, None) }, p, rt), buf).await
}

/// `WRITE_FIXED` of `len` bytes from registered buffer `buf` at `offset` (the future form
/// of [`FiberFs::write_fixed`](super::FiberFs::write_fixed)); errors and lifetime as for
/// [`read_fixed`].
pub async fn write_fixed(file: &File, buf: FixedBuf, len: u32, offset: u64) -> (Result<u32, Errno>, FixedBuf) {
    if len as usize > buf.len() {
        return (Err(Errno::EINVAL), buf);
    }
    let (p, rt) = io_priority().await;
    let e = opcode::WriteFixed::new(fd(file), buf.as_ptr().cast_mut(), len, buf.index()).offset(offset).build();
    // SAFETY: as in `read_fixed`; the kernel only reads the buffer.
    fixed_op(file, prio_op(unsafe { RingOp::owned(e, None) }, p, rt), buf).await
}

async fn fixed_op(file: &File, op: RingOp, buf: FixedBuf) -> (Result<u32, Errno>, FixedBuf) {
    let mut slot_op = SlotOp::new(op).holding(Some(&file.fd)).holding_fixed(buf);
    let (res, _, _) = (&mut slot_op).await;
    (to_result(res), slot_op.take_fixed().expect("keel bug: a fixed operation lost its buffer"))
}

/// `fsync(fd)`, see fsync(2).
pub async fn fsync(file: &File) -> Result<(), Errno> {
    let e = opcode::Fsync::new(fd(file)).build();
    // SAFETY: no memory is referenced.
    OwnedOp::new(unsafe { RingOp::owned(e, None) }).holding(Some(&file.fd)).await.0.map(drop)
}

/// `fdatasync(fd)`, see fdatasync(2): the durable sync of data.
pub async fn fdatasync(file: &File) -> Result<(), Errno> {
    let e = opcode::Fsync::new(fd(file)).flags(types::FsyncFlags::DATASYNC).build();
    // SAFETY: no memory is referenced.
    OwnedOp::new(unsafe { RingOp::owned(e, None) }).holding(Some(&file.fd)).await.0.map(drop)
}

/// Claims a registered buffer, waiting (FIFO, with fibers' `claim_buffer` in the same
/// queue) for one if all are claimed (regbuf rules 2-4): the future form of
/// [`FiberFs::claim_buffer`](super::FiberFs::claim_buffer). Dropped or cancelled while it
/// waits, it leaves the queue, and a buffer handed to it meanwhile goes on to the next
/// waiter (waitq rule 3).
pub fn claim_buffer() -> ClaimBuffer {
    ClaimBuffer { ticket: None, shared: None }
}

/// The future of [`claim_buffer`].
#[must_use = "a claim does nothing unless awaited"]
pub struct ClaimBuffer {
    /// The queued wait, once there is one (waitq rule 1).
    ticket: Option<crate::waitq::Ticket>,
    /// The ring's shared state while queued (shared rule 5): `Drop` leaves the queue
    /// through it, also after the task or the executor.
    shared: Option<Rc<crate::ring::shared::Shared>>,
}

impl Future for ClaimBuffer {
    type Output = Result<FixedBuf, BufferError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let tcx = keel_core::TaskCx::of(cx);
        let cancelled = tcx.is_some_and(|tcx| tcx.is_cancelled());
        if let (Some(t), Some(shared)) = (self.ticket, self.shared.clone()) {
            let r = tcx.and_then(|tcx| {
                tcx.with_driver::<RingDriver, _>(|d| {
                    if !Rc::ptr_eq(&d.shared, &shared) {
                        return Err(BufferError::OtherExecutor); // `Drop` leaves its own queue
                    }
                    collect_on(d, t, cancelled, Some(tcx.task()))
                })
            });
            return match r {
                Some(Ok(None)) => Poll::Pending, // a spurious wake: keep the place (waitq rule 2)
                Some(Ok(Some(b))) => {
                    self.ticket = None; // collected: nothing to leave
                    Poll::Ready(Ok(b))
                }
                Some(Err(BufferError::Cancelled)) => {
                    self.ticket = None; // `collect_on` left the queue
                    Poll::Ready(Err(BufferError::Cancelled))
                }
                Some(Err(e)) => Poll::Ready(Err(e)),
                None => Poll::Ready(Err(BufferError::NotOnRing)), // `Drop` leaves the queue
            };
        }
        if cancelled {
            return Poll::Ready(Err(BufferError::Cancelled));
        }
        let Some(tcx) = tcx else { return Poll::Ready(Err(BufferError::NotOnRing)) };
        let me = tcx.task();
        let r =
            tcx.with_driver::<RingDriver, _>(|d| claim_on(d, Some(me)).map(|c| c.map_err(|t| (t, d.shared.clone()))));
        match r {
            None => Poll::Ready(Err(BufferError::NotOnRing)),
            Some(Err(e)) => Poll::Ready(Err(e)),
            Some(Ok(Ok(b))) => Poll::Ready(Ok(b)),
            Some(Ok(Err((t, shared)))) => {
                self.ticket = Some(t);
                self.shared = Some(shared);
                Poll::Pending
            }
        }
    }
}

impl Drop for ClaimBuffer {
    fn drop(&mut self) {
        if let (Some(t), Some(shared)) = (self.ticket, &self.shared) {
            shared.leave_regbuf_queue(t); // waitq rule 3; a no-op once the driver is gone
        }
    }
}

/// A no-op through the ring (`IORING_OP_NOP`), for measuring the path.
pub async fn nop() -> IoResult {
    OwnedOp::new(RingOp::nop_owned()).await.0
}
