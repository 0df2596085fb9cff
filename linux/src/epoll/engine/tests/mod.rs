//! The engine alone: SQEs built with `io_uring::opcode`, pushed, entered, and the CQEs
//! checked (user_data, res, flags), on pipes, socketpairs, TCP on 127.0.0.1 and temp files.

mod accept;
mod accept_cancel;
mod basic;
mod cancel;
mod closes;
mod fs;
mod links;
mod msg;
mod net;
mod random;
mod ready;
mod skip_links;
mod transfer;

use super::{Engine, EngineConfig};
use io_uring::{cqueue, squeue};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// How long a test waits for CQEs it expects before it fails.
const PATIENCE_NS: u64 = 10_000_000_000;

pub(super) fn engine(file_threads: u32) -> Engine {
    Engine::new(32, 64, EngineConfig { file_threads }).expect("epoll engine")
}

/// Pushes every SQE.
pub(super) fn push(e: &mut Engine, sqes: &[squeue::Entry]) {
    for s in sqes {
        // SAFETY: every test keeps what its SQEs name alive until it has their CQEs.
        assert!(unsafe { e.push(s) }, "SQ full");
    }
}

/// The CQEs ready now, as (user_data, res, flags).
pub(super) fn take(e: &mut Engine) -> Vec<(u64, i32, u32)> {
    let mut out: [MaybeUninit<cqueue::Entry>; 64] = [const { MaybeUninit::uninit() }; 64];
    e.fill(&mut out).iter().map(|c| (c.user_data(), c.result(), c.flags())).collect()
}

/// Enters until at least `n` CQEs came (or the patience ran out), and takes them.
pub(super) fn wait(e: &mut Engine, n: usize) -> Vec<(u64, i32, u32)> {
    let until = super::timers::now() + PATIENCE_NS;
    let mut got = Vec::new();
    while got.len() < n && super::timers::now() < until {
        e.enter((n - got.len()) as u32, Some(keel_core::Instant::from_nanos(until))).expect("enter");
        got.extend(take(e));
    }
    got
}

/// One enter that does not wait, and its CQEs.
pub(super) fn poll(e: &mut Engine) -> Vec<(u64, i32, u32)> {
    e.enter(0, None).expect("enter");
    take(e)
}

pub(super) fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 just made both, owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

pub(super) fn socketpair(ty: i32) -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) }, 0);
    // SAFETY: socketpair just made both.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

pub(super) fn write_all(fd: &OwnedFd, data: &[u8]) {
    // SAFETY: `data` is readable for its length.
    let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
    assert_eq!(n, data.len() as isize);
}

pub(super) fn fd_flags(fd: RawFd) -> i32 {
    // SAFETY: fcntl on a descriptor number.
    unsafe { libc::fcntl(fd, libc::F_GETFL) }
}

/// A fresh temp directory for one test.
pub(super) fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("keel-engine-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A relative timespec of `ms` milliseconds, boxed so its address stays put.
pub(super) fn ms(ms: u64) -> Box<io_uring::types::Timespec> {
    Box::new(io_uring::types::Timespec::from(std::time::Duration::from_millis(ms)))
}
