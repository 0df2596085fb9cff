//! Lifetimes of what keel hands out, on a real ring:
//!
//! - values that hold a driver's operation or buffer (a polled owned-buffer future, a
//!   `ProvidedBuf`, a `Multishot`) moved out of their task and dropped after the executor
//!   (shared rules in `ring/shared.rs`);
//! - a descriptor stays open while an operation naming it is queued or in flight, so its
//!   number is never reused under an SQE (fd rules in `fd.rs`);
//! - an owned-buffer future or a multishot moved out of its task never holds that task's
//!   run, and whoever polls it later (another task, the slot's next run) is the one its
//!   completion wakes; polled outside any task it gets `EPERM` (wake-token rules in
//!   `ring`); a waiting buffer claim or provided-buffer receive moved to another task is
//!   woken there when its turn comes (waitq rule 6);
//! - `close` cancels the descriptor's operations first and the descriptor is closed
//!   whatever `close` returns (fd rule 3), for fibers and futures, in a cancelled task and
//!   outside any task.
//!
//! Every test here but `shared_rule_4_a_driver_dropped_with_an_operation_in_flight_waits_for_it` (a
//! regression guard) and the two `fd` unit tests fails on the main of before this change:
//! SIGSEGV/SIGABRT (moved-out future, multishot, provided buffer), a reused descriptor
//! number, a close that leaves the read alive (the run hangs until the 60 s cap), or a
//! descriptor left open.
//!
//! Memory evidence for the moved-out values: run one under valgrind
//! (`valgrind --error-exitcode=1 target/debug/deps/lifetimes-<hash> <test name>`).

#[path = "net_util/mod.rs"]
mod util;

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;
use keel_core::{Errno, Fiber, TaskHandle};
use keel_linux::RingConfig;
use keel_linux::fs::{self, FiberFs, File, Mode, OFlags};
use keel_linux::net::{self, AddressFamily, Multishot, ProvidedBuf, Socket, SocketType};
use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::fd::{IntoRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use util::*;

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("keel-lifetimes-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

fn pipe() -> (RawFd, RawFd) {
    let mut p = [0; 2];
    // SAFETY: `p` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    (p[0], p[1])
}

/// Polls `f` once with the task's context: submits its SQE (queued until the pass's enter).
async fn poll_once<F: Future + Unpin>(f: &mut F) -> bool {
    core::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *f).poll(cx).is_pending())).await
}

/// After 5 s (unless `done` first) runs `unblock`, so a drop that waits for it ends.
fn watchdog(done: Arc<AtomicBool>, unblock: impl FnOnce() + Send + 'static) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let t0 = Instant::now();
        // Acquire: pairs with the test's Release store once the drop returned.
        while !done.load(Ordering::Acquire) && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        unblock();
    })
}

type Parked = Rc<RefCell<Vec<Pin<Box<dyn Future<Output = (Result<u32, Errno>, Vec<u8>)>>>>>>;

// ---- values that hold a driver's state, dropped after the executor (shared rules) ----

/// A pipe read that never completes by itself, polled once in its task and handed to
/// `main`; the executor is dropped (its final drain cancels the read: it must not wait
/// for the future's owner), then the future, whose drop touches only the shared state
/// (under valgrind, a drop that reached the freed driver shows as an invalid read). The
/// watchdog's write ends a drain that waits for the read after 5 s.
#[test]
fn shared_rule_4_a_polled_read_future_moved_out_is_dropped_after_the_executor() {
    let (rfd, wfd) = pipe();
    // SAFETY: the pipe's read end is ours and wrapped once.
    let file: &'static File = Box::leak(Box::new(unsafe { File::from_raw_fd(rfd) }));
    let parked: Parked = Rc::new(RefCell::new(Vec::new()));
    let ex = executor(RingConfig::default());
    let p = parked.clone();
    ex.as_ref()
        .attach(task(), async move {
            let mut fut: Pin<Box<dyn Future<Output = _>>> = Box::pin(fs::read(file, Vec::with_capacity(64), 0));
            assert!(poll_once(&mut fut).await, "a pipe with no writer data waits");
            p.borrow_mut().push(fut); // out of the task, into main
            0u64
        })
        .unwrap();
    for _ in 0..3 {
        let _ = ex.as_ref().run(64, Some(Duration::from_millis(10)));
    }
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = watchdog(done.clone(), move || {
        // SAFETY: writes 1 byte from a local to our pipe's write end.
        unsafe { libc::write(wfd, b"x".as_ptr().cast(), 1) };
    });
    let t0 = Instant::now();
    drop(ex);
    let took = t0.elapsed();
    done.store(true, Ordering::Release);
    drop(parked); // after the executor and its driver
    watchdog.join().unwrap();
    // SAFETY: our pipe's write end, closed once (the read end is the leaked `File`'s).
    unsafe { libc::close(wfd) };
    assert!(
        took < Duration::from_secs(3),
        "the executor's drop waited {took:?} for an operation whose future left its task"
    );
}

