//! `send_then_recv` as a skip pair (`ring/pair.rs`, pair rules 1-4): one CQE per exchange,
//! and every path (the send fails, the receive is cancelled, the task is cancelled with the
//! send blocked, the executor goes, a ring that does not pair) completes both status
//! blocks exactly once, leaving nothing in flight and no stale CQE.

#[path = "net_util/mod.rs"]
mod util;

use keel_core::{Driver, Fiber};
use keel_linux::net::{FiberNet, Socket};
use keel_linux::{RingConfig, RingDriver};
use std::cell::Cell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::Duration;
use util::*;

const MSG: usize = 64;

/// CQEs reaped, operations in flight and stale pair CQEs, from inside a fiber.
fn counters(f: &mut Fiber) -> (u64, usize, u64) {
    f.with_driver::<RingDriver, _>(|d| (d.stats().completed, d.in_flight(), d.stale_pair_cqes()))
        .expect("a ring executor")
}

/// The server fiber: one connection, one `recv`, then `exchanges` `send_then_recv`s; returns
/// the CQEs those exchanges reaped, with the echoed bytes checked by the client.
fn exchange(pairs: bool, exchanges: u32) -> (u64, usize, u64) {
    let mut d = ring(RingConfig::default());
    d.set_skip_pairs(pairs);
    let ex = executor_with(d);
    let ex = ex.as_ref();
    let (lfd, addr) = listen(ex, localhost());
    let a = std_addr(&addr);
    let client = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(a).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; MSG];
        for i in 0..=exchanges {
            let msg = [i as u8; MSG];
            s.write_all(&msg).unwrap();
            if i < exchanges {
                s.read_exact(&mut buf).unwrap();
                assert_eq!(buf, msg, "the echo of message {i}");
            }
        }
    });
    let out = Rc::new(Cell::new((0, 0, 0)));
    let o = out.clone();
    ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
        // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
        let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
        let c = f.accept(&*l).expect("accept");
        let mut buf = [0u8; MSG];
        let mut n = f.recv(&c, &mut buf).unwrap();
        let before = counters(f).0;
        for _ in 0..exchanges {
            // Full messages: a short one would be rare on loopback, but not impossible.
            while (n as usize) < MSG {
                n += f.recv(&c, &mut buf[n as usize..]).unwrap();
            }
            n = f.send_then_recv(&c, &mut buf, MSG).expect("exchange");
            assert!(n > 0, "the client sends one more message after each echo");
        }
        let (after, in_flight, stale) = counters(f);
        o.set((after - before, in_flight, stale));
        let _ = f.close_socket(c);
        0u64
    })
    .unwrap();
    run_all(ex);
    client.join().unwrap();
    // SAFETY: the test's own listener, which no task uses any more: closed once, here.
    drop(unsafe { Socket::from_raw_fd(lfd) });
    out.get()
}

/// Pair rules 2-3: the send of a whole exchange posts no CQE; the receive's completes both.
#[test]
fn pair_rule_2_each_exchange_reaps_one_cqe() {
    if skip_pairs_unavailable() {
        return;
    }
    let (cqes, in_flight, stale) = exchange(true, 200);
    assert!(cqes >= 200, "every exchange completes");
    // Receives that found the client's message not yet there may need the short-message
    // loop's extra recvs, one CQE each; the send never adds one.
    assert!(cqes < 2 * 200, "skip pairs: about one CQE per exchange, not two ({cqes})");
    assert_eq!((in_flight, stale), (0, 0));
}

/// Pair rule 1: a ring that does not pair (as on a kernel without `IORING_FEAT_CQE_SKIP`)
/// puts the two in as before, two CQEs per exchange, with the same results.
#[test]
fn pair_rule_1_without_skip_pairs_each_exchange_reaps_two_cqes() {
    let (cqes, in_flight, stale) = exchange(false, 200);
    assert!(cqes >= 2 * 200, "two CQEs per exchange without skip pairs ({cqes})");
    assert_eq!((in_flight, stale), (0, 0));
}

