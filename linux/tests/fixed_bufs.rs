//! Registered-buffer claims (`FixedBuf`, regbuf rules 1-5): a claim is released however
//! its holder ends (returns without releasing, is cancelled while holding, panics while
//! holding), for fibers and futures, so a task waiting in `claim_buffer` always gets the
//! buffer; a waiting `fs::claim_buffer()` future dropped or cancelled leaves the queue or
//! passes its turn on; a `FixedBuf` may outlive its executor; and the future
//! `read_fixed`/`write_fixed` take the buffer by value, give it back with the result, and
//! keep it from being released while the kernel may still write into it.

mod net_util;

use core::time::Duration;
use keel_core::{Fiber, SuspendReason, TaskError, TaskHandle, TaskState, rt};
use keel_linux::RingConfig;
use keel_linux::fs::{self, BufferError, FiberFs, FixedBuf, Mode, OFlags};
use net_util::{Ex, executor, fattrs, task};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

/// Runs until no task is attached or `limit` passed (a stranded waiter shows as `false`).
/// A panic out of `run` (a future body's, which the executor completes as `Panicked`
/// before it propagates) is caught and running goes on.
fn run_for(ex: Pin<&Ex>, limit: Duration) -> bool {
    let t0 = std::time::Instant::now();
    while ex.attached() > 0 && t0.elapsed() < limit {
        let _ =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ex.run(1024, Some(Duration::from_millis(20)))));
    }
    ex.attached() == 0
}

/// Runs until `cond` or 5 s.
fn run_until(ex: Pin<&Ex>, cond: impl Fn() -> bool) {
    let t0 = std::time::Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(5), "timed out");
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ex.run(16, Some(Duration::from_millis(5)))));
    }
}

fn one_buffer() -> Pin<Box<Ex>> {
    executor(RingConfig { registered_buffers: 1, ..RingConfig::default() })
}

/// How the holder of the only buffer ends without releasing it.
#[derive(Copy, Clone, Debug)]
enum End {
    /// Its body returns with the `FixedBuf` in scope.
    Returns,
    /// It is cancelled while holding (the `?` on `Cancelled` returns early).
    Cancelled,
    /// It panics while holding (fibers: the linux panic catcher is configured).
    Panics,
}

fn waiting(ex: Pin<&Ex>, t: TaskHandle) -> bool {
    matches!(ex.state(t), Ok(TaskState::Suspended(SuspendReason::Wait)))
}

/// A holder ending as `end` and a waiter: the waiter gets the buffer. `fiber_holder` and
/// `fiber_waiter` pick the kind of each task.
fn holder_ends_and_the_waiter_gets_the_buffer(end: End, fiber_holder: bool, fiber_waiter: bool) {
    let ex = one_buffer();
    let ex = ex.as_ref();
    let go = Rc::new(Cell::new(false));
    let got = Rc::new(Cell::new(None));
    let holder = if fiber_holder {
        let go = go.clone();
        ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
            let mut b = f.claim_buffer().expect("the only buffer is free");
            b[0] = 7;
            match end {
                End::Returns => {
                    while !go.get() {
                        f.yield_now()?;
                    }
                    Ok(1) // `b` goes out of scope: released (regbuf rule 3)
                }
                End::Cancelled => {
                    f.sleep(Duration::from_secs(30))?; // cancelled: the `?` returns early
                    Ok(1)
                }
                End::Panics => {
                    while !go.get() {
                        f.yield_now()?;
                    }
                    panic!("the holder panics with buffer {} claimed", b.index());
                }
            }
        })
        .unwrap()
    } else {
        let go = go.clone();
        ex.attach(task(), async move {
            let mut b = fs::claim_buffer().await.expect("the only buffer is free");
            b[0] = 7;
            match end {
                End::Returns => {
                    while !go.get() {
                        rt::yield_now().await?;
                    }
                    Ok(1)
                }
                End::Cancelled => {
                    rt::sleep(Duration::from_secs(30)).await?;
                    Ok(1)
                }
                End::Panics => {
                    while !go.get() {
                        rt::yield_now().await?;
                    }
                    panic!("the holder panics with buffer {} claimed", b.index());
                }
            }
        })
        .unwrap()
    };
    let g = got.clone();
    let waiter = if fiber_waiter {
        ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
            let b = f.claim_buffer().map_err(|_| TaskError::Failed(2))?;
            g.set(Some((b.index(), b[0])));
            Ok(2)
        })
        .unwrap()
    } else {
        ex.attach(task(), async move {
            let b = fs::claim_buffer().await.map_err(|_| TaskError::Failed(2))?;
            g.set(Some((b.index(), b[0])));
            Ok(2)
        })
        .unwrap()
    };
    run_until(ex, || waiting(ex, waiter));
    match end {
        End::Cancelled => {
            ex.cancel(holder).unwrap();
        }
        End::Returns | End::Panics => go.set(true),
    }
    let done = run_for(ex, Duration::from_secs(3));
    assert!(
        done,
        "{end:?}: the waiter must get the buffer (waiter: {:?}, holder: {:?})",
        ex.state(waiter),
        ex.state(holder)
    );
    assert_eq!(got.get(), Some((0, 7)), "{end:?}: the waiter has buffer 0, with the holder's byte");
    let want = match end {
        End::Returns => Ok(Some(Ok(1))),
        End::Cancelled => Ok(Some(Err(TaskError::Cancelled))),
        End::Panics => match ex.result(holder) {
            Ok(Some(Err(TaskError::Panicked(m)))) => Ok(Some(Err(TaskError::Panicked(m)))),
            other => panic!("the holder must have panicked: {other:?}"),
        },
    };
    assert_eq!(ex.result(holder), want, "{end:?}");
    assert_eq!(ex.result(waiter), Ok(Some(Ok(2))));
}

