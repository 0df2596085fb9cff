//! The future twins of the fiber file calls (README "Fibers and futures"): `readv`,
//! `writev`, `sync_file_range`, `fallocate`, the direct-descriptor calls,
//! `try_claim_buffer`/`release_buffer`, and the fiber `nop`. Each gives the result its
//! fiber twin gives; a cancelled task's operation returns its completion or `ECANCELED`
//! with the buffers, and loses no data (`slot_op.rs`); a future moved out of its task
//! completes in the task that polls it then (wake-token rule 3 in `ring`). Futures
//! dropped in flight: `future_parity_drops.rs`.

#[path = "parity_util/mod.rs"]
mod parity;
#[path = "net_util/mod.rs"]
mod util;

use core::future::Future;
use core::time::Duration;
use keel_core::{Errno, Fiber};
use keel_linux::RingConfig;
use keel_linux::fs::{self, BufferError, FallocateFlags, FiberFs, File, FixedFile, Mode, OFlags, SyncFileRangeFlags};
use parity::*;
use std::cell::RefCell;
use std::io::{IoSlice, IoSliceMut};
use std::rc::Rc;
use util::*;

type Log = Rc<RefCell<Vec<String>>>;

fn log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

#[test]
fn future_readv_and_writev_scatter_and_gather_as_the_fiber_calls_do() {
    let path = temp("vectored");
    let ex = executor(RingConfig::default());
    let out = log();
    let (o, p) = (out.clone(), path.clone());
    ex.as_ref()
        .attach(task(), async move {
            let file =
                fs::open(&p, OFlags::CREATE | OFlags::RDWR | OFlags::TRUNC, Mode::from_raw_mode(0o600)).await.unwrap();
            let (r, back) =
                fs::writev(&file, vec![b"ab".to_vec(), b"cde".to_vec(), Vec::new(), b"fgh".to_vec()], 0).await;
            o.borrow_mut().push(format!("writev {r:?} {back:?}"));
            let bufs = vec![Vec::with_capacity(2), vec![9u8; 1], Vec::with_capacity(10)];
            let caps: Vec<usize> = bufs.iter().map(|b| b.capacity()).collect();
            let (r, back) = fs::readv(&file, bufs, 0).await;
            let lens: Vec<usize> = back.iter().map(|b| b.len()).collect();
            o.borrow_mut().push(format!("readv {r:?} {:?} {lens:?}", back.concat()));
            o.borrow_mut().push(format!("capacities kept {}", back.iter().zip(&caps).all(|(b, c)| b.capacity() == *c)));
            let (r, back) = fs::readv(&file, vec![Vec::with_capacity(4)], 6).await;
            o.borrow_mut().push(format!("at 6 {r:?} {:?}", back.concat()));
            fs::close(file).await.unwrap();
            0u64
        })
        .unwrap();
    run_all(ex.as_ref());
    // The fiber twin reads the same bytes the same way.
    let (o, p) = (out.clone(), path.clone());
    ex.as_ref()
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let file = f.open(p.as_str(), OFlags::RDONLY, Mode::empty()).unwrap();
            let (mut a, mut b, mut c) = ([0u8; 2], [0u8; 1], [0u8; 10]);
            let r = f.readv(&file, &mut [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b), IoSliceMut::new(&mut c)], 0);
            o.borrow_mut().push(format!("fiber readv {r:?} {:?}", [&a[..], &b[..], &c[..5]].concat()));
            let r = f.writev(&file, &[IoSlice::new(b"x")], 0);
            o.borrow_mut().push(format!("fiber writev on a read-only file {r:?}"));
            f.close(file).unwrap();
            0u64
        })
        .unwrap();
    run_all(ex.as_ref());
    assert_eq!(
        *out.borrow(),
        [
            format!("writev Ok(8) {:?}", vec![b"ab".to_vec(), b"cde".to_vec(), Vec::new(), b"fgh".to_vec()]),
            format!("readv Ok(8) {:?} [2, 1, 5]", b"abcdefgh".to_vec()),
            "capacities kept true".to_owned(),
            format!("at 6 Ok(2) {:?}", b"gh".to_vec()),
            format!("fiber readv Ok(8) {:?}", b"abcdefgh".to_vec()),
            format!("fiber writev on a read-only file {:?}", Err::<u32, _>(Errno::EBADF)),
        ]
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn future_sync_file_range_and_fallocate_reach_the_file() {
    let path = temp("sync");
    let ex = executor(RingConfig::default());
    let out = log();
    let (o, p) = (out.clone(), path.clone());
    let (rfd, wfd) = pipe();
    ex.as_ref()
        .attach(task(), async move {
            let file =
                fs::open(&p, OFlags::CREATE | OFlags::RDWR | OFlags::TRUNC, Mode::from_raw_mode(0o600)).await.unwrap();
            let r = fs::fallocate(&file, FallocateFlags::empty(), 0, 8192).await;
            o.borrow_mut().push(format!("fallocate {r:?}"));
            let size = std::fs::metadata(&p).unwrap().len();
            o.borrow_mut().push(format!("size {size}"));
            let (r, _) = fs::write(&file, b"data".to_vec(), 0).await;
            r.unwrap();
            let flags = SyncFileRangeFlags::WAIT_BEFORE | SyncFileRangeFlags::WRITE | SyncFileRangeFlags::WAIT_AFTER;
            let r = fs::sync_file_range(&file, 0, 4, flags).await;
            o.borrow_mut().push(format!("sync_file_range {r:?}"));
            fs::close(file).await.unwrap();
            // SAFETY: the pipe's read end is ours and wrapped once.
            let pipe = unsafe { File::from_raw_fd(rfd) };
            let r = fs::fallocate(&pipe, FallocateFlags::empty(), 0, 4096).await;
            o.borrow_mut().push(format!("fallocate on a pipe fails {}", r.is_err()));
            0u64
        })
        .unwrap();
    run_all(ex.as_ref());
    close(wfd);
    assert_eq!(
        *out.borrow(),
        ["fallocate Ok(())", "size 8192", "sync_file_range Ok(())", "fallocate on a pipe fails true"]
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn future_direct_descriptor_calls_match_the_fiber_ones() {
    if ring_only("direct descriptors") {
        return;
    }
    let path = temp("direct");
    let ex = executor(RingConfig { registered_files: 4, ..RingConfig::default() });
    let out = log();
    let (o, p) = (out.clone(), path.clone());
    ex.as_ref()
        .attach(task(), async move {
            let file = fs::open_direct(&p, OFlags::CREATE | OFlags::RDWR, Mode::from_raw_mode(0o600)).await.unwrap();
            let (r, back) = fs::write_direct(&file, b"direct".to_vec(), 0).await;
            o.borrow_mut().push(format!("write {r:?} {:?}", String::from_utf8(back)));
            let (r, back) = fs::read_direct(&file, Vec::with_capacity(16), 0).await;
            o.borrow_mut().push(format!("read {r:?} {:?}", String::from_utf8(back)));
            let r = fs::close_direct(file).await;
            o.borrow_mut().push(format!("close {r:?}"));
            0u64
        })
        .unwrap();
    run_all(ex.as_ref());
    // The fiber twin opens the file the future wrote.
    let (o, p) = (out.clone(), path.clone());
    ex.as_ref()
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let file = f.open_direct(p.as_str(), OFlags::RDONLY, Mode::empty()).unwrap();
            let mut buf = [0u8; 16];
            let r = f.read_direct(&file, &mut buf, 0);
            o.borrow_mut().push(format!("fiber read {r:?} {:?}", std::str::from_utf8(&buf[..6])));
            f.close_direct(file).unwrap();
            0u64
        })
        .unwrap();
    run_all(ex.as_ref());
    let none = executor(RingConfig::default()); // no fixed-file table
    let o = out.clone();
    let p = path.clone();
    none.as_ref()
        .attach(task(), async move {
            let r = fs::open_direct(&p, OFlags::RDONLY, Mode::empty()).await.map(|f: FixedFile| f.index());
            o.borrow_mut().push(format!("no table {r:?}"));
            0u64
        })
        .unwrap();
    run_all(none.as_ref());
    assert_eq!(
        *out.borrow(),
        [
            "write Ok(6) Ok(\"direct\")".to_owned(),
            "read Ok(6) Ok(\"direct\")".to_owned(),
            "close Ok(())".to_owned(),
            format!("fiber read Ok(6) {:?}", Ok::<&str, std::str::Utf8Error>("direct")),
            format!("no table {:?}", Err::<u32, _>(Errno(libc::ENFILE))),
        ]
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn fiber_nop_and_future_try_claim_and_release_buffer_match_their_twins() {
    if ring_only("registered buffers") {
        return;
    }
    let ex = executor(RingConfig { registered_buffers: 1, ..RingConfig::default() });
    let out = log();
    let o = out.clone();
    ex.as_ref()
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let r = f.nop();
            o.borrow_mut().push(format!("fiber nop {r:?}"));
            0u64
        })
        .unwrap();
    run_all(ex.as_ref());
    let o = out.clone();
    ex.as_ref()
        .attach(task(), async move {
            let r = fs::nop().await;
            o.borrow_mut().push(format!("future nop {r:?}"));
            let b = fs::try_claim_buffer().await.unwrap();
            let r = fs::try_claim_buffer().await.map(|b| b.index());
            o.borrow_mut().push(format!("second {r:?}"));
            let mut waiting = Box::pin(fs::claim_buffer());
            let pending = poll_once(&mut waiting).await.is_none();
            o.borrow_mut().push(format!("waiter pending {pending}"));
            fs::release_buffer(b); // to the waiter (regbuf rule 3), not to the free list
            let r = fs::try_claim_buffer().await.map(|b| b.index());
            o.borrow_mut().push(format!("after release {r:?}"));
            let r = waiting.await.map(|b| b.index());
            o.borrow_mut().push(format!("waiter got {r:?}"));
            0u64
        })
        .unwrap();
    run_all(ex.as_ref());
    let plain = executor(RingConfig::default());
    let o = out.clone();
    plain
        .as_ref()
        .attach(task(), async move {
            let r = fs::try_claim_buffer().await.map(|b| b.index());
            o.borrow_mut().push(format!("none registered {r:?}"));
            0u64
        })
        .unwrap();
    run_all(plain.as_ref());
    // Outside any task (rt rule 2): no ring to claim from.
    let mut outside = Box::pin(fs::try_claim_buffer());
    let r = outside.as_mut().poll(&mut core::task::Context::from_waker(core::task::Waker::noop()));
    out.borrow_mut().push(format!("outside {:?}", r.map(|r| r.map(|b| b.index()))));
    assert_eq!(
        *out.borrow(),
        [
            "fiber nop Ok(0)".to_owned(),
            "future nop Ok(0)".to_owned(),
            format!("second {:?}", Err::<u16, _>(BufferError::AllClaimed)),
            "waiter pending true".to_owned(),
            format!("after release {:?}", Err::<u16, _>(BufferError::AllClaimed)),
            "waiter got Ok(0)".to_owned(),
            format!("none registered {:?}", Err::<u16, _>(BufferError::NoneRegistered)),
            format!("outside {:?}", core::task::Poll::Ready(Err::<u16, _>(BufferError::NotOnRing))),
        ]
    );
}

/// A vectored read of a pipe in flight when its task is cancelled, with bytes written
/// into the pipe in the same pass: the read returns them (it completed first) or
/// `ECANCELED` with the bytes still in the pipe; the buffers come back either way.
#[test]
fn slot_op_a_cancelled_readv_returns_its_buffers_and_loses_no_bytes() {
    let (rfd, wfd) = pipe();
    // SAFETY: dup only makes a second descriptor of the pipe's read end, ours to close.
    let spare = unsafe { libc::dup(rfd) };
    let ex = executor(RingConfig::default());
    let out = log();
    let o = out.clone();
    let t = ex
        .as_ref()
        .attach(task(), async move {
            // SAFETY: the pipe's read end is ours and wrapped once.
            let file = unsafe { File::from_raw_fd(rfd) };
            let (r, back) = fs::readv(&file, vec![Vec::with_capacity(2), Vec::with_capacity(8)], 0).await;
            let caps: Vec<usize> = back.iter().map(|b| b.capacity()).collect();
            o.borrow_mut().push(format!("{r:?} {:?} {caps:?}", back.concat()));
            0u64
        })
        .unwrap();
    for _ in 0..3 {
        let _ = ex.as_ref().run(16, Some(Duration::from_millis(5)));
    }
    assert!(out.borrow().is_empty(), "an empty pipe's read waits");
    put(wfd, b"xyz");
    ex.as_ref().cancel(t).unwrap();
    run_all(ex.as_ref());
    let got = out.borrow()[0].clone();
    let left = drain(spare);
    let read = format!("Ok(3) {:?} [2, 8]", b"xyz".to_vec());
    let cancelled = format!("{:?} [] [2, 8]", Err::<u32, _>(Errno::ECANCELED));
    assert!((got == read && left.is_empty()) || (got == cancelled && left == b"xyz"), "got {got}, left {left:?}");
    close(spare);
    close(wfd);
}

type Parked = Rc<RefCell<Option<core::pin::Pin<Box<dyn Future<Output = (Result<u32, Errno>, Vec<Vec<u8>>)>>>>>>;

/// A `readv` polled in task A (the read is in the kernel), moved out, A returns and
/// completes at once; task B awaits it and gets the bytes written later (wake-token rule 3).
#[test]
fn wake_token_rule_3_a_readv_moved_out_of_its_task_completes_in_another() {
    let (rfd, wfd) = pipe();
    // SAFETY: the pipe's read end is ours and wrapped once.
    let file: &'static File = Box::leak(Box::new(unsafe { File::from_raw_fd(rfd) }));
    let ex = executor(RingConfig::default());
    let parked: Parked = Rc::new(RefCell::new(None));
    let p = parked.clone();
    let a = ex
        .as_ref()
        .attach(task(), async move {
            let mut f: core::pin::Pin<Box<dyn Future<Output = _>>> =
                Box::pin(fs::readv(file, vec![Vec::with_capacity(2), Vec::with_capacity(2)], 0));
            assert!(poll_once(&mut f).await.is_none());
            *p.borrow_mut() = Some(f);
            1u64
        })
        .unwrap();
    run_until(ex.as_ref(), || parked.borrow().is_some());
    for _ in 0..3 {
        let _ = ex.as_ref().run(16, Some(Duration::from_millis(5)));
    }
    assert_eq!(ex.as_ref().result(a), Ok(Some(Ok(1))), "A was not held by the read it moved out");
    let out = log();
    let (o, p) = (out.clone(), parked.clone());
    ex.as_ref()
        .attach(task(), async move {
            let f = p.borrow_mut().take().unwrap();
            let (r, back) = f.await;
            o.borrow_mut().push(format!("{r:?} {back:?}"));
            0u64
        })
        .unwrap();
    for _ in 0..3 {
        let _ = ex.as_ref().run(16, Some(Duration::from_millis(5)));
    }
    put(wfd, b"abc");
    run_all(ex.as_ref());
    assert_eq!(*out.borrow(), [format!("Ok(3) {:?}", vec![b"ab".to_vec(), b"c".to_vec()])]);
    close(wfd);
}
