//! A descriptor number closed behind keel's back (`close(2)` on a number an operation
//! waits on) through the public driver: on the epoll backend the engine notices (readiness
//! rule 7 in `epoll/engine/ready.rs`, revalidation in `revalidate.rs`): a number reused
//! since has its new file read, a number left closed ends the waiter with `EBADF`, and a
//! close noted with `keel_linux::epoll::note_closed` is noticed at the next pass. On
//! io_uring the operation holds the file it started on, so the close of the number does
//! not touch it: it completes with what that file gets. Each case runs on the `Auto`
//! backend and on the epoll engine: the same task code, two drivers.

#[path = "net_util/mod.rs"]
mod net_util;

use core::time::Duration;
use io_uring::{opcode, types};
use keel_core::{Config, Executor, Fiber, FiberAttrs};
use keel_linux::fs::FiberFs;
use keel_linux::{Backend, BackendChoice, MmapStacks, RingConfig, RingDriver, RingOp};
use net_util::{Ex, run_all, task};
use std::cell::RefCell;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::rc::Rc;

fn executor(backend: BackendChoice) -> (Pin<Box<Ex>>, Backend) {
    let d = RingDriver::new(RingConfig { backend, ..RingConfig::default() }).expect("a driver");
    let b = d.backend();
    (Box::pin(Executor::with_stacks(d, MmapStacks::new().unwrap(), Config::default()).unwrap()), b)
}

/// A receive's result and bytes, once it completed.
type Got = Rc<RefCell<Option<(i64, Vec<u8>)>>>;

/// A fiber on `ex` receiving up to 64 bytes on the raw number `fd`: its result and bytes.
fn receiver(ex: Pin<&Ex>, fd: RawFd) -> Got {
    let out = Rc::new(RefCell::new(None));
    let o = out.clone();
    ex.attach_fiber(task(), FiberAttrs::default(), move |f: &mut Fiber| {
        let mut buf = vec![0u8; 64];
        let e = opcode::Recv::new(types::Fd(fd), buf.as_mut_ptr(), 64).build();
        // SAFETY: `buf` outlives `run_op`, which returns after the completion.
        let r = f.run_op(unsafe { RingOp::from_entry(e) }).map_or_else(|e| -i64::from(e.0), i64::from);
        buf.truncate(r.max(0) as usize);
        *o.borrow_mut() = Some((r, buf));
        0
    })
    .unwrap();
    // The receive is submitted and waits (nothing to read yet).
    let _ = ex.run(16, Some(Duration::ZERO));
    assert!(out.borrow().is_none(), "nothing to read yet");
    out
}

/// Puts `file` under the number `at` (closed before), as a reuse of the number.
fn reuse(file: OwnedFd, at: RawFd) -> OwnedFd {
    if file.as_raw_fd() == at {
        return file; // the kernel gave the lowest free number: the closed one
    }
    // SAFETY: dup3 onto a number the test owns (closed before).
    assert_eq!(unsafe { libc::dup3(file.as_raw_fd(), at, libc::O_CLOEXEC) }, at);
    // SAFETY: dup3 made `at` a descriptor of its own.
    unsafe { OwnedFd::from_raw_fd(at) }
}

fn close_behind(fd: RawFd) {
    // SAFETY: the test owns `fd` (its socket was turned into the raw number).
    assert_eq!(unsafe { libc::close(fd) }, 0);
}

/// The number is closed and reused under the waiting receive; both files' peers write.
#[test]
fn a_number_closed_and_reused_under_a_waiting_receive_is_noticed() {
    for backend in [BackendChoice::Auto, BackendChoice::Epoll] {
        let (ex, on) = executor(backend);
        let ex = ex.as_ref();
        let (a, mut b) = UnixStream::pair().unwrap();
        let n = a.into_raw_fd();
        let out = receiver(ex, n);
        close_behind(n);
        let (c, mut d) = UnixStream::pair().unwrap();
        let c = reuse(c.into(), n);
        d.write_all(b"new").unwrap(); // there already: no edge comes for the waiter
        let _ = b.write_all(b"old"); // EPIPE where nothing holds the old file any more
        run_all(ex);
        let got = out.borrow_mut().take().expect("the receive completed");
        let want: &[u8] = if on == Backend::Epoll { b"new" } else { b"old" };
        assert_eq!((got.0, &got.1[..]), (3, want), "{backend:?} on {on:?}");
        drop((c, d, b));
    }
}

/// The number is closed and not reused: the epoll engine ends the waiter with `EBADF`.
#[test]
fn a_number_closed_under_a_waiting_receive_ends_it_with_ebadf_on_epoll() {
    for backend in [BackendChoice::Auto, BackendChoice::Epoll] {
        let (ex, on) = executor(backend);
        let ex = ex.as_ref();
        let (a, mut b) = UnixStream::pair().unwrap();
        let n = a.into_raw_fd();
        let out = receiver(ex, n);
        close_behind(n);
        let _ = b.write_all(b"old");
        run_all(ex);
        let got = out.borrow_mut().take().expect("the receive completed");
        if on == Backend::Epoll {
            assert_eq!(got.0, -i64::from(libc::EBADF), "{backend:?} on {on:?}");
        } else {
            assert_eq!((got.0, &got.1[..]), (3, &b"old"[..]), "{backend:?} on {on:?}: the file it holds");
        }
        drop(b);
    }
}

/// A close behind keel's back noted with `note_closed`: the epoll engine renews the
/// number at its next pass, so the new file's data is read without waiting for
/// revalidation (the passes here never wait).
#[test]
fn a_noted_close_behind_keels_back_is_noticed_at_the_next_pass() {
    for backend in [BackendChoice::Auto, BackendChoice::Epoll] {
        let (ex, on) = executor(backend);
        let ex = ex.as_ref();
        let (a, b) = UnixStream::pair().unwrap();
        let n = a.into_raw_fd();
        let out = receiver(ex, n);
        close_behind(n);
        keel_linux::epoll::note_closed(n);
        let (c, mut d) = UnixStream::pair().unwrap();
        let c = reuse(c.into(), n);
        d.write_all(b"new").unwrap();
        if on == Backend::Epoll {
            for _ in 0..8 {
                let _ = ex.run(16, Some(Duration::ZERO)); // TimedOut when no task ran
            }
            let got = out.borrow_mut().take().expect("noticed without revalidation");
            assert_eq!((got.0, &got.1[..]), (3, &b"new"[..]));
        } else {
            drop(b); // the file the receive holds ends: it completes with 0
            run_all(ex);
            assert_eq!(out.borrow_mut().take(), Some((0, vec![])), "{backend:?} on {on:?}");
            drop(c);
            continue;
        }
        run_all(ex);
        drop((b, c, d));
    }
}
