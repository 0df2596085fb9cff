//! Rule guards with no other home: one test per rule of keel-linux's rule sets (waitq,
//! regbuf, pbuf, shared, stack, fd, completion, cancel, slot, direct and wake-token rules
//! in `linux/src`) that no scenario test elsewhere checks on its own. Each test is named
//! `<set>_rule_<n>_<what>` and fails when that rule's code is removed. Real io_uring;
//! sockets are Unix pairs, or a TCP pair on 127.0.0.1 where the kernel needs inet.

mod net_util;

use core::time::Duration;
use keel_core::{Driver, Errno, Fiber, SuspendReason, TaskError, TaskState, rt};
use keel_linux::fs::{self, BufferError, FiberFs, Mode, OFlags};
use keel_linux::net::{self, FiberNet, Socket};
use keel_linux::{File, MmapStacks, RingConfig, RingDriver};
use net_util::{Ex, executor, executor_with, fattrs, ring, task};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io::Write;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

/// Runs until no task is attached or 5 s passed; whether all finished.
fn run_for(ex: Pin<&Ex>) -> bool {
    let t0 = std::time::Instant::now();
    while ex.attached() > 0 && t0.elapsed() < Duration::from_secs(5) {
        let _ = ex.run(1024, Some(Duration::from_millis(20)));
    }
    ex.attached() == 0
}

/// Runs until `cond` (5 s cap).
fn run_until(ex: Pin<&Ex>, cond: impl Fn() -> bool) {
    let t0 = std::time::Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(5), "timed out");
        let _ = ex.run(16, Some(Duration::from_millis(5)));
    }
}

fn waiting(ex: Pin<&Ex>, t: keel_core::TaskHandle) -> bool {
    matches!(ex.state(t), Ok(TaskState::Suspended(SuspendReason::Wait)))
}

/// Polls `f` once: `None` if it is pending.
async fn poll_once<F: Future + Unpin>(f: &mut F) -> Option<F::Output> {
    core::future::poll_fn(|cx| {
        Poll::Ready(match Pin::new(&mut *f).poll(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        })
    })
    .await
}

fn one_buffer() -> Pin<Box<Ex>> {
    executor(RingConfig { registered_buffers: 1, ..RingConfig::default() })
}

/// A fiber holding the only registered buffer until `go` is set.
fn holder(ex: Pin<&Ex>, go: &Rc<Cell<bool>>) -> keel_core::TaskHandle {
    let go = go.clone();
    let h = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
            let _b = f.claim_buffer().expect("the only buffer is free");
            while !go.get() {
                f.yield_now()?;
            }
            Ok(0)
        })
        .unwrap();
    run_until(ex, || matches!(ex.state(h), Ok(TaskState::Ready | TaskState::Suspended(_))));
    let _ = ex.run(1, Some(Duration::ZERO));
    h
}

// ---- waitq rules (`waitq.rs`) -------------------------------------------------------

/// A waiting claim polled again and again (each poll a spurious wake) keeps the one place
/// it took: the queue (1024 places) never fills with its polls, it gets the buffer on
/// the release, and the waiter queued after it gets the next release.
#[test]
fn waitq_rule_1_a_wait_polled_again_and_again_keeps_one_place_in_the_queue() {
    if net_util::ring_only("registered buffers") {
        return;
    }
    let ex = one_buffer();
    let ex = ex.as_ref();
    let go = Rc::new(Cell::new(false));
    holder(ex, &go);
    let order = Rc::new(RefCell::new(Vec::new()));
    let (o, g) = (order.clone(), go.clone());
    let w1 = ex
        .attach(task(), async move {
            let mut c = Box::pin(fs::claim_buffer());
            for i in 0..2000 {
                if let Some(r) = poll_once(&mut c).await {
                    panic!("poll {i}: the wait ended early: {:?}", r.map(|b| b.index()));
                }
                rt::yield_now().await?;
            }
            g.set(true); // the holder releases now
            let b = c.await.map_err(|_| TaskError::Failed(1))?;
            o.borrow_mut().push(1);
            drop(b);
            Ok(1)
        })
        .unwrap();
    let _ = ex.run(1, Some(Duration::ZERO));
    let o = order.clone();
    let w2 = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
            let _b = f.claim_buffer().map_err(|_| TaskError::Failed(2))?;
            o.borrow_mut().push(2);
            Ok(2)
        })
        .unwrap();
    assert!(run_for(ex), "stranded: w1 {:?}, w2 {:?}", ex.state(w1), ex.state(w2));
    assert_eq!(ex.result(w1), Ok(Some(Ok(1))));
    assert_eq!(ex.result(w2), Ok(Some(Ok(2))));
    assert_eq!(*order.borrow(), [1, 2]);
}

/// Three waiters queued one after another get the buffer in the order they queued.
#[test]
fn waitq_rule_2_a_release_hands_the_turn_to_the_oldest_waiter() {
    if net_util::ring_only("registered buffers") {
        return;
    }
    let ex = one_buffer();
    let ex = ex.as_ref();
    let go = Rc::new(Cell::new(false));
    holder(ex, &go);
    let order = Rc::new(RefCell::new(Vec::new()));
    let mut waiters = Vec::new();
    for n in 1..=3u64 {
        let o = order.clone();
        let w = ex
            .attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
                let _b = f.claim_buffer().map_err(|_| TaskError::Failed(n as _))?;
                o.borrow_mut().push(n);
                f.yield_now()?;
                Ok(n)
            })
            .unwrap();
        run_until(ex, || waiting(ex, w));
        waiters.push(w);
    }
    go.set(true);
    assert!(run_for(ex));
    assert_eq!(*order.borrow(), [1, 2, 3], "the oldest waiter gets each release");
}

