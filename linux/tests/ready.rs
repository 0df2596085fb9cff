//! One-shot readiness waits on a real ring (`ready` rules 1-3), fibers and futures alike,
//! on descriptors keel does not own (eventfd, timerfd, pipe): readiness, timeout expiry, a
//! cancel at every point (suspended, and completed with the CQE not reaped yet), a
//! descriptor closed under a waiting poll, a future dropped in flight, moved out of its
//! task or polled on another executor, and an executor without a ring. Streams are in
//! `ready_stream.rs`.

mod net_util;
mod ready_util;

use core::time::Duration;
use keel_core::{Driver, Errno, Fiber};
use keel_linux::RingConfig;
use keel_linux::ready::{self, FiberReady, PollFlags};
use net_util::{Ex, executor, fattrs, run_all, run_until, task};
use ready_util::{Out, bump, efd, in_io, pipe};
use std::cell::RefCell;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;

/// A fiber (`fiber`) or future task that polls `fd` for `events` once and records the
/// result. The caller keeps `fd` open until the task has completed, except where a test
/// closes it under the poll on purpose.
fn poller(
    ex: Pin<&Ex>,
    fiber: bool,
    fd: RawFd,
    events: PollFlags,
    timeout: Option<Duration>,
    out: &Out,
) -> keel_core::TaskHandle {
    let out = out.clone();
    // SAFETY: the caller keeps `fd` open while the task runs (or closes it on purpose to
    // test ready rule 1, which a poll survives: it names no memory).
    let fd = move || unsafe { BorrowedFd::borrow_raw(fd) };
    if fiber {
        ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let r = f.poll(fd(), events, timeout);
            out.borrow_mut().push(r);
            0u64
        })
        .unwrap()
    } else {
        ex.attach(task(), async move {
            let r = ready::poll(fd(), events, timeout).await;
            out.borrow_mut().push(r);
            0u64
        })
        .unwrap()
    }
}

#[test]
fn an_eventfd_written_by_another_thread_wakes_fiber_and_future_polls() {
    for fiber in [true, false] {
        let ex = executor(RingConfig::default());
        let ex = ex.as_ref();
        let out: Out = Rc::default();
        let fd = efd();
        let t = poller(ex, fiber, fd.as_raw_fd(), PollFlags::IN, None, &out);
        run_until(ex, || in_io(ex, t));
        let _ = ex.run(16, Some(Duration::from_millis(10)));
        assert!(out.borrow().is_empty(), "fiber {fiber}: nothing to read yet");
        let raw = fd.try_clone().unwrap();
        std::thread::spawn(move || bump(&raw)).join().unwrap();
        run_all(ex);
        assert_eq!(*out.borrow(), vec![Ok(PollFlags::IN)], "fiber {fiber}");
    }
}

#[test]
fn a_timerfd_and_a_pipe_report_their_readiness() {
    use rustix::time::{Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec};
    for fiber in [true, false] {
        let ex = executor(RingConfig::default());
        let ex = ex.as_ref();
        let out: Out = Rc::default();
        let tfd = Rc::new(rustix::time::timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::CLOEXEC).unwrap());
        let spec = Itimerspec {
            it_interval: Timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: Timespec { tv_sec: 0, tv_nsec: 5_000_000 },
        };
        rustix::time::timerfd_settime(&*tfd, TimerfdTimerFlags::empty(), &spec).unwrap();
        poller(ex, fiber, tfd.as_raw_fd(), PollFlags::IN, Some(Duration::from_secs(30)), &out);
        // A pipe with room to write is writable at once.
        let (r, w) = pipe();
        poller(ex, fiber, w.as_raw_fd(), PollFlags::OUT, None, &out);
        run_all(ex);
        let mut got = out.borrow().clone();
        got.sort_by_key(|r| r.map_or(0, |m| m.bits()));
        assert_eq!(got, vec![Ok(PollFlags::IN), Ok(PollFlags::OUT)], "fiber {fiber}");
        drop(r);
    }
}

#[test]
fn ready_rule_2_a_timeout_that_passes_first_gives_etime() {
    for fiber in [true, false] {
        let ex = executor(RingConfig::default());
        let ex = ex.as_ref();
        let out: Out = Rc::default();
        let (r, _w) = pipe(); // never written
        poller(ex, fiber, r.as_raw_fd(), PollFlags::IN, Some(Duration::from_millis(10)), &out);
        // A zero timeout asks "ready now?": an empty pipe is not.
        poller(ex, fiber, r.as_raw_fd(), PollFlags::IN, Some(Duration::ZERO), &out);
        run_all(ex);
        assert_eq!(*out.borrow(), vec![Err(Errno::ETIME), Err(Errno::ETIME)], "fiber {fiber}");
        // Ready before its deadline: readiness, and the timer is cancelled (nothing left
        // in flight once the task has completed).
        out.borrow_mut().clear();
        let fd = efd();
        bump(&fd);
        poller(ex, fiber, fd.as_raw_fd(), PollFlags::IN, Some(Duration::from_secs(30)), &out);
        poller(ex, fiber, fd.as_raw_fd(), PollFlags::IN, Some(Duration::ZERO), &out);
        run_all(ex);
        assert_eq!(*out.borrow(), vec![Ok(PollFlags::IN), Ok(PollFlags::IN)], "fiber {fiber}");
        assert_eq!(ex.with_driver(|d| d.in_flight()).unwrap(), 0, "fiber {fiber}: the timers were cancelled");
    }
}

