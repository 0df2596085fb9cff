//! Cancellation races on a real ring: a cancelled or dropped waiter
//! never swallows the wake meant for the next one (registered and provided buffers,
//! fibers and futures, one-shot and multishot); a cancel that loses the race to a
//! completion already in the CQ, or that reaches a task woken by its completion and not yet
//! run again, reports that completion (bytes, descriptors); a
//! registered buffer is usable only by the holder of its claim (another ring's is
//! refused); and more cancels than
//! the driver's cancel queue holds all take effect.

mod net_util;

use core::pin::pin;
use core::task::Poll;
use core::time::Duration;
use keel_core::{Errno, Fiber, IoStatus, SuspendReason, TaskHandle, TaskState, rt};
use keel_linux::fs::{self, BufferError, FiberFs, File, Mode, OFlags};
use keel_linux::net::{self, FiberNet, Socket};
use keel_linux::{RingConfig, RingOp};
use net_util::{Ex, executor, executor_with, fattrs, ring, run_until, task};
use std::cell::{Cell, RefCell};
use std::io::Write;
use std::os::fd::RawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::pin::Pin;
use std::rc::Rc;

/// Runs until no task is attached or `limit` passed (a stranded task shows as `false`).
fn run_for(ex: Pin<&Ex>, limit: Duration) -> bool {
    let t0 = std::time::Instant::now();
    while ex.attached() > 0 && t0.elapsed() < limit {
        let _ = ex.run(1024, Some(Duration::from_millis(20)));
    }
    ex.attached() == 0
}

/// A connected pair: the keel side and the std peer.
fn pair() -> (Socket, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    (Socket::from(std::os::fd::OwnedFd::from(a)), b)
}

fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    (fds[0], fds[1])
}

/// Waits (yielding) until `flag` is set.
async fn until(flag: Rc<Cell<bool>>) {
    while !flag.get() {
        let _ = rt::yield_now().await;
    }
}

fn yield_until(f: &mut Fiber, flag: &Cell<bool>) {
    while !flag.get() {
        let _ = f.yield_now();
    }
}

// ---- registered buffers (regbuf rules 3-4, waitq rule 3) ----

#[test]
fn regbuf_rule_4_a_cancelled_claim_waiter_passes_the_released_buffer_to_the_next_waiter() {
    if net_util::ring_only("registered buffers") {
        return;
    }
    // Fails before the waiter queue had tickets: W1's stale entry took the release's wake
    // and W2 stayed Suspended(Wait) with the buffer free.
    let ex = executor(RingConfig { registered_buffers: 1, ..RingConfig::default() });
    let ex = ex.as_ref();
    let (release, got) = (Rc::new(Cell::new(false)), Rc::new(Cell::new(None)));
    let (rel, g) = (release.clone(), got.clone());
    ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
        let b = f.claim_buffer().unwrap();
        yield_until(f, &rel);
        f.release_buffer(b);
        Ok(0)
    })
    .unwrap();
    let w1_out = Rc::new(Cell::new(None));
    let w1o = w1_out.clone();
    let w1 = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
            let r = f.claim_buffer();
            w1o.set(Some(r.map(|b| b.index())));
            Ok(0)
        })
        .unwrap();
    let w2 = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
            let b = f.claim_buffer().unwrap();
            g.set(Some(b.index()));
            Ok(0)
        })
        .unwrap();
    let waiting = |t| ex.state(t) == Ok(TaskState::Suspended(SuspendReason::Wait));
    run_until(ex, || waiting(w1) && waiting(w2));
    ex.cancel(w1).unwrap();
    release.set(true);
    let done = run_for(ex, Duration::from_secs(3));
    assert!(
        done && got.get() == Some(0),
        "W2 must get the released buffer (W2: {:?}, got {:?})",
        ex.state(w2),
        got.get()
    );
    assert!(w1_out.get().is_some_and(|r| r.is_err()), "the cancelled waiter claims nothing: {:?}", w1_out.get());
}