/// The claim queue is bounded (1024 waits): the wait past it is refused with a typed
/// error, and nothing else changes (the queued waits still get the buffer in turn).
#[test]
fn waitq_rule_4_a_full_wait_queue_is_a_typed_error() {
    if net_util::ring_only("registered buffers") {
        return;
    }
    let ex = one_buffer();
    let ex = ex.as_ref();
    let go = Rc::new(Cell::new(false));
    holder(ex, &go);
    let out = Rc::new(RefCell::new(None));
    let (o, g) = (out.clone(), go.clone());
    let t = ex
        .attach(task(), async move {
            let mut claims: Vec<Pin<Box<fs::ClaimBuffer>>> = Vec::new();
            let mut refused = None;
            for i in 0..1100 {
                let mut c = Box::pin(fs::claim_buffer());
                match poll_once(&mut c).await {
                    None => claims.push(c),
                    Some(r) => {
                        refused = Some((i, r.map(|b| b.index())));
                        break;
                    }
                }
            }
            *o.borrow_mut() = refused;
            g.set(true);
            let first = claims.remove(0).await.map_err(|_| TaskError::Failed(1))?;
            Ok(u64::from(first.index()) + 10)
        })
        .unwrap();
    assert!(run_for(ex));
    assert_eq!(*out.borrow(), Some((1024, Err(BufferError::WaitQueueFull))));
    assert_eq!(ex.result(t), Ok(Some(Ok(10))), "the oldest queued wait got the buffer");
}

// ---- pbuf rules (`pbuf.rs`) -----------------------------------------------------------

/// The ring's size: a power of two up to 32768 buffers, and buffers of at least a byte;
/// anything else is refused at registration with a typed error.
#[test]
fn pbuf_rule_1_the_buffer_count_is_a_power_of_two_up_to_32768() {
    if net_util::ring_only("provided buffers") {
        return;
    }
    for (count, size) in [(3u16, 64u32), (0, 64), (40000, 64), (4, 0)] {
        let mut d = ring(RingConfig::default());
        let e = d.enable_provided_buffers(count, size).expect_err("refused");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "count {count}, size {size}");
    }
    let mut d = ring(RingConfig::default());
    d.enable_provided_buffers(4, 64).expect("4 x 64 is fine");
    assert_eq!(d.provided_buffer_stats().map(|s| (s.count, s.size, s.in_use)), Some((4, 64, 0)));
}

/// A buffer is in use from the CQE that picks it until its `ProvidedBuf` goes; dropping it
/// gives it back (counted), and the kernel can hand it out again.
#[test]
fn pbuf_rule_2_in_use_counts_buffers_picked_and_not_yet_given_back() {
    if net_util::ring_only("provided buffers") {
        return;
    }
    let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    let afd = a.into_raw_fd();
    let mut d = ring(RingConfig::default());
    d.enable_provided_buffers(2, 64).unwrap();
    let ex = executor_with(d);
    let ex = ex.as_ref();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s2 = seen.clone();
    let stats = |f: &mut Fiber| {
        f.with_driver::<RingDriver, _>(|d| {
            // SAFETY: reads counters; no replacement, no other code runs meanwhile.
            let s = unsafe { d.get_mut() }.provided_buffer_stats().unwrap();
            (s.in_use, s.returned)
        })
        .unwrap()
    };
    let t = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
            // SAFETY: `afd` came from `into_raw_fd`: ours, wrapped once.
            let s = Socket::from(unsafe { OwnedFd::from_raw_fd(afd) });
            s2.borrow_mut().push(stats(f));
            let one = f.recv_provided(&s).map_err(|_| TaskError::Failed(1))?.expect("data");
            s2.borrow_mut().push(stats(f));
            drop(one);
            s2.borrow_mut().push(stats(f));
            for _ in 0..4 {
                let again = f.recv_provided(&s).map_err(|_| TaskError::Failed(2))?.expect("data");
                assert_eq!(&*again, b"x");
            }
            s2.borrow_mut().push(stats(f));
            Ok(0)
        })
        .unwrap();
    b.write_all(b"x").unwrap();
    run_until(ex, || seen.borrow().len() >= 3);
    for _ in 0..4 {
        b.write_all(b"x").unwrap();
        let n = seen.borrow().len();
        let t0 = std::time::Instant::now();
        while ex.attached() > 0 && seen.borrow().len() == n && t0.elapsed() < Duration::from_millis(200) {
            let _ = ex.run(16, Some(Duration::from_millis(5)));
        }
    }
    assert!(run_for(ex), "{:?}", ex.state(t));
    assert_eq!(ex.result(t), Ok(Some(Ok(0))), "with two buffers, five receives need every drop to give back");
    assert_eq!(*seen.borrow(), [(0, 0), (1, 0), (0, 1), (0, 5)]);
}

// ---- completion rule 5 (`ring/mod.rs`, operations that complete more than once) --------

/// Each receive's `ProvidedBuf` is the buffer the CQE names: two receives on two sockets
/// get two buffers, each holding its own socket's bytes.
#[test]
fn completion_rule_5_a_provided_buf_is_the_buffer_its_cqe_names() {
    if net_util::ring_only("provided buffers") {
        return;
    }
    let (a1, mut b1) = std::os::unix::net::UnixStream::pair().unwrap();
    let (a2, mut b2) = std::os::unix::net::UnixStream::pair().unwrap();
    let (f1, f2) = (a1.into_raw_fd(), a2.into_raw_fd());
    let mut d = ring(RingConfig::default());
    d.enable_provided_buffers(4, 64).unwrap();
    let ex = executor_with(d);
    let out = Rc::new(RefCell::new(Vec::new()));
    let o = out.clone();
    ex.as_ref()
        .attach(task(), async move {
            // SAFETY: both came from `into_raw_fd`: ours, wrapped once.
            let (s1, s2) = unsafe { (Socket::from_raw_fd(f1), Socket::from_raw_fd(f2)) };
            let x = net::future::recv_provided(&s1).await.expect("recv").expect("data");
            let y = net::future::recv_provided(&s2).await.expect("recv").expect("data");
            o.borrow_mut().push((x.id(), x.to_vec()));
            o.borrow_mut().push((y.id(), y.to_vec()));
            Ok(0)
        })
        .unwrap();
    b1.write_all(b"first socket").unwrap();
    b2.write_all(b"second").unwrap();
    assert!(run_for(ex.as_ref()));
    let out = out.borrow();
    assert_ne!(out[0].0, out[1].0, "two buffers held at once");
    assert_eq!(out[0].1, b"first socket");
    assert_eq!(out[1].1, b"second");
}

// ---- shared rule 1 (`ring/shared.rs`) -------------------------------------------------