#[test]
fn ready_rule_3_a_cancelled_poll_ends_with_ecanceled() {
    for fiber in [true, false] {
        for timeout in [None, Some(Duration::from_secs(30)), Some(Duration::MAX)] {
            let ex = executor(RingConfig::default());
            let ex = ex.as_ref();
            let out: Out = Rc::default();
            let fd = efd();
            let t = poller(ex, fiber, fd.as_raw_fd(), PollFlags::IN, timeout, &out);
            run_until(ex, || in_io(ex, t));
            ex.cancel(t).unwrap();
            run_all(ex);
            assert_eq!(*out.borrow(), vec![Err(Errno::ECANCELED)], "fiber {fiber}, timeout {timeout:?}");
            assert_eq!(ex.with_driver(|d| d.in_flight()).unwrap(), 0);
        }
    }
}

#[test]
fn ready_rule_3_a_cancel_after_the_kernel_completed_the_poll_reports_readiness() {
    const N: usize = 16;
    for fiber in [true, false] {
        let ex = executor(RingConfig::default());
        let ex = ex.as_ref();
        let out: Out = Rc::default();
        let fds: Vec<_> = (0..N).map(|_| efd()).collect();
        let tasks: Vec<_> = fds
            .iter()
            .map(|fd| poller(ex, fiber, fd.as_raw_fd(), PollFlags::IN, Some(Duration::from_secs(30)), &out))
            .collect();
        run_until(ex, || tasks.iter().all(|&t| in_io(ex, t)));
        let _ = ex.run(1024, Some(Duration::from_millis(10)));
        for fd in &fds {
            bump(fd);
        }
        std::thread::sleep(Duration::from_millis(20));
        // One item: the pass's enter posts every completion, the reap takes one.
        let _ = ex.run(1, Some(Duration::from_secs(2)));
        let mut cancelled = 0;
        for &t in &tasks {
            if in_io(ex, t) {
                ex.cancel(t).unwrap();
                cancelled += 1;
            }
        }
        assert!(cancelled > 0, "fiber {fiber}: some completions must be left unreaped for the test to mean anything");
        run_all(ex);
        assert_eq!(*out.borrow(), vec![Ok(PollFlags::IN); N], "fiber {fiber}: {cancelled} cancelled, none lost");
    }
}

#[test]
fn ready_rule_1_a_descriptor_closed_under_a_poll() {
    for fiber in [true, false] {
        let ex = executor(RingConfig::default());
        let ex = ex.as_ref();
        let out: Out = Rc::default();
        // The other end closes: the poll sees HUP.
        let (r, w) = pipe();
        let t = poller(ex, fiber, r.as_raw_fd(), PollFlags::IN, None, &out);
        run_until(ex, || in_io(ex, t));
        drop(w);
        run_all(ex);
        assert_eq!(*out.borrow(), vec![Ok(PollFlags::HUP)], "fiber {fiber}");
        // The polled descriptor itself closes: the kernel holds the file, the poll waits on
        // (no NVAL), and its timeout ends it.
        out.borrow_mut().clear();
        let (r, w) = pipe();
        let raw = Rc::try_unwrap(r).unwrap().into_raw_fd();
        let t = poller(ex, fiber, raw, PollFlags::IN, Some(Duration::from_millis(30)), &out);
        run_until(ex, || in_io(ex, t));
        let _ = ex.run(16, Some(Duration::from_millis(5)));
        // SAFETY: the test owns `raw`; closing it under the poll is the point.
        unsafe { rustix::io::close(raw) };
        run_all(ex);
        assert_eq!(*out.borrow(), vec![Err(Errno::ETIME)], "fiber {fiber}");
        drop(w);
    }
}

#[test]
fn ready_rule_1_a_future_dropped_in_flight_leaves_nothing_behind() {
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let (r, w) = pipe();
    let done = Rc::new(RefCell::new(false));
    let d = done.clone();
    let t = ex
        .attach(task(), async move {
            let mut fut = Box::pin(ready::poll(r.as_fd(), PollFlags::IN, Some(Duration::from_secs(30))));
            // Poll it once: both operations go in, then drop it in flight.
            core::future::poll_fn(|cx| {
                assert!(fut.as_mut().poll(cx).is_pending());
                core::task::Poll::Ready(())
            })
            .await;
            drop(fut);
            drop(r); // closed while its cancelled ops may still be reaped
            *d.borrow_mut() = true;
            0u64
        })
        .unwrap();
    run_all(ex);
    assert!(*done.borrow());
    assert_eq!(ex.result(t), Ok(Some(Ok(0))));
    let _ = ex.run(16, Some(Duration::from_millis(20)));
    assert_eq!(ex.with_driver(|d| d.in_flight()).unwrap(), 0, "the abandoned poll and timer were cancelled");
    drop(w);
}

