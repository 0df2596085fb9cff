//! Deadlines on operations (`deadline` rules 1-4) on a real ring, fibers and futures
//! alike: the deadline wins (a read of an empty pipe), the operation wins (data there), a
//! scope and its nesting, a scope that leaves other tasks alone, a cancel at every point
//! (suspended; both CQEs posted and not reaped), a future dropped in flight and after both
//! CQEs arrived, and no slot left behind.

mod net_util;
mod ready_util;

use core::time::Duration;
use keel_core::{Driver, Errno, Fiber, IoResult};
use keel_linux::RingConfig;
use keel_linux::deadline::{self, Deadline, FiberDeadline, TIMED_OUT};
use keel_linux::fs::{self, FiberFs, File};
use net_util::{Ex, executor, fattrs, run_all, run_until, task};
use ready_util::{in_io, pipe};
use std::cell::RefCell;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;

type Out = Rc<RefCell<Vec<IoResult>>>;

/// The read end of a fresh pipe as a keel `File` (shared by the task and the test) and
/// the write end.
fn pipe_file() -> (Rc<File>, OwnedFd) {
    let (r, w) = pipe();
    let r = Rc::try_unwrap(r).unwrap();
    (Rc::new(File::from(r)), w)
}

fn in_flight(ex: Pin<&Ex>) -> usize {
    ex.with_driver(|d| d.in_flight()).unwrap()
}

/// A task (fiber or future) that reads `file` once inside a deadline scope of `d` and
/// records the result.
fn reader(ex: Pin<&Ex>, fiber: bool, file: &Rc<File>, d: Option<Duration>, out: &Out) -> keel_core::TaskHandle {
    let (file, out) = (file.clone(), out.clone());
    if fiber {
        ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let mut buf = [0u8; 16];
            let r = match d {
                Some(d) => f.within(Deadline::after(d), |f| f.read(&file, &mut buf, 0)),
                None => f.read(&file, &mut buf, 0),
            };
            out.borrow_mut().push(r);
            0u64
        })
        .unwrap()
    } else {
        ex.attach(task(), async move {
            let read = fs::read(&file, Vec::with_capacity(16), 0);
            let (r, _) = match d {
                Some(d) => deadline::within(Deadline::after(d), read).await,
                None => read.await,
            };
            out.borrow_mut().push(r);
            0u64
        })
        .unwrap()
    }
}

#[test]
fn deadline_rule_3_a_read_of_an_empty_pipe_times_out_and_leaves_no_slot() {
    for fiber in [true, false] {
        let ex = executor(RingConfig::default());
        let ex = ex.as_ref();
        let out: Out = Rc::default();
        let (file, _w) = pipe_file();
        let t0 = std::time::Instant::now();
        reader(ex, fiber, &file, Some(Duration::from_millis(20)), &out);
        run_all(ex);
        assert_eq!(*out.borrow(), vec![Err(TIMED_OUT)], "fiber {fiber}");
        assert!(t0.elapsed() >= Duration::from_millis(20), "fiber {fiber}: not before the deadline");
        assert_eq!(in_flight(ex), 0, "fiber {fiber}: the slot was freed after both CQEs");
    }
}

#[test]
fn deadline_rule_3_an_operation_that_completes_first_returns_its_result() {
    for fiber in [true, false] {
        let ex = executor(RingConfig::default());
        let ex = ex.as_ref();
        let out: Out = Rc::default();
        let (file, w) = pipe_file();
        rustix::io::write(&w, b"hello").unwrap();
        reader(ex, fiber, &file, Some(Duration::from_secs(30)), &out);
        run_all(ex);
        assert_eq!(*out.borrow(), vec![Ok(5)], "fiber {fiber}");
        assert_eq!(in_flight(ex), 0, "fiber {fiber}: the timer's ECANCELED was reaped");
    }
}

#[test]
fn deadline_rule_3_data_arriving_before_the_deadline_wins() {
    for fiber in [true, false] {
        let ex = executor(RingConfig::default());
        let ex = ex.as_ref();
        let out: Out = Rc::default();
        let (file, w) = pipe_file();
        let t = reader(ex, fiber, &file, Some(Duration::from_secs(30)), &out);
        run_until(ex, || in_io(ex, t));
        rustix::io::write(&w, b"abc").unwrap();
        run_all(ex);
        assert_eq!(*out.borrow(), vec![Ok(3)], "fiber {fiber}");
        assert_eq!(in_flight(ex), 0);
    }
}