/// A value dropped while the driver is lent out (inside `Executor::with_driver`) only
/// queues its abandon: the operation ends at the next reap, not inside the closure.
#[test]
fn shared_rule_2_a_future_dropped_while_the_driver_is_lent_is_abandoned_at_the_next_reap() {
    let (rfd, wfd) = pipe();
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    type Read = Pin<Box<dyn Future<Output = (Result<u32, Errno>, Vec<u8>)>>>;
    let parked: Rc<RefCell<Option<Read>>> = Rc::new(RefCell::new(None));
    let p = parked.clone();
    ex.attach(task(), async move {
        // SAFETY: the pipe's read end is ours and wrapped once (leaked with the file).
        let file: &'static File = Box::leak(Box::new(unsafe { File::from_raw_fd(rfd) }));
        let mut r: Read = Box::pin(fs::read(file, vec![0u8; 8], 0));
        assert!(poll_once(&mut r).await.is_none());
        *p.borrow_mut() = Some(r);
        Ok(0)
    })
    .unwrap();
    assert!(run_for(ex));
    let _ = ex.run(1, Some(Duration::ZERO));
    let before = ex.with_driver(|d| d.in_flight()).unwrap();
    assert_eq!(before, 1, "the read is in flight");
    let inside = ex
        .with_driver(|d| {
            drop(parked.borrow_mut().take()); // abandoned while the driver is lent
            d.in_flight()
        })
        .unwrap();
    assert_eq!(inside, 1, "nothing ends inside the closure");
    let t0 = std::time::Instant::now();
    while ex.with_driver(|d| d.in_flight()).unwrap() > 0 {
        assert!(t0.elapsed() < Duration::from_secs(5), "the abandoned read never ended");
        let _ = ex.run(16, Some(Duration::from_millis(5)));
    }
    // SAFETY: our pipe's write end, closed once.
    unsafe { libc::close(wfd) };
}

// ---- stack rule 4 (`stack.rs`) --------------------------------------------------------

// ---- regbuf rule 2 (`regbuf.rs`) ------------------------------------------------------

/// While a task waits for a buffer, none is free: a release hands its buffer to the
/// waiter, so a `try_claim_buffer` right after the release (before the waiter runs) finds
/// none, and the waiter gets it.
#[test]
fn regbuf_rule_2_a_waiter_is_never_overtaken_by_try_claim() {
    if net_util::ring_only("registered buffers") {
        return;
    }
    let ex = one_buffer();
    let ex = ex.as_ref();
    let go = Rc::new(Cell::new(false));
    let after_release = Rc::new(Cell::new(None));
    let (g, a) = (go.clone(), after_release.clone());
    let h = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
            let b = f.try_claim_buffer().expect("free");
            assert_eq!(f.try_claim_buffer().err(), Some(BufferError::AllClaimed));
            while !g.get() {
                f.yield_now()?;
            }
            f.release_buffer(b);
            a.set(Some(f.try_claim_buffer().map(|b| b.index())));
            Ok(0)
        })
        .unwrap();
    let _ = ex.run(1, Some(Duration::ZERO));
    let got = Rc::new(Cell::new(None));
    let gt = got.clone();
    let w = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
            let b = f.claim_buffer().map_err(|_| TaskError::Failed(2))?;
            gt.set(Some(b.index()));
            Ok(2)
        })
        .unwrap();
    run_until(ex, || waiting(ex, w));
    go.set(true);
    let done = run_for(ex);
    assert_eq!(after_release.get(), Some(Err(BufferError::AllClaimed)), "the release went to the waiter");
    assert!(done, "the waiter got the buffer");
    assert_eq!(ex.result(h), Ok(Some(Ok(0))));
    assert_eq!(got.get(), Some(0));
}

// ---- fd rule 2 (`fd.rs`) -------------------------------------------------------------

fn pipe() -> (i32, i32) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    (fds[0], fds[1])
}

/// A fiber's read returns only once its completion is reaped, so the borrow of the `File`
/// covers the whole operation: woken for other reasons meanwhile (spurious wakes) it
/// waits on and returns the data; cancelled in flight, it returns `ECANCELED` with
/// nothing left in flight.
#[test]
fn fd_rule_2_a_fiber_call_returns_only_after_its_completion_is_reaped() {
    let (rfd, wfd) = pipe();
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    let t = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
            // SAFETY: the pipe's read end is ours and wrapped once.
            let file = unsafe { File::from_raw_fd(rfd) };
            let mut b = [0u8; 8];
            for _ in 0..2 {
                let r = f.read(&file, &mut b, 0);
                let in_flight = f.with_driver::<RingDriver, _>(|d| d.in_flight()).unwrap();
                s.borrow_mut().push((r, in_flight));
            }
            let fd = file.into_raw_fd().expect("no operation holds it");
            // SAFETY: ours, closed once.
            unsafe { libc::close(fd) };
            Ok(0)
        })
        .unwrap();
    let in_io = || matches!(ex.state(t), Ok(TaskState::Suspended(SuspendReason::Io)));
    run_until(ex, in_io);
    for _ in 0..3 {
        t.wake(); // not its completion: the read waits on
        let _ = ex.run(16, Some(Duration::from_millis(5)));
    }
    // SAFETY: our pipe's write end (EPIPE if the fiber is already gone: checked below).
    unsafe { libc::write(wfd, b"x".as_ptr().cast(), 1) };
    run_until(ex, || !seen.borrow().is_empty());
    run_until(ex, || ex.attached() == 0 || in_io());
    let _ = ex.cancel(t);
    assert!(run_for(ex));
    assert_eq!(*seen.borrow(), [(Ok(1), 0), (Err(Errno::ECANCELED), 0)]);
    // SAFETY: our pipe's write end, closed once.
    unsafe { libc::close(wfd) };
}

// ---- cancel rules 2 and 3 (`ring/mod.rs`) ----------------------------------------------

/// The SQ tail of this process's io_uring, from `/proc/self/fdinfo` (each test runs in its
/// own process under nextest; with several rings the newest, highest descriptor, is
/// taken): how many SQEs the driver has put in the SQ, its own cancels included. `None`
/// if the kernel does not show it.
fn sq_tail() -> Option<u32> {
    let mut best: Option<(i32, u32)> = None;
    for e in std::fs::read_dir("/proc/self/fdinfo").ok()?.flatten() {
        let Ok(fd) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(text) = std::fs::read_to_string(e.path()) else { continue };
        let Some(tail) = text.lines().find_map(|l| l.strip_prefix("SqTail:")) else { continue };
        let tail = tail.trim().parse().ok()?;
        if best.is_none_or(|(b, _)| fd > b) {
            best = Some((fd, tail));
        }
    }
    best.map(|(_, t)| t)
}

