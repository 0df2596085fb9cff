//! Multishot operations past their slot's queue (completion rule 2 in `ring/mod.rs`): a
//! multishot accept or receive whose task does not take its results while more than
//! `MULTI_Q` (16) of them arrive is throttled (the driver cancels it), the results that do
//! not fit go to the spill list and come out after the queue, in order, and the op is
//! re-armed after its final `ECANCELED`. With the spill list full too, accepted
//! connections are closed (counted in `multishot_lost`) and the rest still arrive once,
//! in order; received data is never dropped, even then. Loopback only; every wait is
//! bounded.

#[path = "net_util/mod.rs"]
mod util;

use core::time::Duration;
use keel_core::Fiber;
use keel_linux::net::{FiberNet, SockAddr, Socket};
use keel_linux::ring::RingStats;
use keel_linux::{RingConfig, RingDriver};
use std::cell::RefCell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use util::*;

fn v4() -> SockAddr {
    SockAddr::from("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())
}

fn stats(f: &mut Fiber) -> RingStats {
    f.with_driver::<RingDriver, _>(|d| d.stats()).expect("a ring executor")
}

/// Sleeps in 1 ms steps until `cond` holds; panics naming `what` after 20 s.
fn wait_until(f: &mut Fiber, what: &str, mut cond: impl FnMut(&mut Fiber) -> bool) {
    let t0 = std::time::Instant::now();
    while !cond(f) {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}: {:?} in flight {:?}",
            stats(f),
            f.with_driver::<RingDriver, _>(|d| keel_core::Driver::in_flight(&**d))
        );
        f.sleep(Duration::from_millis(1)).expect("not cancelled");
    }
}

/// Reads the 4-byte id a client sent first on `c`, answers it and closes `c`.
fn serve_id(f: &mut Fiber, c: Socket) -> u32 {
    let mut id = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match f.recv(&c, &mut id[got..]) {
            Ok(0) | Err(_) => panic!("a client sent no id"),
            Ok(n) => got += n as usize,
        }
    }
    f.send_all(&c, &id).expect("answer");
    f.close_socket(c).expect("close");
    u32::from_le_bytes(id)
}

/// Connects `n` clients one after another (each connect completes before the next, so
/// the listen backlog holds them in id order), each sending its id; bumps `connected`.
fn connect_clients(
    a: std::net::SocketAddr,
    ids: std::ops::Range<u32>,
    connected: &AtomicUsize,
) -> Vec<(u32, std::net::TcpStream)> {
    ids.map(|id| {
        let mut s = std::net::TcpStream::connect(a).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(&id.to_le_bytes()).unwrap();
        connected.fetch_add(1, Ordering::Release);
        (id, s)
    })
    .collect()
}

/// What a client heard: `Some(id)` answered, `None` closed by keel unanswered.
fn answers(conns: Vec<(u32, std::net::TcpStream)>) -> Vec<(u32, Option<u32>)> {
    conns
        .into_iter()
        .map(|(id, mut s)| {
            let mut b = [0u8; 4];
            match s.read_exact(&mut b) {
                Ok(()) => (id, Some(u32::from_le_bytes(b))),
                Err(e) => {
                    assert!(
                        matches!(e.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset),
                        "client {id}: {e}"
                    );
                    (id, None)
                }
            }
        })
        .collect()
}

