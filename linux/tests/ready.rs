//! Readiness waits on a real ring (`ready` rules 1-4), fibers and futures alike, on
//! descriptors keel does not own (eventfd, timerfd, pipe): readiness, timeout expiry, a
//! cancel at every point (suspended, and completed with the CQE not reaped yet), a
//! descriptor closed under a waiting poll, a future dropped in flight, and multishot
//! streams.

mod net_util;

use core::time::Duration;
use keel_core::{Driver, Errno, Fiber, SuspendReason, TaskState};
use keel_linux::RingConfig;
use keel_linux::ready::{self, FiberReady, PollFlags};
use net_util::{Ex, executor, fattrs, run_all, run_until, task};
use rustix::event::{EventfdFlags, eventfd};
use std::cell::RefCell;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;

type Out = Rc<RefCell<Vec<Result<PollFlags, Errno>>>>;

fn efd() -> Rc<OwnedFd> {
    Rc::new(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).unwrap())
}

fn bump(fd: &OwnedFd) {
    rustix::io::write(fd, &1u64.to_ne_bytes()).unwrap();
}

fn drain(fd: &OwnedFd) {
    let mut b = [0u8; 8];
    let _ = rustix::io::read(fd, &mut b);
}

fn pipe() -> (Rc<OwnedFd>, OwnedFd) {
    let (r, w) = std::io::pipe().unwrap();
    (Rc::new(OwnedFd::from(r)), OwnedFd::from(w))
}

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

/// Open descriptors of this process (each test runs in a process of its own).
fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn in_io(ex: Pin<&Ex>, t: keel_core::TaskHandle) -> bool {
    ex.state(t) == Ok(TaskState::Suspended(SuspendReason::Io))
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

#[test]
fn ready_rule_4_a_multishot_stream_reports_each_wake_up() {
    const EVENTS: usize = 3;
    for fiber in [true, false] {
        let ex = executor(RingConfig::default());
        let ex = ex.as_ref();
        let out: Out = Rc::default();
        let fd = efd();
        let before = fd_count();
        let (o, f2) = (out.clone(), fd.clone());
        let t = if fiber {
            ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
                let mut m = f.poll_multi(f2.as_fd(), PollFlags::IN).unwrap();
                drop(f2); // the stream owns a duplicate
                for _ in 0..EVENTS {
                    let r = f.next_ready(&mut m, None);
                    o.borrow_mut().push(r);
                }
                0u64
            })
            .unwrap()
        } else {
            ex.attach(task(), async move {
                let mut m = ready::poll_multi(f2.as_fd(), PollFlags::IN).unwrap();
                drop(f2);
                for _ in 0..EVENTS {
                    let r = ready::next_ready(&mut m, None).await;
                    o.borrow_mut().push(r);
                }
                0u64
            })
            .unwrap()
        };
        for i in 0..EVENTS {
            run_until(ex, || in_io(ex, t) && out.borrow().len() == i);
            bump(&fd);
            run_until(ex, || out.borrow().len() == i + 1 || ex.attached() == 0);
            drain(&fd);
        }
        run_all(ex);
        assert_eq!(*out.borrow(), vec![Ok(PollFlags::IN); EVENTS], "fiber {fiber}");
        run_until(ex, || ex.with_driver(|d| d.in_flight()).unwrap() == 0); // the dropped stream's cancel
        assert_eq!(fd_count(), before, "fiber {fiber}: the stream's duplicate was closed");
    }
}

#[test]
fn ready_rule_4_a_cancelled_stream_waiter_ends_with_ecanceled() {
    for fiber in [true, false] {
        let ex = executor(RingConfig::default());
        let ex = ex.as_ref();
        let out: Out = Rc::default();
        let fd = efd();
        let (o, f2) = (out.clone(), fd.clone());
        let t = if fiber {
            ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
                let mut m = f.poll_multi(f2.as_fd(), PollFlags::IN).unwrap();
                let r = f.next_ready(&mut m, None);
                o.borrow_mut().push(r);
                0u64
            })
            .unwrap()
        } else {
            ex.attach(task(), async move {
                let mut m = ready::poll_multi(f2.as_fd(), PollFlags::IN).unwrap();
                let r = ready::next_ready(&mut m, None).await;
                o.borrow_mut().push(r);
                0u64
            })
            .unwrap()
        };
        run_until(ex, || in_io(ex, t));
        ex.cancel(t).unwrap();
        run_all(ex);
        assert_eq!(*out.borrow(), vec![Err(Errno::ECANCELED)], "fiber {fiber}");
    }
}

