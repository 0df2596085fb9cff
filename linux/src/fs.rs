//! File i/o on the ring, two ways:
//!
//! - **Fibers** ([`FiberFs`], implemented for `keel_core::Fiber`): blocking-style calls
//!   with borrowed buffers. Each pins an `IoStatus` on the fiber's stack, initiates the
//!   operation and suspends until *that* operation completes. If the task is cancelled
//!   meanwhile, the operation is cancelled and still waited for, so the kernel never
//!   writes into a stack frame that has been left.
//! - **Futures** (the `async fn`s here): buffers passed by ownership and returned with
//!   the result (as monoio and tokio-uring do). The operation and its buffer live in a
//!   driver slot (`ring/slots.rs`), not in the future: a future dropped with its operation
//!   in flight cancels it, and the slot keeps the buffer until the completion arrives; an
//!   abandoned open closes the descriptor it gets. A future whose task is cancelled
//!   cancels its operation and still returns its completion (`kept.rs`): data the kernel
//!   read before the cancel took is returned, not lost. Nothing is allocated per operation.
//!
//! A [`File`] stays open while an operation naming it is queued or in flight (fd rules in
//! `fd.rs`): a future's operation holds a reference until its completion is reaped, a
//! fiber's call borrows the `File` until then. [`close`] and [`FiberFs::close`] cancel the
//! descriptor's operations first (`ASYNC_CANCEL` with `CANCEL_FD | CANCEL_ALL`, as
//! `close_socket` does) and the descriptor is closed whatever they return.
//!
//! Registered buffers (`RingConfig::registered_buffers`, `regbuf.rs`): a claim is a
//! [`FixedBuf`], which the fixed operations take (fibers by reference, futures by value);
//! dropping it releases the buffer to the oldest waiter, however its holder ends.
//!
//! Each call's doc opens with its C form. Read and write carry the task's I/O priority in
//! the SQE; nothing else does (`ring/op.rs`).
#![allow(unsafe_code)] // building SQEs that point at buffers; each use says why the buffer outlives the op

use crate::buf::RawBuf;
use crate::fd::{Fd, SharedFd};
use crate::kept::Kept;
pub use crate::regbuf::FixedBuf;
use crate::ring::{RingDriver, RingOp, to_result};
use io_uring::{opcode, types};
use keel_core::{Errno, Fiber, InitiateError, IoResult, IoStatus, Priority};
use std::ffi::CStr;
use std::future::Future;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::RawFd;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::task::{Context, Poll};

/// An open file descriptor, shared with the future operations that name it (fd rule 1 in
/// `fd.rs`: it stays open until every one of them has completed, so its number is never
/// reused under a queued SQE). Close it with `close` (through the ring, cancelling its
/// operations first); dropping it closes it with `close(2)` once no operation holds it.
/// `!Send`: it belongs to the executor's thread (as in tokio-uring and monoio).
#[derive(Debug)]
pub struct File {
    fd: SharedFd,
}

impl File {
    /// Wraps a descriptor this `File` will own (one allocation: the shared count). Safe
    /// code converts an [`OwnedFd`](std::os::fd::OwnedFd) instead (`File::from(owned)`,
    /// `owned.into()`), which proves the ownership.
    ///
    /// # Safety
    ///
    /// The caller owns `fd`: it is open, and nothing else closes it or wraps it as an
    /// owner (no `OwnedFd`, `std::fs::File`, other `File` or `Socket`), now or later. The
    /// `File` closes it when it and the last operation naming it are gone (fd rule 3), so a
    /// descriptor someone else also closes would be closed under them, and its number,
    /// reused by the next `open`, `socket` or `accept`, would receive their i/o. The same
    /// contract as `std::os::fd::FromRawFd`.
    ///
    /// ```compile_fail,E0133
    /// // Rejected: wrapping a descriptor is unsafe (stdin is not ours to close).
    /// let stdin = keel_linux::File::from_raw_fd(0);
    /// ```
    ///
    /// ```
    /// let owned: std::os::fd::OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    /// let f = keel_linux::File::from(owned); // safe: the OwnedFd proves ownership
    /// # drop(f);
    /// ```
    pub unsafe fn from_raw_fd(fd: RawFd) -> Self {
        File { fd: Fd::new(fd) }
    }

    /// The descriptor.
    pub fn fd(&self) -> RawFd {
        self.fd.raw()
    }

    /// Gives the descriptor up without closing it; the `File` comes back in `Err` while an
    /// operation still holds it (a future dropped mid-operation whose completion has not
    /// been reaped yet: run the executor, then try again; fd rule 4).
    pub fn into_raw_fd(self) -> Result<RawFd, Self> {
        Fd::try_into_raw(self.fd).map_err(|fd| File { fd })
    }

