//! Direct (fixed-file) descriptors from accept: one-shot and multishot accept straight into
//! the ring's fixed-file table, used by index for send, recv and close, for fibers and
//! futures; and indexes nobody takes (an abandoned accept that completed anyway, results
//! queued in a dropped multishot) closed through the ring (completion rule 3), so the table
//! slot is free again. Loopback only; every wait is bounded.

#[path = "net_util/mod.rs"]
mod util;

use core::future::Future;
use core::pin::pin;
use core::task::Poll;
use core::time::Duration;
use keel_core::{Errno, Fiber};
use keel_linux::net::{self, AddressFamily, FiberNet, FixedSocket, SockAddr, Socket, SocketType};
use keel_linux::{RingConfig, RingDriver};
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use util::*;

fn v4() -> SockAddr {
    SockAddr::from("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())
}

/// Connects `n` clients, each sending `hello`; bumps `connected` after each.
fn clients(
    a: std::net::SocketAddr,
    n: usize,
    connected: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<Vec<std::net::TcpStream>> {
    std::thread::spawn(move || {
        (0..n)
            .map(|_| {
                let mut s = std::net::TcpStream::connect(a).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                s.write_all(b"hello").unwrap();
                connected.fetch_add(1, Ordering::Release);
                s
            })
            .collect()
    })
}

/// An executor with a fixed-file table of `files` slots, a listener, and `n` clients
/// connecting to it (counted in the returned `connected`).
#[allow(clippy::type_complexity)]
fn setup(
    files: u32,
    n: usize,
) -> (core::pin::Pin<Box<Ex>>, std::os::fd::RawFd, Arc<AtomicUsize>, std::thread::JoinHandle<Vec<std::net::TcpStream>>)
{
    let ex = executor(RingConfig { registered_files: files, ..RingConfig::default() });
    let (lfd, addr) = listen(ex.as_ref(), v4());
    let connected = Arc::new(AtomicUsize::new(0));
    let cl = clients(std_addr(&addr), n, connected.clone());
    (ex, lfd, connected, cl)
}

/// Runs the test's task to its end, checks it returned 1, closes the listener.
fn finish(ex: core::pin::Pin<&Ex>, t: keel_core::TaskHandle, lfd: std::os::fd::RawFd) {
    run_all(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
    // SAFETY: the test's own listener, which no task uses any more: closed once, here.
    drop(unsafe { Socket::from_raw_fd(lfd) });
}

/// Each client must read end of stream: keel closed its accepted index unanswered.
fn assert_closed_by_keel(conns: Vec<std::net::TcpStream>) {
    for (i, mut s) in conns.into_iter().enumerate() {
        let mut b = [0u8; 8];
        match s.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("client {i}: expected end of stream (its accepted index closed), got {other:?}"),
        }
    }
}

fn fiber_echo_once(f: &mut Fiber, c: &FixedSocket) {
    let mut buf = [0u8; 16];
    let mut got = 0;
    while got < 5 {
        let n = f.recv(c, &mut buf[got..]).expect("recv by index");
        assert!(n > 0, "end of stream before the greeting");
        got += n as usize;
    }
    assert_eq!(&buf[..5], b"hello");
    f.send_all(c, b"HELLO").expect("send by index");
}

fn assert_answered(conns: Vec<std::net::TcpStream>) {
    for (i, mut s) in conns.into_iter().enumerate() {
        let mut b = [0u8; 5];
        s.read_exact(&mut b).unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert_eq!(&b, b"HELLO", "client {i}");
        let mut rest = [0u8; 1];
        assert_eq!(s.read(&mut rest).unwrap(), 0, "client {i}: the index was closed after the answer");
    }
}

#[test]
fn fiber_accept_direct_one_shot_and_multishot_send_recv_and_close_by_index() {
    if ring_only("direct descriptors") {
        return;
    }
    let (ex, lfd, _, cl) = setup(4, 5);
    let ex = ex.as_ref();
    let t = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
            let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
            // One-shot, twice: a closed index is reused.
            let mut seen = Vec::new();
            for _ in 0..2 {
                let c = f.accept_direct(&*l).expect("accept_direct");
                seen.push(c.index());
                fiber_echo_once(f, &c);
                let idx = c.index();
                f.close_fixed_socket(c).expect("close by index");
                assert_eq!(f.send(&FixedSocket::from_index_for_tests(idx), b"x"), Err(Errno::EBADF), "closed index");
            }
            assert_eq!(seen[0], seen[1], "the closed index was free for the next accept");
            // Multishot into the table: three connections at once, all four slots usable.
            let mut m = f.accept_multi_direct(&*l);
            let cs: Vec<FixedSocket> =
                (0..3).map(|_| f.next_accept_direct(&mut m).expect("next_accept_direct")).collect();
            let mut idx: Vec<u32> = cs.iter().map(|c| c.index()).collect();
            idx.sort_unstable();
            idx.dedup();
            assert_eq!(idx.len(), 3, "distinct indexes: {idx:?}");
            assert!(idx.iter().all(|&i| i < 4));
            for c in cs {
                fiber_echo_once(f, &c);
                f.close_fixed_socket(c).expect("close by index");
            }
            assert_eq!(
                f.next_accept(&mut m).err(),
                Some(Errno::EINVAL),
                "a direct multishot yields indexes, not descriptors"
            );
            drop(m);
            1u64
        })
        .unwrap();
    finish(ex, t, lfd);
    assert_answered(cl.join().unwrap());
}

