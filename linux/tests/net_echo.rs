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
    drop(keel_linux::net::Socket::from_raw_fd(lfd));
    assert_eq!(bytes.get(), conns as u64 * msgs as u64 * size as u64, "every byte echoed once");
    eprintln!("echo {conns} conns x {msgs} msgs ({kind:?}, {slots} slots): {:?}", t0.elapsed());
}

/// Echo worker, fiber, one suspension per message: the first message with `recv`, each
/// later one with `send_then_recv` (the echo linked to the next receive).
fn exchange_worker(ex: std::pin::Pin<&Ex>, lfd: std::os::fd::RawFd, bytes: Rc<Cell<u64>>) -> keel_core::TaskHandle {
    use keel_linux::net::{FiberNet, Socket};
    ex.attach_fiber(task(), fattrs(), move |f: &mut keel_core::Fiber| {
        let l = std::mem::ManuallyDrop::new(Socket::from_raw_fd(lfd));
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