/// Cancels `OpId(0)` (the first slot operation of a fresh driver: slot 0, generation 0,
/// slot rule 1) `n` times through the driver, from inside a task.
async fn cancel_first_op(n: usize) {
    core::future::poll_fn(|cx| {
        keel_core::io_status::with_driver::<RingDriver, _>(cx, |d| {
            for _ in 0..n {
                // SAFETY: the driver's own method; nothing replaced, no other code runs.
                unsafe { d.get_mut() }.cancel(keel_core::OpId(0));
            }
        })
        .expect("on the ring");
        Poll::Ready(())
    })
    .await
}

/// The SQ is full (four reads just submitted into a four-entry SQ, not entered yet), so a
/// cancel waits in the driver's queue; 50 cancels of one operation queue one, and one
/// `ASYNC_CANCEL` reaches the SQ.
#[test]
fn cancel_rule_2_many_cancels_of_one_operation_queue_one() {
    if net_util::ring_only("counting SQEs in the kernel ring's /proc fdinfo") {
        return;
    }
    if sq_tail().is_none() && std::fs::metadata("/proc/self/fdinfo").is_err() {
        println!("skipped: no /proc/self/fdinfo to count SQEs with");
        return;
    }
    let (rfd, wfd) = pipe();
    let ex = executor(RingConfig { entries: 4, ..RingConfig::default() });
    let ex = ex.as_ref();
    let out = Rc::new(RefCell::new(None));
    let o = out.clone();
    let t = ex
        .attach(task(), async move {
            // SAFETY: the pipe's read end is ours and wrapped once (leaked with the file).
            let file: &'static File = Box::leak(Box::new(unsafe { File::from_raw_fd(rfd) }));
            type Read = Pin<Box<dyn Future<Output = (Result<u32, Errno>, Vec<u8>)>>>;
            let mut reads: Vec<Read> = (0..4).map(|_| Box::pin(fs::read(file, vec![0u8; 8], 0)) as Read).collect();
            for r in &mut reads {
                assert!(poll_once(r).await.is_none(), "a pipe with nothing written");
            }
            let before = sq_tail().expect("the ring's fdinfo");
            cancel_first_op(50).await;
            let (r, _) = reads.remove(0).await;
            let after = sq_tail().expect("the ring's fdinfo");
            *o.borrow_mut() = Some((r, after.wrapping_sub(before)));
            Ok(0)
        })
        .unwrap();
    assert!(run_for(ex), "{:?}", ex.state(t));
    assert_eq!(*out.borrow(), Some((Err(Errno::ECANCELED), 1)), "one ASYNC_CANCEL for 50 requests");
    // SAFETY: our pipe's write end, closed once.
    unsafe { libc::close(wfd) };
}

/// A cancel of an operation whose final CQE has been reaped puts nothing in the SQ.
#[test]
fn cancel_rule_3_a_cancel_of_an_ended_operation_queues_nothing() {
    if net_util::ring_only("counting SQEs in the kernel ring's /proc fdinfo") {
        return;
    }
    if std::fs::metadata("/proc/self/fdinfo").is_err() {
        println!("skipped: no /proc/self/fdinfo to count SQEs with");
        return;
    }
    let (rfd, wfd) = pipe();
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let out = Rc::new(RefCell::new(None));
    let o = out.clone();
    // SAFETY: our pipe's write end.
    assert_eq!(unsafe { libc::write(wfd, b"x".as_ptr().cast(), 1) }, 1);
    ex.attach(task(), async move {
        // SAFETY: the pipe's read end is ours and wrapped once (leaked with the file).
        let file: &'static File = Box::leak(Box::new(unsafe { File::from_raw_fd(rfd) }));
        let (r, _) = fs::read(file, vec![0u8; 8], 0).await;
        let before = sq_tail().expect("the ring's fdinfo");
        cancel_first_op(3).await;
        rt::yield_now().await?;
        let after = sq_tail().expect("the ring's fdinfo");
        *o.borrow_mut() = Some((r, after.wrapping_sub(before)));
        Ok(0)
    })
    .unwrap();
    assert!(run_for(ex));
    assert_eq!(*out.borrow(), Some((Ok(1), 0)), "the read ended: nothing to cancel");
    // SAFETY: our pipe's write end, closed once.
    unsafe { libc::close(wfd) };
}

// ---- slot rules (`ring/slots.rs`) -----------------------------------------------------

/// Direct operations (a fiber's status-block reads), slot operations (a future's owned
/// reads) and the driver's own cancels (futures dropped in flight) share one ring: each
/// completion reaches the operation it belongs to, never one of the other kind.
#[test]
fn slot_rule_2_direct_slot_and_internal_completions_never_mix() {
    direct_slot_and_internal_completions_never_mix();
}

/// The same scenario from the direct side: a direct `user_data` (bit 62 set, bit 63
/// clear) reaches its status block and never a slot or the driver's own handling.
#[test]
fn direct_rule_2_direct_user_data_never_reaches_a_slot_or_the_drivers_tags() {
    direct_slot_and_internal_completions_never_mix();
}