#[test]
fn scope_rule_1_a_scope_leaves_other_tasks_alone_while_its_fiber_waits() {
    for fiber in [true, false] {
        let ex = executor(RingConfig::default());
        let ex = ex.as_ref();
        let (timed, untimed): (Out, Out) = (Rc::default(), Rc::default());
        let (f1, _w1) = pipe_file();
        let (f2, w2) = pipe_file();
        let a = reader(ex, fiber, &f1, Some(Duration::from_millis(30)), &timed);
        run_until(ex, || in_io(ex, a)); // `a` waits inside its scope
        let b = reader(ex, !fiber, &f2, None, &untimed);
        run_until(ex, || !timed.borrow().is_empty());
        assert_eq!(*timed.borrow(), vec![Err(TIMED_OUT)]);
        let _ = ex.run(16, Some(Duration::from_millis(60)));
        assert!(untimed.borrow().is_empty(), "fiber {fiber}: the other task's read took no deadline");
        assert!(in_io(ex, b));
        rustix::io::write(&w2, b"x").unwrap();
        run_all(ex);
        assert_eq!(*untimed.borrow(), vec![Ok(1)]);
    }
}

#[test]
fn scope_rule_2_nested_scopes_take_the_earliest_deadline() {
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let out: Out = Rc::default();
    let (file, _w) = pipe_file();
    let (o, f2) = (out.clone(), file.clone());
    ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
        let mut buf = [0u8; 4];
        let t0 = std::time::Instant::now();
        // The outer deadline is the earlier one: the inner scope cannot lengthen it.
        let r = f.within(Deadline::after(Duration::from_millis(20)), |f| {
            f.within(Deadline::after(Duration::from_secs(60)), |f| f.read(&f2, &mut buf, 0))
        });
        assert!(t0.elapsed() < Duration::from_secs(30));
        o.borrow_mut().push(r);
        // Outside every scope: no deadline (a NOP completes).
        let nop = f.nop();
        o.borrow_mut().push(nop);
        0u64
    })
    .unwrap();
    let fut_out: Out = Rc::default();
    let o = fut_out.clone();
    let f3 = file.clone();
    ex.attach(task(), async move {
        let inner = deadline::within(Deadline::after(Duration::from_secs(60)), fs::read(&f3, vec![0; 4], 0));
        let (r, _) = deadline::within(Deadline::after(Duration::from_millis(20)), inner).await;
        o.borrow_mut().push(r);
        0u64
    })
    .unwrap();
    run_all(ex);
    assert_eq!(*out.borrow(), vec![Err(TIMED_OUT), Ok(0)]);
    assert_eq!(*fut_out.borrow(), vec![Err(TIMED_OUT)]);
}

#[test]
fn deadline_rule_4_a_deadline_in_the_past_times_out_an_operation_that_must_wait() {
    for fiber in [true, false] {
        let ex = executor(RingConfig::default());
        let ex = ex.as_ref();
        let out: Out = Rc::default();
        let (file, _w) = pipe_file();
        reader(ex, fiber, &file, Some(Duration::ZERO), &out);
        run_all(ex);
        assert_eq!(*out.borrow(), vec![Err(TIMED_OUT)], "fiber {fiber}");
        assert_eq!(in_flight(ex), 0);
    }
}

#[test]
fn deadline_rule_2_a_cancelled_task_gets_ecanceled_not_timed_out() {
    for fiber in [true, false] {
        let ex = executor(RingConfig::default());
        let ex = ex.as_ref();
        let out: Out = Rc::default();
        let (file, _w) = pipe_file();
        let t = reader(ex, fiber, &file, Some(Duration::from_secs(60)), &out);
        run_until(ex, || in_io(ex, t));
        ex.cancel(t).unwrap();
        run_all(ex);
        assert_eq!(*out.borrow(), vec![Err(Errno::ECANCELED)], "fiber {fiber}");
        assert_eq!(in_flight(ex), 0, "fiber {fiber}: operation and timer both reaped");
    }
}

