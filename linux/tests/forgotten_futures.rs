//! The forgotten-future class in keel-linux (audit): a future polled once so that its
//! operation (or wait) is registered, then leaked with `mem::forget` (safe: what it owns
//! stays valid), its run ended, its slot released and attached again (on the same
//! executor, or on another executor of this thread). The operation's completion (or the
//! wait's turn) must not wake the later run, nor run another executor's task from this
//! one's ready list: the wake token names a run (ring wake-token rules 2-3, io_status
//! rule 5), a buffer or inbox wait names a `TaskHandle` of one run (waitq rule 6,
//! transfer rule 6). What the forgotten future would have received is leaked with it (a
//! driver slot, a buffer, a descriptor), as `mem::forget` of a `File` leaks its
//! descriptor. Both backends (`KEEL_DRIVER=epoll`).

#[path = "net_util/mod.rs"]
mod util;

use core::future::Future;
use core::pin::Pin;
use core::task::Poll;
use core::time::Duration;
use keel_core::{TaskError, rt};
use keel_linux::RingConfig;
use keel_linux::fs::{self, File};
use keel_linux::net::{self, AddressFamily, SockAddr, SocketType};
use keel_linux::ready::{self, PollFlags};
use std::cell::Cell;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::rc::Rc;
use util::*;

fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    (fds[0], fds[1])
}

fn put(fd: RawFd, bytes: &[u8]) {
    // SAFETY: writes from a live slice to our own descriptor.
    assert_eq!(unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) }, bytes.len() as isize);
}

/// Polls `f` once (inside the task), asserts it is pending (registered), lets its
/// operation reach the kernel, and forgets it.
async fn poll_once_and_forget<F: Future>(f: F) {
    let mut f = Box::pin(f);
    let first = core::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx).is_pending())).await;
    assert!(first, "registered (pending) at its first poll");
    rt::yield_now().await.unwrap();
    core::mem::forget(f);
}

/// A body pending until polled a second time: a forged wake shows as a second poll.
fn counted_pending(polls: Rc<Cell<u32>>) -> impl Future<Output = u64> {
    let mut once = false;
    core::future::poll_fn(move |_| {
        polls.set(polls.get() + 1);
        if core::mem::replace(&mut once, true) { Poll::Ready(6) } else { Poll::Pending }
    })
}

fn spin(ex: Pin<&Ex>) {
    for _ in 0..4 {
        let _ = ex.run(64, Some(Duration::from_millis(5)));
    }
}

/// The scenario (see the module doc): `register` runs in a task of `a` and leaves a
/// forgotten registration; its slot is then attached on `b` (`elsewhere`) or on `a` with
/// a body only a forged wake would poll twice; `trigger` fires the registration and both
/// executors run. The later run must have been polled once, and then cancel cleanly.
fn forgotten_then_reused(
    cfg: RingConfig,
    register: impl FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + 'static,
    trigger: impl FnOnce(),
    elsewhere: bool,
) {
    let a = executor(cfg);
    let a = a.as_ref();
    let b = executor(cfg);
    let b = b.as_ref();
    let done = Rc::new(Cell::new(false));
    let d = done.clone();
    let waiter = a
        .attach(task(), async move {
            register().await;
            d.set(true);
            0u64
        })
        .unwrap();
    run_until(a, || done.get());
    run_until(a, || a.result(waiter) != Ok(None));
    assert_eq!(a.result(waiter), Ok(Some(Ok(0))), "the run ended (the forgotten op is the driver's)");
    let moved = a.release(waiter).unwrap();
    let polls = Rc::new(Cell::new(0u32));
    let on = if elsewhere { b } else { a };
    let later = on.attach(moved, counted_pending(polls.clone())).unwrap();
    spin(on);
    assert_eq!(polls.get(), 1);
    trigger();
    for _ in 0..5 {
        spin(a);
        spin(b);
    }
    assert_eq!(polls.get(), 1, "the later run was not woken by the forgotten registration");
    assert_eq!(on.result(later), Ok(None), "still waiting");
    // A cancel polls the body once more (it sees the cancel): it ends.
    on.cancel(later).unwrap();
    run_all(on);
    assert_eq!(on.result(later), Ok(Some(Ok(6))));
    // Each executor still runs a task to its end (its lists are sound).
    for ex in [a, b] {
        let t = ex
            .attach(task(), async {
                rt::sleep(Duration::from_millis(1)).await?;
                Ok::<u64, TaskError>(9)
            })
            .unwrap();
        run_all(ex);
        assert_eq!(ex.result(t), Ok(Some(Ok(9))));
    }
}