#[test]
fn regbuf_rule_4_a_waiter_woken_with_a_buffer_and_cancelled_before_it_runs_hands_the_buffer_on() {
    if net_util::ring_only("registered buffers") {
        return;
    }
    let ex = executor(RingConfig { registered_buffers: 1, ..RingConfig::default() });
    let ex = ex.as_ref();
    let exp: *const Ex = ex.get_ref();
    let (release, got) = (Rc::new(Cell::new(false)), Rc::new(Cell::new(false)));
    let (rel, g) = (release.clone(), got.clone());
    let w1_out = Rc::new(Cell::new(None));
    let (w1o, w1_ran) = (w1_out.clone(), w1_out.clone());
    let w1_slot: Rc<Cell<Option<TaskHandle>>> = Rc::new(Cell::new(None));
    let (w1s, seen) = (w1_slot.clone(), Rc::new(Cell::new(None)));
    let seen_in = seen.clone();
    // The holder releases (W1 is handed the buffer and woken: Ready, not yet run) and
    // cancels W1 in the same resumption.
    ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
        let b = f.claim_buffer().unwrap();
        yield_until(f, &rel);
        f.release_buffer(b);
        let w1 = w1s.get().unwrap();
        // SAFETY: the executor outlives its tasks (it is dropped at the end of the test,
        // after they completed) and is pinned; this runs on its thread.
        let ex = unsafe { Pin::new_unchecked(&*exp) };
        seen_in.set(Some((ex.state(w1), w1_ran.get())));
        ex.cancel(w1).unwrap();
        Ok(0)
    })
    .unwrap();
    let w1 = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
            let r = f.claim_buffer();
            w1o.set(Some(r.map(|b| b.index())));
            Ok(0)
        })
        .unwrap();
    w1_slot.set(Some(w1));
    let w2 = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
            let _b = f.claim_buffer().unwrap();
            g.set(true);
            Ok(0)
        })
        .unwrap();
    let waiting = |t| ex.state(t) == Ok(TaskState::Suspended(SuspendReason::Wait));
    run_until(ex, || waiting(w1) && waiting(w2));
    release.set(true);
    let done = run_for(ex, Duration::from_secs(3));
    // The wake is in the executor's inbox (TaskHandle::wake): W1 has not run since.
    assert_eq!(
        seen.get(),
        Some((Ok(TaskState::Suspended(SuspendReason::Wait)), None)),
        "W1 was handed the buffer and had not run at the cancel"
    );
    assert!(done && got.get(), "W2 must get the buffer W1 was handed (W2: {:?})", ex.state(w2));
    assert_eq!(w1_out.get(), Some(Err(BufferError::Cancelled)), "W1 gave its turn up");
}