#[test]
fn regbuf_rule_3_a_fiber_that_returns_holding_a_buffer_releases_it_to_the_waiter() {
    if net_util::ring_only("registered buffers") {
        return;
    }
    holder_ends_and_the_waiter_gets_the_buffer(End::Returns, true, true);
}

#[test]
fn regbuf_rule_3_a_fiber_cancelled_while_holding_a_buffer_releases_it_to_the_waiter() {
    if net_util::ring_only("registered buffers") {
        return;
    }
    holder_ends_and_the_waiter_gets_the_buffer(End::Cancelled, true, true);
}

#[test]
fn regbuf_rule_3_a_fiber_that_panics_holding_a_buffer_releases_it_to_the_waiter() {
    if net_util::ring_only("registered buffers") {
        return;
    }
    holder_ends_and_the_waiter_gets_the_buffer(End::Panics, true, true);
}

#[test]
fn regbuf_rule_3_a_future_that_returns_holding_a_buffer_releases_it_to_the_waiter() {
    if net_util::ring_only("registered buffers") {
        return;
    }
    holder_ends_and_the_waiter_gets_the_buffer(End::Returns, false, false);
}

#[test]
fn regbuf_rule_3_a_future_cancelled_while_holding_a_buffer_releases_it_to_the_waiter() {
    if net_util::ring_only("registered buffers") {
        return;
    }
    holder_ends_and_the_waiter_gets_the_buffer(End::Cancelled, false, false);
}

#[test]
fn regbuf_rule_3_a_future_that_panics_holding_a_buffer_releases_it_to_the_waiter() {
    if net_util::ring_only("registered buffers") {
        return;
    }
    holder_ends_and_the_waiter_gets_the_buffer(End::Panics, false, false);
}

#[test]
fn regbuf_rule_3_fibers_and_futures_share_one_claim_queue() {
    if net_util::ring_only("registered buffers") {
        return;
    }
    holder_ends_and_the_waiter_gets_the_buffer(End::Returns, true, false);
    holder_ends_and_the_waiter_gets_the_buffer(End::Cancelled, false, true);
}

/// W1's wait (a `fs::claim_buffer()` future) is dropped while queued (`Dropped`), dropped
/// after it was handed the buffer but before it ran (`DroppedWithTurn`), or its task is
/// cancelled and then handed the buffer before it runs (`Cancelled`): W2 gets the buffer
/// each time (waitq rule 3).
#[derive(Copy, Clone, Debug, PartialEq)]
enum Leave {
    Dropped,
    DroppedWithTurn,
    Cancelled,
}

type Slot = Rc<RefCell<Option<Pin<Box<fs::ClaimBuffer>>>>>;