/// Runs `body` on one accepted connection whose client runs `client` (given the stream and
/// a channel that says the server is done); returns the body's result.
fn on_connection(
    body: impl FnOnce(&mut Fiber, &Socket) -> u64 + 'static,
    client: impl FnOnce(std::net::TcpStream, std::sync::mpsc::Receiver<()>) + Send + 'static,
    cancel_after: Option<Duration>,
) -> u64 {
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let (lfd, addr) = listen(ex, localhost());
    let a = std_addr(&addr);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let client = std::thread::spawn(move || client(std::net::TcpStream::connect(a).expect("connect"), done_rx));
    let t = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
            let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
            let c = f.accept(&*l).expect("accept");
            let r = body(f, &c);
            let (_, in_flight, stale) = counters(f);
            assert_eq!((in_flight, stale), (0, 0), "both halves completed once, nothing stale");
            let _ = f.close_socket(c);
            r
        })
        .unwrap();
    if let Some(wait) = cancel_after {
        let t0 = std::time::Instant::now();
        run_until(ex, || t0.elapsed() > wait);
        assert_eq!(
            ex.state(t),
            Ok(keel_core::TaskState::Suspended(keel_core::SuspendReason::Io)),
            "the exchange must be waiting"
        );
        ex.cancel(t).unwrap();
    }
    run_all(ex);
    let r = match ex.result(t) {
        Ok(Some(Ok(v))) => v,
        other => panic!("the server task ended with {other:?}"),
    };
    done_tx.send(()).unwrap();
    client.join().unwrap();
    // SAFETY: the test's own listener, which no task uses any more: closed once, here.
    drop(unsafe { Socket::from_raw_fd(lfd) });
    r
}

/// Pair rule 3: a send that fails posts its CQE, which completes the send with its error
/// and the receive (never run, its CQE skipped) with ECANCELED: one CQE, both blocks.
#[test]
fn pair_rule_3_a_failed_send_completes_both_from_its_own_cqe() {
    if skip_pairs_unavailable() {
        return;
    }
    let errno = on_connection(
        |f, c| {
            f.shutdown(c, keel_linux::net::Shutdown::Write).unwrap();
            let before = counters(f).0;
            let mut buf = [1u8; MSG];
            let r = f.send_then_recv(c, &mut buf, MSG);
            assert_eq!(counters(f).0 - before, 1, "one CQE for the pair");
            r.err().map_or(0, |e| e.0 as u64)
        },
        |_s, done| {
            let _ = done.recv_timeout(Duration::from_secs(30));
        },
        None,
    );
    assert_eq!(errno, libc::EPIPE as u64, "the send's error, not the receive's ECANCELED");
}

/// A receive cancelled after its send went out (the task cancelled while the peer never
/// answers) completes with ECANCELED, and the send with its length, from the receive's CQE.
#[test]
fn a_cancelled_receive_after_a_skipped_send_completes_both() {
    if skip_pairs_unavailable() {
        return;
    }
    let errno = on_connection(
        |f, c| {
            let mut buf = [2u8; MSG];
            f.send_then_recv(c, &mut buf, MSG).err().map_or(0, |e| e.0 as u64)
        },
        |mut s, done| {
            let mut buf = [0u8; MSG];
            s.read_exact(&mut buf).unwrap();
            assert_eq!(buf, [2u8; MSG], "the send went out whole");
            let _ = done.recv_timeout(Duration::from_secs(30));
        },
        Some(Duration::from_millis(200)),
    );
    assert_eq!(errno, libc::ECANCELED as u64);
}

/// A task cancelled while its pair's send is blocked (the peer never reads 16 MiB): the
/// cancelled send posts its CQE and completes both.
#[test]
fn a_cancelled_blocked_send_completes_both() {
    if skip_pairs_unavailable() {
        return;
    }
    let errno = on_connection(
        |f, c| {
            let mut big = vec![7u8; 16 << 20];
            let n = big.len();
            f.send_then_recv(c, &mut big, n).err().map_or(0, |e| e.0 as u64)
        },
        |_s, done| {
            let _ = done.recv_timeout(Duration::from_secs(30));
        },
        Some(Duration::from_millis(200)),
    );
    assert_eq!(errno, libc::ECANCELED as u64);
}

