//! Ending a multishot read and waiting for it (`FiberReadMulti::end_read`, `fs::end_read`):
//! once it returns, nothing holds the descriptor (`File::into_raw_fd` succeeds: no
//! operation keeps it) and every buffer is back in the ring, for an armed stream with
//! data queued in it, a stream never armed, and in a task cancelled meanwhile; a stream
//! armed on another executor's ring is `EXDEV`.

mod net_util;

use core::time::Duration;
use keel_core::{Driver, Errno, Fiber};
use keel_linux::RingConfig;
use keel_linux::fs::{self, FiberReadMulti, File};
use net_util::{Ex, executor_with, fattrs, ring, run_all, run_until, task};
use std::cell::RefCell;
use std::os::fd::{FromRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;

fn in_use(ex: Pin<&Ex>) -> u16 {
    ex.with_driver(|d| {
        // SAFETY: a test reading the driver's counters: it is not replaced and no other
        // code runs meanwhile (`DriverMut::get_mut`'s contract).
        unsafe { d.get_mut() }.provided_buffer_stats().unwrap().in_use
    })
    .unwrap()
}

fn ex_with_buffers() -> Pin<Box<Ex>> {
    let mut d = ring(RingConfig::default());
    d.enable_provided_buffers(16, 64).unwrap();
    executor_with(d)
}

fn pipe_file() -> (File, OwnedFd) {
    let (r, w) = std::io::pipe().unwrap();
    (File::from(OwnedFd::from(r)), OwnedFd::from(w))
}

/// The descriptor back from `file`, which must hold it alone; closed here.
fn alone(file: File) -> Result<(), &'static str> {
    match file.into_raw_fd() {
        Ok(fd) => {
            // SAFETY: given up by the `File`, ours to close.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
            Ok(())
        }
        Err(_) => Err("an operation still holds the descriptor"),
    }
}

type Out = Rc<RefCell<Vec<String>>>;

/// A task that reads one chunk, waits for `go`, then ends the stream (with more data
/// queued by then) and gives the descriptor back; what it saw goes to `out`.
fn reader(ex: Pin<&Ex>, fiber: bool, file: File, out: &Out) -> keel_core::TaskHandle {
    let o = out.clone();
    if fiber {
        ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let mut m = f.read_multi(&file).unwrap();
            let first = f.next_read(&mut m).map(|b| b.map(|b| b.to_vec()));
            o.borrow_mut().push(format!("{first:?}"));
            if first == Err(Errno::EINVAL) {
                return 0u64;
            }
            let _ = f.sleep(Duration::from_millis(20)); // data queues meanwhile (cancelled: at once)
            o.borrow_mut().push(format!("end {:?}", f.end_read(m)));
            o.borrow_mut().push(format!("alone {:?}", alone(file)));
            0u64
        })
        .unwrap()
    } else {
        ex.attach(task(), async move {
            let mut m = fs::read_multi(&file).await.unwrap();
            let first = fs::next_read(&mut m).await.map(|b| b.map(|b| b.to_vec()));
            o.borrow_mut().push(format!("{first:?}"));
            if first == Err(Errno::EINVAL) {
                return 0u64;
            }
            let _ = keel_core::rt::sleep(Duration::from_millis(20)).await;
            let end = fs::end_read(m).await;
            o.borrow_mut().push(format!("end {end:?}"));
            o.borrow_mut().push(format!("alone {:?}", alone(file)));
            0u64
        })
        .unwrap()
    }
}

fn skipped(out: &Out) -> bool {
    if out.borrow().first().is_some_and(|s| s.contains("EINVAL")) {
        eprintln!("SKIP: this kernel has no IORING_OP_READ_MULTISHOT (6.7+)");
        return true;
    }
    false
}