    /// [`into_raw_fd`](Self::into_raw_fd) as an [`OwnedFd`](std::os::fd::OwnedFd).
    pub fn into_owned_fd(self) -> Result<std::os::fd::OwnedFd, Self> {
        Fd::try_into_owned(self.fd).map_err(|fd| File { fd })
    }
}

impl From<std::os::fd::OwnedFd> for File {
    /// Takes the descriptor over (one allocation: the shared count).
    fn from(fd: std::os::fd::OwnedFd) -> Self {
        File { fd: Fd::from_owned(fd) }
    }
}

impl std::os::fd::AsRawFd for File {
    /// Lends the number; closing it is still the `File`'s (fd rule 3).
    fn as_raw_fd(&self) -> RawFd {
        self.fd.raw()
    }
}

impl std::os::fd::AsFd for File {
    /// Open for as long as the borrow: a live `File` holds the descriptor (fd rule 1), and
    /// only `close`, which takes the `File`, closes it through the ring.
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.borrowed()
    }
}

/// Registered-buffer mistakes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BufferError {
    /// The executor registered no buffers: set `RingConfig::registered_buffers`.
    NoneRegistered,
    /// Every buffer is claimed (from `try_claim_buffer`).
    AllClaimed,
    /// Too many tasks already wait for a buffer.
    WaitQueueFull,
    /// The task's executor is not on the ring driver (or the future is polled outside a
    /// keel task).
    NotOnRing,
    /// The task was cancelled while it waited for a buffer; it holds none.
    Cancelled,
    /// A [`ClaimBuffer`] future was polled in another executor's task than the one it
    /// queued in: await it where it started (its wait stays there until it is dropped).
    OtherExecutor,
}

impl std::fmt::Display for BufferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BufferError::NoneRegistered => f.write_str("no registered buffers: set RingConfig::registered_buffers"),
            BufferError::AllClaimed => f.write_str("every registered buffer is claimed: release one or wait"),
            BufferError::WaitQueueFull => f.write_str("too many tasks wait for a registered buffer"),
            BufferError::NotOnRing => f.write_str("the task's executor does not run the ring driver"),
            BufferError::Cancelled => f.write_str("the task was cancelled while waiting for a registered buffer"),
            BufferError::OtherExecutor => f.write_str("a registered-buffer claim was polled on another executor than the one it waits on: await it in the task that started it"),
        }
    }
}

fn fd(file: &File) -> types::Fd {
    types::Fd(file.fd.raw())
}

fn prio_op(op: RingOp, p: Priority, rt: bool) -> RingOp {
    op.with_priority(p, rt).unwrap_or_else(|op| op)
}

/// `open_how` flags for `openat2`.
pub fn open_how(flags: i32, mode: u32) -> types::OpenHow {
    types::OpenHow::new().flags(flags as u64 | libc::O_CLOEXEC as u64).mode(mode as u64)
}

/// A descriptor installed in the ring's fixed-file table (a direct descriptor). Close it
/// with `FiberFs::close_direct`; one never closed stays in the table until the ring goes.
#[derive(Debug, PartialEq, Eq)]
pub struct FixedFile {
    index: u32,
}

impl FixedFile {
    /// Its index in the fixed-file table.
    pub fn index(&self) -> u32 {
        self.index
    }
}