#[test]
fn regbuf_rule_1_a_registered_buffer_moves_with_its_claim_and_another_rings_is_refused() {
    if net_util::ring_only("registered buffers") {
        return;
    }
    // Before FixedBuf a claim was an index: any task could name any index (h5 checked the
    // owner at run time). Now the buffer is the holder's: a FixedBuf moved to another
    // task works there, and one of another executor's ring is refused (EXDEV) before any
    // SQE names its index here.
    let path = std::env::temp_dir().join(format!("keel-{}-fixedbuf-moves", std::process::id()));
    std::fs::write(&path, b"secret").unwrap();
    let ex = executor(RingConfig { registered_buffers: 2, ..RingConfig::default() });
    let ex = ex.as_ref();
    let other = executor(RingConfig { registered_buffers: 2, ..RingConfig::default() });
    let other = other.as_ref();
    // A buffer of the other executor's ring, claimed there and carried out of its task.
    let foreign: Rc<RefCell<Option<fs::FixedBuf>>> = Rc::new(RefCell::new(None));
    let fo = foreign.clone();
    other
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
            let mut b = f.claim_buffer().unwrap();
            b[..7].copy_from_slice(b"foreign");
            *fo.borrow_mut() = Some(b);
            Ok(0)
        })
        .unwrap();
    assert!(run_for(other, Duration::from_secs(5)));
    let handed: Rc<RefCell<Option<fs::FixedBuf>>> = Rc::new(RefCell::new(None));
    let h = handed.clone();
    ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
        let mut b = f.claim_buffer().unwrap();
        b[..4].copy_from_slice(b"mine");
        *h.borrow_mut() = Some(b); // moved to another task
        Ok(0)
    })
    .unwrap();
    let p = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let out = Rc::new(RefCell::new(Vec::new()));
    let o = out.clone();
    let h = handed.clone();
    ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
        let mut theirs = loop {
            if let Some(b) = h.borrow_mut().take() {
                break b;
            }
            f.yield_now()?;
        };
        assert_eq!(&theirs[..4], b"mine", "the holder sees what the claimer wrote");
        let file = f.open(&p, OFlags::RDWR, Mode::empty()).unwrap();
        let mut fb = foreign.borrow_mut().take().unwrap();
        o.borrow_mut().push(format!("foreign read_fixed {:?}", f.read_fixed(&file, &mut fb, 6, 0)));
        o.borrow_mut().push(format!("foreign write_fixed {:?}", f.write_fixed(&file, &fb, 4, 0)));
        o.borrow_mut().push(format!("too long {:?}", f.read_fixed(&file, &mut theirs, 4097, 0)));
        assert_eq!(&fb[..7], b"foreign", "nothing read into the foreign buffer");
        o.borrow_mut().push(format!("moved read_fixed {:?}", f.read_fixed(&file, &mut theirs, 6, 0)));
        assert_eq!(&theirs[..6], b"secret", "the moved buffer works for its new holder");
        drop(fb); // released on its own ring, not here
        let a = f.try_claim_buffer().unwrap();
        assert_eq!(
            f.try_claim_buffer().err(),
            Some(BufferError::AllClaimed),
            "this ring's two are held: the foreign drop freed none here"
        );
        drop((a, theirs));
        f.close(file).unwrap();
        Ok(0)
    })
    .unwrap();
    assert!(run_for(ex, Duration::from_secs(10)));
    assert_eq!(
        *out.borrow(),
        [
            format!("foreign read_fixed {:?}", Err::<u32, _>(Errno(libc::EXDEV))),
            format!("foreign write_fixed {:?}", Err::<u32, _>(Errno(libc::EXDEV))),
            format!("too long {:?}", Err::<u32, _>(Errno::EINVAL)),
            format!("moved read_fixed {:?}", Ok::<u32, Errno>(6)),
        ]
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"secret", "no write went out of a foreign buffer");
    // The foreign one went back to its own ring: both of the other ring's buffers are free.
    let t = other.attach_fiber(task(), fattrs(), |f: &mut Fiber| -> keel_core::TaskResult {
        let _a = f.try_claim_buffer().unwrap();
        let _b = f.try_claim_buffer().unwrap();
        Ok(2)
    });
    let t = t.unwrap();
    assert!(run_for(other, Duration::from_secs(5)));
    assert_eq!(other.result(t), Ok(Some(Ok(2))));
    let _ = std::fs::remove_file(path);
}

// ---- provided buffers (pbuf rule 3, waitq rule 3) ----

#[derive(Copy, Clone, Debug, PartialEq)]
enum Waiter {
    FiberOnce,
    FiberMulti,
    FutureOnce,
    FutureMulti,
    /// A future whose receive is dropped while it waits for a buffer (its task lives on).
    FutureDropped,
}

