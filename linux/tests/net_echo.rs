//! Many concurrent connections echoing through keel, for both handler kinds.

#[path = "net_util/mod.rs"]
mod util;

use keel_linux::RingConfig;
use keel_linux::net::SockAddr;
use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;
use util::*;

#[derive(Copy, Clone, Debug, PartialEq)]
enum Handler {
    Fiber,
    Future,
    /// Fiber handlers with `send_then_recv` (a linked send and receive per message).
    Exchange,
}

fn echo(conns: u32, msgs: u32, size: usize, kind: Handler) {
    echo_on(conns, msgs, size, kind, 2048);
}

fn echo_on(conns: u32, msgs: u32, size: usize, kind: Handler, slots: u32) {
    let t0 = Instant::now();
    let ex = executor(RingConfig { slots, entries: 512, cq_entries: 4096, ..RingConfig::default() });
    let ex = ex.as_ref();
    let (lfd, addr) = listen(ex, SockAddr::from("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap()));
    let bytes = Rc::new(Cell::new(0u64));
    let workers: Vec<_> = (0..conns)
        .map(|_| match kind {
            Handler::Fiber => fiber_worker(ex, lfd, bytes.clone()),
            Handler::Future => future_worker(ex, lfd, bytes.clone()),
            Handler::Exchange => exchange_worker(ex, lfd, bytes.clone()),
        })
        .collect();
    let a = std_addr(&addr);
    let clients: Vec<_> = (0..conns).map(|i| std::thread::spawn(move || echo_client(a, i, msgs, size))).collect();
    run_until(ex, || clients.iter().all(|c| c.is_finished()));
    for c in clients {
        c.join().expect("client");
    }
    for w in &workers {
        let _ = ex.cancel(*w);
    }
    run_all(ex);
    // SAFETY-free: the listener's descriptor is ours.
    // SAFETY: the test's own listener, which no task uses any more: closed once, here.
    drop(unsafe { keel_linux::net::Socket::from_raw_fd(lfd) });
    assert_eq!(bytes.get(), conns as u64 * msgs as u64 * size as u64, "every byte echoed once");
    eprintln!("echo {conns} conns x {msgs} msgs ({kind:?}, {slots} slots): {:?}", t0.elapsed());
}

/// Echo worker, fiber, one suspension per message: the first message with `recv`, each
/// later one with `send_then_recv` (the echo linked to the next receive).
fn exchange_worker(ex: std::pin::Pin<&Ex>, lfd: std::os::fd::RawFd, bytes: Rc<Cell<u64>>) -> keel_core::TaskHandle {
    use keel_linux::net::{FiberNet, Socket};
    ex.attach_fiber(task(), fattrs(), move |f: &mut keel_core::Fiber| {
        // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
        let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
        let mut buf = [0u8; 4096];
        while let Ok(c) = f.accept(&*l) {
            let mut n = f.recv(&c, &mut buf).unwrap_or(0);
            while n > 0 {
                let echoed = n;
                n = f.send_then_recv(&c, &mut buf, n as usize).unwrap_or_default();
                bytes.set(bytes.get() + echoed as u64);
            }
            let _ = f.close_socket(c);
        }
        0u64
    })
    .unwrap()
}

#[test]
fn echo_100x1000_fiber() {
    echo(100, 1000, 64, Handler::Fiber);
}

#[test]
fn echo_100x1000_future() {
    echo(100, 1000, 64, Handler::Future);
}

#[test]
fn echo_100x1000_fiber_send_then_recv() {
    echo(100, 1000, 64, Handler::Exchange);
}

/// Too few operation slots for every handler to put a linked pair in at once: some
/// exchanges take the one-after-the-other path, and every byte still comes back.
#[test]
fn echo_send_then_recv_with_little_room_falls_back_and_loses_nothing() {
    echo_on(20, 300, 64, Handler::Exchange, 21);
}

/// A task cancelled inside `send_then_recv` while its send is blocked (the peer never
/// reads 16 MiB) ends with ECANCELED: both operations are cancelled and reaped.
#[test]
fn a_cancelled_send_then_recv_ends_with_its_send_blocked() {
    use keel_linux::net::{FiberNet, Socket};
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let (lfd, addr) = listen(ex, SockAddr::from("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap()));
    let a = std_addr(&addr);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let client = std::thread::spawn(move || {
        let s = std::net::TcpStream::connect(a).expect("connect");
        // Never reads; holds the connection until the server task has ended.
        let _ = done_rx.recv_timeout(std::time::Duration::from_secs(30));
        drop(s);
    });
    let t = ex
        .attach_fiber(task(), fattrs(), move |f: &mut keel_core::Fiber| {
            // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test closes it once, after every task using it is done.
            let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
            let c = f.accept(&*l).expect("accept");
            let mut big = vec![7u8; 16 << 20];
            let n = big.len();
            let r = f.send_then_recv(&c, &mut big, n);
            let _ = f.close_socket(c);
            match r {
                Err(e) => e.0 as u64,
                Ok(_) => 0,
            }
        })
        .unwrap();
    let t0 = Instant::now();
    run_until(ex, || t0.elapsed() > std::time::Duration::from_millis(200));
    assert_eq!(
        ex.state(t),
        Ok(keel_core::TaskState::Suspended(keel_core::SuspendReason::Io)),
        "the send must be blocked on the peer"
    );
    ex.cancel(t).unwrap();
    run_all(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(libc::ECANCELED as u64))));
    done_tx.send(()).unwrap();
    client.join().unwrap();
    // SAFETY: the test's own listener, which no task uses any more: closed once, here.
    drop(unsafe { keel_linux::net::Socket::from_raw_fd(lfd) });
}
