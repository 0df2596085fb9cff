//! Signals as events: a task waits for a signal by reading a signalfd through the ring
//! (`IORING_OP_READ` of one `signalfd_siginfo`), fibers ([`FiberSignal::next_signal`]) and
//! futures ([`next_signal`]).
//!
//! Rules (cited as "signal rule N"):
//! 1. **Block first.** A signal reaches a signalfd only while it is pending, so it must be
//!    blocked, or its disposition (default: terminate) runs instead. Block the set with
//!    [`block`] (`pthread_sigmask(SIG_BLOCK)`) on the executor's thread **before** any
//!    other thread starts (threads inherit the mask), or in every thread: a
//!    process-directed signal goes to any one thread that does not block it.
//! 2. **Whose signals.** A read dequeues the signals pending for the process and for the
//!    thread the read runs in. keel's read runs on the executor's thread: the signalfd is
//!    not `O_NONBLOCK` (a non-blocking file makes io_uring fail the read with `EAGAIN`
//!    rather than wait), io_uring waits for it to become readable and retries the read in
//!    the submitting thread's context, so a signal sent to the executor's thread
//!    (`pthread_kill`, `tgkill`) and one sent to the process (`kill`) both arrive
//!    (`linux/tests/signal_events.rs` checks the thread-directed case).
//! 3. **Exactly once.** A read cancelled before it dequeued a signal leaves the signal
//!    pending; a cancelled task's read returns its own completion (a signal, if the
//!    kernel dequeued one first). A future dropped after the kernel dequeued a signal
//!    but before taking it puts the signal back: the completion's buffer, dropped by the
//!    driver, re-queues it to the executor's thread with its `siginfo`
//!    (`rt_tgsigqueueinfo`, allowed to a process's own threads), where it is pending again
//!    for the next read. Standard signals still merge with an instance already pending, as
//!    the kernel always merges them.
//! 4. **The descriptor** is a [`SignalFd`], held open by each read in flight (fd rule 1)
//!    and closed when it and the last read are gone. Its mask is fixed at creation.
//!
//! Cold: creating, blocking and re-queuing are syscalls; a read is one ring operation.
#![allow(unsafe_code)] // sigset_t, signalfd(2), pthread_sigmask(3), rt_tgsigqueueinfo(2); SQEs into buffers that outlive the read

use crate::fd::{Fd, SharedFd};
use crate::fs::FiberFs;
use crate::ring::RingOp;
use io_uring::{opcode, squeue, types};
use keel_core::{Errno, Fiber};
use std::os::fd::RawFd;

pub use crate::signal_future::next_signal;
pub use rustix::process::Signal;

/// A set of signals (`sigset_t`).
#[derive(Copy, Clone)]
pub struct SignalSet {
    set: libc::sigset_t,
}

impl core::fmt::Debug for SignalSet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let members: Vec<i32> = (1..65).filter(|&s| self.contains_raw(s)).collect();
        f.debug_struct("SignalSet").field("signals", &members).finish()
    }
}

impl SignalSet {
    /// The empty set.
    pub fn empty() -> Self {
        // SAFETY: `sigemptyset` initialises the set it is given.
        unsafe {
            let mut set = core::mem::zeroed();
            libc::sigemptyset(&mut set);
            SignalSet { set }
        }
    }

    /// The set of `signals`.
    pub fn of(signals: &[Signal]) -> Self {
        let mut s = Self::empty();
        for &sig in signals {
            s.add(sig);
        }
        s
    }

    /// Adds `sig`.
    pub fn add(&mut self, sig: Signal) {
        // SAFETY: an initialised set and a valid signal number (`Signal` holds only those).
        unsafe { libc::sigaddset(&mut self.set, sig.as_raw()) };
    }

    /// Whether `sig` is in the set.
    pub fn contains(&self, sig: Signal) -> bool {
        self.contains_raw(sig.as_raw())
    }

    fn contains_raw(&self, sig: i32) -> bool {
        // SAFETY: an initialised set; an out-of-range number is -1, not a read out of bounds.
        unsafe { libc::sigismember(&self.set, sig) == 1 }
    }
}

/// Blocks `set` in the calling thread (signal rule 1): `pthread_sigmask(SIG_BLOCK, set)`.
/// Returns the mask before, for [`set_mask`].
pub fn block(set: &SignalSet) -> Result<SignalSet, Errno> {
    mask(libc::SIG_BLOCK, set)
}

/// Sets the calling thread's mask to `set` (`pthread_sigmask(SIG_SETMASK, set)`), as
/// [`block`] returned it; returns the mask before.
pub fn set_mask(set: &SignalSet) -> Result<SignalSet, Errno> {
    mask(libc::SIG_SETMASK, set)
}

fn mask(how: i32, set: &SignalSet) -> Result<SignalSet, Errno> {
    let mut old = SignalSet::empty();
    // SAFETY: both sets are initialised; the call writes only `old`.
    let r = unsafe { libc::pthread_sigmask(how, &set.set, &mut old.set) };
    if r == 0 { Ok(old) } else { Err(Errno(r)) }
}

/// A signalfd for a set of signals (signal rule 4). `!Send`, as a `File`.
#[derive(Debug)]
pub struct SignalFd {
    pub(crate) fd: SharedFd,
}

impl SignalFd {
    /// `signalfd(-1, set, SFD_CLOEXEC)`, see signalfd(2): not `SFD_NONBLOCK` (signal rule 2).
    /// Block `set` first (signal rule 1).
    pub fn new(set: &SignalSet) -> Result<Self, Errno> {
        // SAFETY: an initialised set; the call makes a new descriptor or fails.
        let fd = unsafe { libc::signalfd(-1, &set.set, libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL)));
        }
        Ok(SignalFd { fd: Fd::new(fd) }) // made for us: ours
    }

    /// The descriptor.
    pub fn fd(&self) -> RawFd {
        self.fd.raw()
    }
}

