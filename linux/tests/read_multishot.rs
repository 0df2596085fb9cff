//! Multishot read (`fs::read_multi`, `IORING_OP_READ_MULTISHOT`) on a real ring, fibers
//! and futures alike: a pipe's writes arrive in order in provided buffers, end of file
//! ends the stream, a regular file is refused by the kernel, no buffer ring is ENOBUFS,
//! and a stream dropped while armed gives its slot and buffers back.

mod net_util;

use core::time::Duration;
use keel_core::{Driver, Errno, Fiber};
use keel_linux::RingConfig;
use keel_linux::fs::{self, FiberReadMulti, File};
use net_util::{Ex, executor_with, fattrs, ring, run_all, run_until, task};
use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::rc::Rc;

/// The provided-buffer ring's counters.
fn pbuf_stats(ex: Pin<&Ex>) -> keel_linux::pbuf::PbufStats {
    ex.with_driver(|d| {
        // SAFETY: a test reading the driver's counters: it is not replaced and no other
        // code runs meanwhile (`DriverMut::get_mut`'s contract).
        unsafe { d.get_mut() }.provided_buffer_stats().unwrap()
    })
    .unwrap()
}

type Out = Rc<RefCell<Vec<Result<Option<Vec<u8>>, Errno>>>>;

fn ex_with_buffers() -> Pin<Box<Ex>> {
    let mut d = ring(RingConfig::default());
    d.enable_provided_buffers(16, 64).unwrap();
    executor_with(d)
}

/// Kernels before 6.7 lack the opcode: the first arming fails with EINVAL.
fn unsupported(out: &Out) -> bool {
    if out.borrow().first() == Some(&Err(Errno::EINVAL)) {
        eprintln!("SKIP: this kernel has no IORING_OP_READ_MULTISHOT (6.7+)");
        return true;
    }
    false
}

/// A task that makes a read stream of `file` and records up to `n` results (stopping at
/// the first that is not data).
fn streamer(ex: Pin<&Ex>, fiber: bool, file: Rc<File>, n: usize, out: &Out) {
    let out = out.clone();
    let keep = |r: Result<Option<keel_linux::net::ProvidedBuf>, Errno>| r.map(|b| b.map(|b| b.to_vec()));
    if fiber {
        ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let mut m = match f.read_multi(&file) {
                Ok(m) => m,
                Err(e) => {
                    out.borrow_mut().push(Err(e));
                    return 0u64;
                }
            };
            for _ in 0..n {
                let r = keep(f.next_read(&mut m));
                let more = matches!(r, Ok(Some(_)));
                out.borrow_mut().push(r);
                if !more {
                    break;
                }
            }
            0u64
        })
        .unwrap();
    } else {
        ex.attach(task(), async move {
            let mut m = match fs::read_multi(&file).await {
                Ok(m) => m,
                Err(e) => {
                    out.borrow_mut().push(Err(e));
                    return 0u64;
                }
            };
            for _ in 0..n {
                let r = keep(fs::next_read(&mut m).await);
                let more = matches!(r, Ok(Some(_)));
                out.borrow_mut().push(r);
                if !more {
                    break;
                }
            }
            0u64
        })
        .unwrap();
    }
}

fn pipe_file() -> (Rc<File>, OwnedFd) {
    let (r, w) = std::io::pipe().unwrap();
    (Rc::new(File::from(OwnedFd::from(r))), OwnedFd::from(w))
}

#[test]
fn a_pipe_streams_each_write_in_order_and_ends_at_end_of_file() {
    if net_util::ring_only("multishot reads into provided buffers") {
        return;
    }
    for fiber in [true, false] {
        let ex = ex_with_buffers();
        let ex = ex.as_ref();
        let out: Out = Rc::default();
        let (file, w) = pipe_file();
        streamer(ex, fiber, file, 8, &out);
        for chunk in [&b"one"[..], b"two", b"three"] {
            let before = out.borrow().len();
            rustix::io::write(&w, chunk).unwrap();
            run_until(ex, || out.borrow().len() > before);
            if unsupported(&out) {
                return;
            }
        }
        drop(w);
        run_all(ex);
        let want: Vec<Result<Option<Vec<u8>>, Errno>> =
            vec![Ok(Some(b"one".to_vec())), Ok(Some(b"two".to_vec())), Ok(Some(b"three".to_vec())), Ok(None)];
        assert_eq!(*out.borrow(), want, "fiber {fiber}");
        let stats = pbuf_stats(ex);
        assert_eq!(stats.in_use, 0, "fiber {fiber}: every buffer went back");
        assert_eq!(ex.with_driver(|d| d.in_flight()).unwrap(), 0);
    }
}

#[test]
fn a_regular_file_is_refused_with_ebadfd_and_no_buffer_ring_is_enobufs() {
    if net_util::ring_only("multishot reads into provided buffers") {
        return;
    }
    for fiber in [true, false] {
        let ex = ex_with_buffers();
        let ex = ex.as_ref();
        let out: Out = Rc::default();
        let path = std::env::temp_dir().join(format!("keel-readmulti-{}", std::process::id()));
        std::fs::write(&path, b"data").unwrap();
        let f = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        streamer(ex, fiber, Rc::new(File::from(OwnedFd::from(f))), 2, &out);
        run_all(ex);
        if unsupported(&out) {
            return;
        }
        assert_eq!(*out.borrow(), vec![Err(Errno(libc::EBADFD))], "fiber {fiber}: a regular file cannot be polled");

        let bare = executor_with(ring(RingConfig::default()));
        let out: Out = Rc::default();
        let (file, _w) = pipe_file();
        streamer(bare.as_ref(), fiber, file, 1, &out);
        run_all(bare.as_ref());
        assert_eq!(*out.borrow(), vec![Err(Errno::ENOBUFS)], "fiber {fiber}");
    }
}

#[test]
fn a_stream_dropped_while_armed_gives_its_slot_and_buffers_back() {
    if net_util::ring_only("multishot reads into provided buffers") {
        return;
    }
    let ex = ex_with_buffers();
    let ex = ex.as_ref();
    let (file, w) = pipe_file();
    let done = Rc::new(RefCell::new(None));
    let d = done.clone();
    ex.attach(task(), async move {
        let mut m = fs::read_multi(&file).await.unwrap();
        let first = fs::next_read(&mut m).await.map(|b| b.map(|b| b.to_vec()));
        *d.borrow_mut() = Some(first);
        // Data arrives while nobody reads: it waits in the stream, then the stream goes.
        keel_core::rt::sleep(Duration::from_millis(30)).await.unwrap();
        drop(m);
        0u64
    })
    .unwrap();
    rustix::io::write(&w, b"a").unwrap();
    run_until(ex, || done.borrow().is_some());
    if *done.borrow() == Some(Err(Errno::EINVAL)) {
        eprintln!("SKIP: this kernel has no IORING_OP_READ_MULTISHOT (6.7+)");
        return;
    }
    assert_eq!(*done.borrow(), Some(Ok(Some(b"a".to_vec()))));
    rustix::io::write(&w, b"queued").unwrap();
    run_all(ex);
    run_until(ex, || ex.with_driver(|d| d.in_flight()).unwrap() == 0);
    let stats = pbuf_stats(ex);
    assert_eq!(stats.in_use, 0, "the queued buffer went back to the ring");
}