/// H holds the only provided buffer; W1 and W2 wait for one (ENOBUFS); W1 is cancelled
/// (or drops its receive); H gives its buffer back: W2 must receive. With
/// `cancel_after_release`, H cancels W1 right after giving the buffer back, when W1 has
/// been handed the turn and not run yet.
fn provided_waiter_gone(kind: Waiter, cancel_after_release: bool) {
    let mut d = ring(RingConfig::default());
    d.enable_provided_buffers(1, 64).unwrap();
    let ex = executor_with(d);
    let ex = ex.as_ref();
    let exp: *const Ex = ex.get_ref();
    let (hs, mut hp) = pair();
    hp.write_all(b"held").unwrap();
    let (release, held) = (Rc::new(Cell::new(false)), Rc::new(Cell::new(false)));
    let (rel, hd) = (release.clone(), held.clone());
    let w1_slot: Rc<Cell<Option<TaskHandle>>> = Rc::new(Cell::new(None));
    let w1s = w1_slot.clone();
    ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
        let b = f.recv_provided(&hs).unwrap().unwrap();
        hd.set(true);
        yield_until(f, &rel);
        drop(b);
        if cancel_after_release {
            // SAFETY: the executor is pinned and outlives its tasks (dropped at the end
            // of the test, after they completed); this runs on its thread.
            let ex = unsafe { Pin::new_unchecked(&*exp) };
            ex.cancel(w1s.get().unwrap()).unwrap();
        }
        Ok(0)
    })
    .unwrap();
    run_until(ex, || held.get());
    let (s1, mut p1) = pair();
    let (s2, mut p2) = pair();
    p1.write_all(b"one").unwrap();
    p2.write_all(b"two").unwrap();
    let got: Rc<RefCell<Option<Vec<u8>>>> = Rc::new(RefCell::new(None));
    let (stop, end) = (Rc::new(Cell::new(false)), Rc::new(Cell::new(false)));
    let attach = |s: Socket,
                  out: Option<Rc<RefCell<Option<Vec<u8>>>>>,
                  stop: Rc<Cell<bool>>,
                  end: Rc<Cell<bool>>|
     -> TaskHandle {
        let record = move |v: Option<Vec<u8>>| {
            if let Some(o) = &out {
                *o.borrow_mut() = v;
            }
        };
        match kind {
            Waiter::FiberOnce => ex
                .attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
                    record(f.recv_provided(&s).ok().flatten().map(|b| b.to_vec()));
                    Ok(0)
                })
                .unwrap(),
            Waiter::FiberMulti => ex
                .attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
                    let mut m = f.recv_multi(&s).unwrap();
                    record(f.next_recv(&mut m).ok().flatten().map(|b| b.to_vec()));
                    Ok(0)
                })
                .unwrap(),
            Waiter::FutureOnce => ex
                .attach(task(), async move {
                    record(net::future::recv_provided(&s).await.ok().flatten().map(|b| b.to_vec()));
                    0u64
                })
                .unwrap(),
            Waiter::FutureMulti => ex
                .attach(task(), async move {
                    let mut m = net::future::recv_multi(&s).await.unwrap();
                    record(net::future::next_recv(&mut m).await.ok().flatten().map(|b| b.to_vec()));
                    0u64
                })
                .unwrap(),
            Waiter::FutureDropped => ex
                .attach(task(), async move {
                    {
                        let mut r = pin!(net::future::recv_provided(&s));
                        core::future::poll_fn(|cx| {
                            if stop.get() {
                                return Poll::Ready(());
                            }
                            if let Poll::Ready(v) = r.as_mut().poll(cx) {
                                record(v.ok().flatten().map(|b| b.to_vec()));
                                return Poll::Ready(());
                            }
                            Poll::Pending
                        })
                        .await;
                    }
                    until(end).await; // alive, waiting for nothing of the buffer ring's
                    0u64
                })
                .unwrap(),
        }
    };
    let w1 = attach(s1, None, stop.clone(), end.clone());
    w1_slot.set(Some(w1));
    let w2 = attach(s2, Some(got.clone()), Rc::new(Cell::new(false)), Rc::new(Cell::new(true)));
    // Both wait for a buffer (the wait is a `Wait` suspension; the receive's is `Io`).
    let waiting = |t| ex.state(t) == Ok(TaskState::Suspended(SuspendReason::Wait));
    run_until(ex, || waiting(w1) && waiting(w2));
    let exhausted = ex
        .with_driver(|d| {
            // SAFETY: reads counters (it caches whether the kernel reports the ring's head);
            // no replacement, no Driver method, no other code runs.
            unsafe { d.get_mut() }.provided_buffer_stats().unwrap().exhausted
        })
        .unwrap();
    assert_eq!(exhausted, 2);
    if cancel_after_release {
        // H cancels W1 after handing it the turn.
    } else if kind == Waiter::FutureDropped {
        stop.set(true);
        ex.wake(w1); // it drops its receive and lives on, yielding
        let _ = ex.run(16, Some(Duration::from_millis(20)));
    } else {
        ex.cancel(w1).unwrap();
    }
    release.set(true);
    let t0 = std::time::Instant::now();
    while got.borrow().is_none() && t0.elapsed() < Duration::from_secs(3) {
        let _ = ex.run(1024, Some(Duration::from_millis(20)));
    }
    assert_eq!(
        got.borrow().as_deref(),
        Some(&b"two"[..]),
        "{kind:?}: W2 must receive once the buffer is back (W2: {:?})",
        ex.state(w2)
    );
    end.set(true);
    assert!(run_for(ex, Duration::from_secs(3)));
    drop((p1, p2, hp));
}