fn direct_slot_and_internal_completions_never_mix() {
    const ROUNDS: u8 = 50;
    let (ra, wa) = pipe();
    let (rb, wb) = pipe();
    let (rc, wc) = pipe();
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let got_a = Rc::new(RefCell::new(Vec::new()));
    let got_b = Rc::new(RefCell::new(Vec::new()));
    let ga = got_a.clone();
    let fa = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
            for _ in 0..ROUNDS {
                let st = core::pin::pin!(keel_core::IoStatus::new());
                let mut b = [0u8; 1];
                let e = io_uring::opcode::Read::new(io_uring::types::Fd(ra), b.as_mut_ptr(), 1).build();
                // SAFETY: `b` outlives the read: the loop below waits for its completion.
                f.initiate::<RingDriver>(st.as_ref(), unsafe { keel_linux::RingOp::from_entry(e) }).unwrap();
                while st.is_in_flight() {
                    f.wait_io();
                }
                assert_eq!(st.result(), Some(Ok(1)));
                ga.borrow_mut().push(b[0]);
            }
            Ok(0)
        })
        .unwrap();
    let gb = got_b.clone();
    let fb = ex
        .attach(task(), async move {
            // SAFETY: the pipes' read ends are ours and wrapped once (leaked with the files).
            let (file_b, file_c): (&'static File, &'static File) =
                unsafe { (Box::leak(Box::new(File::from_raw_fd(rb))), Box::leak(Box::new(File::from_raw_fd(rc)))) };
            for _ in 0..ROUNDS {
                // A read that never completes, dropped in flight: the driver cancels it.
                let mut stray = Box::pin(fs::read(file_c, vec![0u8; 1], 0));
                assert!(poll_once(&mut stray).await.is_none());
                rt::yield_now().await?;
                drop(stray);
                let (r, buf) = fs::read(file_b, vec![0u8; 1], 0).await;
                assert_eq!(r, Ok(1));
                gb.borrow_mut().push(buf[0]);
            }
            Ok(0)
        })
        .unwrap();
    for i in 0..ROUNDS {
        // SAFETY: our pipes' write ends, one byte each.
        unsafe {
            assert_eq!(libc::write(wa, [i].as_ptr().cast(), 1), 1);
            assert_eq!(libc::write(wb, [100 + i].as_ptr().cast(), 1), 1);
        }
        let (na, nb) = (got_a.borrow().len(), got_b.borrow().len());
        run_until(ex, || got_a.borrow().len() > na && got_b.borrow().len() > nb);
    }
    assert!(run_for(ex));
    assert_eq!(ex.result(fa), Ok(Some(Ok(0))));
    assert_eq!(ex.result(fb), Ok(Some(Ok(0))));
    assert_eq!(*got_a.borrow(), (0..ROUNDS).collect::<Vec<_>>());
    assert_eq!(*got_b.borrow(), (0..ROUNDS).map(|i| 100 + i).collect::<Vec<_>>());
    for fd in [wa, wb, wc] {
        // SAFETY: our pipes' write ends, closed once.
        unsafe { libc::close(fd) };
    }
}

/// `fs::close` hands the only reference to its `IORING_OP_CLOSE`'s slot, and the kernel's
/// close marks it closed: the number, reused at once by an open submitted in the same
/// batch, is not closed a second time when the close's completion drops the reference.
#[test]
fn slot_rule_4_a_descriptor_the_ring_closed_is_not_closed_again_when_reused() {
    let path = std::env::temp_dir().join(format!("keel-{}-slot-rule-4", std::process::id()));
    std::fs::write(&path, b"reused").unwrap();
    let p = path.to_str().unwrap().to_owned();
    let ex = executor(RingConfig::default());
    let out = Rc::new(RefCell::new(None));
    let o = out.clone();
    ex.as_ref()
        .attach(task(), async move {
            let file = fs::open(&p, OFlags::RDONLY, Mode::empty()).await.expect("open");
            let old = file.fd();
            let mut close = Box::pin(fs::close(file));
            assert!(poll_once(&mut close).await.is_none(), "the cancel of its operations is in flight");
            rt::yield_now().await?; // the cancel completes
            assert!(poll_once(&mut close).await.is_none(), "the IORING_OP_CLOSE is in the SQ");
            let mut open = Box::pin(fs::open(&p, OFlags::RDONLY, Mode::empty()));
            let opened = poll_once(&mut open).await;
            assert!(opened.is_none(), "the open goes in the same batch");
            close.await.expect("closed through the ring");
            let again = open.await.expect("open");
            for _ in 0..4 {
                rt::yield_now().await?; // every completion reaped, every slot freed
            }
            // SAFETY: F_GETFD on a number: no memory involved.
            let still_open = unsafe { libc::fcntl(again.fd(), libc::F_GETFD) } != -1;
            let (r, buf) = fs::read(&again, vec![0u8; 6], 0).await;
            *o.borrow_mut() = Some((old == again.fd(), still_open, r, buf));
            drop(again);
            Ok(0)
        })
        .unwrap();
    assert!(run_for(ex.as_ref()));
    let (reused, still_open, r, buf) = out.borrow_mut().take().unwrap();
    if !reused {
        println!("skipped the reuse check: the kernel gave the second open another number");
    }
    assert!(still_open, "the reused number was closed under its new owner");
    assert_eq!((r, &buf[..]), (Ok(6), &b"reused"[..]));
    let _ = std::fs::remove_file(path);
}

// ---- direct rule 3 (`ring/direct.rs`) -------------------------------------------------

/// Direct operations count against `RingConfig::slots` like slot operations: with four
/// status-block reads in flight on a four-slot ring there is no room left, and a future's
/// read waits for room until one of them completes.
#[test]
fn direct_rule_3_direct_operations_count_against_the_in_flight_limit() {
    let pipes: Vec<(i32, i32)> = (0..5).map(|_| pipe()).collect();
    let reads: Vec<i32> = pipes.iter().map(|p| p.0).collect();
    let ex = executor(RingConfig { slots: 4, ..RingConfig::default() });
    let ex = ex.as_ref();
    let room = Rc::new(Cell::new(None));
    let r2 = room.clone();
    let r4 = reads.clone();
    let fa = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
            let sts = core::pin::pin!([const { keel_core::IoStatus::new() }; 4]);
            let mut bufs = [[0u8; 1]; 4];
            for (i, (st, b)) in sts.as_ref().get_ref().iter().zip(bufs.iter_mut()).enumerate() {
                let e = io_uring::opcode::Read::new(io_uring::types::Fd(r4[i]), b.as_mut_ptr(), 1).build();
                // SAFETY: an element of the pinned array `sts`, which never moves.
                let st = unsafe { Pin::new_unchecked(st) };
                // SAFETY: `bufs` outlives the reads: the loop below waits for all of them.
                let op = unsafe { keel_linux::RingOp::from_entry(e) };
                f.initiate::<RingDriver>(st, op).unwrap();
            }
            f.yield_now()?; // they reach the kernel
            r2.set(f.with_driver::<RingDriver, _>(|d| (d.in_flight(), d.submit_capacity())));
            while sts.iter().any(|s| s.is_in_flight()) {
                f.wait_io();
            }
            Ok(0)
        })
        .unwrap();
    let fifth = Rc::new(Cell::new(None));
    let f5 = fifth.clone();
    let r5 = reads[4];
    run_until(ex, || room.get().is_some());
    let fb = ex
        .attach(task(), async move {
            // SAFETY: the pipe's read end is ours and wrapped once (leaked with the file).
            let file: &'static File = Box::leak(Box::new(unsafe { File::from_raw_fd(r5) }));
            let (r, _) = fs::read(file, vec![0u8; 1], 0).await;
            f5.set(Some(r));
            Ok(0)
        })
        .unwrap();
    for _ in 0..4 {
        let _ = ex.run(16, Some(Duration::from_millis(5)));
    }
    let waiting_for_room = ex.state(fb);
    for p in &pipes {
        // SAFETY: our pipe's write end, one byte.
        assert_eq!(unsafe { libc::write(p.1, b"x".as_ptr().cast(), 1) }, 1);
    }
    let done = run_for(ex);
    assert_eq!(room.get(), Some((4, 0)), "four direct reads fill a four-slot ring");
    assert!(
        matches!(waiting_for_room, Ok(TaskState::Suspended(_))),
        "the fifth read waits for room: {waiting_for_room:?}"
    );
    assert!(done);
    assert_eq!(ex.result(fa), Ok(Some(Ok(0))));
    assert_eq!(fifth.get(), Some(Ok(1)));
    for p in pipes {
        // SAFETY: our pipes' write ends, closed once (the read ends were wrapped or are ours).
        unsafe {
            libc::close(p.1);
        }
    }
    for &r in &reads[..4] {
        // SAFETY: the fiber's read ends, never wrapped.
        unsafe { libc::close(r) };
    }
}