fn a_waiting_claim_future_that_leaves_passes_the_buffer_on(how: Leave) {
    let ex = one_buffer();
    let ex = ex.as_ref();
    let held: Rc<RefCell<Option<FixedBuf>>> = Rc::new(RefCell::new(None));
    let h = held.clone();
    ex.attach(task(), async move {
        *h.borrow_mut() = Some(fs::claim_buffer().await.expect("free"));
        Ok(0)
    })
    .unwrap();
    assert!(run_for(ex, Duration::from_secs(1)));
    assert!(held.borrow().is_some());
    // W1 polls its claim from a slot the test can empty (drop the future) from outside.
    let slot: Slot = Rc::new(RefCell::new(Some(Box::pin(fs::claim_buffer()))));
    let w1_out = Rc::new(Cell::new(None));
    let (s, o) = (slot.clone(), w1_out.clone());
    let w1 = ex
        .attach(task(), async move {
            let r = core::future::poll_fn(|cx| match s.borrow_mut().as_mut() {
                None => Poll::Ready(None), // dropped from outside
                Some(c) => c.as_mut().poll(cx).map(Some),
            })
            .await;
            o.set(Some(r.map(|r| r.map(|b| b.index()))));
            Ok(1)
        })
        .unwrap();
    let got = Rc::new(Cell::new(None));
    let g = got.clone();
    let w2 = ex
        .attach(task(), async move {
            let b = fs::claim_buffer().await.map_err(|_| TaskError::Failed(2))?;
            g.set(Some(b.index()));
            Ok(2)
        })
        .unwrap();
    let suspended = |t| matches!(ex.state(t), Ok(TaskState::Suspended(_)));
    run_until(ex, || suspended(w1) && suspended(w2));
    match how {
        Leave::Dropped => {
            drop(slot.borrow_mut().take()); // leaves the queue
            drop(held.borrow_mut().take()); // the release: W2 is the oldest waiter now
            ex.cancel(w1).unwrap(); // wakes W1, which finds its claim gone
        }
        Leave::DroppedWithTurn => {
            drop(held.borrow_mut().take()); // W1 is handed the buffer and woken
            drop(slot.borrow_mut().take()); // before it runs: the turn goes on to W2
        }
        Leave::Cancelled => {
            ex.cancel(w1).unwrap();
            drop(held.borrow_mut().take()); // W1 (cancelled, not yet run) is handed it
        }
    }
    let done = run_for(ex, Duration::from_secs(3));
    assert!(done, "{how:?}: W2 must get the buffer (W2: {:?}, W1: {:?})", ex.state(w2), ex.state(w1));
    assert_eq!(got.get(), Some(0), "{how:?}");
    let want = if how == Leave::Cancelled { Some(Some(Err(BufferError::Cancelled))) } else { Some(None) };
    assert_eq!(w1_out.get(), want, "{how:?}: W1 took nothing");
}

#[test]
fn regbuf_rule_4_a_dropped_waiting_claim_future_leaves_the_queue() {
    if net_util::ring_only("registered buffers") {
        return;
    }
    a_waiting_claim_future_that_leaves_passes_the_buffer_on(Leave::Dropped);
}

#[test]
fn regbuf_rule_4_a_cancelled_waiting_claim_future_leaves_the_queue() {
    if net_util::ring_only("registered buffers") {
        return;
    }
    a_waiting_claim_future_that_leaves_passes_the_buffer_on(Leave::Cancelled);
}

#[test]
fn regbuf_rule_4_a_claim_future_handed_the_buffer_then_dropped_passes_it_on() {
    if net_util::ring_only("registered buffers") {
        return;
    }
    a_waiting_claim_future_that_leaves_passes_the_buffer_on(Leave::DroppedWithTurn);
}