impl std::os::fd::AsFd for SignalFd {
    /// Open for as long as the borrow (signal rule 4), for `ready::poll` and the like.
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.borrowed()
    }
}

impl std::os::fd::AsRawFd for SignalFd {
    /// Lends the number; closing it stays the `SignalFd`'s.
    fn as_raw_fd(&self) -> RawFd {
        self.fd.raw()
    }
}

/// One signal as the signalfd reports it (`struct signalfd_siginfo`, the fields a server
/// reads).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SignalInfo {
    /// The signal number (`ssi_signo`).
    pub signo: i32,
    /// How it was sent (`ssi_code`: `SI_USER` for kill(2), `SI_TKILL` for tgkill(2),
    /// `SI_QUEUE` for sigqueue(3), a positive value from the kernel).
    pub code: i32,
    /// The sender's process id (`ssi_pid`) for a signal sent by a process.
    pub pid: u32,
    /// The sender's real user id (`ssi_uid`).
    pub uid: u32,
    /// A child's exit status or signal (`ssi_status`, `SIGCHLD`).
    pub status: i32,
    /// The value sent with sigqueue(3) (`ssi_int`).
    pub int: i32,
}

impl SignalInfo {
    /// The signal as a named `Signal`; `None` for a real-time signal.
    pub fn signal(&self) -> Option<Signal> {
        Signal::from_named_raw(self.signo)
    }

    pub(crate) fn from_raw(s: &libc::signalfd_siginfo) -> Self {
        SignalInfo {
            signo: s.ssi_signo as i32,
            code: s.ssi_code,
            pid: s.ssi_pid,
            uid: s.ssi_uid,
            status: s.ssi_status,
            int: s.ssi_int,
        }
    }
}

/// A zeroed `signalfd_siginfo` (`ssi_signo == 0`: nothing read).
pub(crate) fn zeroed_info() -> libc::signalfd_siginfo {
    // SAFETY: plain old data; all-zero is valid.
    unsafe { core::mem::zeroed() }
}

pub(crate) const INFO_LEN: u32 = core::mem::size_of::<libc::signalfd_siginfo>() as u32;

pub(crate) fn read_sqe(fd: RawFd, buf: *mut libc::signalfd_siginfo) -> squeue::Entry {
    opcode::Read::new(types::Fd(fd), buf.cast(), INFO_LEN).offset(u64::MAX).build()
}

/// A read's result as a signal: a whole `signalfd_siginfo`, or `EIO` (the kernel never
/// returns part of one).
pub(crate) fn info_of(n: u32, raw: &libc::signalfd_siginfo) -> Result<SignalInfo, Errno> {
    if n == INFO_LEN { Ok(SignalInfo::from_raw(raw)) } else { Err(Errno::EIO) }
}

/// Signal rule 3: puts a signal a read dequeued, and nobody took, back as pending on the
/// calling thread (the executor's) with its `siginfo`. Best effort: the kernel refuses
/// only a queue at its limit (`EAGAIN`), and then the signal is lost as an overflowing
/// real-time queue loses it.
pub(crate) fn requeue(raw: &libc::signalfd_siginfo) {
    if raw.ssi_signo == 0 {
        return;
    }
    // SAFETY: `siginfo_t` is plain old data; all-zero is valid.
    let mut si: libc::siginfo_t = unsafe { core::mem::zeroed() };
    si.si_signo = raw.ssi_signo as i32;
    si.si_code = raw.ssi_code;
    si.si_errno = raw.ssi_errno;
    // The union's `_kill`/`_rt` layout: pid, uid, then the value (include/uapi/asm-generic/siginfo.h).
    #[repr(C)]
    struct Rt {
        pid: i32,
        uid: u32,
        value: u64,
    }
    // SAFETY: the fields after `si_code` (and the padding int on 64-bit) are the union,
    // whose `_rt` member starts with pid, uid and the sigval; `siginfo_t` is 128 bytes.
    unsafe {
        let base = (&raw mut si).cast::<u8>().add(core::mem::offset_of!(libc::siginfo_t, si_code) + 8);
        base.cast::<Rt>().write_unaligned(Rt { pid: raw.ssi_pid as i32, uid: raw.ssi_uid, value: raw.ssi_ptr });
    }
    let tid = rustix::thread::gettid().as_raw_nonzero().get();
    let pid = rustix::process::getpid().as_raw_nonzero().get();
    // SAFETY: sends to this process's own thread with a filled siginfo (the kernel allows
    // any code for one's own process); reads only `si`.
    unsafe { libc::syscall(libc::SYS_rt_tgsigqueueinfo, pid, tid, si.si_signo, &si) };
}

/// Signal waits for fiber tasks.
pub trait FiberSignal {
    /// `read(sfd, &info, sizeof info)` through the ring: waits for one of `sfd`'s signals
    /// (signal rules 1-3).
    fn next_signal(&mut self, sfd: &SignalFd) -> Result<SignalInfo, Errno>;
}

impl FiberSignal for Fiber {
    fn next_signal(&mut self, sfd: &SignalFd) -> Result<SignalInfo, Errno> {
        let mut raw = zeroed_info();
        let e = read_sqe(sfd.fd(), &mut raw);
        // SAFETY: `raw` outlives `run_op`, which returns only after the completion; `sfd` is
        // borrowed as long (fd rule 2).
        let n = self.run_op(unsafe { RingOp::from_entry(e) })?;
        info_of(n, &raw)
    }
}
