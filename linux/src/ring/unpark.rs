//! Unparking a ring executor from another thread (keel-core park rule 3): how the thread
//! that won the PARKED -> UNPARKING race (park rule 1) makes the executor's `io_uring_enter` wait return.
//!
//! Two mechanisms, chosen per driver at creation (`RingConfig::unpark`):
//! - **MsgRing** (kernel 6.13+): the unparker posts a CQE straight into the executor's
//!   ring with `io_uring_register(-1, IORING_REGISTER_SEND_MSG_RING, &sqe, 1)`, the SQE
//!   an `IORING_OP_MSG_RING` (`IORING_MSG_DATA`) naming the ring's descriptor. One
//!   syscall, no descriptor besides the ring, nothing kept armed. With DEFER_TASKRUN the
//!   kernel queues the CQE as task work for the ring's submitter (the executor's thread)
//!   and wakes it; its waiting enter runs that work and returns. The CQE carries
//!   [`UNPARK_TAG`], which the driver drops when it reaps it (not stale, nothing to
//!   re-arm). At most one such CQE is posted per park (only the CAS winner unparks, park
//!   rule 1), so they cannot fill the CQ.
//! - **Eventfd** (the fallback, or forced by `UnparkMode::Eventfd`): the ring keeps a
//!   read armed on an eventfd (`EVENTFD_TAG`); the unparker writes the eventfd, the read
//!   completes, and the driver re-arms it when it reaps that CQE.
//!
//! `Auto` uses MsgRing when a probe passes: once per process, the first driver made with
//! `Auto` sends one message to its own ring (just created, nothing in flight) and waits
//! (bounded) for the CQE to come back with the tag and value sent. Any failure (EINVAL or
//! EBADF on kernels before 6.13, a seccomp filter, the CQE not arriving) selects the
//! eventfd for every driver of the process, said once in a notice (`notice.rs`).
//!
//! Why the register path for every waker, even one that is itself a keel executor with a
//! ring: an `IORING_OP_MSG_RING` SQE pushed into the *waker's* ring would only reach the
//! kernel at that ring's next `io_uring_enter`, which the waker's run loop makes at the
//! end of its pass (or, if the wake came from a task that then suspends, perhaps only
//! when that executor parks): the unpark would wait on unrelated work, and a waker on a
//! thread with no executor has no ring at all. The register call is one syscall from any
//! thread, at once, and needs no SQ room or CQE of the waker's.
//!
//! Why `libc` here: the register opcode takes fd -1 ("no ring": `io_uring_register_blind`
//! in the kernel), which rustix's `BorrowedFd` cannot express, and the io-uring crate
//! only registers through an `IoUring` it owns. `libc::syscall` is the raw call.

#![allow(unsafe_code)] // the raw io_uring_register syscall

use super::slots::INTERNAL;
use crate::notice::notice;
use io_uring::{EnterFlags, IoUring, opcode, types};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::OnceLock;

/// `user_data` of the CQEs the MsgRing unparker posts (and of the probe's).
pub(crate) const UNPARK_TAG: u64 = INTERNAL | 4;

/// `IORING_REGISTER_SEND_MSG_RING` (include/uapi/linux/io_uring.h, kernel 6.13).
const IORING_REGISTER_SEND_MSG_RING: libc::c_uint = 31;

/// The probe's CQE result (any value the unpark CQE does not use: it checks `len` travels).
const PROBE_RESULT: i32 = 0x6b65_656c;

/// How long the probe waits for its CQE.
const PROBE_WAIT: core::time::Duration = core::time::Duration::from_secs(1);

/// How a ring executor is unparked ([`RingConfig::unpark`](super::RingConfig::unpark)).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum UnparkMode {
    /// MsgRing where the kernel has it (probed once per process), else the eventfd.
    #[default]
    Auto,
    /// Always the eventfd read kept armed in the ring (the fallback; tests force it).
    Eventfd,
}