#[test]
fn completion_rule_2_a_multishot_accept_past_its_queue_is_throttled_spilled_and_rearmed_in_order() {
    const FIRST: u32 = 40; // in the backlog before the op is armed: > 16 results at once
    const MORE: u32 = 10; // after the throttle: the re-armed op takes them
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let (lfd, addr) = listen(ex, v4());
    let a = std_addr(&addr);
    let connected = Arc::new(AtomicUsize::new(0));
    let phase2 = Arc::new(AtomicUsize::new(0));
    let served: Rc<RefCell<Vec<u32>>> = Rc::default();
    let (c2, p2, sv) = (connected.clone(), phase2.clone(), served.clone());
    let server = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
            let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
            wait_until(f, "the first clients", |_| c2.load(Ordering::Acquire) == FIRST as usize);
            let before = stats(f);
            let mut m = f.accept_multi(&*l);
            // Arms the op: the kernel posts one CQE per connection in the backlog.
            let first = f.next_accept(&mut m).expect("first accept");
            // Take nothing more until the driver has throttled the op (its queue of 16
            // filled) and spilled what did not fit.
            wait_until(f, "the throttle", |f| stats(f).multishot_throttled > before.multishot_throttled);
            let mid = stats(f);
            let mut conns = vec![first];
            while conns.len() < FIRST as usize {
                conns.push(f.next_accept(&mut m).expect("a queued or spilled accept"));
            }
            for c in conns {
                let id = serve_id(f, c);
                sv.borrow_mut().push(id);
            }
            // The op ended with ECANCELED + KEEL_REARM; the next call re-arms it.
            p2.store(1, Ordering::Release);
            for _ in 0..MORE {
                let c = f.next_accept(&mut m).expect("an accept after the re-arm");
                let id = serve_id(f, c);
                sv.borrow_mut().push(id);
            }
            let after = stats(f);
            eprintln!("accept: before {before:?}\n  mid {mid:?}\n  after {after:?}");
            assert!(
                mid.multishot_spilled > before.multishot_spilled,
                "more than 16 results at once must spill: {mid:?}"
            );
            assert_eq!(after.multishot_lost, before.multishot_lost, "the spill list had room: nothing lost");
            1u64
        })
        .unwrap();
    let (c3, p3) = (connected.clone(), phase2.clone());
    let client = std::thread::spawn(move || {
        let mut conns = connect_clients(a, 0..FIRST, &c3);
        let t0 = std::time::Instant::now();
        while p3.load(Ordering::Acquire) == 0 {
            assert!(t0.elapsed() < Duration::from_secs(30), "the server never reached phase 2");
            std::thread::sleep(Duration::from_millis(1));
        }
        conns.extend(connect_clients(a, FIRST..FIRST + MORE, &c3));
        answers(conns)
    });
    run_all(ex);
    let heard = client.join().expect("client thread");
    // SAFETY: the test's own listener, which no task uses any more: closed once, here.
    drop(unsafe { Socket::from_raw_fd(lfd) });
    assert_eq!(ex.result(server), Ok(Some(Ok(1))));
    let want: Vec<u32> = (0..FIRST + MORE).collect();
    assert_eq!(*served.borrow(), want, "every connection accepted exactly once, in backlog order");
    for (id, back) in heard {
        assert_eq!(back, Some(id), "client {id} answered");
    }
    let st = ex.with_driver(|d| d.stats()).unwrap();
    assert!(st.multishot_throttled >= 1 && st.multishot_spilled >= 1, "{st:?}");
}