#[test]
fn deadline_rule_2_a_cancel_after_both_cqes_arrived_but_before_the_reap_keeps_the_timeout() {
    for fiber in [true, false] {
        // The task must be seen waiting before its deadline passes. A slow run (valgrind
        // takes longer than 5 ms for the first pass) may reap the timer first, so the
        // task is done and never seen waiting: then again with a 4x longer deadline.
        let mut d = Duration::from_millis(5);
        loop {
            let ex = executor(RingConfig::default());
            let ex = ex.as_ref();
            let out: Out = Rc::default();
            let (file, _w) = pipe_file();
            let t = reader(ex, fiber, &file, Some(d), &out);
            run_until(ex, || in_io(ex, t) || !out.borrow().is_empty());
            if !out.borrow().is_empty() {
                assert!(d < Duration::from_secs(1), "fiber {fiber}: the task was never seen waiting for its read");
                d *= 4;
                continue;
            }
            // The executor does not run: the kernel posts both CQEs (the timer fires,
            // the read is cancelled) and nobody reaps them before the task's cancel.
            std::thread::sleep(d * 8);
            ex.cancel(t).unwrap();
            run_all(ex);
            assert_eq!(*out.borrow(), vec![Err(TIMED_OUT)], "fiber {fiber}: the completion is not lost to the cancel");
            assert_eq!(in_flight(ex), 0);
            break;
        }
    }
}

/// A future task that polls a deadline read once (it goes in), blocks the thread until the
/// kernel has posted both CQEs, optionally lets the executor reap them, then drops it.
fn drop_deadline_read(reap_first: bool) {
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let (file, _w) = pipe_file();
    let done = Rc::new(RefCell::new(false));
    let d = done.clone();
    ex.attach(task(), async move {
        let mut f = Box::pin(deadline::within(
            Deadline::after(Duration::from_millis(5)),
            fs::read(&file, Vec::with_capacity(8), 0),
        ));
        let first = core::future::poll_fn(|cx| std::task::Poll::Ready(f.as_mut().poll(cx).is_pending())).await;
        assert!(first, "the read waits");
        std::thread::sleep(Duration::from_millis(40)); // both CQEs posted, not reaped
        if reap_first {
            keel_core::rt::yield_now().await.unwrap(); // the executor reaps both: the slot holds the result
        }
        drop(f);
        *d.borrow_mut() = true;
        0u64
    })
    .unwrap();
    run_all(ex);
    assert!(*done.borrow());
    let _ = ex.run(16, Some(Duration::from_millis(10)));
    assert_eq!(in_flight(ex), 0, "reap_first {reap_first}: no slot left behind");
}

#[test]
fn deadline_rule_2_a_future_dropped_after_both_cqes_before_the_reap_frees_its_slot() {
    drop_deadline_read(false);
}

#[test]
fn deadline_rule_2_a_future_dropped_with_its_result_kept_in_the_slot_frees_it() {
    drop_deadline_read(true);
}

#[test]
fn deadline_rule_2_a_future_dropped_in_flight_frees_its_slot() {
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let (file, _w) = pipe_file();
    ex.attach(task(), async move {
        let f = deadline::within(Deadline::after(Duration::from_secs(60)), fs::read(&file, Vec::with_capacity(8), 0));
        let mut f = Box::pin(f);
        let _ = core::future::poll_fn(|cx| std::task::Poll::Ready(f.as_mut().poll(cx).is_pending())).await;
        keel_core::rt::yield_now().await.unwrap();
        drop(f); // abandoned: cancelled in its slot, the timer ends with it
        0u64
    })
    .unwrap();
    run_all(ex);
    run_until(ex, || in_flight(ex) == 0);
}

#[test]
fn run_op_until_a_nop_completes_first_and_its_timer_is_reaped() {
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let out: Out = Rc::default();
    let o = out.clone();
    ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
        let nop = keel_linux::RingOp::nop();
        o.borrow_mut().push(f.run_op_until(nop, Deadline::after(Duration::from_secs(5))));
        0u64
    })
    .unwrap();
    run_all(ex);
    assert_eq!(*out.borrow(), vec![Ok(0)]);
    assert_eq!(in_flight(ex), 0);
}

#[test]
fn deadline_rule_1_a_one_entry_sq_refuses_a_deadline_op_with_einval() {
    let ex = executor(RingConfig { entries: 1, cq_entries: 2, ..RingConfig::default() });
    let ex = ex.as_ref();
    let sq = ex.with_driver(|d| d.sq_entries()).unwrap();
    if sq >= 2 {
        eprintln!("SKIP: the kernel gave a one-entry request {sq} SQ entries");
        return;
    }
    let out: Out = Rc::default();
    let (file, _w) = pipe_file();
    reader(ex, true, &file, Some(Duration::from_secs(1)), &out);
    run_all(ex);
    assert_eq!(*out.borrow(), vec![Err(Errno::EINVAL)]);
    let _ = file.as_raw_fd();
}

