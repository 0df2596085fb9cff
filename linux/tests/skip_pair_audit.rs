//! Audit of skip pairs (`ring/pair.rs`, pair rules 1-7) on either backend (the epoll
//! engine's link rule 1 with `KEEL_DRIVER=epoll` or `make denied`): the receive reaching
//! end of stream or a short count, the executor dropped with the send blocked, many pairs
//! on one executor with half cancelled in the same pass as the others complete, and more
//! exchanges than the ring has room for (pairs refused for room go in one after the
//! other). Each path completes both status blocks once, leaves nothing in flight and no
//! stale CQE, and loses no byte.

#[path = "net_util/mod.rs"]
mod util;

use keel_core::{Driver, Fiber, SuspendReason, TaskState};
use keel_linux::net::{FiberNet, Socket};
use keel_linux::{RingConfig, RingDriver};
use std::cell::Cell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::Duration;
use util::*;

const MSG: usize = 64;

fn counters(f: &mut Fiber) -> (usize, u64) {
    f.with_driver::<RingDriver, _>(|d| (d.in_flight(), d.stale_pair_cqes())).expect("a ring executor")
}

/// Runs `body` on one accepted connection whose client runs `client`; asserts nothing is
/// left in flight or stale after it, and returns its result.
fn on_connection(
    body: impl FnOnce(&mut Fiber, &Socket) -> u64 + 'static,
    client: impl FnOnce(std::net::TcpStream) + Send + 'static,
) -> u64 {
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let (lfd, addr) = listen(ex, localhost());
    let a = std_addr(&addr);
    let client = std::thread::spawn(move || client(std::net::TcpStream::connect(a).expect("connect")));
    let t = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the
            // test closes it once, after every task using it is done.
            let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
            let c = f.accept(&*l).expect("accept");
            let r = body(f, &c);
            assert_eq!(counters(f), (0, 0), "both halves completed once, nothing stale");
            let _ = f.close_socket(c);
            r
        })
        .unwrap();
    run_all(ex);
    let r = match ex.result(t) {
        Ok(Some(Ok(v))) => v,
        other => panic!("the server task ended with {other:?}"),
    };
    client.join().unwrap();
    // SAFETY: the test's own listener, which no task uses any more: closed once, here.
    drop(unsafe { Socket::from_raw_fd(lfd) });
    r
}

/// The receive of a pair reaches end of stream (the peer read the request, then closed):
/// `Ok(0)`, the send counted whole, one completion for both.
#[test]
fn a_pair_whose_receive_reaches_end_of_stream_returns_zero() {
    if skip_pairs_unavailable() {
        return;
    }
    let n = on_connection(
        |f, c| {
            let mut buf = [5u8; MSG];
            f.send_then_recv(c, &mut buf, MSG).expect("end of stream is no error") as u64
        },
        |mut s| {
            let mut buf = [0u8; MSG];
            s.read_exact(&mut buf).unwrap();
            assert_eq!(buf, [5u8; MSG]);
            drop(s);
        },
    );
    assert_eq!(n, 0);
}

/// A short reply: the receive (no `MSG_WAITALL`) returns what came, into the buffer's
/// start, and the rest of the buffer is what was sent (the receive wrote nothing more).
#[test]
fn a_pair_whose_receive_gets_a_short_count_returns_it() {
    if skip_pairs_unavailable() {
        return;
    }
    let n = on_connection(
        |f, c| {
            let mut buf = [6u8; MSG];
            let n = f.send_then_recv(c, &mut buf, MSG).unwrap() as usize;
            assert_eq!(&buf[..n], &b"short reply"[..n]);
            assert!(buf[n..].iter().all(|&b| b == 6), "nothing written past the count");
            n as u64
        },
        |mut s| {
            let mut buf = [0u8; MSG];
            s.read_exact(&mut buf).unwrap();
            s.write_all(b"short reply").unwrap();
            // Keep the connection open until the server closed it.
            let _ = s.read(&mut buf);
        },
    );
    assert!((1..=11).contains(&n), "{n} bytes");
}

