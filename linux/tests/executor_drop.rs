//! Dropping an executor on a real ring unwinds its started fibers (teardown rules 1-4):
//! fibers blocked in a receive on sockets they own are resumed with `Cancelled`, their
//! sockets are closed (the peers see end of stream) and no descriptor stays open.

#[path = "net_util/mod.rs"]
mod util;

use core::time::Duration;
use keel_core::{Fiber, TaskError, leaked_fibers};
use keel_linux::RingConfig;
use keel_linux::net::{FiberNet, Socket};
use std::io::Read;
use std::os::fd::{IntoRawFd, RawFd};
use std::os::unix::net::UnixStream;
use util::*;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count()
}

/// A fiber that owns `fd` and receives on it until end of stream or an error.
fn receiver(fd: RawFd) -> impl FnOnce(&mut Fiber) -> Result<u64, TaskError> + 'static {
    move |f: &mut Fiber| {
        // SAFETY: the test handed this fiber the descriptor; nothing else closes it.
        let s = unsafe { Socket::from_raw_fd(fd) };
        let mut buf = [0u8; 64];
        let mut got = 0u64;
        loop {
            match f.recv(&s, &mut buf) {
                Ok(0) => return Ok(got),
                Ok(n) => got += u64::from(n),
                Err(e) if e == keel_core::Errno::ECANCELED => return Err(TaskError::Cancelled),
                Err(e) => return Err(TaskError::Failed(i64::from(e.0))),
            }
        }
    }
}

#[test]
fn dropping_an_executor_closes_the_sockets_its_blocked_fibers_own() {
    let fds_before = open_fds();
    let leaks_before = leaked_fibers();
    // Peers kept by the test; the other ends go to fibers.
    let mut peers: Vec<Box<dyn Read>> = Vec::new();
    let mut theirs: Vec<RawFd> = Vec::new();
    for _ in 0..3 {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        peers.push(Box::new(a));
        theirs.push(b.into_raw_fd());
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    for _ in 0..2 {
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        peers.push(Box::new(c));
        theirs.push(s.into_raw_fd());
    }
    drop(l);
    {
        let ex = executor(RingConfig::default());
        let ex = ex.as_ref();
        for &fd in &theirs {
            ex.attach_fiber(task(), fattrs(), receiver(fd)).unwrap();
        }
        // Each fiber starts and blocks in its receive.
        let mut started = 0;
        for _ in 0..100 {
            started += ex.run(64, Some(Duration::from_millis(5))).unwrap_or(0);
            if started >= theirs.len() {
                break;
            }
        }
        assert_eq!(started, theirs.len(), "every fiber ran into its receive");
        assert_eq!(ex.attached(), theirs.len());
        assert_eq!(ex.stack_stats().in_use, theirs.len() as u64);
    }
    // The executor is gone: every fiber was resumed with Cancelled and dropped its socket.
    for (i, p) in peers.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        let mut tries = 0;
        loop {
            match p.read(&mut b) {
                Ok(0) => break,
                // A signal (bounded retries; the read timeout bounds each).
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted && tries < 100 => tries += 1,
                other => panic!("peer {i}: expected end of stream, got {other:?}"),
            }
        }
    }
    assert_eq!(leaked_fibers(), leaks_before, "no fiber was leaked");
    drop(peers);
    assert_eq!(open_fds(), fds_before, "a descriptor stayed open after the executor's drop");
    // And the descriptors the fibers owned are closed (not just renumbered).
    for fd in theirs {
        // SAFETY: `F_GETFD` only reads the descriptor's flags (EBADF on a closed one).
        let r = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_eq!(r, -1, "fd {fd} still open");
    }
}

#[test]
fn a_fiber_that_ignores_cancelled_is_leaked_with_what_it_holds_and_reported() {
    let leaks_before = leaked_fibers();
    let (mut peer, theirs) = UnixStream::pair().unwrap();
    peer.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let fd = theirs.into_raw_fd();
    let id;
    {
        let ex = executor(RingConfig::default());
        let ex = ex.as_ref();
        let t = ex
            .attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> u64 {
                // SAFETY: the test handed this fiber the descriptor; nothing else closes it.
                let s = unsafe { Socket::from_raw_fd(fd) };
                let mut buf = [0u8; 8];
                loop {
                    // Ignores every error, Cancelled included.
                    let _ = f.recv(&s, &mut buf);
                    let _ = f.yield_now();
                }
            })
            .unwrap();
        id = t.id();
        assert_eq!(ex.run(1, Some(Duration::from_millis(5))), Ok(1));
    }
    let after = leaked_fibers();
    assert_eq!(after.count, leaks_before.count + 1, "the fiber is reported as leaked");
    assert_eq!(after.last_id, id);
    // What it holds is leaked on purpose, not freed under it: its socket is still open.
    let mut b = [0u8; 8];
    let mut tries = 0;
    loop {
        match peer.read(&mut b) {
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break,
            // A signal (bounded retries; the read timeout bounds each).
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted && tries < 100 => tries += 1,
            other => panic!("the leaked fiber's socket was closed under it: {other:?}"),
        }
    }
    // SAFETY: `F_GETFD` only reads the descriptor's flags.
    assert_ne!(unsafe { libc::fcntl(fd, libc::F_GETFD) }, -1, "fd {fd} was closed under the leaked fiber");
}
