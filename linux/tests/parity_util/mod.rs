//! Shared helpers for the future-parity tests: pipes and FIFOs that keep an operation in
//! flight, a one-poll helper, and a global allocator that reports when one tracked block
//! is freed (so a test can see that a dropped operation's buffer outlives the drop and is
//! freed at the completion, never leaked).
#![allow(dead_code)]

use core::future::Future;
use core::pin::Pin;
use core::task::Poll;
use std::alloc::{GlobalAlloc, Layout, System};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The system allocator, watching the block at `TRACKED` (0: none).
pub struct Tracking;

static TRACKED: AtomicUsize = AtomicUsize::new(0);
static FREED: AtomicBool = AtomicBool::new(false);
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

// SAFETY: every call is passed on to `System` unchanged; the hooks only store flags.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(l) }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // Relaxed: the flags are read on the thread that frees (the executor's), or after
        // a join; no other memory is published through them.
        if !p.is_null() && p as usize == TRACKED.load(Ordering::Relaxed) {
            FREED.store(true, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(p, l) }
    }
}

/// Tracking of one block for the length of a test (tests that track run one at a time).
pub struct Track(#[allow(dead_code)] MutexGuard<'static, ()>);

impl Track {
    /// Starts watching for nothing yet.
    pub fn start() -> Self {
        let g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        TRACKED.store(0, Ordering::Relaxed);
        FREED.store(false, Ordering::Relaxed);
        Track(g)
    }
}

impl Drop for Track {
    fn drop(&mut self) {
        TRACKED.store(0, Ordering::Relaxed);
    }
}

/// Watches the block at `p` from now on.
pub fn track(p: *const u8) {
    FREED.store(false, Ordering::Relaxed);
    TRACKED.store(p as usize, Ordering::Relaxed);
}

/// Whether the watched block has been freed.
pub fn freed() -> bool {
    FREED.load(Ordering::Relaxed)
}

pub fn pipe() -> (RawFd, RawFd) {
    let mut p = [0; 2];
    // SAFETY: `p` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    (p[0], p[1])
}

/// Writes `bytes` into pipe end `fd`.
pub fn put(fd: RawFd, bytes: &[u8]) {
    // SAFETY: reads `bytes.len()` bytes from a live slice.
    assert_eq!(unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) }, bytes.len() as isize);
}

/// What pipe end `fd` holds now (non-blocking).
pub fn drain(fd: RawFd) -> Vec<u8> {
    let mut buf = [0u8; 256];
    // SAFETY: the poll reads one pollfd; the read writes at most 256 bytes into `buf`.
    unsafe {
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        if libc::poll(&mut p, 1, 0) != 1 {
            return Vec::new();
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        buf[..n.max(0) as usize].to_vec()
    }
}

pub fn close(fd: RawFd) {
    // SAFETY: the test's own descriptor, closed once.
    unsafe { libc::close(fd) };
}

/// Polls `f` once with the task's context: `None` while it is pending.
pub async fn poll_once<F: Future + Unpin>(f: &mut F) -> Option<F::Output> {
    core::future::poll_fn(|cx| {
        Poll::Ready(match Pin::new(&mut *f).poll(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        })
    })
    .await
}

/// A temporary path for test `name`.
pub fn temp(name: &str) -> String {
    let p = std::env::temp_dir().join(format!("keel-parity-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p.to_str().unwrap().to_owned()
}