#[test]
fn end_read_of_an_armed_stream_with_data_queued_returns_once_nothing_holds_the_descriptor() {
    if net_util::ring_only("multishot reads into provided buffers") {
        return;
    }
    for (fiber, cancel) in [(true, false), (false, false), (true, true), (false, true)] {
        let ex = ex_with_buffers();
        let ex = ex.as_ref();
        let out: Out = Rc::default();
        let (file, w) = pipe_file();
        let t = reader(ex, fiber, file, &out);
        rustix::io::write(&w, b"first").unwrap();
        run_until(ex, || !out.borrow().is_empty());
        if skipped(&out) {
            return;
        }
        rustix::io::write(&w, b"queued").unwrap(); // the armed stream reads it into a buffer
        if cancel {
            let _ = ex.cancel(t); // the sleep ends; end_read still waits for the op's end
        }
        run_all(ex);
        let want = ["Ok(Some([102, 105, 114, 115, 116]))", "end Ok(())", "alone Ok(())"];
        assert_eq!(*out.borrow(), want, "fiber {fiber}, cancelled {cancel}");
        assert_eq!(in_use(ex), 0, "fiber {fiber}, cancelled {cancel}: every buffer went back");
        assert_eq!(ex.with_driver(|d| d.in_flight()).unwrap(), 0);
    }
}

#[test]
fn end_read_of_a_stream_never_armed_is_at_once() {
    if net_util::ring_only("multishot reads into provided buffers") {
        return;
    }
    let ex = ex_with_buffers();
    let ex = ex.as_ref();
    let out: Out = Rc::default();
    let o = out.clone();
    let (file, _w) = pipe_file();
    let (file2, _w2) = pipe_file();
    ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
        let m = f.read_multi(&file).unwrap();
        o.borrow_mut().push(format!("{:?} {:?}", f.end_read(m), alone(file)));
        0u64
    })
    .unwrap();
    let o = out.clone();
    ex.attach(task(), async move {
        let m = fs::read_multi(&file2).await.unwrap();
        let end = fs::end_read(m).await;
        o.borrow_mut().push(format!("{end:?} {:?}", alone(file2)));
        0u64
    })
    .unwrap();
    run_all(ex);
    assert_eq!(*out.borrow(), ["Ok(()) Ok(())", "Ok(()) Ok(())"]);
}

/// A stream armed on one executor's ring, ended in a task of another executor on the same
/// thread: `EXDEV`, the stream dropped (its own driver ends it).
#[test]
fn end_read_of_a_stream_armed_on_another_executors_ring_is_exdev() {
    if net_util::ring_only("multishot reads into provided buffers") {
        return;
    }
    let a = ex_with_buffers();
    let b = ex_with_buffers();
    let (a, b) = (a.as_ref(), b.as_ref());
    let (file, w) = pipe_file();
    let file = Rc::new(file);
    let stream = Rc::new(RefCell::new(None));
    let (s, fa) = (stream.clone(), file.clone());
    a.attach(task(), async move {
        let mut m = fs::read_multi(&fa).await.unwrap();
        let first = fs::next_read(&mut m).await.map(|b| b.map(|b| b.to_vec()));
        *s.borrow_mut() = Some((first, m));
        0u64
    })
    .unwrap();
    rustix::io::write(&w, b"x").unwrap();
    run_all(a);
    let (first, m) = stream.borrow_mut().take().unwrap();
    if first == Err(Errno::EINVAL) {
        eprintln!("SKIP: this kernel has no IORING_OP_READ_MULTISHOT (6.7+)");
        return;
    }
    assert_eq!(first, Ok(Some(b"x".to_vec())));
    let out = Rc::new(RefCell::new(None));
    let o = out.clone();
    b.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
        *o.borrow_mut() = Some(f.end_read(m));
        0u64
    })
    .unwrap();
    run_all(b);
    assert_eq!(*out.borrow(), Some(Err(Errno(libc::EXDEV))));
    run_until(a, || a.with_driver(|d| d.in_flight()).unwrap() == 0);
    assert_eq!(in_use(a), 0);
    drop(file);
}