// ---- completion rule 4 (`ring/mod.rs`) ------------------------------------------------

/// A `SEND_ZC`'s first CQE (the byte count, F_MORE) does not complete it: the slot keeps
/// the result until the notification CQE, which completes the send with that count.
#[test]
fn completion_rule_4_a_zero_copy_send_completes_at_its_notification_with_the_first_result() {
    if net_util::ring_only("zero-copy sends") {
        return;
    }
    // SEND_ZC needs an inet socket: a TCP pair on 127.0.0.1.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (mut b, _) = l.accept().unwrap();
    b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let afd = a.into_raw_fd();
    let ex = executor(RingConfig { registered_buffers: 1, ..RingConfig::default() });
    let out = Rc::new(Cell::new(None));
    let o = out.clone();
    let t = ex
        .as_ref()
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
            // SAFETY: `afd` came from `into_raw_fd`: ours, wrapped once.
            let s = Socket::from(unsafe { OwnedFd::from_raw_fd(afd) });
            let mut buf = f.claim_buffer().map_err(|_| TaskError::Failed(1))?;
            buf[..5].copy_from_slice(b"zcopy");
            let notifs = |f: &mut Fiber| f.with_driver::<RingDriver, _>(|d| d.stats().zc_notifs).unwrap();
            let before = notifs(f);
            let r = f.send_zc_fixed(&s, &buf, 5);
            o.set(Some((r, notifs(f) - before)));
            Ok(0)
        })
        .unwrap();
    assert!(run_for(ex.as_ref()));
    assert_eq!(ex.as_ref().result(t), Ok(Some(Ok(0))));
    match out.get() {
        Some((Err(e), _)) if e == Errno::EINVAL || e == Errno(libc::EOPNOTSUPP) => {
            println!("skipped: SEND_ZC on a Unix socket is not supported here ({e:?})");
        }
        other => {
            assert_eq!(other, Some((Ok(5), 1)), "the first CQE's count, after the notification");
            let mut got = [0u8; 5];
            std::io::Read::read_exact(&mut b, &mut got).unwrap();
            assert_eq!(&got, b"zcopy");
        }
    }
}

// ---- wake-token rule 1 (`ring/mod.rs`) ------------------------------------------------

/// A read submitted with a wake token is the slot's, not the task's: the task polls it
/// once, hands the future to `main` and returns, and its run completes at once though the
/// read is still in flight; the read completes later into memory its slot owns.
#[test]
fn wake_token_rule_1_a_task_returning_while_its_read_lives_elsewhere_completes_at_once() {
    let (rfd, wfd) = pipe();
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    type Read = Pin<Box<dyn Future<Output = (Result<u32, Errno>, Vec<u8>)>>>;
    let parked: Rc<RefCell<Option<Read>>> = Rc::new(RefCell::new(None));
    let p = parked.clone();
    let t = ex
        .attach(task(), async move {
            // SAFETY: the pipe's read end is ours and wrapped once (leaked with the file).
            let file: &'static File = Box::leak(Box::new(unsafe { File::from_raw_fd(rfd) }));
            let mut r: Read = Box::pin(fs::read(file, vec![0u8; 8], 0));
            assert!(poll_once(&mut r).await.is_none());
            *p.borrow_mut() = Some(r);
            Ok(7)
        })
        .unwrap();
    for _ in 0..4 {
        let _ = ex.run(16, Some(Duration::from_millis(5)));
    }
    assert_eq!(ex.result(t), Ok(Some(Ok(7))), "the run completed with its read in flight");
    assert_eq!(ex.with_driver(|d| d.in_flight()).unwrap(), 1, "the read is still the slot's");
    // SAFETY: our pipe's write end.
    assert_eq!(unsafe { libc::write(wfd, b"later".as_ptr().cast(), 5) }, 5);
    let r = parked.borrow_mut().take().unwrap();
    let out = Rc::new(RefCell::new(None));
    let o = out.clone();
    ex.attach(task(), async move {
        *o.borrow_mut() = Some(r.await);
        Ok(0)
    })
    .unwrap();
    assert!(run_for(ex));
    let (r, buf) = out.borrow_mut().take().unwrap();
    assert_eq!((r, &buf[..5]), (Ok(5), &b"later"[..]));
    // SAFETY: our pipe's write end, closed once.
    unsafe { libc::close(wfd) };
}

// ---- direct rule 5 and cancel rule 3 (a queued cancel dropped at its op's last CQE) ----

/// A four-entry SQ and one CQE reaped per pass: two reads of pipes that already hold a
/// byte complete in the same enter, and the second one's CQE waits in the CQ for the next
/// pass while the task runs.
fn one_cqe_per_pass() -> Pin<Box<Ex>> {
    let cfg = keel_core::Config { reap_batch: 1, ..keel_linux::panic::config() };
    Box::pin(
        keel_core::Executor::with_stacks(
            ring(RingConfig { entries: 4, ..RingConfig::default() }),
            MmapStacks::new().unwrap(),
            cfg,
        )
        .unwrap(),
    )
}