/// The same with a read of a regular file, which completes during the executor's drain:
/// the completed result waits in its slot for a future that is dropped after the driver.
#[test]
fn shared_rule_4_a_completed_read_future_moved_out_is_dropped_after_the_executor() {
    let d = dir("kept-done");
    std::fs::write(d.join("f"), b"0123456789").unwrap();
    let file: &'static File =
        Box::leak(Box::new(File::from(std::os::fd::OwnedFd::from(std::fs::File::open(d.join("f")).unwrap()))));
    let parked: Parked = Rc::new(RefCell::new(Vec::new()));
    let ex = executor(RingConfig::default());
    let p = parked.clone();
    ex.as_ref()
        .attach(task(), async move {
            let mut fut: Pin<Box<dyn Future<Output = _>>> = Box::pin(fs::read(file, Vec::with_capacity(64), 0));
            assert!(poll_once(&mut fut).await, "submitted, not completed yet");
            p.borrow_mut().push(fut);
            0u64
        })
        .unwrap();
    let _ = ex.as_ref().run(64, Some(Duration::from_millis(10)));
    drop(ex);
    // Polled after its executor: no driver to ask, a typed error, no access.
    let mut fut = parked.borrow_mut().pop().unwrap();
    let waker = std::task::Waker::noop();
    match fut.as_mut().poll(&mut Context::from_waker(waker)) {
        Poll::Ready((r, _)) => assert!(r.is_err(), "no result without a driver: {r:?}"),
        Poll::Pending => panic!("a future polled outside any task must not wait"),
    }
    drop(fut);
    std::fs::remove_dir_all(d).unwrap();
}

/// A future submitted in executor A's task, then awaited in executor B's task (same
/// thread): B's driver does not know its operation, so it ends with `EXDEV` and takes
/// nothing of B's (not even an operation of B's own with the same slot and generation).
#[test]
fn wake_token_rule_3_a_future_awaited_on_another_executor_gets_exdev() {
    let d = dir("exdev");
    std::fs::write(d.join("f"), b"0123456789").unwrap();
    let file: &'static File =
        Box::leak(Box::new(File::from(std::os::fd::OwnedFd::from(std::fs::File::open(d.join("f")).unwrap()))));
    let parked: Parked = Rc::new(RefCell::new(Vec::new()));
    let a = executor(RingConfig::default());
    let p = parked.clone();
    a.as_ref()
        .attach(task(), async move {
            let mut fut: Pin<Box<dyn Future<Output = _>>> = Box::pin(fs::read(file, Vec::with_capacity(64), 0));
            assert!(poll_once(&mut fut).await, "submitted");
            p.borrow_mut().push(fut);
            0u64
        })
        .unwrap();
    let _ = a.as_ref().run(64, Some(Duration::from_millis(10)));
    let b = executor(RingConfig::default());
    let p = parked.clone();
    let t = b
        .as_ref()
        .attach(task(), async move {
            // B's own read takes B's first slot: the same id as A's read.
            let (mine, buf) = fs::read(file, Vec::with_capacity(64), 0).await;
            assert_eq!((mine, &buf[..]), (Ok(10), &b"0123456789"[..]));
            let fut = p.borrow_mut().pop().unwrap();
            let (r, _) = fut.await;
            r.err().map(|e| e.0 as u64).unwrap_or(0)
        })
        .unwrap();
    run_all(b.as_ref());
    assert_eq!(b.as_ref().result(t), Ok(Some(Ok(libc::EXDEV as u64))));
    drop(b);
    drop(a);
    std::fs::remove_dir_all(d).unwrap();
}

fn pbuf_executor(count: u16, size: u32) -> Pin<Box<Ex>> {
    let mut d = ring(RingConfig::default());
    d.enable_provided_buffers(count, size).unwrap();
    executor_with(d)
}

/// A `ProvidedBuf` kept in `main` past its executor: its bytes stay what was received
/// (the memory is not freed and reused under it: the churn below would overwrite freed
/// memory), and its drop, which would give the buffer back, writes into nothing freed
/// (under valgrind: no invalid write).
#[test]
fn shared_rule_3_a_provided_buf_kept_past_the_executor_keeps_its_bytes() {
    if ring_only("provided buffers") {
        return;
    }
    const MSG: &[u8] = b"kept past the executor";
    let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    let afd = a.into_raw_fd();
    let kept: Rc<RefCell<Vec<ProvidedBuf>>> = Rc::new(RefCell::new(Vec::new()));
    let ex = pbuf_executor(8, 4096);
    let k = kept.clone();
    ex.as_ref()
        .attach(task(), async move {
            // SAFETY: `afd` came from `into_raw_fd`: ours, wrapped once.
            let s = unsafe { Socket::from_raw_fd(afd) };
            let buf = net::future::recv_provided(&s).await.expect("recv").expect("data");
            k.borrow_mut().push(buf);
            0u64
        })
        .unwrap();
    b.write_all(MSG).unwrap();
    run_all(ex.as_ref());
    drop(ex);
    // Churn the allocator with blocks the size of the freed buffers.
    let churn: Vec<Vec<u8>> = (0..64).map(|_| vec![0xAAu8; 8 * 4096]).collect();
    assert_eq!(&*kept.borrow()[0], MSG, "a provided buffer's bytes changed under its holder");
    drop(churn);
    drop(kept);
    drop(b);
}

