//! Readiness streams on a real ring (`ready` rule 4), fibers and futures alike: one event
//! per wake-up, the stream's own duplicate closed when it goes, a cancel while waiting
//! (also after the kernel posted an event), a wait with a timeout, and a stream of
//! another kind refused.

mod net_util;
mod ready_util;

use core::time::Duration;
use keel_core::{Driver, Errno, Fiber};
use keel_linux::RingConfig;
use keel_linux::ready::{self, FiberReady, PollFlags};
use net_util::{executor, fattrs, run_all, run_until, task};
use ready_util::{Out, bump, drain, efd, fd_count, in_io};
use std::os::fd::AsFd;
use std::rc::Rc;

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