#[test]
fn deadline_on_a_socket_recv_times_out_and_data_then_arrives_for_the_next_recv() {
    use keel_linux::net::{self, FiberNet, Socket};
    for fiber in [true, false] {
        let ex = executor(RingConfig::default());
        let ex = ex.as_ref();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let sock = Rc::new(Socket::from(OwnedFd::from(a)));
        let out: Out = Rc::default();
        let (o, s) = (out.clone(), sock.clone());
        let d = || Deadline::after(Duration::from_millis(20));
        if fiber {
            ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
                let mut buf = [0u8; 8];
                let r = f.within(d(), |f| f.recv(&*s, &mut buf));
                o.borrow_mut().push(r);
                let r = f.within(d(), |f| f.recv(&*s, &mut buf));
                o.borrow_mut().push(r);
                0u64
            })
            .unwrap();
        } else {
            ex.attach(task(), async move {
                let (r, _) = deadline::within(d(), net::future::recv(&*s, Vec::with_capacity(8))).await;
                o.borrow_mut().push(r);
                let (r, _) = deadline::within(d(), net::future::recv(&*s, Vec::with_capacity(8))).await;
                o.borrow_mut().push(r);
                0u64
            })
            .unwrap();
        }
        run_until(ex, || !out.borrow().is_empty());
        std::io::Write::write_all(&mut &b, b"late").unwrap();
        run_all(ex);
        assert_eq!(*out.borrow(), vec![Err(TIMED_OUT), Ok(4)], "fiber {fiber}: no byte lost to the timeout");
        assert_eq!(in_flight(ex), 0);
    }
}

#[test]
fn deadline_rule_3_io_wq_file_reads_return_data_or_timed_out_never_ecanceled() {
    const ROUNDS: u32 = 20;
    use io_uring::{opcode, squeue, types};
    let path = std::env::temp_dir().join(format!("keel-deadline-{}", std::process::id()));
    std::fs::write(&path, vec![7u8; 8 << 20]).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let tally = Rc::new(RefCell::new([0u32; 2])); // [data, timed out]
    let t = tally.clone();
    let fd = file.as_raw_fd();
    ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
        let mut buf = vec![0u8; 8 << 20];
        for _ in 0..ROUNDS {
            // Forced to io-wq, with a deadline already passed: the timer races the worker.
            let e = opcode::Read::new(types::Fd(fd), buf.as_mut_ptr(), buf.len() as u32)
                .offset(0)
                .build()
                .flags(squeue::Flags::ASYNC);
            // SAFETY: `buf` outlives `run_op_until`, which returns after both completions.
            let op = unsafe { keel_linux::RingOp::from_entry(e) };
            match f.run_op_until(op, Deadline::at(keel_linux::monotonic_now())) {
                Ok(n) => {
                    assert_eq!(n as usize, buf.len());
                    assert!(buf.iter().all(|&b| b == 7));
                    t.borrow_mut()[0] += 1;
                }
                Err(e) => {
                    assert_eq!(e, TIMED_OUT, "only the deadline's cancel may end it early");
                    t.borrow_mut()[1] += 1;
                }
            }
            buf.fill(0);
        }
        0u64
    })
    .unwrap();
    run_all(ex);
    let [data, timed_out] = *tally.borrow();
    let stats = ex.with_driver(|d| d.stats()).unwrap();
    eprintln!(
        "io-wq reads with a passed deadline: {data} completed ({} past a timer that could not cancel them), {timed_out} timed out, {} timers fired",
        stats.deadlines_uncancellable, stats.deadlines_fired
    );
    assert_eq!(data + timed_out, ROUNDS);
    assert!(stats.deadlines_fired >= u64::from(timed_out), "each timeout is a fired timer");
    assert!(stats.deadlines_uncancellable <= u64::from(data), "an EALREADY timer leaves the op's result");
    assert_eq!(stats.deadlines_uncancellable + stats.deadlines_fired, u64::from(ROUNDS), "each timer fired");
    assert_eq!(in_flight(ex), 0);
    drop(file);
}

