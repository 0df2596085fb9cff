//! File operations for fiber tasks ([`FiberFs`]): blocking-style calls with borrowed
//! buffers. Each pins an `IoStatus` on the fiber's stack, initiates the operation and
//! suspends until that operation completes; a cancelled task's operation is cancelled
//! and still waited for, so the kernel never writes into a stack frame that was left.
//! Registered-buffer claims for fibers wait in the same FIFO as futures' (regbuf rules
//! 2-4).
#![allow(unsafe_code)] // building SQEs that point at borrowed buffers; each use says why the buffer outlives the op

use super::{BufferError, File, FixedFile, close_fiber, close_fixed_fiber, cwd, fd, open_how, prio_op};
use crate::fd::Fd;
use crate::flags::{FallocateFlags, Mode, OFlags, PathArg, SyncFileRangeFlags};
use crate::regbuf::FixedBuf;
use crate::ring::{RingDriver, RingOp};
use io_uring::{opcode, types};
use keel_core::{Errno, Fiber, InitiateError, IoResult, IoStatus};
use std::ffi::CStr;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::RawFd;
use std::pin::pin;

/// Blocking-style file operations for fiber tasks.
pub trait FiberFs {
    /// `openat2` straight into the ring's fixed-file table (`IORING_FILE_INDEX_ALLOC`); needs
    /// `RingConfig::registered_files`.
    fn open_direct(&mut self, path: impl PathArg, flags: OFlags, mode: Mode) -> Result<FixedFile, Errno>;
    /// `pread` on a direct descriptor.
    fn read_direct(&mut self, file: &FixedFile, buf: &mut [u8], offset: u64) -> Result<u32, Errno>;
    /// `pwrite` on a direct descriptor.
    fn write_direct(&mut self, file: &FixedFile, buf: &[u8], offset: u64) -> Result<u32, Errno>;
    /// Cancels the direct descriptor's operations, then closes it through the ring; it is
    /// closed whatever this returns (a cancelled task: synchronously, fd rule 3).
    fn close_direct(&mut self, file: FixedFile) -> Result<(), Errno>;
    /// Runs one operation and waits for its completion (see the module doc).
    fn run_op(&mut self, op: RingOp) -> IoResult;
    /// A no-op through the ring (`IORING_OP_NOP`), for measuring the path: the fiber form
    /// of [`fs::nop`](super::nop).
    fn nop(&mut self) -> IoResult;
    /// `openat2(AT_FDCWD, path, &how, sizeof how)` with `how = {flags | O_CLOEXEC, mode}`,
    /// see openat2(2). The flags are typed (`flags` module):
    ///
    /// ```compile_fail,E0308
    /// // Rejected: libc's O_CREAT is an integer, not `OFlags`.
    /// use keel_linux::fs::{FiberFs, Mode};
    /// fn body(f: &mut keel_core::Fiber) {
    ///     let _ = f.open(c"/tmp/x", libc::O_CREAT, Mode::empty());
    /// }
    /// ```
    ///
    /// ```
    /// use keel_linux::fs::{FiberFs, Mode, OFlags};
    /// fn body(f: &mut keel_core::Fiber) {
    ///     let _ = f.open(c"/tmp/x", OFlags::CREATE | OFlags::RDWR, Mode::from_raw_mode(0o644));
    ///     // A raw integer only through the named, checked escape hatch:
    ///     let flags = keel_linux::flags::raw::oflags(libc::O_CREAT).unwrap();
    ///     let _ = f.open(c"/tmp/x", flags, Mode::empty());
    /// }
    /// ```
    fn open(&mut self, path: impl PathArg, flags: OFlags, mode: Mode) -> Result<File, Errno>;
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
    /// `fdatasync(fd)`, see fdatasync(2): the durable sync of data.
    fn fdatasync(&mut self, file: &File) -> Result<(), Errno>;
    /// `sync_file_range(fd, offset, nbytes, flags)`, see sync_file_range(2).
    fn sync_file_range(&mut self, file: &File, offset: u64, len: u32, flags: SyncFileRangeFlags) -> Result<(), Errno>;
    /// `fallocate(fd, mode, offset, len)`, see fallocate(2).
    fn fallocate(&mut self, file: &File, mode: FallocateFlags, offset: u64, len: u64) -> Result<(), Errno>;
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

/// Runs `f` with `path` as a NUL-terminated string (on the stack for a short path, else
/// allocated; one that holds a NUL byte is `EINVAL`).
fn with_c_path<T>(path: impl PathArg, f: impl FnOnce(&CStr) -> Result<T, Errno>) -> Result<T, Errno> {
    path.into_with_c_str(|c| Ok(f(c))).map_err(|e| Errno(e.raw_os_error()))?
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
        Some(None) => Err(crate::errno::EXDEV),
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
    fn open_direct(&mut self, path: impl PathArg, flags: OFlags, mode: Mode) -> Result<FixedFile, Errno> {
        // No O_CLOEXEC: a direct descriptor is not in the process's table, and the kernel
        // refuses the flag for it (EINVAL).
        let how = types::OpenHow::new().flags((flags - OFlags::CLOEXEC).bits() as u64).mode(mode.bits() as u64);
        with_c_path(path, |path| {
            let e = opcode::OpenAt2::new(types::Fd(cwd()), path.as_ptr(), &how)
                .file_index(Some(types::DestinationSlot::auto_target()))
                .build();
            // SAFETY: `path` and `how` outlive `run_op`, which returns only after completion.
            let index = self.run_op(unsafe { RingOp::from_entry(e) })?;
            Ok(FixedFile { index })
        })
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
        // Deadline scopes (scope rule 2): one thread-local load while none is open.
        let op = match crate::deadline::scope::deadline_of(|| Some(self.task())) {
            None => op,
            Some(at) => op.scoped(at),
        };
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

    fn nop(&mut self) -> IoResult {
        self.run_op(RingOp::nop())
    }

    fn open(&mut self, path: impl PathArg, flags: OFlags, mode: Mode) -> Result<File, Errno> {
        let how = open_how(flags, mode);
        with_c_path(path, |path| {
            let e = opcode::OpenAt2::new(types::Fd(cwd()), path.as_ptr(), &how).build();
            // SAFETY: `path` and `how` outlive `run_op`, which returns only after completion.
            let fd = self.run_op(unsafe { RingOp::from_entry(e) })?;
            Ok(File { fd: Fd::new(fd as RawFd) }) // the kernel made it for us: ours
        })
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

    fn sync_file_range(&mut self, file: &File, offset: u64, len: u32, flags: SyncFileRangeFlags) -> Result<(), Errno> {
        let e = opcode::SyncFileRange::new(fd(file), len).offset(offset).flags(flags.bits()).build();
        // SAFETY: no memory is referenced.
        self.run_op(unsafe { RingOp::from_entry(e) }).map(drop)
    }

    fn fallocate(&mut self, file: &File, mode: FallocateFlags, offset: u64, len: u64) -> Result<(), Errno> {
        let e = opcode::Fallocate::new(fd(file), len).offset(offset).mode(mode.bits() as i32).build();
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