/// An executor dropped while a pair waits on its receive: the driver's cancel of
/// everything completes both and the drop returns (no stranded operation).
#[test]
fn an_executor_dropped_with_a_pair_in_flight_completes_it() {
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
    ex.as_ref()
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
            let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
            let c = f.accept(&*l).expect("accept");
            let mut buf = [3u8; MSG];
            let r = f.send_then_recv(&c, &mut buf, MSG);
            let _ = f.close_socket(c);
            r.err().map_or(0, |e| e.0 as u64)
        })
        .unwrap();
    let t0 = std::time::Instant::now();
    run_until(ex.as_ref(), || t0.elapsed() > Duration::from_millis(200));
    let t1 = std::time::Instant::now();
    drop(ex);
    assert!(t1.elapsed() < keel_linux::ring::DROP_WAIT, "the pair was cancelled and reaped, not waited out");
    done_tx.send(()).unwrap();
    client.join().unwrap();
    // SAFETY: the test's own listener, which no task uses any more: closed once, here.
    drop(unsafe { Socket::from_raw_fd(lfd) });
}

/// Pairs switched off (`set_skip_pairs(false)`, by another task) while a pair is in flight:
/// the pair still completes from its one CQE (completion reads the pair's entry, not the
/// switch), both halves once, and the next exchange goes in as two operations.
#[test]
fn pairs_switched_off_with_a_pair_in_flight_complete_it() {
    if skip_pairs_unavailable() {
        return;
    }
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let (lfd, addr) = listen(ex, localhost());
    let a = std_addr(&addr);
    let client = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(a).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; MSG];
        for i in 0..2u8 {
            s.read_exact(&mut buf).unwrap();
            assert_eq!(buf, [i; MSG], "the send of exchange {i} went out whole");
            std::thread::sleep(Duration::from_millis(100)); // the pair waits on its receive
            s.write_all(&[i + 10; MSG]).unwrap();
        }
    });
    let out = Rc::new(Cell::new((0, 0, 0, 0)));
    let o = out.clone();
    ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
        // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
        let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
        let c = f.accept(&*l).expect("accept");
        let off = f.spawn_fiber(task(), fattrs(), |g: &mut Fiber| {
            g.with_driver::<RingDriver, _>(|d| {
                // SAFETY: a driver crate's own switch, not one of the executor's methods;
                // nothing else runs while the reference lives.
                unsafe { d.get_mut() }.set_skip_pairs(false)
            })
            .expect("a ring executor");
            0u64
        });
        let mut buf = [0u8; MSG];
        let before = counters(f).0;
        let first = f.send_then_recv(&c, &mut buf, MSG).expect("the exchange in flight when pairs went off");
        assert_eq!((first, buf), (MSG as u32, [10u8; MSG]), "its receive, whole");
        assert!(off.is_ok(), "the task that switched pairs off was attached");
        let mid = counters(f).0;
        buf = [1u8; MSG];
        let second = f.send_then_recv(&c, &mut buf, MSG).expect("the exchange after");
        assert_eq!((second, buf), (MSG as u32, [11u8; MSG]));
        let (after, in_flight, stale) = counters(f);
        o.set((mid - before, after - mid, in_flight, stale));
        let _ = f.close_socket(c);
        0u64
    })
    .unwrap();
    run_all(ex);
    client.join().unwrap();
    // SAFETY: the test's own listener, which no task uses any more: closed once, here.
    drop(unsafe { Socket::from_raw_fd(lfd) });
    let (first, second, in_flight, stale) = out.get();
    assert_eq!(first, 1, "the pair made in flight completed from its one CQE");
    assert_eq!(second, 2, "the next exchange went in as two operations");
    assert_eq!((in_flight, stale), (0, 0), "nothing left in flight, no stale CQE");
}
