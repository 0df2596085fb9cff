//! Per-read/write flags (`rw_flags` rules 1-3) on a real ring, fibers and futures alike:
//! `NOWAIT` on an empty pipe is `EAGAIN` at once, `APPEND` writes at the end whatever the
//! offset, `DSYNC`/`SYNC` writes land, and flags combine with a deadline.

mod net_util;
mod ready_util;

use core::time::Duration;
use keel_core::{Errno, Fiber};
use keel_linux::RingConfig;
use keel_linux::deadline::{self, Deadline, FiberDeadline, TIMED_OUT};
use keel_linux::fs::{self, FiberRw, File, RwFlags};
use net_util::{executor, fattrs, run_all, task};
use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::rc::Rc;

type Out = Rc<RefCell<Vec<Result<u32, Errno>>>>;

fn pipe_file() -> (Rc<File>, OwnedFd) {
    let (r, w) = std::io::pipe().unwrap();
    (Rc::new(File::from(OwnedFd::from(r))), OwnedFd::from(w))
}

/// A temporary file holding `content`, open for reading and writing (unlinked).
fn temp_file(content: &[u8]) -> Rc<File> {
    let path = std::env::temp_dir().join(format!("keel-rw-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::write(&path, content).unwrap();
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    Rc::new(File::from(OwnedFd::from(f)))
}

fn contents(file: &File) -> Vec<u8> {
    let mut v = vec![0u8; 64];
    let n = rustix::io::pread(file, &mut v, 0).unwrap();
    v.truncate(n);
    v
}

/// Runs `fiber` as a fiber task, or `future` as a future task, to the end.
fn run_one(fiber: bool, f: impl FnOnce(&mut Fiber) + 'static, fut: impl core::future::Future<Output = ()> + 'static) {
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    if fiber {
        ex.attach_fiber(task(), fattrs(), move |fb: &mut Fiber| {
            f(fb);
            0u64
        })
        .unwrap();
    } else {
        ex.attach(task(), async move {
            fut.await;
            0u64
        })
        .unwrap();
    }
    run_all(ex);
}

#[test]
fn rw_rule_2_nowait_on_an_empty_pipe_is_eagain_at_once() {
    for fiber in [true, false] {
        let out: Out = Rc::default();
        let (file, _w) = pipe_file();
        let (o1, o2, f1, f2) = (out.clone(), out.clone(), file.clone(), file.clone());
        run_one(
            fiber,
            move |f| {
                let mut buf = [0u8; 8];
                let r = f.read_flags(&f1, &mut buf, 0, RwFlags::NOWAIT);
                o1.borrow_mut().push(r);
            },
            async move {
                let (r, _) = fs::read_flags(&f2, Vec::with_capacity(8), 0, RwFlags::NOWAIT).await;
                o2.borrow_mut().push(r);
            },
        );
        assert_eq!(*out.borrow(), vec![Err(Errno::EAGAIN)], "fiber {fiber}");
    }
}

#[test]
fn rw_rule_3_append_writes_at_the_end_whatever_the_offset() {
    for fiber in [true, false] {
        let out: Out = Rc::default();
        let file = temp_file(b"abc");
        let (o1, o2, f1, f2) = (out.clone(), out.clone(), file.clone(), file.clone());
        run_one(
            fiber,
            move |f| {
                o1.borrow_mut().push(f.write_flags(&f1, b"XY", 0, RwFlags::APPEND));
                o1.borrow_mut().push(f.write_flags(&f1, b"Z", 1, RwFlags::DSYNC));
                o1.borrow_mut().push(f.write_flags(&f1, b"!", 0, RwFlags::SYNC | RwFlags::APPEND));
            },
            async move {
                for (buf, off, fl) in [
                    (&b"XY"[..], 0, RwFlags::APPEND),
                    (&b"Z"[..], 1, RwFlags::DSYNC),
                    (&b"!"[..], 0, RwFlags::SYNC | RwFlags::APPEND),
                ] {
                    let (r, back) = fs::write_flags(&f2, buf.to_vec(), off, fl).await;
                    assert_eq!(back, buf, "the buffer comes back unchanged");
                    o2.borrow_mut().push(r);
                }
            },
        );
        assert_eq!(*out.borrow(), vec![Ok(2), Ok(1), Ok(1)], "fiber {fiber}");
        assert_eq!(contents(&file), b"aZcXY!", "fiber {fiber}");
    }
}

#[test]
fn rw_flags_a_flagged_read_returns_the_data_and_takes_a_deadline() {
    for fiber in [true, false] {
        let out: Out = Rc::default();
        let file = temp_file(b"hello");
        let (pipe, _w) = pipe_file();
        let (o1, o2, f1, f2, p1, p2) =
            (out.clone(), out.clone(), file.clone(), file.clone(), pipe.clone(), pipe.clone());
        let d = || Deadline::after(Duration::from_millis(10));
        run_one(
            fiber,
            move |f| {
                let mut buf = [0u8; 8];
                o1.borrow_mut().push(f.read_flags(&f1, &mut buf, 1, RwFlags::empty()));
                assert_eq!(&buf[..4], b"ello");
                let r = f.within(d(), |f| f.read_flags(&p1, &mut buf, 0, RwFlags::empty()));
                o1.borrow_mut().push(r);
            },
            async move {
                let (r, buf) = fs::read_flags(&f2, Vec::with_capacity(8), 1, RwFlags::empty()).await;
                assert_eq!(buf, b"ello");
                o2.borrow_mut().push(r);
                let (r, _) =
                    deadline::within(d(), fs::read_flags(&p2, Vec::with_capacity(8), 0, RwFlags::empty())).await;
                o2.borrow_mut().push(r);
            },
        );
        assert_eq!(*out.borrow(), vec![Ok(4), Err(TIMED_OUT)], "fiber {fiber}");
    }
}