/// A receive waiting for a provided buffer to come back (the ring is empty: the only
/// buffer is held) moved out of its task with the buffer, both dropped after the
/// executor: the wait leaves no queue entry behind in freed memory.
#[test]
fn shared_rule_3_a_provided_buffer_wait_moved_out_is_dropped_after_the_executor() {
    if ring_only("provided buffers") {
        return;
    }
    let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    let afd = a.into_raw_fd();
    type Recv = Pin<Box<dyn Future<Output = Result<Option<ProvidedBuf>, Errno>>>>;
    let parked: Rc<RefCell<(Vec<Recv>, Vec<ProvidedBuf>)>> = Rc::new(RefCell::new((Vec::new(), Vec::new())));
    let ex = pbuf_executor(1, 64);
    let p = parked.clone();
    let t = ex
        .as_ref()
        .attach(task(), async move {
            // SAFETY: `afd` came from `into_raw_fd`: ours, wrapped once.
            // SAFETY: `afd` came from `into_raw_fd`: ours, wrapped once (leaked with the socket).
            let s: &'static Socket = Box::leak(Box::new(unsafe { Socket::from_raw_fd(afd) }));
            let first = net::future::recv_provided(s).await.expect("recv").expect("data");
            let mut second: Recv = Box::pin(net::future::recv_provided(s));
            for _ in 0..8 {
                assert!(poll_once(&mut second).await, "the only buffer is held: the receive waits");
                keel_core::rt::yield_now().await.unwrap();
            }
            let exhausted = core::future::poll_fn(|cx| {
                Poll::Ready(keel_core::io_status::with_driver::<keel_linux::RingDriver, _>(cx, |d| {
                    // SAFETY: reads counters (it caches whether the kernel reports the
                    // ring's head); no replacement, no Driver method, no other code runs.
                    unsafe { d.get_mut() }.provided_buffer_stats().unwrap().exhausted
                }))
            })
            .await
            .unwrap();
            p.borrow_mut().0.push(second);
            p.borrow_mut().1.push(first);
            exhausted
        })
        .unwrap();
    b.write_all(b"a").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let _ = ex.as_ref().run(64, Some(Duration::from_millis(10)));
    b.write_all(b"b").unwrap();
    run_all(ex.as_ref());
    assert!(
        matches!(ex.as_ref().result(t), Ok(Some(Ok(n))) if n >= 1),
        "the second receive met an empty ring: {:?}",
        ex.as_ref().result(t)
    );
    drop(ex);
    drop(parked);
    drop(b);
}

/// A multishot receive armed in its task and handed to `main`, dropped after the
/// executor: the executor's drop ends (its drain cancels the op, without waiting for the
/// watchdog to close the peer) and the drop is safe.
#[test]
fn shared_rule_4_a_multishot_moved_out_is_dropped_after_the_executor() {
    if ring_only("multishot receives into provided buffers") {
        return;
    }
    let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    let afd = a.into_raw_fd();
    let parked: Rc<RefCell<Vec<Multishot>>> = Rc::new(RefCell::new(Vec::new()));
    let ex = pbuf_executor(8, 256);
    let p = parked.clone();
    ex.as_ref()
        .attach(task(), async move {
            // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
            let s = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(afd) });
            let mut m = net::future::recv_multi(&*s).await.expect("recv_multi");
            let first = net::future::next_recv(&mut m).await.expect("next_recv").expect("data");
            assert_eq!(&*first, b"one");
            p.borrow_mut().push(m); // armed, out of the task
            0u64
        })
        .unwrap();
    b.write_all(b"one").unwrap();
    run_all(ex.as_ref());
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = watchdog(done.clone(), move || drop(b));
    let t0 = Instant::now();
    drop(ex);
    let took = t0.elapsed();
    done.store(true, Ordering::Release);
    drop(parked);
    watchdog.join().unwrap();
    // SAFETY: our end of the pair, closed once.
    unsafe { libc::close(afd) };
    assert!(took < Duration::from_secs(3), "the executor's drop waited {took:?} for a multishot that left its task");
}

/// A driver dropped on its own (no executor) with an operation in flight: its `Drop`
/// cancels it and waits for the completion before it frees the buffer.
#[test]
fn shared_rule_4_a_driver_dropped_with_an_operation_in_flight_waits_for_it() {
    use keel_core::Driver;
    use keel_core::driver::IoToken;
    let (rfd, wfd) = pipe();
    let mut d = ring(RingConfig::default());
    let mut buf = vec![0u8; 64];
    let e = io_uring::opcode::Read::new(io_uring::types::Fd(rfd), buf.as_mut_ptr(), 64).offset(u64::MAX).build();
    // SAFETY: `buf` outlives the driver, which waits for the read in its `Drop`.
    let op = unsafe { keel_linux::RingOp::from_entry(e) };
    d.submit(op, IoToken::wake(task())).map_err(|(_, e)| e).expect("submitted");
    let mut sink = |_: IoToken, _: keel_core::IoResult| {};
    d.reap(16, &mut sink);
    assert_eq!(d.in_flight(), 1);
    let t0 = Instant::now();
    drop(d);
    assert!(t0.elapsed() < Duration::from_secs(1), "the cancel ended the read");
    // SAFETY: our pipe's write end: the read is gone, so the byte stays in the pipe.
    unsafe { libc::write(wfd, b"y".as_ptr().cast(), 1) };
    assert_eq!(buf, vec![0u8; 64], "nothing was written into the buffer after the drop");
    // SAFETY: our pipe, closed once.
    unsafe {
        libc::close(rfd);
        libc::close(wfd);
    }
}

// ---- wake-token operations moved out of their task (wake-token rules in `ring`) ----

type ReadFut = Pin<Box<dyn Future<Output = (Result<u32, Errno>, Vec<u8>)>>>;

/// Where a moved-out read is awaited: another task, or the next run of the task that
/// submitted it (same slot, a new generation).
#[derive(Copy, Clone, Debug)]
enum Then {
    AnotherTask,
    NextRun,
}