#[test]
fn completion_rule_2_with_the_spill_list_full_too_accepted_connections_are_closed_and_counted_lost() {
    // CQ of 64: the spill list holds 2 x 64 results. Four listeners with 60 connections
    // each, armed and not taken: 4 x (60 - 16) results cannot all spill.
    const LISTENERS: u32 = 4;
    const PER: u32 = 60;
    let ex = executor(RingConfig { entries: 64, cq_entries: 64, ..RingConfig::default() });
    let ex = ex.as_ref();
    let ls: Vec<_> = (0..LISTENERS).map(|_| listen(ex, v4())).collect();
    let connected = Arc::new(AtomicUsize::new(0));
    let served: Rc<RefCell<Vec<Vec<u32>>>> = Rc::new(RefCell::new(vec![Vec::new(); LISTENERS as usize]));
    let before = ex.with_driver(|d| d.stats()).unwrap();
    let acceptors: Vec<_> = ls
        .iter()
        .enumerate()
        .map(|(k, &(lfd, _))| {
            let (c2, sv) = (connected.clone(), served.clone());
            ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
                // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
                let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
                wait_until(f, "the clients", |_| c2.load(Ordering::Acquire) == (LISTENERS * PER) as usize);
                // Arm one listener at a time, each once the one before has been throttled:
                // armed together, their 240 backlog results would overflow the 64-entry CQ,
                // and the kernel ends a multishot whose CQE it cannot post (a final result
                // without F_MORE) instead of letting keel throttle it.
                wait_until(f, "the listener before", |f| {
                    stats(f).multishot_throttled >= before.multishot_throttled + k as u64
                });
                let mut m = f.accept_multi(&*l);
                let first = f.next_accept(&mut m).expect("first accept");
                wait_until(f, "every op throttled", |f| {
                    stats(f).multishot_throttled >= before.multishot_throttled + LISTENERS as u64
                });
                let mut next = Some(first);
                loop {
                    let c = match next.take() {
                        Some(c) => c,
                        // Ends when the test cancels this task, once every client has heard.
                        None => match f.next_accept(&mut m) {
                            Ok(c) => c,
                            Err(e) => return e.0 as u64,
                        },
                    };
                    let id = serve_id(f, c);
                    sv.borrow_mut()[k].push(id);
                }
            })
            .unwrap()
        })
        .collect();
    let addrs: Vec<_> = ls.iter().map(|(_, a)| std_addr(a)).collect();
    let c3 = connected.clone();
    let client = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for (k, a) in addrs.iter().enumerate() {
            let k = k as u32;
            conns.extend(connect_clients(*a, k * PER..(k + 1) * PER, &c3));
        }
        answers(conns)
    });
    run_until(ex, || client.is_finished());
    let heard = client.join().expect("client thread");
    for a in &acceptors {
        let _ = ex.cancel(*a);
    }
    run_all(ex);
    for (lfd, _) in ls {
        // SAFETY: the test's own listener, which no task uses any more: closed once, here.
        drop(unsafe { Socket::from_raw_fd(lfd) });
    }
    for a in acceptors {
        assert_eq!(ex.result(a), Ok(Some(Ok(libc::ECANCELED as u64))), "acceptor ended by the test's cancel");
    }
    let st = ex.with_driver(|d| d.stats()).unwrap();
    eprintln!("lost: {st:?}");
    let served = served.borrow();
    let mut answered = Vec::new();
    let mut closed = 0u64;
    for (id, back) in &heard {
        match back {
            Some(b) => {
                assert_eq!(b, id, "client {id} got its own id back");
                answered.push(*id);
            }
            None => closed += 1,
        }
    }
    for (k, ids) in served.iter().enumerate() {
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "listener {k}: served in backlog order, none twice: {ids:?}");
    }
    let mut all: Vec<u32> = served.iter().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(all, answered, "the server served exactly the connections whose clients were answered");
    assert!(st.multishot_spilled > before.multishot_spilled, "{st:?}");
    assert!(st.multishot_lost > before.multishot_lost, "the spill list must overflow: {st:?}");
    assert!(closed >= 1, "a lost accept is a connection keel closed: {st:?}");
    // Lost results are connections (closed) or an op's final ECANCELED (no connection).
    assert!(closed <= st.multishot_lost - before.multishot_lost, "closed {closed}, {st:?}");
    assert_eq!(answered.len() as u64 + closed, (LISTENERS * PER) as u64, "every client heard once");
}