macro_rules! both_ways {
    ($name:ident, |$elsewhere:ident| $body:block) => {
        mod $name {
            use super::*;
            #[test]
            fn later_run_on_the_same_executor() {
                let $elsewhere = false;
                $body
            }
            #[test]
            fn once_attached_on_another_executor() {
                let $elsewhere = true;
                $body
            }
        }
    };
}

both_ways!(read, |elsewhere| {
    let (rfd, wfd) = pipe();
    // SAFETY: the pipe's read end is ours and wrapped once (leaked: the forgotten read
    // borrows it).
    let file: &'static File = Box::leak(Box::new(unsafe { File::from_raw_fd(rfd) }));
    forgotten_then_reused(
        RingConfig::default(),
        move || Box::pin(poll_once_and_forget(fs::read(file, Vec::with_capacity(16), 0))),
        move || put(wfd, b"data"),
        elsewhere,
    );
});

both_ways!(recv, |elsewhere| {
    let (s, peer) = net::socket_pair(AddressFamily::UNIX, SocketType::STREAM).unwrap();
    let s: &'static net::Socket = Box::leak(Box::new(s));
    forgotten_then_reused(
        RingConfig::default(),
        move || Box::pin(poll_once_and_forget(net::future::recv(s, Vec::with_capacity(16)))),
        move || put(peer.as_fd().as_raw_fd(), b"data"),
        elsewhere,
    );
});

both_ways!(readiness_poll, |elsewhere| {
    let (rfd, wfd) = pipe();
    // SAFETY: the pipe's read end is ours; leaked, so the borrow is `'static`.
    let file: &'static File = Box::leak(Box::new(unsafe { File::from_raw_fd(rfd) }));
    forgotten_then_reused(
        RingConfig::default(),
        move || Box::pin(poll_once_and_forget(ready::poll(file.as_fd(), PollFlags::IN, None))),
        move || put(wfd, b"x"),
        elsewhere,
    );
});

both_ways!(readiness_with_timeout, |elsewhere| {
    let (rfd, _wfd) = pipe();
    // SAFETY: as above.
    let file: &'static File = Box::leak(Box::new(unsafe { File::from_raw_fd(rfd) }));
    forgotten_then_reused(
        RingConfig::default(),
        // The timeout fires while the later run waits.
        move || {
            Box::pin(poll_once_and_forget(ready::poll(file.as_fd(), PollFlags::IN, Some(Duration::from_millis(20)))))
        },
        || std::thread::sleep(Duration::from_millis(25)),
        elsewhere,
    );
});

both_ways!(multishot_readiness, |elsewhere| {
    let (rfd, wfd) = pipe();
    // SAFETY: as above.
    let file: &'static File = Box::leak(Box::new(unsafe { File::from_raw_fd(rfd) }));
    forgotten_then_reused(
        RingConfig::default(),
        move || {
            Box::pin(async move {
                // The stream and its `next_ready` both leaked: the multishot stays armed.
                let m: &'static mut keel_linux::net::Multishot =
                    Box::leak(Box::new(ready::poll_multi(file.as_fd(), PollFlags::IN).unwrap()));
                poll_once_and_forget(ready::next_ready(m, None)).await;
            })
        },
        move || {
            put(wfd, b"x");
        },
        elsewhere,
    );
});

both_ways!(claim_buffer, |elsewhere| {
    if ring_only("registered buffers") {
        return;
    }
    let held: Rc<Cell<Option<fs::FixedBuf>>> = Rc::default();
    let h = held.clone();
    let h2 = held.clone();
    forgotten_then_reused(
        RingConfig { registered_buffers: 1, ..RingConfig::default() },
        move || {
            Box::pin(async move {
                h.set(Some(fs::try_claim_buffer().await.expect("the only buffer is free")));
                poll_once_and_forget(fs::claim_buffer()).await;
            })
        },
        // The release hands the buffer to the forgotten wait (waitq rule 2): its wake
        // names the ended run.
        move || drop(h2.take()),
        elsewhere,
    );
});

both_ways!(transfer_receive_with_timeout, |elsewhere| {
    if ring_only("a fixed-file table (descriptor transfer)") {
        return;
    }
    forgotten_then_reused(
        RingConfig { registered_files: 8, ..RingConfig::default() },
        // Transfer rule 6: queued in the inbox (a `TaskHandle` of the run) with its timer
        // in a slot (a wake token of the run); the timer fires while the later run waits.
        || Box::pin(poll_once_and_forget(keel_linux::transfer::receive(5, Some(Duration::from_millis(20))))),
        || std::thread::sleep(Duration::from_millis(25)),
        elsewhere,
    );
});

