//! liburing's `evfd-short-read.c` and `timerfd-short-read.c`: a read of an eventfd or a
//! timerfd asking for more than its 8 bytes waits for the event and completes with the 8
//! it has (a short read of an anonymous inode is a result, not a reason to retry), and a
//! read asking for fewer than 8 is `EINVAL` at once: also after the epoll engine has seen
//! the descriptor not ready (readiness rule 3 would have it wait for readiness first; the
//! kernel refuses the short buffer whatever the count). Fibers and futures, each bounded
//! by a deadline (a wait that never ends is `TIMED_OUT`), on the `Auto` backend
//! (`KEEL_DRIVER=epoll`: the epoll engine).

#[path = "net_util/mod.rs"]
mod util;

use core::time::Duration;
use keel_core::{Errno, Fiber, rt};
use keel_linux::RingConfig;
use keel_linux::deadline::{self, Deadline, FiberDeadline, TIMED_OUT};
use keel_linux::fs::{self, FiberFs, File};
use rustix::event::{EventfdFlags, eventfd};
use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create, timerfd_settime,
};
use std::cell::RefCell;
use std::rc::Rc;
use util::{executor, fattrs, run_all, task};

type Got = Rc<RefCell<Vec<(Result<u32, Errno>, Vec<u8>)>>>;

fn bound(ms: u64) -> Deadline {
    Deadline::after(Duration::from_millis(ms))
}

/// Reads of `len` bytes of `file`, in order, each within its deadline (ms), as a fiber or
/// a future; what each gave.
fn reads(
    file: Rc<File>,
    fiber: bool,
    plan: Vec<(usize, u64)>,
    also: impl FnOnce(core::pin::Pin<&util::Ex>),
) -> Vec<(Result<u32, Errno>, Vec<u8>)> {
    let got: Got = Rc::default();
    let g = got.clone();
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    if fiber {
        ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            for (len, ms) in plan {
                let mut buf = vec![0u8; len];
                let r = f.within(bound(ms), |f| f.read(&file, &mut buf, 0));
                buf.truncate(*r.as_ref().unwrap_or(&0) as usize);
                g.borrow_mut().push((r, buf));
            }
            0u64
        })
        .unwrap();
    } else {
        ex.attach(task(), async move {
            for (len, ms) in plan {
                let (r, buf) = deadline::within(bound(ms), fs::read(&file, Vec::with_capacity(len), 0)).await;
                g.borrow_mut().push((r, buf));
            }
            0u64
        })
        .unwrap();
    }
    also(ex);
    run_all(ex);
    got.take()
}

#[test]
fn an_eventfd_read_of_16_bytes_waits_and_gives_the_8_it_has() {
    for fiber in [true, false] {
        let efd = Rc::new(File::from(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).unwrap()));
        let w = efd.clone();
        let got = reads(efd, fiber, vec![(16, 5000)], move |ex| {
            ex.attach(task(), async move {
                rt::sleep(Duration::from_millis(20)).await.unwrap();
                rustix::io::write(&*w, &7u64.to_ne_bytes()).unwrap();
                0u64
            })
            .unwrap();
        });
        assert_eq!(got, vec![(Ok(8), 7u64.to_ne_bytes().to_vec())], "fiber {fiber} (TIMED_OUT {TIMED_OUT:?})");
    }
}

#[test]
fn an_eventfd_read_of_4_bytes_is_einval_at_once_even_after_one_timed_out() {
    for fiber in [true, false] {
        let efd = Rc::new(File::from(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).unwrap()));
        // An 8-byte read that times out first (the engine then knows the eventfd empty),
        // then the short one: it must not wait for a write that never comes.
        let got = reads(efd, fiber, vec![(8, 50), (4, 5000)], |_| {});
        assert_eq!(got.len(), 2, "fiber {fiber}");
        assert_eq!(got[0].0, Err(TIMED_OUT), "fiber {fiber}: nothing was written");
        assert_eq!(got[1].0, Err(Errno::EINVAL), "fiber {fiber}: a 4-byte read (TIMED_OUT: it waited)");
    }
}

#[test]
fn a_timerfd_read_of_16_bytes_waits_for_the_expiry_and_gives_8() {
    for fiber in [true, false] {
        let tfd = timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK).unwrap();
        let spec = Itimerspec {
            it_interval: Timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: Timespec { tv_sec: 0, tv_nsec: 20_000_000 },
        };
        timerfd_settime(&tfd, TimerfdTimerFlags::empty(), &spec).unwrap();
        let got = reads(Rc::new(File::from(tfd)), fiber, vec![(16, 5000), (4, 5000)], |_| {});
        assert_eq!(got.len(), 2, "fiber {fiber}");
        assert_eq!(got[0].0, Ok(8), "fiber {fiber}: one expiry count");
        assert_eq!(u64::from_ne_bytes(got[0].1[..8].try_into().unwrap()), 1, "fiber {fiber}: one expiry");
        assert_eq!(got[1].0, Err(Errno::EINVAL), "fiber {fiber}: a 4-byte read of the spent timer");
    }
}