/// A task polls a pipe read once (its SQE in the kernel), moves the future out into
/// `main`'s `Rc` and returns: its run completes at once (the read is the slot's, not the
/// run's: io_status rule 5), though nobody writes the pipe. Then the future is awaited in
/// another task, or in the next run of the same slot, which gets the bytes written after
/// that: the op's wake token follows whoever polls it (wake-token rule 3). Descriptors are
/// back at their count from before. Before the token followed the poller, the second
/// awaiter waited forever (the completion woke the first run, whose generation was gone:
/// `stranded`).
fn a_moved_out_read_is_awaited_later(then: Then) {
    let baseline = open_fds();
    let (rfd, wfd) = pipe();
    // SAFETY: the pipe's read end is ours and wrapped once; freed at the end, after every
    // future that borrows it.
    let file: &'static File = Box::leak(Box::new(unsafe { File::from_raw_fd(rfd) }));
    let parked: Rc<RefCell<Option<ReadFut>>> = Rc::new(RefCell::new(None));
    let exb = executor(RingConfig::default());
    let ex = exb.as_ref();
    let p = parked.clone();
    let first = ex
        .attach(task(), async move {
            let mut fut: ReadFut = Box::pin(fs::read(file, Vec::with_capacity(64), 0));
            assert!(poll_once(&mut fut).await, "an empty pipe's read waits");
            *p.borrow_mut() = Some(fut);
            1u64
        })
        .unwrap();
    let t0 = Instant::now();
    while ex.attached() > 0 && t0.elapsed() < Duration::from_secs(2) {
        let _ = ex.run(64, Some(Duration::from_millis(10)));
    }
    assert_eq!(
        ex.result(first),
        Ok(Some(Ok(1))),
        "the run that moved its read out must complete at once, not drain it"
    );
    assert!(t0.elapsed() < Duration::from_secs(1), "it took {:?}", t0.elapsed());
    let p = parked.clone();
    let body = async move {
        let fut = p.borrow_mut().take().expect("parked");
        let (r, buf) = fut.await;
        assert_eq!((r, &buf[..]), (Ok(5), &b"later"[..]));
        2u64
    };
    let second = match then {
        Then::AnotherTask => ex.attach(task(), body).unwrap(),
        Then::NextRun => ex.attach(first, body).unwrap(),
    };
    let _ = ex.run(64, Some(Duration::from_millis(10)));
    assert_eq!(ex.state(second), Ok(keel_core::TaskState::Suspended(keel_core::SuspendReason::Io)));
    // SAFETY: writes 5 bytes from a static to our pipe's write end.
    assert_eq!(unsafe { libc::write(wfd, b"later".as_ptr().cast(), 5) }, 5);
    let t0 = Instant::now();
    while ex.attached() > 0 && t0.elapsed() < Duration::from_secs(3) {
        let _ = ex.run(64, Some(Duration::from_millis(10)));
    }
    assert_eq!(
        ex.result(second),
        Ok(Some(Ok(2))),
        "{then:?}: the task awaiting the moved-out read is stranded ({:?})",
        ex.state(second)
    );
    drop(exb);
    // SAFETY: our pipe's write end, closed once.
    unsafe { libc::close(wfd) };
    // SAFETY: `file` came from `Box::leak` above; no future borrows it any more.
    drop(unsafe { Box::from_raw(file as *const File as *mut File) });
    assert_eq!(open_fds(), baseline, "descriptors left open");
}

#[test]
fn wake_token_rule_3_a_read_moved_out_of_its_task_is_awaited_in_another_task() {
    a_moved_out_read_is_awaited_later(Then::AnotherTask);
}

#[test]
fn wake_token_rule_2_a_read_moved_out_of_its_task_is_awaited_in_the_slots_next_run() {
    a_moved_out_read_is_awaited_later(Then::NextRun);
}

/// A moved-out read polled in `main` (outside any task) while its executor lives: a typed
/// error (`EPERM`, rt rule 2), no wait; dropped then, its op is abandoned to its slot and
/// the executor still winds down with nothing left open.
#[test]
fn wake_token_rule_3_a_moved_out_read_polled_outside_any_task_gets_eperm() {
    let baseline = open_fds();
    let (rfd, wfd) = pipe();
    // SAFETY: as above.
    let file: &'static File = Box::leak(Box::new(unsafe { File::from_raw_fd(rfd) }));
    let parked: Rc<RefCell<Option<ReadFut>>> = Rc::new(RefCell::new(None));
    let ex = executor(RingConfig::default());
    let p = parked.clone();
    ex.as_ref()
        .attach(task(), async move {
            let mut fut: ReadFut = Box::pin(fs::read(file, Vec::with_capacity(64), 0));
            assert!(poll_once(&mut fut).await);
            *p.borrow_mut() = Some(fut);
            0u64
        })
        .unwrap();
    run_all(ex.as_ref());
    let mut fut = parked.borrow_mut().take().unwrap();
    match fut.as_mut().poll(&mut Context::from_waker(std::task::Waker::noop())) {
        Poll::Ready((r, _)) => assert_eq!(r, Err(Errno::EPERM)),
        Poll::Pending => panic!("a future polled outside any task must not wait"),
    }
    drop(fut);
    // The abandoned read is cancelled: nothing stays in flight.
    let t0 = Instant::now();
    while ex.as_ref().with_driver(|d| keel_core::Driver::in_flight(&**d)).unwrap() > 0
        && t0.elapsed() < Duration::from_secs(2)
    {
        let _ = ex.as_ref().run(64, Some(Duration::from_millis(10)));
    }
    assert_eq!(
        ex.as_ref().with_driver(|d| keel_core::Driver::in_flight(&**d)).unwrap(),
        0,
        "the abandoned read was not cancelled"
    );
    drop(ex);
    // SAFETY: our pipe's write end, closed once.
    unsafe { libc::close(wfd) };
    // SAFETY: `file` came from `Box::leak` above; no future borrows it any more.
    drop(unsafe { Box::from_raw(file as *const File as *mut File) });
    assert_eq!(open_fds(), baseline, "descriptors left open");
}