#[test]
fn deadline_rule_2_a_cancel_between_the_ops_cqe_and_its_timers_keeps_the_ops_result() {
    use keel_core::driver::IoToken;
    // The driver alone, reaped one CQE at a time: the executor's run would reap both in
    // one call, leaving no moment between them.
    let mut d = net_util::ring(RingConfig::default());
    let op = keel_linux::RingOp::nop().with_deadline(Deadline::after(Duration::from_secs(60))).unwrap();
    let id = d.submit(op, IoToken::wake(task())).map_err(|(_, e)| e).expect("submitted");
    let got: RefCell<Vec<IoResult>> = RefCell::default();
    let mut sink = |_: IoToken, r: IoResult| got.borrow_mut().push(r);
    let t0 = std::time::Instant::now();
    while d.stats().completed < 1 {
        d.reap(1, &mut sink);
        assert!(t0.elapsed() < Duration::from_secs(10));
    }
    assert_eq!(d.stats().completed, 1, "one CQE reaped");
    assert_eq!(d.in_flight(), 1, "the slot waits for the other CQE");
    assert!(got.borrow().is_empty(), "nobody was told yet");
    d.cancel(id); // the task's cancel, now
    while d.in_flight() > 0 {
        d.reap(16, &mut sink);
        assert!(t0.elapsed() < Duration::from_secs(10));
    }
    assert_eq!(*got.borrow(), vec![Ok(0)], "the completed NOP is not lost to the cancel");
    assert_eq!(d.stats().completed, 2);
    assert_eq!(d.stats().deadlines_fired, 0);
}

#[test]
fn a_status_block_operation_takes_a_deadline_in_a_future_too() {
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let (file, _w) = pipe_file();
    let out: Out = Rc::default();
    let o = out.clone();
    ex.attach(task(), async move {
        use io_uring::{opcode, types};
        let mut buf = [0u8; 8];
        let st = core::pin::pin!(keel_core::IoStatus::new());
        let e = opcode::Read::new(types::Fd(file.as_raw_fd()), buf.as_mut_ptr(), 8).build();
        // SAFETY: `buf` and `st` live in this future until the completion below is taken.
        let op = unsafe { keel_linux::RingOp::from_entry(e) }
            .with_deadline(Deadline::after(Duration::from_millis(10)))
            .unwrap();
        keel_core::initiate::<keel_linux::RingDriver>(st.as_ref(), op).await.unwrap();
        keel_core::suspend_until_completed_io(1).await.unwrap();
        o.borrow_mut().push(st.result().unwrap());
        0u64
    })
    .unwrap();
    run_all(ex);
    assert_eq!(*out.borrow(), vec![Err(TIMED_OUT)]);
    assert_eq!(in_flight(ex), 0);
}

#[test]
fn deadline_rule_2_a_status_block_dropped_between_the_timers_cqe_and_the_ops_is_given_its_end() {
    use keel_core::driver::IoToken;
    // The deadline passed at submission: the timer's ETIME and the read's ECANCELED both
    // come; the status block goes away (retargeted to an orphan token) after the first.
    let (file, _w) = pipe_file();
    let mut d = net_util::ring(RingConfig::default());
    let mut buf = [0u8; 8];
    let e = io_uring::opcode::Read::new(io_uring::types::Fd(file.as_raw_fd()), buf.as_mut_ptr(), 8).build();
    // SAFETY: `buf` outlives the driver's reaping below, which ends with the operation.
    let op = unsafe { keel_linux::RingOp::from_entry(e) };
    let op = op.with_deadline(Deadline::at(keel_linux::monotonic_now())).unwrap();
    let (first, later) = (IoToken::wake(task()), IoToken::wake(task()));
    let id = d.submit(op, first).map_err(|(_, e)| e).expect("submitted");
    let got: RefCell<Vec<(IoToken, IoResult)>> = RefCell::default();
    let mut sink = |t: IoToken, r: IoResult| got.borrow_mut().push((t, r));
    let t0 = std::time::Instant::now();
    while d.stats().completed < 1 {
        d.reap(1, &mut sink);
        assert!(t0.elapsed() < Duration::from_secs(10));
    }
    assert_eq!(d.in_flight(), 1, "one of the two CQEs is still due");
    d.retarget(id, later);
    while d.in_flight() > 0 {
        d.reap(1, &mut sink);
        assert!(t0.elapsed() < Duration::from_secs(10));
    }
    assert_eq!(*got.borrow(), vec![(later, Err(TIMED_OUT))], "told once, to whoever holds it now");
    assert_eq!(d.stats().deadlines_fired, 1);
}