/// Blocking-style file operations for fiber tasks.
pub trait FiberFs {
    /// `openat2` straight into the ring's fixed-file table (`IORING_FILE_INDEX_ALLOC`); needs
    /// `RingConfig::registered_files`.
    fn open_direct(&mut self, path: &CStr, flags: i32, mode: u32) -> Result<FixedFile, Errno>;
    /// `pread` on a direct descriptor.
    fn read_direct(&mut self, file: &FixedFile, buf: &mut [u8], offset: u64) -> Result<u32, Errno>;
    /// `pwrite` on a direct descriptor.
    fn write_direct(&mut self, file: &FixedFile, buf: &[u8], offset: u64) -> Result<u32, Errno>;
    /// Cancels the direct descriptor's operations, then closes it through the ring; it is
    /// closed whatever this returns (a cancelled task: synchronously, fd rule 3).
    fn close_direct(&mut self, file: FixedFile) -> Result<(), Errno>;
    /// Runs one operation and waits for its completion (see the module doc).
    fn run_op(&mut self, op: RingOp) -> IoResult;
    /// `openat2(AT_FDCWD, path, &how, sizeof how)`, see openat2(2).
    fn open(&mut self, path: &CStr, flags: i32, mode: u32) -> Result<File, Errno>;
    /// `close(fd)`, see close(2): cancels the descriptor's operations first, waits for that,
    /// then closes it through the ring (or, if a future's operation still holds it, lets
    /// that operation's completion close it). The descriptor is closed whatever this returns:
    /// in a cancelled task (no ring operation can start) it cancels synchronously and closes
    /// with close(2) (fd rule 3).
    fn close(&mut self, file: File) -> Result<(), Errno>;
    /// `pread(fd, buf, len, offset)`, see pread(2).
    fn read(&mut self, file: &File, buf: &mut [u8], offset: u64) -> Result<u32, Errno>;
    /// `pwrite(fd, buf, len, offset)`, see pwrite(2).
    fn write(&mut self, file: &File, buf: &[u8], offset: u64) -> Result<u32, Errno>;
    /// `preadv(fd, iov, iovcnt, offset)`, see preadv(2).
    fn readv(&mut self, file: &File, bufs: &mut [IoSliceMut<'_>], offset: u64) -> Result<u32, Errno>;
    /// `pwritev(fd, iov, iovcnt, offset)`, see pwritev(2).
    fn writev(&mut self, file: &File, bufs: &[IoSlice<'_>], offset: u64) -> Result<u32, Errno>;
    /// `fsync(fd)`, see fsync(2): data and metadata durable.
    fn fsync(&mut self, file: &File) -> Result<(), Errno>;
    /// `fdatasync(fd)`, see fdatasync(2): the seed's "durable sync" of data.
    fn fdatasync(&mut self, file: &File) -> Result<(), Errno>;
    /// `sync_file_range(fd, offset, nbytes, flags)`, see sync_file_range(2).
    fn sync_file_range(&mut self, file: &File, offset: u64, len: u32, flags: u32) -> Result<(), Errno>;
    /// `fallocate(fd, mode, offset, len)`, see fallocate(2).
    fn fallocate(&mut self, file: &File, mode: i32, offset: u64, len: u64) -> Result<(), Errno>;
    /// Claims a registered buffer, waiting (FIFO) for one if all are claimed (regbuf
    /// rules 2-4). The [`FixedBuf`] is the claim: dropping it releases the buffer, to the
    /// oldest waiter if any (regbuf rule 3), however the holder ends. Cancelled while
    /// waiting: `BufferError::Cancelled`, and a buffer handed to it meanwhile goes on to
    /// the next waiter.
    fn claim_buffer(&mut self) -> Result<FixedBuf, BufferError>;
    /// Claims a registered buffer, or says none is free (`AllClaimed`).
    fn try_claim_buffer(&mut self) -> Result<FixedBuf, BufferError>;
    /// Releases a registered buffer now (the same as dropping it: regbuf rule 3).
    fn release_buffer(&mut self, buf: FixedBuf);
    /// `READ_FIXED` of up to `len` bytes into `buf`: `EINVAL` if `len` exceeds the
    /// buffer, `EXDEV` if `buf` belongs to another executor's ring (regbuf rule 1).
    fn read_fixed(&mut self, file: &File, buf: &mut FixedBuf, len: u32, offset: u64) -> Result<u32, Errno>;
    /// `WRITE_FIXED` of `len` bytes from `buf`; errors as for `read_fixed`.
    fn write_fixed(&mut self, file: &File, buf: &FixedBuf, len: u32, offset: u64) -> Result<u32, Errno>;
}

fn rt_allowed(f: &mut Fiber) -> bool {
    f.with_driver::<RingDriver, _>(|d| d.realtime_ioprio()).unwrap_or(false)
}

/// Whether `buf` may carry a fixed operation of `len` bytes on this fiber's ring (regbuf
/// rule 1): `EINVAL` if `len` exceeds it (or the executor has no ring), `EXDEV` if it is
/// another ring's. On success, whether High I/O priority may use the realtime class.
#[inline(always)]
pub(crate) fn fixed_check(f: &mut Fiber, buf: &FixedBuf, len: u32) -> Result<bool, Errno> {
    if len as usize > buf.len() {
        return Err(Errno::EINVAL);
    }
    match f.with_driver::<RingDriver, _>(|d| buf.is_of(&d.shared).then(|| d.realtime_ioprio())) {
        Some(Some(rt)) => Ok(rt),
        Some(None) => Err(Errno(libc::EXDEV)),
        None => Err(Errno::EINVAL),
    }
}

/// A claim on ring `d`'s registered set (regbuf rule 2): the buffer, or (if task
/// `waiter` is given) the ticket of its queued wait.
pub(crate) fn claim_on(
    d: &RingDriver,
    waiter: Option<keel_core::TaskHandle>,
) -> Result<Result<FixedBuf, crate::waitq::Ticket>, BufferError> {
    use crate::regbuf::Claim;
    let mut reg = d.shared.regbuf().ok_or(BufferError::NoneRegistered)?;
    let claim = match waiter {
        Some(me) => reg.claim_or_wait(me)?,
        None => Claim::Got(reg.try_claim().ok_or(BufferError::AllClaimed)?),
    };
    Ok(match claim {
        Claim::Got(i) => Ok(FixedBuf::new(&d.shared, &reg, i)),
        Claim::Queued(t) => Err(t),
    })
}

/// A woken registered-buffer waiter's next step on ring `d` (regbuf rules 3-4):
/// cancelled: leave (a buffer granted meanwhile goes on); else its buffer, or `None` for
/// a spurious wake.
pub(crate) fn collect_on(
    d: &RingDriver,
    t: crate::waitq::Ticket,
    cancelled: bool,
    me: Option<keel_core::TaskHandle>,
) -> Result<Option<FixedBuf>, BufferError> {
    use crate::regbuf::Collect;
    let mut reg = d.shared.regbuf().expect("keel bug: the registered buffers went away under a waiter");
    if cancelled {
        reg.leave(t);
        return Err(BufferError::Cancelled);
    }
    Ok(match reg.collect(t, me) {
        Collect::Got(i) => Some(FixedBuf::new(&d.shared, &reg, i)),
        Collect::Waiting => None, // a spurious wake: keep the place (waitq rule 2)
    })
}

impl FiberFs for Fiber {
    fn open_direct(&mut self, path: &CStr, flags: i32, mode: u32) -> Result<FixedFile, Errno> {
        // No O_CLOEXEC: a direct descriptor is not in the process's table, and the kernel
        // refuses the flag for it (EINVAL).
        let how = types::OpenHow::new().flags((flags & !libc::O_CLOEXEC) as u64).mode(mode as u64);
        let e = opcode::OpenAt2::new(types::Fd(libc::AT_FDCWD), path.as_ptr(), &how)
            .file_index(Some(types::DestinationSlot::auto_target()))
            .build();
        // SAFETY: `path` and `how` outlive `run_op`, which returns only after completion.
        let index = self.run_op(unsafe { RingOp::from_entry(e) })?;
        Ok(FixedFile { index })
    }

    fn read_direct(&mut self, file: &FixedFile, buf: &mut [u8], offset: u64) -> Result<u32, Errno> {
        let len = buf.len().min(u32::MAX as usize) as u32;
        let e = opcode::Read::new(types::Fixed(file.index), buf.as_mut_ptr(), len).offset(offset).build();
        let (p, rt) = (self.priorities().io, rt_allowed(self));
        // SAFETY: `buf` outlives `run_op`, which returns only after completion.
        self.run_op(prio_op(unsafe { RingOp::from_entry(e) }, p, rt))
    }

    fn write_direct(&mut self, file: &FixedFile, buf: &[u8], offset: u64) -> Result<u32, Errno> {
        let len = buf.len().min(u32::MAX as usize) as u32;
        let e = opcode::Write::new(types::Fixed(file.index), buf.as_ptr(), len).offset(offset).build();
        let (p, rt) = (self.priorities().io, rt_allowed(self));
        // SAFETY: as in `read_direct`.
        self.run_op(prio_op(unsafe { RingOp::from_entry(e) }, p, rt))
    }

    fn close_direct(&mut self, file: FixedFile) -> Result<(), Errno> {
        close_fixed_fiber(self, file.index)
    }

    #[inline(always)] // the fiber's suspend must not straddle an out-of-line frame (arch doc)
    fn run_op(&mut self, op: RingOp) -> IoResult {
        let st = pin!(IoStatus::new());
        match self.initiate::<RingDriver>(st.as_ref(), op) {
            Ok(()) => {}
            Err(InitiateError::Cancelled(_)) => return Err(Errno::ECANCELED),
            Err(InitiateError::Refused(_, e)) => return Err(e),
            Err(_) => return Err(Errno::EINVAL),
        }
        let mut cancel_sent = false;
        while st.is_in_flight() {
            if self.is_cancelled() && !cancel_sent {
                self.cancel_io(st.as_ref());
                cancel_sent = true;
            }
            self.wait_io();
        }
        st.result().unwrap_or(Err(Errno::EIO))
    }

    fn open(&mut self, path: &CStr, flags: i32, mode: u32) -> Result<File, Errno> {
        let how = open_how(flags, mode);
        let e = opcode::OpenAt2::new(types::Fd(libc::AT_FDCWD), path.as_ptr(), &how).build();
        // SAFETY: `path` and `how` outlive `run_op`, which returns only after completion.
        let fd = self.run_op(unsafe { RingOp::from_entry(e) })?;
        Ok(File { fd: Fd::new(fd as RawFd) }) // the kernel made it for us: ours
    }

    fn close(&mut self, file: File) -> Result<(), Errno> {
        close_fiber(self, file.fd)
    }

    #[inline(always)] // the fiber's suspend must not straddle an out-of-line frame (arch doc)
    fn read(&mut self, file: &File, buf: &mut [u8], offset: u64) -> Result<u32, Errno> {
        let len = buf.len().min(u32::MAX as usize) as u32;
        let e = opcode::Read::new(fd(file), buf.as_mut_ptr(), len).offset(offset).build();
        let (p, rt) = (self.priorities().io, rt_allowed(self));
        // SAFETY: `buf` outlives `run_op`, which returns only after completion.
        self.run_op(prio_op(unsafe { RingOp::from_entry(e) }, p, rt))
    }

    #[inline(always)] // the fiber's suspend must not straddle an out-of-line frame (arch doc)
    fn write(&mut self, file: &File, buf: &[u8], offset: u64) -> Result<u32, Errno> {
        let len = buf.len().min(u32::MAX as usize) as u32;
        let e = opcode::Write::new(fd(file), buf.as_ptr(), len).offset(offset).build();
        let (p, rt) = (self.priorities().io, rt_allowed(self));
        // SAFETY: as in `read`.
        self.run_op(prio_op(unsafe { RingOp::from_entry(e) }, p, rt))
    }

    fn readv(&mut self, file: &File, bufs: &mut [IoSliceMut<'_>], offset: u64) -> Result<u32, Errno> {
        let e = opcode::Readv::new(fd(file), bufs.as_ptr().cast(), bufs.len() as u32).offset(offset).build();
        let (p, rt) = (self.priorities().io, rt_allowed(self));
        // SAFETY: `IoSliceMut` is ABI-compatible with iovec; the slices outlive `run_op`.
        self.run_op(prio_op(unsafe { RingOp::from_entry(e) }, p, rt))
    }

    fn writev(&mut self, file: &File, bufs: &[IoSlice<'_>], offset: u64) -> Result<u32, Errno> {
        let e = opcode::Writev::new(fd(file), bufs.as_ptr().cast(), bufs.len() as u32).offset(offset).build();
        let (p, rt) = (self.priorities().io, rt_allowed(self));
        // SAFETY: as in `readv`.
        self.run_op(prio_op(unsafe { RingOp::from_entry(e) }, p, rt))
    }

    fn fsync(&mut self, file: &File) -> Result<(), Errno> {
        let e = opcode::Fsync::new(fd(file)).build();
        // SAFETY: no memory is referenced.
        self.run_op(unsafe { RingOp::from_entry(e) }).map(drop)
    }

    fn fdatasync(&mut self, file: &File) -> Result<(), Errno> {
        let e = opcode::Fsync::new(fd(file)).flags(types::FsyncFlags::DATASYNC).build();
        // SAFETY: no memory is referenced.
        self.run_op(unsafe { RingOp::from_entry(e) }).map(drop)
    }

    fn sync_file_range(&mut self, file: &File, offset: u64, len: u32, flags: u32) -> Result<(), Errno> {
        let e = opcode::SyncFileRange::new(fd(file), len).offset(offset).flags(flags).build();
        // SAFETY: no memory is referenced.
        self.run_op(unsafe { RingOp::from_entry(e) }).map(drop)
    }

    fn fallocate(&mut self, file: &File, mode: i32, offset: u64, len: u64) -> Result<(), Errno> {
        let e = opcode::Fallocate::new(fd(file), len).offset(offset).mode(mode).build();
        // SAFETY: no memory is referenced.
        self.run_op(unsafe { RingOp::from_entry(e) }).map(drop)
    }

    fn claim_buffer(&mut self) -> Result<FixedBuf, BufferError> {
        let me = self.task();
        let t = match self.with_driver::<RingDriver, _>(|d| claim_on(d, Some(me))) {
            None => return Err(BufferError::NotOnRing),
            Some(Err(e)) => return Err(e),
            Some(Ok(Ok(b))) => return Ok(b),
            Some(Ok(Err(t))) => t,
        };
        loop {
            let woke = self.wait();
            // Every way out of this wait goes through the queue (waitq rule 3).
            match self
                .with_driver::<RingDriver, _>(|d| collect_on(d, t, woke.is_err(), None))
                .expect("keel bug: the driver changed under a waiting task")
            {
                Ok(Some(b)) => return Ok(b),
                Ok(None) => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn try_claim_buffer(&mut self) -> Result<FixedBuf, BufferError> {
        match self.with_driver::<RingDriver, _>(|d| claim_on(d, None)) {
            None => Err(BufferError::NotOnRing),
            Some(Err(e)) => Err(e),
            Some(Ok(Ok(b))) => Ok(b),
            Some(Ok(Err(_))) => unreachable!("keel bug: a claim that may not wait queued"),
        }
    }

    fn release_buffer(&mut self, buf: FixedBuf) {
        drop(buf); // regbuf rule 3
    }

    #[inline(always)] // the fiber's suspend must not straddle an out-of-line frame (arch doc)
    fn read_fixed(&mut self, file: &File, buf: &mut FixedBuf, len: u32, offset: u64) -> Result<u32, Errno> {
        let rt = fixed_check(self, buf, len)?;
        let e = opcode::ReadFixed::new(fd(file), buf.as_mut_ptr(), len, buf.index()).offset(offset).build();
        let p = self.priorities().io;
        // SAFETY: `buf` is this ring's registered buffer, at least `len` bytes (checked),
        // and borrowed exclusively until `run_op` returns, after the completion (regbuf
        // rules 1 and 5).
        self.run_op(prio_op(unsafe { RingOp::from_entry(e) }, p, rt))
    }

    #[inline(always)] // the fiber's suspend must not straddle an out-of-line frame (arch doc)
    fn write_fixed(&mut self, file: &File, buf: &FixedBuf, len: u32, offset: u64) -> Result<u32, Errno> {
        let rt = fixed_check(self, buf, len)?;
        let e = opcode::WriteFixed::new(fd(file), buf.as_ptr().cast_mut(), len, buf.index()).offset(offset).build();
        let p = self.priorities().io;
        // SAFETY: as in `read_fixed`; the kernel only reads the buffer, which stays
        // borrowed until the completion.
        self.run_op(prio_op(unsafe { RingOp::from_entry(e) }, p, rt))
    }
}

// ---- futures: owned buffers ----

/// A future for one owned-buffer operation: submitted on first poll (queueing for room
/// if needed), result and buffer taken from the driver slot on completion, cancelled and
/// left to the slot if dropped in flight (`kept::Kept`, whose result it turns into an
/// `IoResult`).
pub struct OwnedOp(Kept);

impl OwnedOp {
    /// An owned operation.
    pub fn new(op: RingOp) -> Self {
        OwnedOp(Kept::new(op))
    }

    /// An owned operation that fails with `EBUSY` instead of waiting when there is no room
    /// (every slot taken, the SQ full, or the in-flight limit reached).
    pub fn new_nowait(op: RingOp) -> Self {
        OwnedOp(Kept::new_nowait(op))
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
        let p = keel_core::rt::priorities(cx).map(|p| p.io).unwrap_or_default();
        let rt = keel_core::io_status::with_driver::<RingDriver, _>(cx, |d| d.realtime_ioprio()).unwrap_or(false);
        Poll::Ready((p, rt))
    })
    .await
}

/// `openat2(AT_FDCWD, path, &how, sizeof how)`, see openat2(2). If the future is dropped
/// before completion, a descriptor the kernel opens anyway is closed.
pub async fn open(path: &str, flags: i32, mode: u32) -> Result<File, Errno> {
    // One owned buffer holds the open_how and the NUL-terminated path.
    let how_len = core::mem::size_of::<types::OpenHow>();
    let mut bytes = Vec::with_capacity(how_len + path.len() + 1);
    let how = open_how(flags, mode);
    #[allow(unsafe_code)]
    // SAFETY: `OpenHow` is plain old data (three u64s).
    bytes.extend_from_slice(unsafe { core::slice::from_raw_parts(&how as *const _ as *const u8, how_len) });
    if path.as_bytes().contains(&0) {
        return Err(Errno::EINVAL);
    }
    bytes.extend_from_slice(path.as_bytes());
    bytes.push(0);
    let raw = RawBuf::from_vec(bytes);
    let (how_ptr, path_ptr) =
        (raw.ptr() as *const types::OpenHow, raw.ptr().wrapping_add(how_len) as *const libc::c_char);
    let e = opcode::OpenAt2::new(types::Fd(libc::AT_FDCWD), path_ptr, how_ptr).build();
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

/// Whether a cancel's result says it did not run (so the descriptor's operations may
/// still be in flight): refused before submission (cancelled task, no room) or itself
/// cancelled.
fn cancel_not_run(r: &Result<u32, Errno>) -> bool {
    matches!(r, Err(e) if *e != Errno::ENOENT && *e != Errno(libc::EALREADY) && *e != Errno::EINVAL)
}

/// fd rule 3 for a direct descriptor, fibers (`FiberFs::close_direct`,
/// `FiberNet::close_fixed_socket`): cancel its operations, then close it through the ring;
/// what cannot start (a cancelled task) is done synchronously (`sync_close_fixed`).
pub(crate) fn close_fixed_fiber(f: &mut Fiber, index: u32) -> Result<(), Errno> {
    let s = crate::net::Sock::Fixed(index);
    // SAFETY: cancel and close SQEs reference no memory.
    let cancelled = run_to_end(f, unsafe { RingOp::from_entry(crate::net::cancel_fd_sqe(s)) });
    // SAFETY: as above.
    let closed = match cancelled
        .is_some()
        .then(|| run_to_end(f, unsafe { RingOp::from_entry(crate::net::close_sqe(s)) }))
        .flatten()
    {
        Some(Err(Errno::ECANCELED)) | None => {
            return f
                .with_driver::<RingDriver, _>(|d| {
                    // SAFETY: driver rule 2 (keel-core): this crate's own state in the driver (and at most
                    // a cancel of an op it keeps itself); not replaced, no other code runs meanwhile.
                    let d = unsafe { d.get_mut() };
                    d.sync_close_fixed(index)
                })
                .unwrap_or(Err(Errno::EINVAL));
        }
        Some(r) => r.map(drop),
    };
    cancelled.map_or(Ok(()), crate::net::cancel_ok).and(closed)
}

/// fd rule 3 for a direct descriptor, futures (`net::future::close_fixed_socket`).
pub(crate) async fn close_fixed_shared(index: u32) -> Result<(), Errno> {
    let s = crate::net::Sock::Fixed(index);
    // SAFETY: a cancel SQE references no memory.
    let cancelled = OwnedOp::new(unsafe { RingOp::owned(crate::net::cancel_fd_sqe(s), None) }).await.0;
    let closed = if cancel_not_run(&cancelled) {
        Err(Errno::ECANCELED)
    } else {
        // SAFETY: as above.
        OwnedOp::new(unsafe { RingOp::owned(crate::net::close_sqe(s), None) }).await.0.map(drop)
    };
    match closed {
        Err(Errno::ECANCELED) | Err(Errno::EPERM) => {
            let r = core::future::poll_fn(|cx| {
                Poll::Ready(keel_core::io_status::with_driver::<RingDriver, _>(cx, |d| {
                    // SAFETY: driver rule 2 (keel-core): this crate's own state in the driver (and at most
                    // a cancel of an op it keeps itself); not replaced, no other code runs meanwhile.
                    let d = unsafe { d.get_mut() };
                    d.sync_close_fixed(index)
                }))
            })
            .await;
            r.unwrap_or(Err(Errno::EPERM)) // outside a task there is no ring to reach
        }
        closed => crate::net::cancel_ok(cancelled).and(closed),
    }
}

/// fd rule 3 for futures (`close`, `net::future::close_socket`).
pub(crate) async fn close_shared(fd: SharedFd) -> Result<(), Errno> {
    let raw = fd.raw();
    // The cancel holds the descriptor too: its number is not reused under it.
    // SAFETY: a cancel SQE references no memory.
    let cancel = unsafe { RingOp::owned(crate::net::cancel_fd_sqe(crate::net::Sock::Fd(raw)), None) };
    let cancelled = OwnedOp::new(cancel).holding(Some(&fd)).await.0;
    if cancel_not_run(&cancelled) {
        core::future::poll_fn(|cx| {
            Poll::Ready(keel_core::io_status::with_driver::<RingDriver, _>(cx, |d| {
                // SAFETY: driver rule 2 (keel-core): this crate's own state in the driver (and at most
                // a cancel of an op it keeps itself); not replaced, no other code runs meanwhile.
                let d = unsafe { d.get_mut() };
                d.sync_cancel_fd(raw)
            }))
        })
        .await;
    }
    let cancelled = crate::net::cancel_ok(cancelled).or_else(|e| if cancel_not_run(&Err(e)) { Ok(()) } else { Err(e) });
    // The close holds our reference: if it never runs (refused, cancelled) dropping it
    // closes the descriptor with close(2); if it completes, the kernel closed it.
    let e = opcode::Close::new(types::Fd(raw)).build();
    let closed = if Rc::strong_count(&fd) == 1 {
        // SAFETY: no memory is referenced.
        match OwnedOp::new(unsafe { RingOp::owned(e, None) }).holding(Some(&fd)).await.0 {
            Ok(_) => Ok(()),
            // A cancelled task: refused, or cancelled before the kernel ran it; the drop of
            // `fd` below closes it with close(2) (slot rule 4 left it unmarked).
            Err(Errno::ECANCELED) => Ok(()),
            // Outside a keel task (EPERM) or not on a ring (EINVAL): an error, and the drop
            // of `fd` below closes it all the same; else the kernel ran close(2).
            Err(e) => Err(e),
        }
    } else {
        Ok(()) // an operation still holds it: its completion closes it (fd rule 3)
    };
    drop(fd);
    cancelled.and(closed)
}

/// Runs `op` to its completion without cancelling it (a cancel of the descriptor's
/// operations, a close: both end promptly), even in a cancelled task; `None` if it could
/// not start (the task is cancelled, the executor has no ring).
#[inline(always)] // the fiber's suspend must not straddle an out-of-line frame (arch doc)
fn run_to_end(f: &mut Fiber, op: RingOp) -> Option<IoResult> {
    let st = pin!(IoStatus::new());
    f.initiate::<RingDriver>(st.as_ref(), op).ok()?;
    while st.is_in_flight() {
        f.wait_io();
    }
    Some(st.result().unwrap_or(Err(Errno::EIO)))
}

/// fd rule 3 for fibers (`FiberFs::close`, `FiberNet::close_socket`): the cancel and the
/// close run to their completions even in a cancelled task; what cannot start (a
/// cancelled task starts no ring operation) is done without the ring: a synchronous
/// cancel, then close(2).
pub(crate) fn close_fiber(f: &mut Fiber, fd: SharedFd) -> Result<(), Errno> {
    let raw = fd.raw();
    // SAFETY: a cancel SQE references no memory; `fd` is held until `run_to_end` returns,
    // after the completion.
    let cancelled =
        match run_to_end(f, unsafe { RingOp::from_entry(crate::net::cancel_fd_sqe(crate::net::Sock::Fd(raw))) }) {
            Some(r) => crate::net::cancel_ok(r),
            None => {
                f.with_driver::<RingDriver, _>(|d| {
                    // SAFETY: driver rule 2 (keel-core): this crate's own state in the driver (and at most
                    // a cancel of an op it keeps itself); not replaced, no other code runs meanwhile.
                    let d = unsafe { d.get_mut() };
                    d.sync_cancel_fd(raw)
                });
                Ok(())
            }
        };
    let raw = match Fd::try_into_raw(fd) {
        Ok(raw) => raw,
        Err(shared) => {
            drop(shared); // an operation still holds it: its completion closes it (fd rule 3)
            return cancelled;
        }
    };
    let e = opcode::Close::new(types::Fd(raw)).build();
    // SAFETY: no memory is referenced.
    let closed = match run_to_end(f, unsafe { RingOp::from_entry(e) }) {
        Some(Ok(_)) => Ok(()),
        // Not run (it could not start, or the executor's final cancel reached it first).
        None | Some(Err(Errno::ECANCELED)) => {
            // SAFETY: we held the only reference and no operation names the descriptor.
            unsafe { rustix::io::close(raw) };
            Ok(())
        }
        Some(Err(e)) => Err(e), // the kernel ran close(2): the descriptor is gone either way
    };
    cancelled.and(closed)
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
    let n = raw.as_ref().map(|r| r.len()).unwrap_or(0);
    (res, raw.map(|r| r.into_vec(n)).unwrap_or_default())
}

/// `READ_FIXED` of up to `len` bytes into registered buffer `buf` at `offset` (the future
/// form of [`FiberFs::read_fixed`]): the buffer goes with the operation and comes back
/// with the result. `EINVAL` if `len` exceeds the buffer, `EXDEV` if `buf` belongs to
/// another executor's ring (regbuf rule 1). Dropped in flight, the buffer stays with the
/// operation's slot until the kernel is done with it, then is released (regbuf rule 5).
pub async fn read_fixed(file: &File, mut buf: FixedBuf, len: u32, offset: u64) -> (Result<u32, Errno>, FixedBuf) {
    if len as usize > buf.len() {
        return (Err(Errno::EINVAL), buf);
    }
    let (p, rt) = io_priority().await;
    let e = opcode::ReadFixed::new(fd(file), buf.as_mut_ptr(), len, buf.index()).offset(offset).build();
    // SAFETY: the SQE references only `buf` (`len` bytes, checked), which the operation
    // holds until its completion, and the slot if the future is dropped first (regbuf
    // rule 5); it is submitted only on `buf`'s own ring (`Kept::holding_fixed`).
    fixed_op(file, prio_op(unsafe { RingOp::owned(e, None) }, p, rt), buf).await
}

/// `WRITE_FIXED` of `len` bytes from registered buffer `buf` at `offset` (the future form
/// of [`FiberFs::write_fixed`]); errors and lifetime as for [`read_fixed`].
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
    let mut k = Kept::new(op).holding(Some(&file.fd)).holding_fixed(buf);
    let (res, _, _) = (&mut k).await;
    (to_result(res), k.take_fixed().expect("keel bug: a fixed operation lost its buffer"))
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
/// [`FiberFs::claim_buffer`]. Dropped or cancelled while it waits, it leaves the queue,
/// and a buffer handed to it meanwhile goes on to the next waiter (waitq rule 3).
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
        let cancelled = keel_core::rt::is_cancelled(cx);
        if let (Some(t), Some(shared)) = (self.ticket, self.shared.clone()) {
            let r = keel_core::io_status::with_driver::<RingDriver, _>(cx, |d| {
                if !Rc::ptr_eq(&d.shared, &shared) {
                    return Err(BufferError::OtherExecutor); // `Drop` leaves its own queue
                }
                collect_on(d, t, cancelled, keel_core::rt::current_task(cx))
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
        let Some(me) = keel_core::rt::current_task(cx) else { return Poll::Ready(Err(BufferError::NotOnRing)) };
        let r = keel_core::io_status::with_driver::<RingDriver, _>(cx, |d| {
            claim_on(d, Some(me)).map(|c| c.map_err(|t| (t, d.shared.clone())))
        });
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