/// A multishot receive armed in one task (one result taken), moved out, and stepped in
/// another task: the next bytes wake the new task (wake-token rule 3), not the finished
/// first run.
#[test]
fn wake_token_rule_3_a_multishot_moved_to_another_task_wakes_that_task() {
    if ring_only("multishot receives into provided buffers") {
        return;
    }
    let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    let afd = a.into_raw_fd();
    let parked: Rc<RefCell<Option<Multishot>>> = Rc::new(RefCell::new(None));
    let ex = pbuf_executor(8, 256);
    let ex = ex.as_ref();
    // SAFETY: `afd` came from `into_raw_fd`: ours, wrapped once (leaked with the socket).
    let s: &'static Socket = Box::leak(Box::new(unsafe { Socket::from_raw_fd(afd) }));
    let p = parked.clone();
    let first = ex
        .attach(task(), async move {
            let mut m = net::future::recv_multi(s).await.expect("recv_multi");
            let one = net::future::next_recv(&mut m).await.expect("next_recv").expect("data");
            assert_eq!(&*one, b"one");
            *p.borrow_mut() = Some(m); // armed, out of the task
            1u64
        })
        .unwrap();
    b.write_all(b"one").unwrap();
    run_all(ex);
    assert_eq!(ex.result(first), Ok(Some(Ok(1))));
    let p = parked.clone();
    let second = ex
        .attach(task(), async move {
            let mut m = p.borrow_mut().take().expect("parked");
            let two = net::future::next_recv(&mut m).await.expect("next_recv").expect("data");
            assert_eq!(&*two, b"two");
            2u64
        })
        .unwrap();
    let _ = ex.run(64, Some(Duration::from_millis(10)));
    assert!(ex.state(second).is_ok_and(|s| s.is_attached()), "the second task waits for data");
    b.write_all(b"two").unwrap();
    let t0 = Instant::now();
    while ex.attached() > 0 && t0.elapsed() < Duration::from_secs(3) {
        let _ = ex.run(64, Some(Duration::from_millis(10)));
    }
    assert_eq!(
        ex.result(second),
        Ok(Some(Ok(2))),
        "the task stepping the moved multishot is stranded ({:?})",
        ex.state(second)
    );
}

/// A `claim_buffer` future waiting for the only registered buffer (held by another task)
/// is moved out of its task, which returns, and awaited in another task: the release's
/// turn wakes that task (waitq rule 6), which gets the buffer; a turn that woke the
/// finished task would strand the new awaiter and every later claim.
#[test]
fn waitq_rule_6_a_buffer_claim_moved_to_another_task_gets_the_released_buffer() {
    if ring_only("registered buffers") {
        return;
    }
    type Claim = Pin<Box<keel_linux::fs::ClaimBuffer>>;
    let exb = executor(RingConfig { registered_buffers: 1, ..RingConfig::default() });
    let ex = exb.as_ref();
    let release = Rc::new(std::cell::Cell::new(false));
    let parked: Rc<RefCell<Option<Claim>>> = Rc::new(RefCell::new(None));
    let r = release.clone();
    let holder = ex
        .attach(task(), async move {
            let b = fs::claim_buffer().await.expect("the only buffer is free");
            while !r.get() {
                keel_core::rt::yield_now().await.unwrap();
            }
            drop(b);
            0u64
        })
        .unwrap();
    let _ = ex.run(1, None);
    let p = parked.clone();
    let mover = ex
        .attach(task(), async move {
            let mut c: Claim = Box::pin(fs::claim_buffer());
            assert!(poll_once(&mut c).await, "the buffer is held: the claim waits");
            *p.borrow_mut() = Some(c);
            1u64
        })
        .unwrap();
    let _ = ex.run(4, None);
    assert_eq!(ex.result(mover), Ok(Some(Ok(1))), "the task that moved its claim out completes");
    let p = parked.clone();
    let awaiter = ex
        .attach(task(), async move {
            let c = p.borrow_mut().take().expect("parked");
            let b = c.await.expect("the released buffer");
            u64::from(b.index()) + 10
        })
        .unwrap();
    let _ = ex.run(4, None);
    release.set(true);
    let t0 = Instant::now();
    while ex.attached() > 0 && t0.elapsed() < Duration::from_secs(3) {
        let _ = ex.run(64, Some(Duration::from_millis(10)));
    }
    assert_eq!(ex.result(holder), Ok(Some(Ok(0))));
    assert_eq!(
        ex.result(awaiter),
        Ok(Some(Ok(10))),
        "the task awaiting the moved claim is stranded ({:?})",
        ex.state(awaiter)
    );
}

