//! A TIMEOUT's or LINK_TIMEOUT's timespec is the kernel's once the SQE is submitted
//! (io_uring copies it at prep): a caller may change or reuse its own copy afterwards,
//! even while the timer waits in a link chain for its turn. The epoll engine copies it
//! when it takes the SQE (op rule 5 in `epoll/engine/ops.rs`). Each case runs on the
//! `Auto` backend and on the epoll engine: the same task code, two drivers.

#[path = "net_util/mod.rs"]
mod net_util;

use core::pin::pin;
use core::time::Duration;
use io_uring::{opcode, types};
use keel_core::{Config, Errno, Executor, Fiber, FiberAttrs, IoStatus};
use keel_linux::{BackendChoice, MmapStacks, RingConfig, RingDriver, RingOp};
use net_util::{Ex, run_all, task};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;

fn executor(backend: BackendChoice) -> Pin<Box<Ex>> {
    let d = RingDriver::new(RingConfig { backend, ..RingConfig::default() }).expect("a driver");
    Box::pin(Executor::with_stacks(d, MmapStacks::new().unwrap(), Config::default()).unwrap())
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let (r, w) = std::io::pipe().unwrap();
    (r.into(), w.into())
}

/// What the chain's operations completed with, in chain order.
type Results = Vec<Result<u32, Errno>>;

/// Runs a chain on `backend`: a read of an empty pipe, linked to the operations `rest`
/// builds from a timespec of 20 ms; once the chain is submitted, the timespec is made
/// invalid (nanoseconds past a second), then the pipe gets a byte so the rest starts.
fn chain(backend: BackendChoice, rest: fn(*const types::Timespec, RawFd) -> Vec<RingOp>) -> Results {
    let ex = executor(backend);
    let ex = ex.as_ref();
    let t = ex
        .attach_fiber(task(), FiberAttrs::default(), move |f: &mut Fiber| {
            let (r, w) = pipe();
            let (r2, _w2) = pipe();
            let mut ts = Box::new(types::Timespec::new().nsec(20_000_000));
            let mut buf = [0u8; 1];
            let read = opcode::Read::new(types::Fd(r.as_raw_fd()), buf.as_mut_ptr(), 1).build();
            // SAFETY: `buf` outlives the chain (the fiber waits for every completion below).
            let mut ops = vec![unsafe { RingOp::from_entry(read) }.linked()];
            ops.extend(rest(&*ts, r2.as_raw_fd()));
            let sts: [_; 3] = core::array::from_fn(|_| IoStatus::new());
            let sts = pin!(sts);
            // SAFETY: a projection to an element of the pinned array, itself never moved.
            let st = |i: usize| unsafe { sts.as_ref().map_unchecked(|a| &a[i]) };
            let n = ops.len();
            for (i, op) in ops.into_iter().enumerate() {
                assert!(f.initiate::<RingDriver>(st(i), op).is_ok(), "submitted");
            }
            f.sleep(Duration::from_millis(5)).unwrap(); // the executor enters: submitted
            // Nanoseconds past a second: the kernel would refuse it with EINVAL at prep.
            *ts = types::Timespec::new().nsec(2_000_000_000);
            // SAFETY: our pipe's write end, one byte.
            assert_eq!(unsafe { libc::write(w.as_raw_fd(), b"x".as_ptr().cast(), 1) }, 1);
            while (0..n).any(|i| st(i).is_in_flight()) {
                f.wait_io();
            }
            let out: Results = (0..n).map(|i| st(i).result().unwrap()).collect();
            drop(ts);
            RESULTS.with(|c| *c.borrow_mut() = out);
            1u64
        })
        .unwrap();
    run_all(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))), "{backend:?}");
    RESULTS.with(|c| c.take())
}

thread_local! {
    static RESULTS: std::cell::RefCell<Results> = const { std::cell::RefCell::new(Vec::new()) };
}

/// read -> TIMEOUT: the timer starts after the read, with the 20 ms it was submitted with.
#[test]
fn a_chained_timeout_fires_with_the_timespec_it_was_submitted_with() {
    for backend in [BackendChoice::Auto, BackendChoice::Epoll] {
        let got = chain(backend, |ts, _| {
            // SAFETY: `ts` outlives the chain (`chain` keeps it until every completion).
            vec![unsafe { RingOp::from_entry(opcode::Timeout::new(ts).build()) }]
        });
        assert_eq!(got, vec![Ok(1), Err(Errno::ETIME)], "{backend:?}");
    }
}

/// read -> read of an empty pipe with a LINK_TIMEOUT: the timer is armed when the second
/// read starts, with the 20 ms it was submitted with, and cancels it.
#[test]
fn a_link_timeout_armed_late_in_a_chain_uses_the_timespec_it_was_submitted_with() {
    for backend in [BackendChoice::Auto, BackendChoice::Epoll] {
        let got = chain(backend, |ts, empty| {
            static mut SINK: [u8; 1] = [0];
            let read = opcode::Read::new(types::Fd(empty), (&raw mut SINK).cast(), 1).build();
            // SAFETY: `SINK` is static; `ts` outlives the chain (`chain` keeps it until every
            // completion).
            unsafe { vec![RingOp::from_entry(read).linked(), RingOp::from_entry(opcode::LinkTimeout::new(ts).build())] }
        });
        assert_eq!(got, vec![Ok(1), Err(Errno::ECANCELED), Err(Errno::ETIME)], "{backend:?}");
    }
}
