//! Future twins of fiber calls dropped in flight (README "Fibers and futures"): the
//! future is polled until its operation is in the kernel, then dropped. Its buffers stay
//! with the operation's slot while the kernel may still use them and are freed when the
//! completion is reaped, never before and never not at all (`slot_op.rs`, shared rule 2:
//! a tracking global allocator sees the free); a result nobody takes any more is given
//! back (completion rule 3: a fixed-file index an `open_direct` installed is closed).

#[path = "parity_util/mod.rs"]
mod parity;
#[path = "net_util/mod.rs"]
mod util;

use core::future::Future;
use core::pin::Pin;
use core::time::Duration;
use keel_core::rt;
use keel_linux::RingConfig;
use keel_linux::fs::{self, File, FixedFile, Mode, OFlags};
use keel_linux::net::{self, SockAddr, Socket};
use parity::*;
use std::cell::RefCell;
use std::rc::Rc;
use util::*;

#[global_allocator]
static ALLOC: Tracking = Tracking;

/// The check: `start` returns a future whose operation waits (an empty pipe, a full one,
/// a silent peer) on a buffer whose first byte it reports; the task polls it until the
/// operation is in the kernel and drops it. The buffer must outlive the drop (the kernel
/// may still use it) and be freed once the cancelled operation's completion is reaped.
fn dropped_in_flight_keeps_the_buffer<F: Future + 'static>(
    ex: Pin<&Ex>,
    start: impl FnOnce() -> (F, *const u8) + 'static,
) {
    let _track = Track::start();
    let out = Rc::new(RefCell::new(Vec::new()));
    let o = out.clone();
    ex.attach(task(), async move {
        let (f, first) = start();
        track(first);
        let mut f = Box::pin(f);
        for _ in 0..3 {
            assert!(poll_once(&mut f).await.is_none(), "the operation waits");
            rt::yield_now().await.unwrap(); // it reaches the kernel
        }
        drop(f);
        o.borrow_mut().push(format!("freed at the drop {}", freed()));
        0u64
    })
    .unwrap();
    run_until(ex, || !out.borrow().is_empty());
    run_until(ex, freed);
    assert_eq!(*out.borrow(), ["freed at the drop false"]);
}

#[test]
fn slot_op_a_readv_dropped_in_flight_keeps_its_buffers_until_the_completion() {
    let (rfd, wfd) = pipe();
    // SAFETY: the pipe's read end is ours and wrapped once.
    let file: &'static File = Box::leak(Box::new(unsafe { File::from_raw_fd(rfd) }));
    let ex = executor(RingConfig::default());
    dropped_in_flight_keeps_the_buffer(ex.as_ref(), move || {
        let bufs = vec![Vec::with_capacity(4), Vec::with_capacity(64)];
        let first = bufs[1].as_ptr();
        (fs::readv(file, bufs, 0), first)
    });
    close(wfd);
}

/// A pipe of one page, filled: a write to it waits for a reader.
fn full_pipe() -> (i32, i32) {
    let (rfd, wfd) = pipe();
    // SAFETY: fcntl on our own descriptor; the writes read from a local buffer.
    unsafe {
        libc::fcntl(wfd, libc::F_SETPIPE_SZ, 4096);
        libc::fcntl(wfd, libc::F_SETFL, libc::O_NONBLOCK);
        let page = [7u8; 4096];
        while libc::write(wfd, page.as_ptr().cast(), page.len()) > 0 {}
        libc::fcntl(wfd, libc::F_SETFL, 0); // blocking again: the ring's write waits
    }
    (rfd, wfd)
}

#[test]
fn slot_op_a_writev_dropped_in_flight_keeps_its_buffers_until_the_completion() {
    let (rfd, wfd) = full_pipe();
    // SAFETY: the pipe's write end is ours and wrapped once.
    let file: &'static File = Box::leak(Box::new(unsafe { File::from_raw_fd(wfd) }));
    let ex = executor(RingConfig::default());
    dropped_in_flight_keeps_the_buffer(ex.as_ref(), move || {
        let bufs = vec![vec![1u8; 16], vec![2u8; 4096]];
        let first = bufs[1].as_ptr();
        (fs::writev(file, bufs, 0), first)
    });
    close(rfd);
}