/// A provided-buffer receive waiting for a buffer to come back (the ring's only buffer is
/// held) is moved out of its task and awaited in another: the buffer's return wakes that
/// task (waitq rule 6), which receives the data.
#[test]
fn waitq_rule_6_a_provided_buffer_wait_moved_to_another_task_is_woken_there() {
    if ring_only("provided buffers") {
        return;
    }
    type Recv = Pin<Box<dyn Future<Output = Result<Option<ProvidedBuf>, Errno>>>>;
    let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    let afd = a.into_raw_fd();
    // SAFETY: `afd` came from `into_raw_fd`: ours, wrapped once (leaked with the socket).
    let s: &'static Socket = Box::leak(Box::new(unsafe { Socket::from_raw_fd(afd) }));
    let exb = pbuf_executor(1, 64);
    let ex = exb.as_ref();
    let held: Rc<RefCell<Option<ProvidedBuf>>> = Rc::new(RefCell::new(None));
    let parked: Rc<RefCell<Option<Recv>>> = Rc::new(RefCell::new(None));
    let (h, p) = (held.clone(), parked.clone());
    let mover = ex
        .attach(task(), async move {
            let first = net::future::recv_provided(s).await.expect("recv").expect("data");
            *h.borrow_mut() = Some(first); // the ring's only buffer, held in main
            let mut second: Recv = Box::pin(net::future::recv_provided(s));
            for _ in 0..8 {
                assert!(poll_once(&mut second).await, "the only buffer is held: the receive waits");
                keel_core::rt::yield_now().await.unwrap();
            }
            *p.borrow_mut() = Some(second);
            1u64
        })
        .unwrap();
    b.write_all(b"a").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let t0 = Instant::now();
    while ex.attached() > 0 && t0.elapsed() < Duration::from_secs(3) {
        let _ = ex.run(64, Some(Duration::from_millis(10)));
    }
    assert_eq!(ex.result(mover), Ok(Some(Ok(1))));
    let p = parked.clone();
    let awaiter = ex
        .attach(task(), async move {
            let r = p.borrow_mut().take().expect("parked");
            let buf = r.await.expect("recv").expect("data");
            assert_eq!(&*buf, b"b");
            2u64
        })
        .unwrap();
    let _ = ex.run(64, Some(Duration::from_millis(10)));
    b.write_all(b"b").unwrap();
    let _ = ex.run(64, Some(Duration::from_millis(10)));
    drop(held.borrow_mut().take()); // the buffer comes back: the waiting receive's turn
    let t0 = Instant::now();
    while ex.attached() > 0 && t0.elapsed() < Duration::from_secs(3) {
        let _ = ex.run(64, Some(Duration::from_millis(10)));
    }
    assert_eq!(
        ex.result(awaiter),
        Ok(Some(Ok(2))),
        "the task awaiting the moved receive is stranded ({:?})",
        ex.state(awaiter)
    );
}

// ---- a descriptor is not reused under a queued SQE (fd rule 1) ----

#[derive(Copy, Clone, Debug)]
enum Leave {
    Drop,
    Forget,
}