#[test]
fn completion_rule_2_a_multishot_receive_past_its_queue_is_throttled_spilled_and_rearmed_with_every_byte_once() {
    if ring_only("multishot receives into provided buffers") {
        return;
    }
    // 64-byte provided buffers: 8000 bytes waiting when the receive is armed make far more
    // than 16 results at once.
    const BURST: usize = 8000;
    let mut d = ring(RingConfig::default());
    d.enable_provided_buffers(256, 64).unwrap();
    let ex = executor_with(d);
    let ex = ex.as_ref();
    let (lfd, addr) = listen(ex, v4());
    let a = std_addr(&addr);
    let sent = Arc::new(AtomicUsize::new(0));
    let phase2 = Arc::new(AtomicUsize::new(0));
    let got: Rc<RefCell<Vec<u8>>> = Rc::default();
    let (s2, p2, g) = (sent.clone(), phase2.clone(), got.clone());
    let server = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
            let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
            let c = f.accept(&*l).expect("accept");
            wait_until(f, "the first burst", |_| s2.load(Ordering::Acquire) == 1);
            let before = stats(f);
            let mut m = f.recv_multi(&c).expect("recv_multi");
            let b = f.next_recv(&mut m).expect("first buffer").expect("data");
            g.borrow_mut().extend_from_slice(&b);
            drop(b);
            wait_until(f, "the throttle", |f| stats(f).multishot_throttled > before.multishot_throttled);
            let mid = stats(f);
            while g.borrow().len() < BURST {
                let b = f.next_recv(&mut m).expect("a queued or spilled buffer").expect("data");
                g.borrow_mut().extend_from_slice(&b);
            }
            // The op ended with ECANCELED + KEEL_REARM; the next call re-arms it.
            p2.store(1, Ordering::Release);
            while let Some(b) = f.next_recv(&mut m).expect("a buffer after the re-arm") {
                g.borrow_mut().extend_from_slice(&b);
            }
            let after = stats(f);
            eprintln!("recv: before {before:?}\n  mid {mid:?}\n  after {after:?}");
            assert!(
                mid.multishot_spilled > before.multishot_spilled,
                "more than 16 results at once must spill: {mid:?}"
            );
            assert_eq!(after.multishot_lost, before.multishot_lost, "the spill list had room: nothing lost");
            drop(m);
            f.close_socket(c).expect("close");
            1u64
        })
        .unwrap();
    let (s3, p3) = (sent.clone(), phase2.clone());
    let client = std::thread::spawn(move || {
        let data: Vec<u8> = (0..2 * BURST).map(|i| (i % 251) as u8).collect();
        let mut s = std::net::TcpStream::connect(a).expect("connect");
        // On loopback, `write` returns once the bytes are queued at the receiver.
        s.write_all(&data[..BURST]).unwrap();
        s3.store(1, Ordering::Release);
        let t0 = std::time::Instant::now();
        while p3.load(Ordering::Acquire) == 0 {
            assert!(t0.elapsed() < Duration::from_secs(30), "the server never reached phase 2");
            std::thread::sleep(Duration::from_millis(1));
        }
        s.write_all(&data[BURST..]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
    });
    run_all(ex);
    client.join().expect("client thread");
    // SAFETY: the test's own listener, which no task uses any more: closed once, here.
    drop(unsafe { Socket::from_raw_fd(lfd) });
    assert_eq!(ex.result(server), Ok(Some(Ok(1))));
    let want: Vec<u8> = (0..2 * BURST).map(|i| (i % 251) as u8).collect();
    assert_eq!(got.borrow().len(), want.len(), "every byte arrived once");
    assert!(*got.borrow() == want, "every byte in order");
    let pb = ex
        .with_driver(|d| {
            // SAFETY: reads counters (it caches whether the kernel reports the ring's head);
            // no replacement, no Driver method, no other code runs.
            unsafe { d.get_mut() }.provided_buffer_stats()
        })
        .unwrap()
        .unwrap();
    assert_eq!(pb.in_use, 0, "every provided buffer came back: {pb:?}");
    assert_eq!(pb.available, pb.count, "the kernel can hand every buffer out again: {pb:?}");
}