/// A `FixedBuf` carried out of its task and dropped after the executor (and its driver):
/// its bytes stay readable (the set lives in the shared state, regbuf rule 5) and its drop
/// does nothing harmful; a waiting claim future dropped after the executor likewise.
#[test]
fn shared_rule_5_a_fixed_buf_and_a_waiting_claim_outlive_the_executor() {
    if net_util::ring_only("registered buffers") {
        return;
    }
    let ex = one_buffer();
    let kept: Rc<RefCell<Vec<FixedBuf>>> = Rc::new(RefCell::new(Vec::new()));
    let waits: Rc<RefCell<Vec<Pin<Box<fs::ClaimBuffer>>>>> = Rc::new(RefCell::new(Vec::new()));
    let (k, w) = (kept.clone(), waits.clone());
    ex.as_ref()
        .attach(task(), async move {
            let mut b = fs::claim_buffer().await.expect("free");
            b[..4].copy_from_slice(b"kept");
            k.borrow_mut().push(b);
            let mut c = Box::pin(fs::claim_buffer());
            assert!(
                core::future::poll_fn(|cx| Poll::Ready(c.as_mut().poll(cx).is_pending())).await,
                "none free: it waits"
            );
            w.borrow_mut().push(c);
            Ok(0)
        })
        .unwrap();
    assert!(run_for(ex.as_ref(), Duration::from_secs(2)));
    drop(ex);
    let churn: Vec<Vec<u8>> = (0..64).map(|_| vec![0xAAu8; 4096]).collect();
    assert_eq!(&kept.borrow()[0][..4], b"kept", "the buffer's bytes survive the executor");
    drop(churn);
    drop(waits);
    drop(kept);
}

/// A claim future polled in another executor's task than the one it queued in: a typed
/// error, and nothing of that executor's buffers is touched.
#[test]
fn regbuf_rule_1_a_claim_future_polled_on_another_executor_is_refused() {
    if net_util::ring_only("registered buffers") {
        return;
    }
    let a = one_buffer();
    let b = one_buffer();
    type Parked = Rc<RefCell<Option<(Pin<Box<fs::ClaimBuffer>>, FixedBuf)>>>;
    let parked: Parked = Rc::new(RefCell::new(None));
    let p = parked.clone();
    a.as_ref()
        .attach(task(), async move {
            let held = fs::claim_buffer().await.expect("free");
            let mut c = Box::pin(fs::claim_buffer());
            assert!(core::future::poll_fn(|cx| Poll::Ready(c.as_mut().poll(cx).is_pending())).await);
            *p.borrow_mut() = Some((c, held));
            Ok(0)
        })
        .unwrap();
    assert!(run_for(a.as_ref(), Duration::from_secs(2)));
    let out = Rc::new(Cell::new(None));
    let (p, o) = (parked.clone(), out.clone());
    b.as_ref()
        .attach(task(), async move {
            let (mut c, held) = p.borrow_mut().take().unwrap();
            o.set(Some(
                core::future::poll_fn(|cx| {
                    Poll::Ready(match c.as_mut().poll(cx) {
                        Poll::Ready(r) => Some(r.map(|b| b.index())),
                        Poll::Pending => None,
                    })
                })
                .await,
            ));
            let mine = fs::claim_buffer().await.expect("this executor's buffer is free");
            drop((mine, held, c));
            Ok(0)
        })
        .unwrap();
    assert!(run_for(b.as_ref(), Duration::from_secs(2)));
    assert_eq!(out.get(), Some(Some(Err(BufferError::OtherExecutor))));
    // The wait left A's queue when dropped, and A's buffer came back: A can claim it.
    let got = Rc::new(Cell::new(false));
    let g = got.clone();
    a.as_ref()
        .attach(task(), async move {
            let _b = fs::claim_buffer().await.expect("free again");
            g.set(true);
            Ok(0)
        })
        .unwrap();
    assert!(run_for(a.as_ref(), Duration::from_secs(2)));
    assert!(got.get());
}