/// A write future polled once (its SQE queued), then dropped or forgotten, then its
/// `File` dropped; a new regular file opened next must not get the old number while the
/// write may still run, and must receive nothing.
fn a_write_left_behind_keeps_its_file_open(leave: Leave) {
    let d = dir(&format!("reuse-file-{leave:?}"));
    let (pa, pb) = (d.join("a"), d.join("b"));
    let base = open_fds();
    let ex = executor(RingConfig::default());
    let (pa2, pb2) = (pa.clone(), pb.clone());
    let t = ex
        .as_ref()
        .attach(task(), async move {
            let file = File::from(std::os::fd::OwnedFd::from(std::fs::File::create(&pa2).unwrap()));
            let old = file.fd();
            let mut w = Box::pin(fs::write(&file, b"meant for a".to_vec(), 0));
            assert!(poll_once(&mut w).await, "queued");
            match leave {
                Leave::Drop => drop(w),
                Leave::Forget => core::mem::forget(w),
            }
            drop(file);
            let b = std::fs::File::create(&pb2).unwrap();
            use std::os::fd::AsRawFd;
            assert_ne!(b.as_raw_fd(), old, "a descriptor number was reused while an SQE naming it was queued");
            drop(b);
            keel_core::rt::yield_now().await.unwrap();
            0u64
        })
        .unwrap();
    run_all(ex.as_ref());
    assert!(matches!(ex.as_ref().result(t), Ok(Some(Ok(0)))), "{:?}", ex.as_ref().result(t));
    drop(ex);
    assert_eq!(std::fs::read(&pb).unwrap(), b"", "the write went to another file");
    assert_eq!(open_fds(), base, "descriptors left open");
    let _ = std::fs::read(&pa);
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn fd_rule_1_a_dropped_write_keeps_its_file_open_until_it_completes() {
    a_write_left_behind_keeps_its_file_open(Leave::Drop);
}

#[test]
fn fd_rule_1_a_forgotten_write_keeps_its_file_open_until_it_completes() {
    a_write_left_behind_keeps_its_file_open(Leave::Forget);
}

/// The same for a socket's send: a new file must not take the socket's number.
fn a_send_left_behind_keeps_its_socket_open(leave: Leave) {
    let d = dir(&format!("reuse-sock-{leave:?}"));
    let pb = d.join("b");
    let base = open_fds();
    let (a, mut peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let afd = a.into_raw_fd();
    let ex = executor(RingConfig::default());
    let pb2 = pb.clone();
    let t = ex
        .as_ref()
        .attach(task(), async move {
            // SAFETY: `afd` came from `into_raw_fd`: ours, wrapped once.
            let s = unsafe { Socket::from_raw_fd(afd) };
            let mut w = Box::pin(net::future::send(&s, b"meant for the peer".to_vec()));
            assert!(poll_once(&mut w).await, "queued");
            match leave {
                Leave::Drop => drop(w),
                Leave::Forget => core::mem::forget(w),
            }
            drop(s);
            let b = std::fs::File::create(&pb2).unwrap();
            use std::os::fd::AsRawFd;
            assert_ne!(b.as_raw_fd(), afd, "a socket's number was reused while an SQE naming it was queued");
            drop(b);
            keel_core::rt::yield_now().await.unwrap();
            0u64
        })
        .unwrap();
    run_all(ex.as_ref());
    assert!(matches!(ex.as_ref().result(t), Ok(Some(Ok(0)))), "{:?}", ex.as_ref().result(t));
    drop(ex);
    assert_eq!(std::fs::read(&pb).unwrap(), b"", "the send went into a file");
    // The socket is closed: the peer reads what was sent (if the send ran) then end of stream.
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    peer.read_to_end(&mut got).expect("end of stream: the socket was closed");
    drop(peer);
    assert_eq!(open_fds(), base, "descriptors left open");
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn fd_rule_1_a_dropped_send_keeps_its_socket_open_until_it_completes() {
    a_send_left_behind_keeps_its_socket_open(Leave::Drop);
}

#[test]
fn fd_rule_1_a_forgotten_send_keeps_its_socket_open_until_it_completes() {
    a_send_left_behind_keeps_its_socket_open(Leave::Forget);
}

#[test]
fn fd_rule_4_into_raw_fd_refuses_while_an_operation_holds_the_descriptor() {
    let (rfd, wfd) = pipe();
    let ex = executor(RingConfig::default());
    let t = ex
        .as_ref()
        .attach(task(), async move {
            // SAFETY: the pipe's read end is ours and wrapped once.
            let file = unsafe { File::from_raw_fd(rfd) };
            let mut r = Box::pin(fs::read(&file, Vec::with_capacity(8), 0));
            assert!(poll_once(&mut r).await);
            drop(r); // abandoned: cancelled, its slot holds the descriptor until the CQE
            let file = file.into_raw_fd().expect_err("an operation still holds it");
            for _ in 0..100 {
                keel_core::rt::yield_now().await.unwrap();
            }
            let fd = file.into_raw_fd().expect("the cancelled read completed: the descriptor is ours");
            assert_eq!(fd, rfd);
            fd as u64
        })
        .unwrap();
    run_all(ex.as_ref());
    assert_eq!(ex.as_ref().result(t), Ok(Some(Ok(rfd as u64))));
    assert!(is_open(rfd), "into_raw_fd does not close");
    // SAFETY: our pipe, closed once.
    unsafe {
        libc::close(rfd);
        libc::close(wfd);
    }
}

// ---- close cancels first, and always closes (fd rule 3, net rule 1) ----

/// Task R reads a pipe (in flight); task C closes the same descriptor. R's read must end
/// cancelled (not consume data written after the close), and the descriptor is closed:
/// a write to the pipe then fails with EPIPE.
#[test]
fn fd_rule_3_a_future_close_cancels_a_read_in_flight_on_the_descriptor() {
    let (rfd, wfd) = pipe();
    let ex = executor(RingConfig::default());
    let got: Rc<RefCell<Option<Result<u32, Errno>>>> = Rc::new(RefCell::new(None));
    let g = got.clone();
    let r = ex
        .as_ref()
        .attach(task(), async move {
            // SAFETY: a view of the test's pipe that never closes it (ManuallyDrop); the other
            // task's close is its one close.
            let f = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(rfd) });
            let (res, _) = fs::read(&f, Vec::with_capacity(8), 0).await;
            *g.borrow_mut() = Some(res);
            0u64
        })
        .unwrap();
    let c = ex
        .as_ref()
        .attach(task(), async move {
            for _ in 0..4 {
                keel_core::rt::yield_now().await.unwrap(); // R's read reaches the kernel
            }
            // SAFETY: the pipe's read end is ours; the reader's view never closes it, so
            // this is its one close.
            fs::close(unsafe { File::from_raw_fd(rfd) }).await.expect("close");
            0u64
        })
        .unwrap();
    run_all(ex.as_ref());
    let _ = (r, c);
    assert_eq!(*got.borrow(), Some(Err(Errno::ECANCELED)), "the read was cancelled by the close");
    assert!(!is_open(rfd), "closed");
    // SAFETY: our pipe's write end; SIGPIPE is ignored by the test harness? Use send-like
    // semantics: MSG_NOSIGNAL does not apply to pipes, so block SIGPIPE for the write.
    let w = unsafe {
        let mut set: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, core::ptr::null_mut());
        libc::write(wfd, b"late".as_ptr().cast(), 4)
    };
    assert_eq!(w, -1, "no reader is left on the pipe");
    // SAFETY: our pipe's write end, closed once.
    unsafe { libc::close(wfd) };
}

/// The same with fibers: `FiberFs::close` cancels the other fiber's blocked read.
#[test]
fn fd_rule_3_a_fiber_close_cancels_a_read_in_flight_on_the_descriptor() {
    let (rfd, wfd) = pipe();
    let ex = executor(RingConfig::default());
    let got: Rc<RefCell<Option<Result<u32, Errno>>>> = Rc::new(RefCell::new(None));
    let g = got.clone();
    ex.as_ref()
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            // SAFETY: a view of the test's pipe that never closes it (ManuallyDrop); the other
            // task's close is its one close.
            let file = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(rfd) });
            let mut buf = [0u8; 8];
            *g.borrow_mut() = Some(f.read(&file, &mut buf, u64::MAX));
            0u64
        })
        .unwrap();
    ex.as_ref()
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            for _ in 0..4 {
                f.yield_now().unwrap();
            }
            // SAFETY: the pipe's read end is ours; the reader's view never closes it, so
            // this is its one close.
            f.close(unsafe { File::from_raw_fd(rfd) }).expect("close");
            0u64
        })
        .unwrap();
    run_all(ex.as_ref());
    assert_eq!(*got.borrow(), Some(Err(Errno::ECANCELED)), "the read was cancelled by the close");
    assert!(!is_open(rfd), "closed");
    // SAFETY: our pipe's write end, closed once.
    unsafe { libc::close(wfd) };
}