/// A cancel requested while the SQ is full waits in the driver's queue; when its
/// operation's final CQE (already posted) is reaped first, the queued cancel is dropped:
/// only the four reads that filled the SQ reach it, no `ASYNC_CANCEL`. Direct operations
/// here (status blocks of a fiber).
#[test]
fn direct_rule_5_a_queued_cancel_of_a_direct_operation_is_dropped_when_it_completes() {
    if net_util::ring_only("direct descriptors") {
        return;
    }
    if std::fs::metadata("/proc/self/fdinfo").is_err() {
        println!("skipped: no /proc/self/fdinfo to count SQEs with");
        return;
    }
    let (r1, w1) = pipe();
    let (r2, w2) = pipe();
    let (r3, w3) = pipe();
    for w in [w1, w2] {
        // SAFETY: our pipe's write end, one byte.
        assert_eq!(unsafe { libc::write(w, b"x".as_ptr().cast(), 1) }, 1);
    }
    let ex = one_cqe_per_pass();
    let ex = ex.as_ref();
    let out = Rc::new(RefCell::new(None));
    let o = out.clone();
    let t = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
            let read = |fd: i32, b: &mut [u8; 1]| {
                let e = io_uring::opcode::Read::new(io_uring::types::Fd(fd), b.as_mut_ptr(), 1).build();
                // SAFETY: every buffer outlives its read: the fiber waits for all of them.
                unsafe { keel_linux::RingOp::from_entry(e) }
            };
            let (mut b1, mut b2) = ([0u8; 1], [0u8; 1]);
            let mut fill = [[0u8; 1]; 4];
            let s1 = core::pin::pin!(keel_core::IoStatus::new());
            let s2 = core::pin::pin!(keel_core::IoStatus::new());
            let fillers = core::pin::pin!([const { keel_core::IoStatus::new() }; 4]);
            f.initiate::<RingDriver>(s1.as_ref(), read(r1, &mut b1)).unwrap();
            f.initiate::<RingDriver>(s2.as_ref(), read(r2, &mut b2)).unwrap();
            while s1.is_in_flight() {
                f.wait_io();
            }
            let second_waits = s2.is_in_flight(); // its CQE is in the CQ, not reaped yet
            let before = sq_tail().expect("the ring's fdinfo");
            for (st, b) in fillers.as_ref().get_ref().iter().zip(fill.iter_mut()) {
                // SAFETY: an element of the pinned array `fillers`, which never moves.
                let st = unsafe { Pin::new_unchecked(st) };
                f.initiate::<RingDriver>(st, read(r3, b)).unwrap();
            }
            f.cancel_io(s2.as_ref()); // the SQ is full: queued
            while s2.is_in_flight() {
                f.wait_io();
            }
            for _ in 0..4 {
                f.yield_now()?; // enters: the SQ is submitted, queued cancels moved in
            }
            let after = sq_tail().expect("the ring's fdinfo");
            *o.borrow_mut() = Some((second_waits, s2.result(), after.wrapping_sub(before)));
            for st in fillers.as_ref().get_ref() {
                // SAFETY: as above.
                f.cancel_io(unsafe { Pin::new_unchecked(st) });
            }
            while fillers.iter().any(|s| s.is_in_flight()) {
                f.wait_io();
            }
            Ok(0)
        })
        .unwrap();
    assert!(run_for(ex), "{:?}", ex.state(t));
    let (second_waits, r, sqes) = out.borrow_mut().take().unwrap();
    if !second_waits {
        println!("skipped: both completions were reaped in one pass here");
    } else {
        assert_eq!((r, sqes), (Some(Ok(1)), 4), "the four fillers and no cancel for the completed read");
    }
    for fd in [r1, w1, r2, w2, r3, w3] {
        // SAFETY: our pipes' descriptors (the fiber wrapped none), closed once.
        unsafe { libc::close(fd) };
    }
}