/// The executor dropped while a pair's send is blocked on a full socket buffer (the peer
/// never reads 16 MiB): the drain cancels the send, whose CQE completes both; the drop
/// returns without waiting out its limit and the buffer is not used after.
#[test]
fn an_executor_dropped_with_the_pairs_send_blocked_completes_it() {
    if skip_pairs_unavailable() {
        return;
    }
    let ex = executor(RingConfig::default());
    let (lfd, addr) = listen(ex.as_ref(), localhost());
    let a = std_addr(&addr);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let client = std::thread::spawn(move || {
        let _s = std::net::TcpStream::connect(a).expect("connect");
        let _ = done_rx.recv_timeout(Duration::from_secs(30));
    });
    let blocked = Rc::new(Cell::new(false));
    let b = blocked.clone();
    let t = ex
        .as_ref()
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            // SAFETY: a view of the test's listener that never closes it (ManuallyDrop).
            let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
            let c = f.accept(&*l).expect("accept");
            let mut big = vec![7u8; 16 << 20];
            let n = big.len();
            b.set(true);
            let r = f.send_then_recv(&c, &mut big, n);
            let _ = f.close_socket(c);
            r.err().map_or(0, |e| e.0 as u64)
        })
        .unwrap();
    let t0 = std::time::Instant::now();
    run_until(ex.as_ref(), || blocked.get() && t0.elapsed() > Duration::from_millis(200));
    assert_eq!(ex.as_ref().state(t), Ok(TaskState::Suspended(SuspendReason::Io)), "the send must be blocked");
    let t1 = std::time::Instant::now();
    drop(ex);
    assert!(t1.elapsed() < keel_linux::ring::DROP_WAIT, "the pair was cancelled and reaped, not waited out");
    done_tx.send(()).unwrap();
    client.join().unwrap();
    // SAFETY: the test's own listener, closed once, here.
    drop(unsafe { Socket::from_raw_fd(lfd) });
}

/// Eight pairs on one executor, each on its own connection, all waiting on their
/// receives; the peer answers the even ones, and the odd ones are cancelled before the
/// next run, so the answers' readiness and the cancels are handled in the same pass.
/// Each even pair returns its own answer, each odd one `ECANCELED`, and nothing is left.
#[test]
fn many_pairs_some_cancelled_in_the_pass_that_completes_the_others() {
    if skip_pairs_unavailable() {
        return;
    }
    const N: u8 = 8;
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let (lfd, addr) = listen(ex, localhost());
    let a = std_addr(&addr);
    let (read_tx, read_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (answered_tx, answered_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let client = std::thread::spawn(move || {
        let mut streams: Vec<_> = (0..N).map(|_| std::net::TcpStream::connect(a).expect("connect")).collect();
        let mut ids = Vec::new();
        for s in &mut streams {
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut buf = [0u8; MSG];
            s.read_exact(&mut buf).unwrap();
            assert!(buf.iter().all(|&b| b == buf[0]), "a whole request");
            ids.push(buf[0]);
        }
        read_tx.send(()).unwrap();
        go_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        for (s, id) in streams.iter_mut().zip(&ids) {
            if id % 2 == 0 {
                s.write_all(&[id + 100; MSG]).unwrap();
            }
        }
        answered_tx.send(()).unwrap();
        let _ = done_rx.recv_timeout(Duration::from_secs(30));
    });
    let tasks: Vec<_> = (0..N)
        .map(|id| {
            ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
                // SAFETY: a view of the test's listener that never closes it (ManuallyDrop).
                let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
                let c = f.accept(&*l).expect("accept");
                let mut buf = [id; MSG];
                let r = f.send_then_recv(&c, &mut buf, MSG);
                let _ = f.close_socket(c);
                match r {
                    Ok(n) => {
                        assert!(buf[..n as usize].iter().all(|&b| b == id + 100), "{id}'s own answer");
                        n as u64
                    }
                    Err(e) => 1000 + e.0 as u64,
                }
            })
            .unwrap()
        })
        .collect();
    let mut read = false;
    run_until(ex, || {
        read = read || read_rx.try_recv().is_ok();
        read && tasks.iter().all(|&t| ex.state(t) == Ok(TaskState::Suspended(SuspendReason::Io)))
    });
    go_tx.send(()).unwrap();
    answered_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    for &t in tasks.iter().skip(1).step_by(2) {
        ex.cancel(t).unwrap();
    }
    run_all(ex);
    for (id, &t) in tasks.iter().enumerate() {
        let got = ex.result(t);
        if id % 2 == 0 {
            assert!(matches!(got, Ok(Some(Ok(n))) if n > 0 && n <= MSG as u64), "pair {id}: {got:?}");
        } else {
            assert_eq!(got, Ok(Some(Ok(1000 + libc::ECANCELED as u64))), "pair {id}");
        }
    }
    let left = Rc::new(Cell::new((usize::MAX, u64::MAX)));
    let l = left.clone();
    ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
        l.set(counters(f));
        0u64
    })
    .unwrap();
    run_all(ex);
    assert_eq!(left.get(), (0, 0), "nothing in flight, no stale pair CQE");
    done_tx.send(()).unwrap();
    client.join().unwrap();
    // SAFETY: the test's own listener, closed once, here.
    drop(unsafe { Socket::from_raw_fd(lfd) });
}