#[test]
fn net_rule_6_a_fiber_multishot_waits_for_room_under_max_io_in_flight_instead_of_bypassing_it() {
    use keel_core::{Config, Executor, SuspendReason, TaskState};
    let cfg = Config {
        max_io_in_flight: Some(1),
        fiber_panics: keel_linux::panic::config().fiber_panics,
        ..Config::default()
    };
    let ex = Box::pin(
        Executor::with_stacks(ring(RingConfig::default()), keel_linux::MmapStacks::new().unwrap(), cfg).unwrap(),
    );
    let ex = ex.as_ref();
    let (l1, a1) = listen(ex, v4());
    let (l2, a2) = listen(ex, v4());
    // A holds the executor's one in-flight op: a one-shot accept nobody connects to yet.
    let a = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
            let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(l1) });
            let c = f.accept(&*l).expect("accept");
            f.close_socket(c).expect("close");
            1u64
        })
        .unwrap();
    // B arms a multishot accept: it must wait for room, not go around the limit.
    let b = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
            let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(l2) });
            let mut m = f.accept_multi(&*l);
            let c = f.next_accept(&mut m).expect("accept after waiting for room");
            drop(m);
            f.close_socket(c).expect("close");
            2u64
        })
        .unwrap();
    // B's first suspension is at its arm: SqSlot (waiting for room), or Io had it bypassed the limit.
    run_until(ex, || matches!(ex.state(b), Ok(TaskState::Suspended(_))) || ex.result(b).is_ok_and(|r| r.is_some()));
    assert_eq!(ex.state(a), Ok(TaskState::Suspended(SuspendReason::Io)), "A's accept is in flight");
    assert_eq!(ex.state(b), Ok(TaskState::Suspended(SuspendReason::SqSlot)), "B waits for submission room");
    assert_eq!(ex.with_driver(|d| keel_core::Driver::in_flight(&**d)).unwrap(), 1, "the limit of one holds");
    // A's accept completes; A's close then B's arm get the room in turn.
    let c1 = std::net::TcpStream::connect(std_addr(&a1)).unwrap();
    run_until(ex, || ex.state(b) != Ok(TaskState::Suspended(SuspendReason::SqSlot)));
    let c2 = std::net::TcpStream::connect(std_addr(&a2)).unwrap();
    run_all(ex);
    assert_eq!(ex.result(a), Ok(Some(Ok(1))));
    assert_eq!(ex.result(b), Ok(Some(Ok(2))));
    // SAFETY: the test's own listeners, which no task uses any more: closed once, here.
    drop((c1, c2, unsafe { Socket::from_raw_fd(l1) }, unsafe { Socket::from_raw_fd(l2) }));
}

#[test]
fn pbuf_rule_4_provided_buffers_available_is_what_the_kernel_can_still_hand_out() {
    if ring_only("multishot receives into provided buffers") {
        return;
    }
    const SIZE: usize = 64;
    let mut d = ring(RingConfig::default());
    d.enable_provided_buffers(8, SIZE as u32).unwrap();
    let ex = executor_with(d);
    let ex = ex.as_ref();
    let pb = ex
        .with_driver(|d| {
            // SAFETY: reads counters (it caches whether the kernel reports the ring's head);
            // no replacement, no Driver method, no other code runs.
            unsafe { d.get_mut() }.provided_buffer_stats()
        })
        .unwrap()
        .unwrap();
    assert_eq!((pb.count, pb.in_use, pb.available), (8, 0, 8), "{pb:?}");
    let (lfd, addr) = listen(ex, v4());
    let a = std_addr(&addr);
    let sent = Arc::new(AtomicUsize::new(0));
    let s2 = sent.clone();
    let server = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let pbs = |f: &mut Fiber| {
                f.with_driver::<RingDriver, _>(|d| {
                    // SAFETY: as above.
                    unsafe { d.get_mut() }.provided_buffer_stats()
                })
                .flatten()
                .expect("provided buffers")
            };
            // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
            let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
            let c = f.accept(&*l).expect("accept");
            wait_until(f, "the data", |_| s2.load(Ordering::Acquire) == 1);
            // A one-shot receive takes one buffer.
            let b1 = f.recv_provided(&c).expect("recv").expect("data");
            assert_eq!(b1.len(), SIZE);
            let st = pbs(f);
            assert_eq!((st.in_use, st.available), (1, 7), "{st:?}");
            // A multishot receive takes one buffer per 64 bytes waiting: two, one handed
            // out and one queued in its slot; neither can be handed out by the kernel.
            let mut m = f.recv_multi(&c).expect("recv_multi");
            let b2 = f.next_recv(&mut m).expect("recv").expect("data");
            let st = pbs(f);
            assert_eq!((st.in_use, st.available), (3, 5), "a queued result holds its buffer too: {st:?}");
            let b3 = f.next_recv(&mut m).expect("recv").expect("data");
            assert_eq!(pbs(f).available, 5);
            drop((b1, b2, b3));
            let st = pbs(f);
            assert_eq!((st.in_use, st.available), (0, 8), "given back: the kernel can hand them out again: {st:?}");
            drop(m);
            f.close_socket(c).expect("close");
            1u64
        })
        .unwrap();
    let client = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(a).expect("connect");
        // On loopback, `write` returns once the bytes are queued at the receiver.
        s.write_all(&[5u8; 3 * SIZE]).unwrap();
        sent.store(1, Ordering::Release);
        let mut b = [0u8; 1];
        let _ = s.read(&mut b); // until the server closes
    });
    run_all(ex);
    client.join().expect("client thread");
    // SAFETY: the test's own listener, which no task uses any more: closed once, here.
    drop(unsafe { Socket::from_raw_fd(lfd) });
    assert_eq!(ex.result(server), Ok(Some(Ok(1))));
}