#[test]
fn waitq_rule_3_a_cancelled_fiber_waiting_for_a_provided_buffer_passes_the_wake_on() {
    if net_util::ring_only("provided buffers") {
        return;
    }
    provided_waiter_gone(Waiter::FiberOnce, false);
}

#[test]
fn waitq_rule_3_a_cancelled_fiber_waiting_to_rearm_a_multishot_receive_passes_the_wake_on() {
    if net_util::ring_only("multishot receives into provided buffers") {
        return;
    }
    provided_waiter_gone(Waiter::FiberMulti, false);
}

#[test]
fn waitq_rule_3_a_cancelled_future_waiting_for_a_provided_buffer_passes_the_wake_on() {
    if net_util::ring_only("provided buffers") {
        return;
    }
    provided_waiter_gone(Waiter::FutureOnce, false);
}

#[test]
fn waitq_rule_3_a_cancelled_future_waiting_to_rearm_a_multishot_receive_passes_the_wake_on() {
    if net_util::ring_only("multishot receives into provided buffers") {
        return;
    }
    provided_waiter_gone(Waiter::FutureMulti, false);
}

#[test]
fn waitq_rule_3_a_fiber_handed_the_turn_and_cancelled_before_it_runs_passes_it_on() {
    if net_util::ring_only("registered buffers") {
        return;
    }
    provided_waiter_gone(Waiter::FiberOnce, true);
}

#[test]
fn waitq_rule_3_a_future_handed_the_turn_and_cancelled_before_it_runs_passes_it_on() {
    if net_util::ring_only("registered buffers") {
        return;
    }
    provided_waiter_gone(Waiter::FutureOnce, true);
}

#[test]
fn waitq_rule_3_a_receive_future_dropped_while_waiting_for_a_provided_buffer_leaves_the_queue() {
    if net_util::ring_only("provided buffers") {
        return;
    }
    provided_waiter_gone(Waiter::FutureDropped, false);
}

// ---- a cancel that loses the race to a posted completion reports it ----

#[derive(Copy, Clone, Debug, PartialEq)]
enum Op {
    FutureRead,
    FiberRecvProvided,
    FutureRecvProvided,
    FiberNextRecv,
    FutureNextRecv,
    FutureAccept,
    FiberNextAccept,
    FutureNextAccept,
}

const BURST: usize = 4;

/// What each task's operation reported: the bytes (a receive or read), or the
/// descriptor's liveness (an accept), or the error.
type Out = Rc<RefCell<Vec<Option<Result<Vec<u8>, Errno>>>>>;

/// `BURST` tasks each wait in `op`; their completions are made ready at once; one pass
/// with `reap_batch: 1` reaps one CQE and leaves the rest in the CQ; the other tasks are
/// cancelled then. Every task must report its completion, not ECANCELED.
fn burst_then_cancel(op: Op) {
    burst_then(op, false)
}

/// As `burst_then_cancel`, but the pass reaps every completion (each task woken: `Ready`)
/// and resumes only a higher-priority task, and the woken tasks are cancelled before
/// they run. A started task is not dropped by the cancel (its body holds the completion),
/// so every task must still report its completion.
fn woken_then_cancel(op: Op) {
    burst_then(op, true)
}