/// A descriptor that lives for the rest of the test process (for futures kept past their
/// task and executor).
fn leaked_pipe() -> (BorrowedFd<'static>, BorrowedFd<'static>) {
    let (r, w) = std::io::pipe().unwrap();
    let (r, w): (&'static OwnedFd, &'static OwnedFd) =
        (Box::leak(Box::new(OwnedFd::from(r))), Box::leak(Box::new(OwnedFd::from(w))));
    (r.as_fd(), w.as_fd())
}

#[test]
fn a_poll_future_moved_out_of_its_task_and_dropped_after_the_executor_is_harmless() {
    type Kept = Rc<RefCell<Option<Pin<Box<ready::Ready<'static>>>>>>;
    let (r, _w) = leaked_pipe();
    let kept: Kept = Rc::default();
    let k = kept.clone();
    {
        let ex = executor(RingConfig::default());
        let ex = ex.as_ref();
        ex.attach(task(), async move {
            let mut fut = Box::pin(ready::poll(r, PollFlags::IN, Some(Duration::from_secs(30))));
            core::future::poll_fn(|cx| {
                assert!(fut.as_mut().poll(cx).is_pending());
                core::task::Poll::Ready(())
            })
            .await;
            *k.borrow_mut() = Some(fut); // out of the task, its operations in flight
            0u64
        })
        .unwrap();
        run_all(ex);
        assert!(kept.borrow().is_some());
    } // the executor and its driver go first: they cancel and reap what is in flight
    kept.borrow_mut().take(); // then the future: its slots are gone, nothing to touch
}

#[test]
fn a_poll_future_polled_on_another_executor_gets_exdev() {
    type Kept = Rc<RefCell<Option<Pin<Box<ready::Ready<'static>>>>>>;
    let (r, _w) = leaked_pipe();
    let kept: Kept = Rc::default();
    let (a, b) = (executor(RingConfig::default()), executor(RingConfig::default()));
    let k = kept.clone();
    a.as_ref()
        .attach(task(), async move {
            let mut fut = Box::pin(ready::poll(r, PollFlags::IN, None));
            core::future::poll_fn(|cx| {
                assert!(fut.as_mut().poll(cx).is_pending());
                core::task::Poll::Ready(())
            })
            .await;
            *k.borrow_mut() = Some(fut);
            0u64
        })
        .unwrap();
    run_all(a.as_ref());
    let out: Out = Rc::default();
    let (o, k) = (out.clone(), kept.clone());
    b.as_ref()
        .attach(task(), async move {
            let fut = k.borrow_mut().take().unwrap();
            let r = fut.await;
            o.borrow_mut().push(r);
            0u64
        })
        .unwrap();
    run_all(b.as_ref());
    assert_eq!(*out.borrow(), vec![Err(Errno(libc::EXDEV))]);
    drop(a); // the poll it still holds is cancelled with it
}

#[test]
fn a_poll_on_an_executor_without_a_ring_is_einval() {
    use keel_core::{Config, Executor};
    use keel_linux::{MmapStacks, SleepDriver};
    let ex =
        Box::pin(Executor::with_stacks(SleepDriver::new(), MmapStacks::new().unwrap(), Config::default()).unwrap());
    let ex = ex.as_ref();
    let out: Out = Rc::default();
    let fd = efd();
    bump(&fd); // ready: only the missing ring can fail it
    let (o, f2) = (out.clone(), fd.clone());
    ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
        let r = f.poll(f2.as_fd(), PollFlags::IN, Some(Duration::from_millis(1)));
        o.borrow_mut().push(r);
        0u64
    })
    .unwrap();
    let (o, f2) = (out.clone(), fd.clone());
    ex.attach(task(), async move {
        let r = ready::poll(f2.as_fd(), PollFlags::IN, None).await;
        o.borrow_mut().push(r);
        0u64
    })
    .unwrap();
    while ex.attached() > 0 {
        ex.run(16, Some(Duration::from_millis(10))).unwrap();
    }
    assert_eq!(*out.borrow(), vec![Err(Errno::EINVAL), Err(Errno::EINVAL)]);
}

#[test]
fn ready_rule_2_with_one_slot_the_deadline_still_holds() {
    // One slot: the poll takes it, its linked timer takes none (deadline rule 1).
    for fiber in [true, false] {
        let ex = executor(RingConfig { slots: 1, ..RingConfig::default() });
        let ex = ex.as_ref();
        let out: Out = Rc::default();
        let (r, _w) = pipe(); // never written
        poller(ex, fiber, r.as_raw_fd(), PollFlags::IN, Some(Duration::from_millis(20)), &out);
        run_all(ex);
        let fd = efd();
        bump(&fd);
        poller(ex, fiber, fd.as_raw_fd(), PollFlags::IN, Some(Duration::from_millis(20)), &out);
        run_all(ex);
        assert_eq!(*out.borrow(), vec![Err(Errno::ETIME), Ok(PollFlags::IN)], "fiber {fiber}");
    }
}