#[test]
fn deadline_rule_1_a_linked_chain_keeps_its_order_with_a_deadline_on_each_link() {
    use keel_core::driver::IoToken;
    use std::io::{Read, Write};
    // send (linked) -> its timer -> recv -> its timer: the chain goes on past the send's
    // timer, and the recv waits for the send.
    let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut d = net_util::ring(RingConfig::default());
    let (out, mut inb) = (*b"ping", [0u8; 8]);
    let far = Deadline::after(Duration::from_secs(30));
    let send = io_uring::opcode::Send::new(io_uring::types::Fd(a.as_raw_fd()), out.as_ptr(), 4).build();
    let recv = io_uring::opcode::Recv::new(io_uring::types::Fd(a.as_raw_fd()), inb.as_mut_ptr(), 8).build();
    // SAFETY: `out` and `inb` outlive the reaping below, which ends with both operations.
    let (send, recv) = unsafe { (keel_linux::RingOp::from_entry(send), keel_linux::RingOp::from_entry(recv)) };
    let (ts, tr) = (IoToken::wake(task()), IoToken::wake(task()));
    d.submit(send.linked().with_deadline(far).unwrap(), ts).map_err(|(_, e)| e).unwrap();
    d.submit(recv.with_deadline(far).unwrap(), tr).map_err(|(_, e)| e).unwrap();
    let got: RefCell<Vec<(IoToken, IoResult)>> = RefCell::default();
    let mut sink = |t: IoToken, r: IoResult| got.borrow_mut().push((t, r));
    let t0 = std::time::Instant::now();
    while got.borrow().is_empty() {
        d.reap(16, &mut sink);
        assert!(t0.elapsed() < Duration::from_secs(10));
    }
    let mut ping = [0u8; 4];
    b.read_exact(&mut ping).unwrap();
    assert_eq!(&ping, b"ping");
    b.write_all(b"pong").unwrap();
    while d.in_flight() > 0 {
        d.reap(16, &mut sink);
        assert!(t0.elapsed() < Duration::from_secs(10));
    }
    assert_eq!(*got.borrow(), vec![(ts, Ok(4)), (tr, Ok(4))]);
    assert_eq!(&inb[..4], b"pong");
    assert_eq!(d.stats().deadlines_fired, 0);
}

/// A fiber that initiates a linked pair, the second with a far deadline, and records
/// either both results or the refusal's reason.
fn pair_with_deadline(ex: Pin<&Ex>, out: &Out) {
    let o = out.clone();
    ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
        let (s1, s2) = (core::pin::pin!(keel_core::IoStatus::new()), core::pin::pin!(keel_core::IoStatus::new()));
        let second = keel_linux::RingOp::nop().with_deadline(Deadline::after(Duration::from_secs(60))).unwrap();
        let first = keel_linux::RingOp::nop().linked();
        match f.initiate_pair::<keel_linux::RingDriver>((s1.as_ref(), first), (s2.as_ref(), second)) {
            Ok(()) => {
                while s1.is_in_flight() || s2.is_in_flight() {
                    f.wait_io();
                }
                o.borrow_mut().push(s1.result().unwrap());
                o.borrow_mut().push(s2.result().unwrap());
            }
            Err(refused) => o.borrow_mut().push(match refused.reason {
                keel_core::InitiateError::Refused((), e) => Err(e),
                _ => Err(Errno::EIO),
            }),
        }
        0u64
    })
    .unwrap();
}

#[test]
fn deadline_rule_1_a_linked_pair_whose_second_has_a_deadline_goes_in_whole_or_is_refused() {
    // A ring with room: both go in, the chain and the deadline hold.
    let ex = executor(RingConfig::default());
    let out: Out = Rc::default();
    pair_with_deadline(ex.as_ref(), &out);
    run_all(ex.as_ref());
    assert_eq!(*out.borrow(), vec![Ok(0), Ok(0)]);
    // An SQ of two entries cannot hold the head with room for a successor and its timer:
    // the pair is refused as a whole (never a second refused after the first went in).
    let ex = executor(RingConfig { entries: 2, cq_entries: 8, ..RingConfig::default() });
    let sq = ex.as_ref().with_driver(|d| d.sq_entries()).unwrap();
    // One pass first: the driver's own unpark read (an eventfd read on the epoll backend,
    // or where MSG_RING is missing) leaves the SQ, so the pair meets an empty SQ.
    let _ = ex.as_ref().run(1, Some(Duration::from_millis(1)));
    let out: Out = Rc::default();
    pair_with_deadline(ex.as_ref(), &out);
    run_all(ex.as_ref());
    if sq < 4 {
        assert_eq!(*out.borrow(), vec![Err(Errno::EINVAL)], "an SQ of {sq}");
    } else {
        assert_eq!(*out.borrow(), vec![Ok(0), Ok(0)], "an SQ of {sq}");
    }
}