/// Accepted connections fill the part of the spill list results without a buffer may
/// take (and some are lost, closed), then a multishot receive past its queue spills too:
/// its results hold provided buffers and have room kept for them, so every received
/// byte still arrives once, in order (completion rule 2).
#[test]
fn completion_rule_2_received_data_is_never_lost_even_when_accepts_have_filled_the_spill_list() {
    if ring_only("multishot receives into provided buffers") {
        return;
    }
    const LISTENERS: u32 = 3;
    const PER: u32 = 60;
    const BURST: usize = 64 * 64;
    let mut d = ring(RingConfig { entries: 64, cq_entries: 64, ..RingConfig::default() });
    d.enable_provided_buffers(64, 64).unwrap();
    let ex = executor_with(d);
    let ex = ex.as_ref();
    let (dfd, daddr) = listen(ex, v4());
    let ls: Vec<_> = (0..LISTENERS).map(|_| listen(ex, v4())).collect();
    let connected = Arc::new(AtomicUsize::new(0));
    let filled = Rc::new(std::cell::Cell::new(false));
    let before = ex.with_driver(|d| d.stats()).unwrap();
    // Acceptors arm one at a time (see the test above) and never take their results.
    let acceptors: Vec<_> = ls
        .iter()
        .enumerate()
        .map(|(k, &(lfd, _))| {
            let (c2, fl) = (connected.clone(), filled.clone());
            ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
                // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
                let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
                wait_until(f, "the clients", |_| c2.load(Ordering::Acquire) == (LISTENERS * PER) as usize);
                wait_until(f, "the listener before", |f| {
                    stats(f).multishot_throttled >= before.multishot_throttled + k as u64
                });
                let mut m = f.accept_multi(&*l);
                let _first = f.next_accept(&mut m).expect("first accept");
                if k as u32 == LISTENERS - 1 {
                    wait_until(f, "accepts lost to a full spill list", |f| {
                        stats(f).multishot_lost > before.multishot_lost
                    });
                    fl.set(true);
                }
                // Hold the op (and its spilled results) until the test cancels this task.
                while f.sleep(Duration::from_millis(5)).is_ok() {}
                0u64
            })
            .unwrap()
        })
        .collect();
    let got: Rc<RefCell<Vec<u8>>> = Rc::default();
    let (g, fl) = (got.clone(), filled.clone());
    let sent = Arc::new(AtomicUsize::new(0));
    let s2 = sent.clone();
    let reader = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
            let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(dfd) });
            let c = f.accept(&*l).expect("accept the data connection");
            wait_until(f, "the spill list to fill with accepts", |_| fl.get() && s2.load(Ordering::Acquire) == 1);
            let spilled_before = stats(f).multishot_spilled;
            let mut m = f.recv_multi(&c).expect("recv_multi");
            // `multishot_lost` is no witness here: it also counts the other listeners'
            // accepts, whose results may still arrive (and be lost) while this loop runs on
            // a loaded machine. The bytes are the witness: a dropped buffer leaves a gap the
            // comparison below (or, with the sender done, the wait for more data) catches.
            while g.borrow().len() < BURST {
                let b = f.next_recv(&mut m).expect("a buffer").expect("data before end of stream");
                g.borrow_mut().extend_from_slice(&b);
            }
            let st = stats(f);
            assert!(st.multishot_spilled > spilled_before, "the receive's results had to spill: {st:?}");
            drop(m);
            f.close_socket(c).expect("close");
            1u64
        })
        .unwrap();
    let addrs: Vec<_> = ls.iter().map(|(_, a)| std_addr(a)).collect();
    let (c3, s3) = (connected.clone(), sent.clone());
    let da = std_addr(&daddr);
    let client = std::thread::spawn(move || {
        let mut data_conn = std::net::TcpStream::connect(da).expect("connect the data connection");
        let data: Vec<u8> = (0..BURST).map(|i| (i % 251) as u8).collect();
        data_conn.write_all(&data).unwrap();
        let mut conns = Vec::new();
        for (k, a) in addrs.iter().enumerate() {
            let k = k as u32;
            conns.extend(connect_clients(*a, k * PER..(k + 1) * PER, &c3));
        }
        s3.store(1, Ordering::Release);
        (data_conn, conns)
    });
    run_until(ex, || ex.result(reader).is_ok_and(|r| r.is_some()));
    assert_eq!(ex.result(reader), Ok(Some(Ok(1))));
    let expected: Vec<u8> = (0..BURST).map(|i| (i % 251) as u8).collect();
    assert!(*got.borrow() == expected, "the received bytes differ from those sent");
    for a in &acceptors {
        let _ = ex.cancel(*a);
    }
    run_all(ex);
    drop(client.join().expect("client thread"));
    for (lfd, _) in ls {
        // SAFETY: the test's own listener, which no task uses any more: closed once, here.
        drop(unsafe { Socket::from_raw_fd(lfd) });
    }
    // SAFETY: the test's own listener, which no task uses any more: closed once, here.
    drop(unsafe { Socket::from_raw_fd(dfd) });
}

