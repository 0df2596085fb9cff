//! liburing's `pipe-eof.c`: reads waiting on an empty pipe whose writer then closes
//! complete with 0 (end of file) instead of waiting for more data: here eight at once,
//! fibers and futures on one executor, all on the same pipe, so every waiter of one
//! descriptor is woken by the one hang-up. Also a zero-length read of an empty pipe,
//! which the kernel answers with 0 at once, also after the epoll engine has seen the pipe
//! empty. Each read bounded by a deadline (a waiter never woken is `TIMED_OUT`), on the
//! `Auto` backend (`KEEL_DRIVER=epoll`: the epoll engine).

#[path = "net_util/mod.rs"]
mod util;

use core::time::Duration;
use keel_core::{Errno, Fiber, rt};
use keel_linux::RingConfig;
use keel_linux::deadline::{self, Deadline, FiberDeadline, TIMED_OUT};
use keel_linux::fs::{self, FiberFs, File};
use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use util::{executor, fattrs, run_all, task};

/// What each reader (by number) got.
type Got = Rc<RefCell<Vec<(usize, Result<u32, Errno>)>>>;

fn bound(ms: u64) -> Deadline {
    Deadline::after(Duration::from_millis(ms))
}

#[test]
fn reads_waiting_on_a_pipe_whose_writer_closes_all_end_with_eof() {
    let (r, w) = std::io::pipe().unwrap();
    let file = Rc::new(File::from(OwnedFd::from(r)));
    let got: Got = Rc::default();
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    for k in 0..8 {
        let (f1, g) = (file.clone(), got.clone());
        if k % 2 == 0 {
            ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
                let mut buf = [0u8; 16];
                let r = f.within(bound(5000), |f| f.read(&f1, &mut buf, 0));
                g.borrow_mut().push((k, r));
                0u64
            })
            .unwrap();
        } else {
            ex.attach(task(), async move {
                let (r, _) = deadline::within(bound(5000), fs::read(&f1, Vec::with_capacity(16), 0)).await;
                g.borrow_mut().push((k, r));
                0u64
            })
            .unwrap();
        }
    }
    let mut w = Some(w);
    ex.attach(task(), async move {
        rt::sleep(Duration::from_millis(30)).await.unwrap();
        drop(w.take()); // the writer closes: end of file for every reader
        0u64
    })
    .unwrap();
    run_all(ex);
    let mut got = got.take();
    got.sort_by_key(|g| g.0);
    let want: Vec<_> = (0..8).map(|k| (k, Ok(0))).collect();
    assert_eq!(got, want, "every waiting read ends with end of file (TIMED_OUT {TIMED_OUT:?}: one was never woken)");
}

#[test]
fn a_zero_length_read_of_an_empty_pipe_is_0_at_once_even_after_one_timed_out() {
    for fiber in [true, false] {
        let (r, _w) = std::io::pipe().unwrap();
        let file = Rc::new(File::from(OwnedFd::from(r)));
        let got: Rc<RefCell<Vec<Result<u32, Errno>>>> = Rc::default();
        let g = got.clone();
        let ex = executor(RingConfig::default());
        let ex = ex.as_ref();
        if fiber {
            ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
                let mut buf = [0u8; 8];
                let a = f.within(bound(50), |f| f.read(&file, &mut buf, 0));
                let b = f.within(bound(5000), |f| f.read(&file, &mut buf[..0], 0));
                g.borrow_mut().extend([a, b]);
                0u64
            })
            .unwrap();
        } else {
            ex.attach(task(), async move {
                let (a, _) = deadline::within(bound(50), fs::read(&file, Vec::with_capacity(8), 0)).await;
                let (b, _) = deadline::within(bound(5000), fs::read(&file, Vec::new(), 0)).await;
                g.borrow_mut().extend([a, b]);
                0u64
            })
            .unwrap();
        }
        run_all(ex);
        assert_eq!(got.take(), vec![Err(TIMED_OUT), Ok(0)], "fiber {fiber}");
    }
}