/// The mechanism a driver uses ([`RingDriver::unpark_kind`](super::RingDriver::unpark_kind)).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum UnparkKind {
    /// A read kept armed on an eventfd; unparking writes the eventfd.
    Eventfd,
    /// `IORING_REGISTER_SEND_MSG_RING` posts a CQE into the ring.
    MsgRing,
}

/// Whether MsgRing unparking works in this process: the first call probes on `ring` (a
/// ring just created on this thread, with nothing submitted and its CQ empty); later
/// calls return the first answer. On failure, says why once (a notice: `notice.rs`).
pub(crate) fn msg_ring_works(ring: &mut IoUring) -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| match probe(ring) {
        Ok(()) => true,
        Err(why) => {
            notice!(info, "ring executors unpark through an eventfd: IORING_REGISTER_SEND_MSG_RING (kernel 6.13) is unusable here: {why}");
            false
        }
    })
}

/// Sends one message to `ring` and takes its CQE back.
fn probe(ring: &mut IoUring) -> Result<(), String> {
    send(ring.as_raw_fd(), PROBE_RESULT).map_err(|e| format!("the register call failed: {e}"))?;
    let ts = types::Timespec::from(PROBE_WAIT);
    let args = types::SubmitArgs::new().timespec(&ts);
    // Bounded: EINTR at most a few times; ETIME ends it.
    for _ in 0..4 {
        // Relative timeout (no ABS_TIMER). With DEFER_TASKRUN the CQE is posted by the
        // task work this enter runs on the submitter's thread (this one).
        match ring.submitter().submit_with_args_and_flags(1, &args, EnterFlags::empty()) {
            Ok(_) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => return Err(format!("no CQE within {PROBE_WAIT:?}")),
            Err(e) => return Err(format!("io_uring_enter: {e}")),
        }
    }
    let cqe = ring.completion().next().ok_or("no CQE arrived")?;
    if cqe.user_data() != UNPARK_TAG || cqe.result() != PROBE_RESULT {
        return Err(format!(
            "a CQE arrived with user_data {:#x} and result {}, not what was sent",
            cqe.user_data(),
            cqe.result()
        ));
    }
    Ok(())
}

/// Posts a CQE (`user_data` [`UNPARK_TAG`], `res` = `result`) into the ring `ring_fd`.
/// One syscall; allocates nothing in user space (the SQE is on the stack, the error is
/// an OS code).
fn send(ring_fd: i32, result: i32) -> io::Result<()> {
    let sqe = opcode::MsgRingData::new(types::Fd(ring_fd), result, UNPARK_TAG, None).build();
    // Bounded: EINTR at most a few times (the call does not block, so it should not occur).
    let mut tries = 0;
    loop {
        // SAFETY: `sqe` is an `io_uring::squeue::Entry`, a `#[repr(C)]` wrapper of the
        // 64-byte `io_uring_sqe` the kernel copies in (nr_args = 1 SQE); it lives on this
        // stack across the call, and the kernel only reads it. fd -1 is the "no ring"
        // form of the register call; the descriptor it acts on is in the SQE.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                -1 as libc::c_int,
                IORING_REGISTER_SEND_MSG_RING,
                &sqe as *const io_uring::squeue::Entry,
                1 as libc::c_uint,
            )
        };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        tries += 1;
        if e.raw_os_error() != Some(libc::EINTR) || tries >= 4 {
            return Err(e);
        }
    }
}

/// The MsgRing `Unparker::unpark`: `ctx` is the ring's descriptor. An error is dropped,
/// as the eventfd write's is: for a live ring (keel-core park rule 4 keeps it open while
/// any thread may unpark it) the kernel fails only for want of memory.
pub(crate) fn msg_ring_unpark(ring_fd: usize) {
    let _ = send(ring_fd as i32, 0);
}

/// The eventfd `Unparker::unpark`: `ctx` is the eventfd.
pub(crate) fn eventfd_unpark(fd: usize) {
    // SAFETY: the driver's eventfd, open while any thread may unpark it (keel-core park
    // rule 4: the executor waits for such threads before its driver is dropped).
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd as i32) };
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}