/// As the direct rule 5 test, with slot operations (futures' owned reads): the queued
/// cancel of an operation whose final CQE is reaped before the cancel reaches the SQ is
/// dropped then.
#[test]
fn cancel_rule_3_a_queued_cancel_is_dropped_when_its_operation_ends() {
    if net_util::ring_only("counting SQEs in the kernel ring's /proc fdinfo") {
        return;
    }
    if std::fs::metadata("/proc/self/fdinfo").is_err() {
        println!("skipped: no /proc/self/fdinfo to count SQEs with");
        return;
    }
    let (r1, w1) = pipe();
    let (r2, w2) = pipe();
    let (r3, w3) = pipe();
    for w in [w1, w2] {
        // SAFETY: our pipe's write end, one byte.
        assert_eq!(unsafe { libc::write(w, b"x".as_ptr().cast(), 1) }, 1);
    }
    let ex = one_cqe_per_pass();
    let ex = ex.as_ref();
    let out = Rc::new(RefCell::new(None));
    let o = out.clone();
    let t = ex
        .attach(task(), async move {
            // SAFETY: the pipes' read ends are ours and wrapped once (leaked with the files).
            let [f1, f2, f3]: [&'static File; 3] =
                [r1, r2, r3].map(|fd| &*Box::leak(Box::new(unsafe { File::from_raw_fd(fd) })));
            type Read = Pin<Box<dyn Future<Output = (Result<u32, Errno>, Vec<u8>)>>>;
            let mut first: Read = Box::pin(fs::read(f1, vec![0u8; 1], 0)); // slot 0
            let mut second: Read = Box::pin(fs::read(f2, vec![0u8; 1], 0)); // slot 1
            assert!(poll_once(&mut first).await.is_none());
            assert!(poll_once(&mut second).await.is_none());
            first.await.0.expect("a byte");
            let second_waits = poll_once(&mut second).await.is_none(); // its CQE waits in the CQ
            let before = sq_tail().expect("the ring's fdinfo");
            let mut fillers: Vec<Read> = (0..4).map(|_| Box::pin(fs::read(f3, vec![0u8; 1], 0)) as Read).collect();
            for r in &mut fillers {
                assert!(poll_once(r).await.is_none());
            }
            // The second read's id: slot 1, generation 0 (slot rule 1). The SQ is full.
            core::future::poll_fn(|cx| {
                keel_core::io_status::with_driver::<RingDriver, _>(cx, |d| {
                    // SAFETY: the driver's own method; nothing replaced, no other code runs.
                    unsafe { d.get_mut() }.cancel(keel_core::OpId(1));
                });
                Poll::Ready(())
            })
            .await;
            let (r, _) = second.await;
            for _ in 0..4 {
                rt::yield_now().await?; // enters: the SQ is submitted, queued cancels moved in
            }
            let after = sq_tail().expect("the ring's fdinfo");
            *o.borrow_mut() = Some((second_waits, r, after.wrapping_sub(before)));
            drop(fillers); // abandoned: cancelled by the driver
            Ok(0)
        })
        .unwrap();
    assert!(run_for(ex), "{:?}", ex.state(t));
    let (second_waits, r, sqes) = out.borrow_mut().take().unwrap();
    if !second_waits {
        println!("skipped: both completions were reaped in one pass here");
    } else {
        assert_eq!((r, sqes), (Ok(1), 4), "the four fillers and no cancel for the ended read");
    }
    for fd in [w1, w2, w3] {
        // SAFETY: our pipes' write ends, closed once.
        unsafe { libc::close(fd) };
    }
}

// ---- slot rule 1 (`ring/slots.rs`) -----------------------------------------------------

/// This process's io_uring descriptor (the newest, as `sq_tail` picks it).
fn ring_fd() -> Option<i32> {
    let mut best = None;
    for e in std::fs::read_dir("/proc/self/fdinfo").ok()?.flatten() {
        let Ok(fd) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(text) = std::fs::read_to_string(e.path()) else { continue };
        if text.lines().any(|l| l.starts_with("SqTail:")) && best.is_none_or(|b| fd > b) {
            best = Some(fd);
        }
    }
    best
}

/// A CQE naming a freed slot's old `user_data` (forged here with `IORING_OP_MSG_RING` to
/// the ring itself) is stale: counted and dropped, and the operation now in that slot (a
/// later generation) is not completed by it.
#[test]
fn slot_rule_1_a_cqe_for_a_freed_slots_old_user_data_is_stale() {
    if net_util::ring_only("a CQE forged with MSG_RING to the ring itself") {
        return;
    }
    if std::fs::metadata("/proc/self/fdinfo").is_err() {
        println!("skipped: no /proc/self/fdinfo to find the ring with");
        return;
    }
    let (ra, wa) = pipe();
    let (rb, wb) = pipe();
    // SAFETY: our pipe's write end, one byte.
    assert_eq!(unsafe { libc::write(wa, b"a".as_ptr().cast(), 1) }, 1);
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let out = Rc::new(RefCell::new(None));
    let o = out.clone();
    let stale = |cx: &std::task::Context<'_>| {
        keel_core::io_status::with_driver::<RingDriver, _>(cx, |d| d.stats().stale).expect("on the ring")
    };
    let t = ex
        .attach(task(), async move {
            // SAFETY: the pipes' read ends are ours and wrapped once (leaked with the files).
            let [fa, fb]: [&'static File; 2] =
                [ra, rb].map(|fd| &*Box::leak(Box::new(unsafe { File::from_raw_fd(fd) })));
            // Slot 0, generation 0 (`user_data` 0): completes, and the slot is freed.
            assert_eq!(fs::read(fa, vec![0u8; 1], 0).await.0, Ok(1));
            // Slot 0 again, a later generation: in flight on an empty pipe.
            type Read = Pin<Box<dyn Future<Output = (Result<u32, Errno>, Vec<u8>)>>>;
            let mut second: Read = Box::pin(fs::read(fb, vec![0u8; 4], 0));
            assert!(poll_once(&mut second).await.is_none());
            let before = core::future::poll_fn(|cx| Poll::Ready(stale(cx))).await;
            let ring = ring_fd().expect("the ring's fdinfo");
            let forged = io_uring::opcode::MsgRingData::new(io_uring::types::Fd(ring), 1234, 0, None).build();
            let st = core::pin::pin!(keel_core::IoStatus::new());
            // SAFETY: the SQE references no memory.
            let op = unsafe { keel_linux::RingOp::from_entry(forged) };
            let sent = match keel_core::initiate::<RingDriver>(st.as_ref(), op).await {
                Ok(()) => {
                    while st.is_in_flight() {
                        keel_core::suspend_until_completed_io(1).await?;
                    }
                    st.result().unwrap_or(Err(Errno::EIO))
                }
                Err(_) => Err(Errno::EINVAL),
            };
            for _ in 0..4 {
                rt::yield_now().await?; // the forged CQE is reaped
            }
            let after = core::future::poll_fn(|cx| Poll::Ready(stale(cx))).await;
            let early = poll_once(&mut second).await.map(|(r, _)| r);
            *o.borrow_mut() = Some((sent, after - before, early));
            if early.is_some() {
                return Ok(1); // completed by the forged CQE: reported below
            }
            let (r, buf) = second.await;
            assert_eq!((r, &buf[..1]), (Ok(1), &b"b"[..]), "the read got its own completion");
            Ok(0)
        })
        .unwrap();
    let t0 = std::time::Instant::now();
    while out.borrow().is_none() && ex.attached() > 0 && t0.elapsed() < Duration::from_secs(5) {
        let _ = ex.run(16, Some(Duration::from_millis(5)));
    }
    // SAFETY: our pipe's write end, one byte.
    assert_eq!(unsafe { libc::write(wb, b"b".as_ptr().cast(), 1) }, 1);
    let done = run_for(ex);
    let got = out.borrow_mut().take();
    match got {
        Some((Err(e), _, _)) if e == Errno::EINVAL || e == Errno(libc::EOPNOTSUPP) || e == Errno::EBADF => {
            println!("skipped: IORING_OP_MSG_RING to the ring itself is refused here ({e:?})");
        }
        other => {
            assert_eq!(other, Some((Ok(0), 1, None)), "one stale CQE, and the read in the slot still waits");
            assert!(done, "{:?}", ex.state(t));
            assert_eq!(ex.result(t), Ok(Some(Ok(0))));
        }
    }
    for fd in [wa, wb] {
        // SAFETY: our pipes' write ends, closed once.
        unsafe { libc::close(fd) };
    }
}