fn pipe() -> (std::os::fd::RawFd, std::os::fd::RawFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    (fds[0], fds[1])
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

#[test]
fn regbuf_rule_1_future_fixed_reads_and_writes_take_the_buffer_and_give_it_back() {
    if net_util::ring_only("registered buffers") {
        return;
    }
    let path = std::env::temp_dir().join(format!("keel-{}-fixed-futures", std::process::id()));
    let ex = executor(RingConfig { registered_buffers: 2, ..RingConfig::default() });
    let other = one_buffer();
    // A buffer of another executor's ring, carried out of its task.
    let foreign: Rc<RefCell<Option<FixedBuf>>> = Rc::new(RefCell::new(None));
    let fo = foreign.clone();
    other
        .as_ref()
        .attach(task(), async move {
            *fo.borrow_mut() = Some(fs::claim_buffer().await.expect("free"));
            Ok(0)
        })
        .unwrap();
    assert!(run_for(other.as_ref(), Duration::from_secs(2)));
    let out = Rc::new(RefCell::new(Vec::new()));
    let o = out.clone();
    let p = path.to_str().unwrap().to_owned();
    let t = ex
        .as_ref()
        .attach(task(), async move {
            let file = fs::open(&p, OFlags::CREATE | OFlags::RDWR | OFlags::TRUNC, Mode::from_raw_mode(0o600))
                .await
                .expect("open");
            let mut w = fs::claim_buffer().await.expect("free");
            w[..5].copy_from_slice(b"fixed");
            let (r, w) = fs::write_fixed(&file, w, 5, 0).await;
            o.borrow_mut().push(format!("write {r:?}"));
            let mut rb = fs::claim_buffer().await.expect("free");
            rb.fill(0);
            let (r, rb) = fs::read_fixed(&file, rb, 4096, 0).await;
            o.borrow_mut().push(format!("read {r:?} {:?}", std::str::from_utf8(&rb[..5])));
            let (r, rb) = fs::read_fixed(&file, rb, 4097, 0).await;
            o.borrow_mut().push(format!("too long {r:?}"));
            let fb = foreign.borrow_mut().take().unwrap();
            let (r, fb) = fs::read_fixed(&file, fb, 5, 0).await;
            o.borrow_mut().push(format!("foreign read {r:?}"));
            let (r, fb) = fs::write_fixed(&file, fb, 5, 0).await;
            o.borrow_mut().push(format!("foreign write {r:?}"));
            drop((w, rb, fb));
            fs::close(file).await.expect("close");
            Ok(1)
        })
        .unwrap();
    assert!(run_for(ex.as_ref(), Duration::from_secs(5)));
    assert_eq!(ex.as_ref().result(t), Ok(Some(Ok(1))));
    assert_eq!(
        *out.borrow(),
        [
            "write Ok(5)".to_owned(),
            format!("read Ok(5) {:?}", Ok::<&str, std::str::Utf8Error>("fixed")),
            format!("too long {:?}", Err::<u32, _>(keel_core::Errno::EINVAL)),
            format!("foreign read {:?}", Err::<u32, _>(keel_core::Errno(libc::EXDEV))),
            format!("foreign write {:?}", Err::<u32, _>(keel_core::Errno(libc::EXDEV))),
        ]
    );
    let _ = std::fs::remove_file(path);
}

/// A future `read_fixed` of a pipe polled once (the read is in the kernel) and dropped:
/// the buffer is not released while the kernel may still write into it (a claim waits),
/// and is released once the cancelled read's completion is reaped (the claim gets it).
#[test]
fn regbuf_rule_5_a_fixed_read_dropped_in_flight_releases_its_buffer_only_after_the_completion() {
    if net_util::ring_only("registered buffers") {
        return;
    }
    let (rfd, wfd) = pipe();
    let ex = one_buffer();
    let out = Rc::new(RefCell::new(Vec::new()));
    let o = out.clone();
    let t = ex
        .as_ref()
        .attach(task(), async move {
            // SAFETY: the pipe's read end is ours and wrapped once.
            let file = unsafe { fs::File::from_raw_fd(rfd) };
            let b = fs::claim_buffer().await.expect("free");
            let mut r = Box::pin(fs::read_fixed(&file, b, 8, 0));
            for _ in 0..4 {
                let pending = poll_once(&mut r).await.is_none();
                o.borrow_mut().push(format!("read pending {pending}"));
                rt::yield_now().await?; // the read reaches the kernel
            }
            drop(r); // abandoned: cancelled, its slot keeps the buffer
            let mut c = Box::pin(fs::claim_buffer());
            let pending = poll_once(&mut c).await.is_none();
            o.borrow_mut().push(format!("claim pending {pending}"));
            let b = c.await.expect("released at the read's completion");
            o.borrow_mut().push(format!("claimed {}", b.index()));
            Ok(1)
        })
        .unwrap();
    assert!(run_for(ex.as_ref(), Duration::from_secs(3)), "the claim must get the buffer once the read ended");
    assert_eq!(ex.as_ref().result(t), Ok(Some(Ok(1))));
    let mut want = vec!["read pending true".to_owned(); 4];
    want.extend(["claim pending true".to_owned(), "claimed 0".to_owned()]);
    assert_eq!(*out.borrow(), want);
    // SAFETY: our pipe's write end, closed once.
    unsafe { libc::close(wfd) };
}