#[test]
fn future_accept_direct_one_shot_and_multishot_send_recv_and_close_by_index() {
    if ring_only("direct descriptors") {
        return;
    }
    let (ex, lfd, _, cl) = setup(2, 3);
    let ex = ex.as_ref();
    async fn echo_once(c: &FixedSocket) {
        let mut got = Vec::new();
        while got.len() < 5 {
            let (r, b) = net::future::recv(c, Vec::with_capacity(16)).await;
            assert!(r.expect("recv by index") > 0, "end of stream before the greeting");
            got.extend_from_slice(&b);
        }
        assert_eq!(got, b"hello");
        net::future::send_all(c, b"HELLO".to_vec()).await.0.expect("send by index");
    }
    let t = ex
        .attach(task(), async move {
            // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
            let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
            let c = net::future::accept_direct(&*l).await.expect("accept_direct");
            echo_once(&c).await;
            net::future::close_fixed_socket(c).await.expect("close by index");
            let mut m = net::future::accept_multi_direct(&*l);
            for _ in 0..2 {
                let c = net::future::next_accept_direct(&mut m).await.expect("next_accept_direct");
                assert!(c.index() < 2);
                echo_once(&c).await;
                net::future::close_fixed_socket(c).await.expect("close by index");
            }
            assert_eq!(net::future::next_accept(&mut m).await.err(), Some(Errno::EINVAL));
            1u64
        })
        .unwrap();
    finish(ex, t, lfd);
    assert_answered(cl.join().unwrap());
}

/// Yields until the driver has nothing in flight (bounded).
async fn until_idle() {
    for _ in 0..100_000 {
        let idle = core::future::poll_fn(|cx| {
            Poll::Ready(keel_core::io_status::with_driver::<RingDriver, _>(cx, |d| {
                keel_core::Driver::in_flight(&**d) == 0
            }))
        })
        .await
        .expect("a ring executor");
        if idle {
            return;
        }
        keel_core::rt::yield_now().await.expect("not cancelled");
    }
    panic!("the driver never went idle");
}

#[test]
fn completion_rule_3_abandoned_direct_accepts_that_complete_anyway_close_their_index_through_the_ring() {
    if ring_only("direct descriptors") {
        return;
    }
    // A table of one slot: each abandoned accept below takes it; only the driver's close
    // (completion rule 3) frees it for the next.
    let (ex, lfd, connected, cl) = setup(1, 2);
    let ex = ex.as_ref();
    let t = ex
        .attach(task(), async move {
            // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
            let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
            while connected.load(Ordering::Acquire) < 2 {
                keel_core::rt::sleep(Duration::from_millis(1)).await.expect("not cancelled");
            }
            // 1. Abandoned in flight: submitted, dropped before the kernel saw it. The
            // connection is already in the backlog, so the accept completes before the
            // driver's cancel reaches it (slot Abandoned, then the CQE).
            {
                let mut acc = pin!(net::future::accept_direct(&*l));
                let p = core::future::poll_fn(|cx| Poll::Ready(acc.as_mut().poll(cx).is_pending())).await;
                assert!(p, "the accept waits for the ring");
            }
            until_idle().await;
            // 2. Completed but never taken: the CQE arrives (slot Done), then the future
            // is dropped without another poll.
            {
                let mut acc = pin!(net::future::accept_direct(&*l));
                let p = core::future::poll_fn(|cx| Poll::Ready(acc.as_mut().poll(cx).is_pending())).await;
                assert!(p, "the accept waits for the ring");
                until_idle().await;
            }
            until_idle().await;
            // The single slot is free again: a direct socket fits.
            let s = net::future::socket_direct(AddressFamily::INET, SocketType::STREAM, None)
                .await
                .expect("the abandoned indexes were closed");
            net::future::close_fixed_socket(s).await.expect("close");
            1u64
        })
        .unwrap();
    finish(ex, t, lfd);
    // Both connections were accepted (neither is left in the backlog) and closed by keel.
    assert_closed_by_keel(cl.join().unwrap());
}

#[test]
fn completion_rule_3_a_dropped_direct_multishot_accept_closes_its_queued_indexes() {
    if ring_only("direct descriptors") {
        return;
    }
    const N: usize = 4;
    let (ex, lfd, connected, cl) = setup(N as u32, N);
    let ex = ex.as_ref();
    let t = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
            let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
            let t0 = std::time::Instant::now();
            while connected.load(Ordering::Acquire) < N {
                assert!(t0.elapsed() < Duration::from_secs(20), "clients never connected");
                f.sleep(Duration::from_millis(1)).unwrap();
            }
            let mut m = f.accept_multi_direct(&*l);
            // The first result arms it; the backlog fills the whole table at once.
            let first = f.next_accept_direct(&mut m).expect("first");
            drop(m); // N - 1 indexes queued and untaken: closed through the ring
            f.close_fixed_socket(first).expect("close");
            // Every slot is free again.
            let all: Vec<FixedSocket> = (0..N)
                .map(|i| {
                    f.socket_direct(AddressFamily::INET, SocketType::STREAM, None)
                        .unwrap_or_else(|e| panic!("slot {i}: {e:?}"))
                })
                .collect();
            for s in all {
                f.close_fixed_socket(s).expect("close");
            }
            1u64
        })
        .unwrap();
    finish(ex, t, lfd);
    assert_closed_by_keel(cl.join().unwrap());
}