both_ways!(sleep, |elsewhere| {
    forgotten_then_reused(
        RingConfig::default(),
        || Box::pin(poll_once_and_forget(rt::sleep(Duration::from_millis(10)))),
        || std::thread::sleep(Duration::from_millis(15)),
        elsewhere,
    );
});

/// An executor dropped with a forgotten read in flight (its run ended): the drop cancels
/// the driver's operation and returns (no hang), and the pipe's writer sees no error.
#[test]
fn executor_dropped_with_a_forgotten_read_in_flight() {
    let (rfd, wfd) = pipe();
    // SAFETY: as above.
    let file: &'static File = Box::leak(Box::new(unsafe { File::from_raw_fd(rfd) }));
    {
        let ex = executor(RingConfig::default());
        let t = ex.as_ref().attach(task(), async move {
            poll_once_and_forget(fs::read(file, Vec::with_capacity(16), 0)).await;
            0u64
        });
        let t = t.unwrap();
        run_until(ex.as_ref(), || ex.as_ref().result(t) != Ok(None));
    }
    put(wfd, b"after");
}

/// Whether `fd` is an open descriptor.
fn fd_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only asks about the number.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// A forgotten read's `File` dropped (safe: the borrow ended with the forget): the
/// operation's slot holds the descriptor (fd rule 1), so its number is not reused while
/// the operation may still name it; the executor's drop cancels the operation and the
/// descriptor is closed then (not leaked past the executor).
#[test]
fn a_forgotten_reads_descriptor_stays_open_until_the_executor_drops() {
    let ex = executor(RingConfig::default());
    let (rfd, wfd) = pipe();
    // SAFETY: the pipe's read end is ours and wrapped once.
    let file = Rc::new(unsafe { File::from_raw_fd(rfd) });
    let f = file.clone();
    let t = ex
        .as_ref()
        .attach(task(), async move {
            poll_once_and_forget(fs::read(&f, Vec::with_capacity(16), 0)).await;
            0u64
        })
        .unwrap();
    run_until(ex.as_ref(), || ex.as_ref().result(t) != Ok(None));
    drop(file);
    spin(ex.as_ref());
    assert!(fd_open(rfd), "held by the forgotten operation's slot (fd rule 1)");
    let (r2, w2) = pipe();
    assert_ne!(r2, rfd, "its number is not reused");
    drop(ex);
    assert!(!fd_open(rfd), "closed once the executor dropped the operation");
    for fd in [wfd, r2, w2] {
        // SAFETY: our own descriptors.
        unsafe { libc::close(fd) };
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A forgotten accept whose connection arrives: the accepted descriptor waits in the
/// operation's slot (nobody takes it); the later run of the slot is not woken, and the
/// executor's drop closes it (completion rule 3): no descriptor outlives the executor.
#[test]
fn a_forgotten_accept_leaks_no_descriptor_past_the_executor() {
    let before = open_fds();
    {
        let ex = executor(RingConfig::default());
        let ex = ex.as_ref();
        let (lfd, addr) = listen(ex, SockAddr::from(std::net::SocketAddr::from(([127, 0, 0, 1], 0))));
        // SAFETY: the listener is ours, wrapped once; it lives until the executor is gone.
        let listener: &'static net::Socket = Box::leak(Box::new(unsafe { net::Socket::from_raw_fd(lfd) }));
        let t = ex
            .attach(task(), async move {
                poll_once_and_forget(net::future::accept(listener)).await;
                0u64
            })
            .unwrap();
        run_until(ex, || ex.result(t) != Ok(None));
        let polls = Rc::new(Cell::new(0u32));
        let later = ex.attach(t, counted_pending(polls.clone())).unwrap();
        spin(ex);
        let client = std::net::TcpStream::connect(std_addr(&addr)).unwrap();
        for _ in 0..5 {
            spin(ex);
        }
        assert_eq!(polls.get(), 1, "the later run was not woken by the accept");
        ex.cancel(later).unwrap();
        run_all(ex);
        drop(client);
    }
    // The listener was leaked with its `Socket` (`Box::leak`): one descriptor.
    assert_eq!(open_fds(), before + 1, "the accepted descriptor was closed with the executor");
}