/// A cancelled task's close (future and fiber): before the fix it returned ECANCELED and
/// left the descriptor open (and the other task's read in flight).
fn a_cancelled_close_still_closes(fiber: bool) {
    let (rfd, wfd) = pipe();
    let ex = executor(RingConfig::default());
    let got: Rc<RefCell<Option<Result<u32, Errno>>>> = Rc::new(RefCell::new(None));
    let g = got.clone();
    ex.as_ref()
        .attach(task(), async move {
            // SAFETY: a view of the test's pipe that never closes it (ManuallyDrop); the other
            // task's close is its one close.
            let f = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(rfd) });
            let (res, _) = fs::read(&f, Vec::with_capacity(8), 0).await;
            *g.borrow_mut() = Some(res);
            0u64
        })
        .unwrap();
    let closer: TaskHandle = if fiber {
        ex.as_ref()
            .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
                assert!(f.sleep(Duration::from_secs(30)).is_err(), "cancelled");
                // SAFETY: the pipe's read end is ours; the reader's view never closes it.
                assert_eq!(f.close(unsafe { File::from_raw_fd(rfd) }), Ok(()), "closed without the ring");
                0u64
            })
            .unwrap()
    } else {
        ex.as_ref()
            .attach(task(), async move {
                assert!(keel_core::rt::sleep(Duration::from_secs(30)).await.is_err(), "cancelled");
                // SAFETY: the pipe's read end is ours; the reader's view never closes it.
                assert_eq!(fs::close(unsafe { File::from_raw_fd(rfd) }).await, Ok(()), "closed without the ring");
                0u64
            })
            .unwrap()
    };
    for _ in 0..3 {
        let _ = ex.as_ref().run(64, Some(Duration::from_millis(10)));
    }
    ex.as_ref().cancel(closer).unwrap();
    run_all(ex.as_ref());
    assert!(!is_open(rfd), "a cancelled task's close left the descriptor open");
    assert_eq!(*got.borrow(), Some(Err(Errno::ECANCELED)), "the other task's read was cancelled");
    // SAFETY: our pipe's write end, closed once.
    unsafe { libc::close(wfd) };
}

#[test]
fn fd_rule_3_a_cancelled_future_close_still_closes() {
    a_cancelled_close_still_closes(false);
}

#[test]
fn fd_rule_3_a_cancelled_fiber_close_still_closes() {
    a_cancelled_close_still_closes(true);
}

/// A cancelled task's close of a direct descriptor (fiber `close_direct`, future
/// `close_fixed_socket`) frees its index: with a table of one, the next direct open fits.
#[test]
fn fd_rule_3_a_cancelled_close_of_a_direct_descriptor_frees_its_index() {
    if ring_only("direct descriptors") {
        return;
    }
    let d = dir("fixed");
    let path = std::ffi::CString::new(d.join("f").to_str().unwrap()).unwrap();
    std::fs::write(d.join("f"), b"x").unwrap();
    let ex = executor(RingConfig { registered_files: 1, ..RingConfig::default() });
    let p2 = path.clone();
    let fiber = ex
        .as_ref()
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let file = f.open_direct(&p2, OFlags::RDONLY, Mode::empty()).expect("open_direct");
            assert!(f.sleep(Duration::from_secs(30)).is_err(), "cancelled");
            assert_eq!(f.close_direct(file), Ok(()), "closed without the ring");
            0u64
        })
        .unwrap();
    for _ in 0..3 {
        let _ = ex.as_ref().run(64, Some(Duration::from_millis(10)));
    }
    ex.as_ref().cancel(fiber).unwrap();
    run_all(ex.as_ref());
    let fut = ex
        .as_ref()
        .attach(task(), async move {
            let s = net::future::socket_direct(AddressFamily::INET, SocketType::STREAM, None)
                .await
                .expect("the index was freed");
            assert!(keel_core::rt::sleep(Duration::from_secs(30)).await.is_err(), "cancelled");
            assert_eq!(net::future::close_fixed_socket(s).await, Ok(()), "closed without the ring");
            0u64
        })
        .unwrap();
    for _ in 0..3 {
        let _ = ex.as_ref().run(64, Some(Duration::from_millis(10)));
    }
    ex.as_ref().cancel(fut).unwrap();
    run_all(ex.as_ref());
    let t = ex
        .as_ref()
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let file = f.open_direct(&path, OFlags::RDONLY, Mode::empty()).expect("the index was freed again");
            f.close_direct(file).expect("close");
            1u64
        })
        .unwrap();
    run_all(ex.as_ref());
    assert_eq!(ex.as_ref().result(t), Ok(Some(Ok(1))));
    drop(ex);
    std::fs::remove_dir_all(d).unwrap();
}

/// `fs::close` polled outside any keel task: an error (no ring to go through), and the
/// descriptor is closed all the same.
#[test]
fn fd_rule_3_a_close_polled_outside_a_task_still_closes() {
    let (rfd, wfd) = pipe();
    // SAFETY: the pipe's read end is ours and wrapped once.
    let mut close = Box::pin(fs::close(unsafe { File::from_raw_fd(rfd) }));
    let waker = std::task::Waker::noop();
    let r = loop {
        if let Poll::Ready(r) = close.as_mut().poll(&mut Context::from_waker(waker)) {
            break r;
        }
    };
    assert!(r.is_err(), "no ring outside a task: {r:?}");
    assert!(!is_open(rfd), "the descriptor is closed whatever close returns");
    // SAFETY: the pipe's write end is ours and wrapped once.
    let s = unsafe { Socket::from_raw_fd(wfd) };
    let mut close = Box::pin(net::future::close_socket(s));
    let r = loop {
        if let Poll::Ready(r) = close.as_mut().poll(&mut Context::from_waker(waker)) {
            break r;
        }
    };
    assert!(r.is_err());
    assert!(!is_open(wfd), "close_socket closes whatever it returns");
}