fn burst_then(op: Op, woken: bool) {
    let provided = matches!(
        op,
        Op::FiberRecvProvided
            | Op::FutureRecvProvided
            | Op::FiberNextRecv
            | Op::FutureNextRecv
            | Op::FiberNextAccept
            | Op::FutureNextAccept
    );
    if provided && net_util::ring_only("provided buffers and multishot operations") {
        return;
    }
    let mut d = ring(RingConfig::default());
    net_util::provided_buffers(&mut d, 8, 64);
    let reap_batch = if woken { 256 } else { 1 };
    let ex: Pin<Box<Ex>> = Box::pin(
        keel_core::Executor::with_stacks(
            d,
            keel_linux::MmapStacks::new().unwrap(),
            keel_core::Config { reap_batch, ..keel_linux::panic::config() },
        )
        .unwrap(),
    );
    let ex = ex.as_ref();
    // Woken mode: a task above the others' priority, ready from the burst's pass on, so
    // that pass's one resumption is its and the woken tasks stay `Ready`.
    let stop = Rc::new(Cell::new(false));
    let busy = woken.then(|| {
        let slot: &'static keel_core::TaskSlot<8192> = Box::leak(Box::new(keel_core::TaskSlot::new()));
        let prio = keel_core::Priorities { cpu: keel_core::Priority::High, io: keel_core::Priority::Normal };
        let h = slot.create(keel_core::TaskAttrs { priority: prio, name: "busy" }).unwrap();
        let s = stop.clone();
        ex.attach(h, async move {
            rt::wait().await.unwrap();
            until(s).await;
            0u64
        })
        .unwrap()
    });
    let out: Out = Rc::new(RefCell::new(vec![None; BURST]));
    let mut tasks = Vec::new();
    let mut kick: Vec<Box<dyn FnOnce()>> = Vec::new();
    let dir = std::env::temp_dir().join(format!("keel-{}-burst-{op:?}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..BURST {
        let o = out.clone();
        let put = move |v: Result<Vec<u8>, Errno>| o.borrow_mut()[i] = Some(v);
        let msg = format!("burst {i}!").into_bytes();
        let t = match op {
            Op::FutureRead => {
                let (r, w) = pipe();
                let m = msg.clone();
                kick.push(Box::new(move || {
                    // SAFETY: `w` is the pipe's write end, open; `m` is valid for its length.
                    assert_eq!(unsafe { libc::write(w, m.as_ptr().cast(), m.len()) }, m.len() as isize);
                    // SAFETY: ours, closed once.
                    unsafe { libc::close(w) };
                }));
                ex.attach(task(), async move {
                    // SAFETY: the pipe's read end is ours and wrapped once.
                    let file = unsafe { File::from_raw_fd(r) };
                    let (res, buf) = fs::read(&file, Vec::with_capacity(64), 0).await;
                    put(res.map(|n| buf[..n as usize].to_vec()));
                    0u64
                })
                .unwrap()
            }
            Op::FiberRecvProvided | Op::FutureRecvProvided | Op::FiberNextRecv | Op::FutureNextRecv => {
                let (s, mut peer) = pair();
                let m = msg.clone();
                kick.push(Box::new(move || peer.write_all(&m).unwrap()));
                match op {
                    Op::FiberRecvProvided => ex
                        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
                            put(f.recv_provided(&s).map(|b| b.map(|b| b.to_vec()).unwrap_or_default()));
                            Ok(0)
                        })
                        .unwrap(),
                    Op::FiberNextRecv => ex
                        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
                            let mut m = f.recv_multi(&s).unwrap();
                            put(f.next_recv(&mut m).map(|b| b.map(|b| b.to_vec()).unwrap_or_default()));
                            Ok(0)
                        })
                        .unwrap(),
                    Op::FutureRecvProvided => ex
                        .attach(task(), async move {
                            put(net::future::recv_provided(&s)
                                .await
                                .map(|b| b.map(|b| b.to_vec()).unwrap_or_default()));
                            0u64
                        })
                        .unwrap(),
                    _ => ex
                        .attach(task(), async move {
                            let mut m = net::future::recv_multi(&s).await.unwrap();
                            put(net::future::next_recv(&mut m)
                                .await
                                .map(|b| b.map(|b| b.to_vec()).unwrap_or_default()));
                            0u64
                        })
                        .unwrap(),
                }
            }
            Op::FutureAccept | Op::FiberNextAccept | Op::FutureNextAccept => {
                let path = dir.join(format!("l{i}"));
                let l = UnixListener::bind(&path).unwrap();
                let ls = Socket::from(std::os::fd::OwnedFd::from(l));
                let p = path.clone();
                kick.push(Box::new(move || {
                    let c = UnixStream::connect(&p).unwrap();
                    std::mem::forget(c); // keep the peer open; the process exit closes it
                }));
                let got = move |r: Result<Socket, Errno>| {
                    r.map(|s| {
                        // A live descriptor: fcntl succeeds on it.
                        // SAFETY: querying flags of a descriptor we own.
                        assert!(unsafe { libc::fcntl(s.fd(), libc::F_GETFD) } >= 0);
                        b"fd".to_vec()
                    })
                };
                match op {
                    Op::FutureAccept => ex
                        .attach(task(), async move {
                            put(got(net::future::accept(&ls).await));
                            0u64
                        })
                        .unwrap(),
                    Op::FutureNextAccept => ex
                        .attach(task(), async move {
                            let mut m = net::future::accept_multi(&ls);
                            put(got(net::future::next_accept(&mut m).await));
                            0u64
                        })
                        .unwrap(),
                    _ => ex
                        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
                            let mut m = f.accept_multi(&ls);
                            put(got(f.next_accept(&mut m)));
                            Ok(0)
                        })
                        .unwrap(),
                }
            }
        };
        tasks.push(t);
    }
    // Every op in the kernel: all suspended on i/o, and a pass entered since.
    let in_io = |t| ex.state(t) == Ok(TaskState::Suspended(SuspendReason::Io));
    run_until(ex, || tasks.iter().all(|&t| in_io(t)));
    let _ = ex.run(1024, Some(Duration::from_millis(20)));
    assert!(tasks.iter().all(|&t| in_io(t)));
    for k in kick {
        k();
    }
    std::thread::sleep(Duration::from_millis(20));
    let mut cancelled = 0;
    if let Some(busy) = busy {
        // One item: the pass's enter posts every completion, the reap takes them all (the
        // tasks are woken), and the busy task is the one resumed.
        ex.wake(busy);
        let _ = ex.run(1, Some(Duration::from_secs(2)));
        for &t in &tasks {
            if ex.state(t) == Ok(TaskState::Ready) {
                assert_eq!(
                    ex.cancel(t),
                    Ok(keel_core::CancelOutcome::Resumes),
                    "{op:?}: a started task is not dropped"
                );
                cancelled += 1;
            }
        }
        stop.set(true);
        assert!(cancelled > 0, "{op:?}: some tasks must be woken and not yet run for the test to mean anything");
    } else {
        // One item: the pass's enter posts every completion, the reap takes one.
        let _ = ex.run(1, Some(Duration::from_secs(2)));
        for &t in &tasks {
            if in_io(t) {
                ex.cancel(t).unwrap();
                cancelled += 1;
            }
        }
        assert!(cancelled > 0, "{op:?}: some completions must be left unreaped for the test to mean anything");
    }
    assert!(run_for(ex, Duration::from_secs(5)), "{op:?}: tasks finish");
    for i in 0..BURST {
        let want = if matches!(op, Op::FutureAccept | Op::FiberNextAccept | Op::FutureNextAccept) {
            b"fd".to_vec()
        } else {
            format!("burst {i}!").into_bytes()
        };
        assert_eq!(
            out.borrow()[i],
            Some(Ok(want)),
            "{op:?}: task {i} must report its completion ({cancelled} cancelled)"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_cancelled_read_future_reports_the_bytes_the_kernel_read() {
    burst_then_cancel(Op::FutureRead);
}

#[test]
fn net_rule_3_a_cancelled_fiber_receive_into_a_provided_buffer_reports_the_bytes() {
    burst_then_cancel(Op::FiberRecvProvided);
}

#[test]
fn net_rule_3_a_cancelled_future_receive_into_a_provided_buffer_reports_the_bytes() {
    burst_then_cancel(Op::FutureRecvProvided);
}

#[test]
fn net_rule_2_a_cancelled_fiber_multishot_receive_reports_the_bytes() {
    burst_then_cancel(Op::FiberNextRecv);
}

#[test]
fn net_rule_2_a_cancelled_future_multishot_receive_reports_the_bytes() {
    burst_then_cancel(Op::FutureNextRecv);
}

#[test]
fn a_cancelled_accept_future_returns_the_accepted_descriptor() {
    burst_then_cancel(Op::FutureAccept);
}

#[test]
fn net_rule_2_a_cancelled_fiber_multishot_accept_returns_the_accepted_descriptor() {
    burst_then_cancel(Op::FiberNextAccept);
}

#[test]
fn net_rule_2_a_cancelled_future_multishot_accept_returns_the_accepted_descriptor() {
    burst_then_cancel(Op::FutureNextAccept);
}

// Woken by the completion, cancelled before the task runs again (a future's body was
// dropped there before the cancel kept started tasks: every future case below failed,
// its completion lost; fibers were never dropped).

#[test]
fn a_read_future_woken_and_cancelled_before_it_runs_reports_the_bytes() {
    woken_then_cancel(Op::FutureRead);
}

#[test]
fn a_receive_future_woken_and_cancelled_before_it_runs_reports_the_bytes() {
    woken_then_cancel(Op::FutureRecvProvided);
}

#[test]
fn a_multishot_receive_future_woken_and_cancelled_before_it_runs_reports_the_bytes() {
    woken_then_cancel(Op::FutureNextRecv);
}

#[test]
fn an_accept_future_woken_and_cancelled_before_it_runs_returns_the_descriptor() {
    woken_then_cancel(Op::FutureAccept);
}

#[test]
fn a_multishot_accept_future_woken_and_cancelled_before_it_runs_returns_the_descriptor() {
    woken_then_cancel(Op::FutureNextAccept);
}

#[test]
fn a_fiber_receive_woken_and_cancelled_before_it_runs_reports_the_bytes() {
    woken_then_cancel(Op::FiberRecvProvided);
}

#[test]
fn a_fiber_multishot_accept_woken_and_cancelled_before_it_runs_returns_the_descriptor() {
    woken_then_cancel(Op::FiberNextAccept);
}

// ---- the driver's cancel queue (cancel rules) ----

#[test]
fn cancel_rule_4_more_cancels_than_the_cancel_queue_holds_all_take_effect() {
    // Fails before the queue kept one cancel per live op: with the SQ full, cancels past
    // the queue's capacity were dropped, and the reads they named never ended.
    const N: usize = 8;
    let cfg = RingConfig { entries: 2, cq_entries: 64, slots: N as u32, ..RingConfig::default() };
    let ex = executor(cfg);
    let ex = ex.as_ref();
    let pipes: Vec<(RawFd, RawFd)> = (0..N).map(|_| pipe()).collect();
    let readers: Vec<RawFd> = pipes.iter().map(|p| p.0).collect();
    let results = Rc::new(RefCell::new(Vec::new()));
    let r = results.clone();
    ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| -> keel_core::TaskResult {
        let sts: Vec<Pin<Box<IoStatus>>> = (0..N).map(|_| Box::pin(IoStatus::new())).collect();
        let mut bufs = [[0u8; 8]; N];
        for (i, st) in sts.iter().enumerate() {
            let e = io_uring::opcode::Read::new(io_uring::types::Fd(readers[i]), bufs[i].as_mut_ptr(), 8).build();
            // SAFETY: `bufs` outlives the reads: this fiber waits for every one below.
            f.initiate::<keel_linux::RingDriver>(st.as_ref(), unsafe { RingOp::from_entry(e) })
                .map_err(|_| keel_core::TaskError::Failed(1))?;
        }
        // Let every read reach the kernel (the SQ holds two), then ask three times each.
        f.sleep(Duration::from_millis(20))?;
        for st in &sts {
            for _ in 0..3 {
                f.cancel_io(st.as_ref());
            }
        }
        while sts.iter().any(|s| s.is_in_flight()) {
            f.wait_io();
        }
        r.borrow_mut().extend(sts.iter().map(|s| s.result()));
        Ok(0)
    })
    .unwrap();
    let done = run_for(ex, Duration::from_secs(3));
    // Unblock any read a lost cancel left behind, so the executor can drain and drop.
    for p in &pipes {
        // SAFETY: the write ends are ours, closed once.
        unsafe { libc::close(p.1) };
    }
    let finished = run_for(ex, Duration::from_secs(3));
    assert!(
        done,
        "every read must end by its cancel (results after unblocking: {:?}, finished {finished})",
        results.borrow()
    );
    assert_eq!(*results.borrow(), vec![Some(Err(Errno::ECANCELED)); N]);
    for p in &pipes {
        // SAFETY: the read ends are ours, closed once.
        unsafe { libc::close(p.0) };
    }
}