/// Pbuf rule 3: a buffer coming back reaches a waiter that can use it even when the
/// waiter it was handed to can no longer take it. Two tasks wait for a provided buffer
/// (the ring is empty: a third holds both). The first's data is then read by someone
/// else, so when one buffer comes back and its turn goes to that first waiter, its
/// receive finds nothing and waits in the kernel, until its peer closes and it ends
/// with EOF and no buffer. That completion must hand the turn on to the second waiter,
/// which has data waiting.
#[test]
fn pbuf_rule_3_a_turn_whose_receive_ends_without_a_buffer_goes_on_to_the_next_waiter() {
    if ring_only("multishot receives into provided buffers") {
        return;
    }
    use std::os::fd::AsRawFd;
    const SIZE: usize = 64;
    let mut d = ring(RingConfig::default());
    d.enable_provided_buffers(2, SIZE as u32).unwrap();
    let ex = executor_with(d);
    let ex = ex.as_ref();
    let (lfd, addr) = listen(ex, v4());
    let a = std_addr(&addr);
    // Three connections, accepted in this order, each with data waiting.
    let mut ca = std::net::TcpStream::connect(a).unwrap();
    let mut cb = std::net::TcpStream::connect(a).unwrap();
    let mut cc = std::net::TcpStream::connect(a).unwrap();
    ca.write_all(&[1u8; 2 * SIZE]).unwrap();
    cb.write_all(b"b").unwrap();
    cc.write_all(b"c").unwrap();
    let stage = Arc::new(AtomicUsize::new(0));
    let conns: Rc<RefCell<Vec<Socket>>> = Rc::new(RefCell::new(Vec::new()));
    let b_fd = Rc::new(std::cell::Cell::new(-1));
    let c_got: Rc<RefCell<Option<Vec<u8>>>> = Rc::new(RefCell::new(None));
    let (st, cs, cg, bfd) = (stage.clone(), conns.clone(), c_got.clone(), b_fd.clone());
    let holder = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            // SAFETY: a view of the test's listener that never closes it (ManuallyDrop).
            let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
            let ca = f.accept(&*l).expect("accept a");
            for _ in 0..2 {
                let s = f.accept(&*l).expect("accept");
                cs.borrow_mut().push(s);
            }
            bfd.set(cs.borrow()[0].as_raw_fd());
            // Both buffers held: the ring is empty.
            let b1 = f.recv_provided(&ca).expect("recv").expect("data");
            let b2 = f.recv_provided(&ca).expect("recv").expect("data");
            let exhausted = |f: &mut Fiber| {
                // SAFETY: reads counters only (no replacement, no Driver method).
                f.with_driver::<RingDriver, _>(|d| unsafe { d.get_mut() }.provided_buffer_stats())
                    .flatten()
                    .unwrap()
                    .exhausted
            };
            wait_until(f, "both receivers to wait", |f| exhausted(f) >= 2);
            // Someone else reads B's byte: B's waiter has nothing left to receive.
            let mut one = [0u8; 1];
            // SAFETY: reads into `one`, valid for 1 byte; B's socket is open (its task
            // holds it until its receive ends).
            let n = unsafe { libc::recv(bfd.get(), one.as_mut_ptr().cast(), 1, libc::MSG_DONTWAIT) };
            assert_eq!((n, one[0]), (1, b'b'));
            drop(b1); // one buffer back: its turn goes to B's waiter, which re-arms and waits
            f.sleep(Duration::from_millis(20)).unwrap();
            st.store(1, Ordering::Release); // B's peer closes: B's receive ends, no buffer
            let t0 = std::time::Instant::now();
            while cg.borrow().is_none() && t0.elapsed() < Duration::from_secs(3) {
                f.sleep(Duration::from_millis(1)).unwrap();
            }
            let before_b2 = cg.borrow().is_some();
            drop(b2); // would hand C the turn anyway
            f.close_socket(ca).unwrap();
            u64::from(before_b2)
        })
        .unwrap();
    let (csb, csc) = (conns.clone(), conns.clone());
    let b_task = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            wait_until(f, "B", |_| csb.borrow().len() == 2);
            let b = csb.borrow()[0].as_raw_fd();
            // SAFETY: a view of B's socket, closed by the test's end (below) only.
            let b = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(b) });
            match f.recv_provided(&*b) {
                Ok(None) => 0u64,
                Ok(Some(_)) => 1,
                Err(e) => 1000 + e.raw() as u64,
            }
        })
        .unwrap();
    let c_task = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            wait_until(f, "C", |_| csc.borrow().len() == 2);
            f.sleep(Duration::from_millis(2)).unwrap(); // B's receiver waits first
            let c = csc.borrow()[1].as_raw_fd();
            // SAFETY: a view of C's socket, closed by the test's end (below) only.
            let c = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(c) });
            let got = f.recv_provided(&*c).expect("recv").expect("data").to_vec();
            *c_got.borrow_mut() = Some(got);
            1u64
        })
        .unwrap();
    let client = std::thread::spawn(move || {
        while stage.load(Ordering::Acquire) != 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(cb);
        let mut back = [0u8; 1];
        let _ = ca.read(&mut back);
        drop(cc);
    });
    run_all(ex);
    client.join().unwrap();
    drop(conns.borrow_mut().drain(..).collect::<Vec<_>>());
    // SAFETY: the test's own listener, which no task uses any more: closed once, here.
    drop(unsafe { Socket::from_raw_fd(lfd) });
    assert_eq!(ex.result(b_task), Ok(Some(Ok(0))), "B's receive ends with EOF");
    assert_eq!(ex.result(c_task), Ok(Some(Ok(1))));
    assert_eq!(
        ex.result(holder),
        Ok(Some(Ok(1))),
        "C's receiver got the buffer that came back (not only the second, which rescues it)"
    );
}