#[test]
fn slot_op_a_read_direct_dropped_in_flight_keeps_its_buffer_until_the_completion() {
    if ring_only("direct descriptors") {
        return;
    }
    let path = temp("fifo");
    let c = std::ffi::CString::new(path.clone()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let ex = executor(RingConfig { registered_files: 2, ..RingConfig::default() });
    let fifo: Rc<RefCell<Option<FixedFile>>> = Rc::new(RefCell::new(None));
    let (f, p) = (fifo.clone(), path.clone());
    ex.as_ref()
        .attach(task(), async move {
            // O_RDWR: the open does not wait for a writer, and a read waits for data.
            *f.borrow_mut() = Some(fs::open_direct(&p, OFlags::RDWR, Mode::empty()).await.unwrap());
            0u64
        })
        .unwrap();
    run_all(ex.as_ref());
    let file: &'static FixedFile = Box::leak(Box::new(fifo.borrow_mut().take().unwrap()));
    dropped_in_flight_keeps_the_buffer(ex.as_ref(), move || {
        let buf = Vec::with_capacity(32);
        let first = buf.as_ptr();
        (fs::read_direct(file, buf, 0), first)
    });
    let _ = std::fs::remove_file(path);
}

/// The request goes out, the peer never answers: the exchange is dropped while its
/// receive waits (or its send, if it is still there); the buffer is the operation's
/// until the cancelled receive completes.
#[test]
fn slot_op_a_send_then_recv_dropped_in_flight_keeps_its_buffer_until_the_completion() {
    let ex = executor(RingConfig::default());
    let (lfd, addr) = listen(ex.as_ref(), SockAddr::from("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap()));
    let peer = std::net::TcpStream::connect(std_addr(&addr)).unwrap();
    let sock: Rc<RefCell<Option<&'static Socket>>> = Rc::new(RefCell::new(None));
    let s = sock.clone();
    ex.as_ref()
        .attach(task(), async move {
            // SAFETY: a view of the test's listener that never closes it (ManuallyDrop).
            let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
            *s.borrow_mut() = Some(Box::leak(Box::new(net::future::accept(&*l).await.unwrap())));
            0u64
        })
        .unwrap();
    run_all(ex.as_ref());
    let c: &'static Socket = sock.borrow_mut().take().unwrap();
    dropped_in_flight_keeps_the_buffer(ex.as_ref(), move || {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(b"ping");
        let first = buf.as_ptr();
        (net::future::send_then_recv(c, buf, 4), first)
    });
    drop(peer);
    close(lfd);
}

/// An `open_direct` of a FIFO waits for a writer (in the kernel's worker); it is moved out
/// of its task, a writer opens the FIFO so the open completes and installs an index, the
/// executor reaps that completion, and only then is the future dropped, outside any task.
/// The index nobody takes is closed through the ring (completion rule 3): with a table of
/// one, the next `open_direct` gets it.
#[test]
fn completion_rule_3_an_open_direct_dropped_after_it_completed_gives_its_index_back() {
    if ring_only("direct descriptors") {
        return;
    }
    let path = temp("fifo-open");
    let c = std::ffi::CString::new(path.clone()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let ex = executor(RingConfig { registered_files: 1, ..RingConfig::default() });
    type Parked = Rc<RefCell<Option<Pin<Box<dyn Future<Output = Result<FixedFile, keel_core::Errno>>>>>>>;
    let parked: Parked = Rc::new(RefCell::new(None));
    let (pk, p) = (parked.clone(), path.clone());
    ex.as_ref()
        .attach(task(), async move {
            let mut f: Pin<Box<dyn Future<Output = _>>> = Box::pin(fs::open_direct(p, OFlags::RDONLY, Mode::empty()));
            assert!(poll_once(&mut f).await.is_none(), "a FIFO's reader waits for a writer");
            *pk.borrow_mut() = Some(f);
            0u64
        })
        .unwrap();
    run_all(ex.as_ref());
    for _ in 0..3 {
        let _ = ex.as_ref().run(16, Some(Duration::from_millis(5)));
    }
    let writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap(); // the reader is there
    for _ in 0..5 {
        let _ = ex.as_ref().run(16, Some(Duration::from_millis(5))); // reaps the open's completion
    }
    drop(parked.borrow_mut().take()); // completed, never taken: its index is given back
    let out = Rc::new(RefCell::new(Vec::new()));
    let (o, p) = (out.clone(), path.clone());
    ex.as_ref()
        .attach(task(), async move {
            rt::yield_now().await.unwrap(); // the close of the given-back index goes in first
            let r = fs::open_direct(p, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty()).await;
            o.borrow_mut().push(format!("{:?}", r.as_ref().map(|f| f.index())));
            if let Ok(f) = r {
                fs::close_direct(f).await.unwrap();
            }
            0u64
        })
        .unwrap();
    run_all(ex.as_ref());
    drop(writer);
    let _ = std::fs::remove_file(path);
    assert_eq!(*out.borrow(), ["Ok(0)"]);
}