#[test]
fn a_stream_of_another_kind_is_einval() {
    for fiber in [true, false] {
        let ex = executor(RingConfig::default());
        let ex = ex.as_ref();
        let out: Out = Rc::default();
        let o = out.clone();
        let (l, _) = net_util::listen(ex, "127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into());
        // SAFETY: the listener's descriptor is this test's alone.
        let s = unsafe { keel_linux::net::Socket::from_raw_fd(l) };
        if fiber {
            ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
                use keel_linux::net::FiberNet;
                let mut m = f.accept_multi(&s);
                let r = f.next_ready(&mut m, None);
                o.borrow_mut().push(r);
                0u64
            })
            .unwrap();
        } else {
            ex.attach(task(), async move {
                let mut m = keel_linux::net::future::accept_multi(&s);
                let r = ready::next_ready(&mut m, None).await;
                o.borrow_mut().push(r);
                0u64
            })
            .unwrap();
        }
        run_all(ex);
        assert_eq!(*out.borrow(), vec![Err(Errno::EINVAL)], "fiber {fiber}");
    }
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
fn ready_rule_4_a_stream_cancelled_after_the_kernel_posted_an_event_reports_it() {
    const N: usize = 16;
    for fiber in [true, false] {
        let ex = executor(RingConfig::default());
        let ex = ex.as_ref();
        let out: Out = Rc::default();
        let fds: Vec<_> = (0..N).map(|_| efd()).collect();
        let tasks: Vec<_> = fds
            .iter()
            .map(|fd| {
                let (o, f2) = (out.clone(), fd.clone());
                if fiber {
                    ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
                        let mut m = f.poll_multi(f2.as_fd(), PollFlags::IN).unwrap();
                        let r = f.next_ready(&mut m, None);
                        o.borrow_mut().push(r);
                        0u64
                    })
                    .unwrap()
                } else {
                    ex.attach(task(), async move {
                        let mut m = ready::poll_multi(f2.as_fd(), PollFlags::IN).unwrap();
                        let r = ready::next_ready(&mut m, None).await;
                        o.borrow_mut().push(r);
                        0u64
                    })
                    .unwrap()
                }
            })
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
        assert!(cancelled > 0, "fiber {fiber}: some events must be left unreaped for the test to mean anything");
        run_all(ex);
        assert_eq!(*out.borrow(), vec![Ok(PollFlags::IN); N], "fiber {fiber}: {cancelled} cancelled, none lost");
    }
}

#[test]
fn ready_rule_4_a_stream_wait_with_a_timeout_gives_etime_and_the_stream_goes_on() {
    for fiber in [true, false] {
        let ex = executor(RingConfig::default());
        let ex = ex.as_ref();
        let out: Out = Rc::default();
        let fd = efd();
        let (o, f2) = (out.clone(), fd.clone());
        let ms = Some(Duration::from_millis(10));
        let long = Some(Duration::from_secs(30));
        let t = if fiber {
            ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
                let mut m = f.poll_multi(f2.as_fd(), PollFlags::IN).unwrap();
                for timeout in [ms, ms, long] {
                    let r = f.next_ready(&mut m, timeout);
                    o.borrow_mut().push(r);
                }
                0u64
            })
            .unwrap()
        } else {
            ex.attach(task(), async move {
                let mut m = ready::poll_multi(f2.as_fd(), PollFlags::IN).unwrap();
                for timeout in [ms, ms, long] {
                    let r = ready::next_ready(&mut m, timeout).await;
                    o.borrow_mut().push(r);
                }
                0u64
            })
            .unwrap()
        };
        // Two waits time out; the third gets the event written after them, before its timeout.
        run_until(ex, || out.borrow().len() == 2 && in_io(ex, t));
        bump(&fd);
        run_all(ex);
        assert_eq!(*out.borrow(), vec![Err(Errno::ETIME), Err(Errno::ETIME), Ok(PollFlags::IN)], "fiber {fiber}");
        // The 30 s timer was cancelled, not left to run out (nor the dropped stream).
        for _ in 0..100 {
            if ex.with_driver(|d| d.in_flight()).unwrap() == 0 {
                break;
            }
            let _ = ex.run(16, Some(Duration::from_millis(10)));
        }
        assert_eq!(ex.with_driver(|d| d.in_flight()).unwrap(), 0, "fiber {fiber}");
    }
}