/// More exchanges at once than a small ring has room for (four slots: two pairs): pairs
/// refused for room go in one after the other, pairs and plain exchanges interleave on
/// one ring, and every exchange echoes its own bytes with nothing left in flight.
#[test]
fn more_pairs_than_the_ring_has_room_for_all_complete_with_their_bytes() {
    if skip_pairs_unavailable() {
        return;
    }
    const CONNS: u8 = 6;
    const ROUNDS: u8 = 20;
    let ex = executor(RingConfig { slots: 4, ..RingConfig::default() });
    let ex = ex.as_ref();
    let (lfd, addr) = listen(ex, localhost());
    let a = std_addr(&addr);
    let clients: Vec<_> = (0..CONNS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(a).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let mut buf = [0u8; MSG];
                loop {
                    match s.read(&mut buf[..1]) {
                        Ok(0) => return,
                        Ok(_) => {}
                        Err(e) => panic!("{e}"),
                    }
                    s.read_exact(&mut buf[1..]).unwrap();
                    assert!(buf.iter().all(|&b| b == buf[0]), "a whole request");
                    s.write_all(&[buf[0].wrapping_add(1); MSG]).unwrap();
                }
            })
        })
        .collect();
    let tasks: Vec<_> = (0..CONNS)
        .map(|id| {
            ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
                // SAFETY: a view of the test's listener that never closes it (ManuallyDrop).
                let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
                let c = f.accept(&*l).expect("accept");
                for round in 0..ROUNDS {
                    let v = id.wrapping_mul(40).wrapping_add(round.wrapping_mul(2));
                    let mut buf = [v; MSG];
                    let mut n = f.send_then_recv(&c, &mut buf, MSG).expect("exchange") as usize;
                    while n < MSG {
                        n += f.recv(&c, &mut buf[n..]).unwrap() as usize;
                    }
                    assert_eq!(buf, [v.wrapping_add(1); MSG], "conn {id} round {round}: its own echo");
                }
                let _ = f.close_socket(c);
                1u64
            })
            .unwrap()
        })
        .collect();
    run_all(ex);
    for t in tasks {
        assert_eq!(ex.result(t), Ok(Some(Ok(1))));
    }
    for c in clients {
        c.join().unwrap();
    }
    let left = Rc::new(Cell::new((usize::MAX, u64::MAX)));
    let l = left.clone();
    ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
        l.set(counters(f));
        0u64
    })
    .unwrap();
    run_all(ex);
    assert_eq!(left.get(), (0, 0));
    // SAFETY: the test's own listener, closed once, here.
    drop(unsafe { Socket::from_raw_fd(lfd) });
}
