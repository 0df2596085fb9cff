//! Many concurrent connections echoing through keel, for both handler kinds.

#[path = "net_util/mod.rs"]
mod util;

use keel_linux::RingConfig;
use keel_linux::net::SockAddr;
use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;
use util::*;

fn echo(conns: u32, msgs: u32, size: usize, fiber: bool) {
    let t0 = Instant::now();
    let ex = executor(RingConfig { slots: 2048, entries: 512, cq_entries: 4096, ..RingConfig::default() });
    let ex = ex.as_ref();
    let (lfd, addr) = listen(ex, SockAddr::from("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap()));
    let bytes = Rc::new(Cell::new(0u64));
    let workers: Vec<_> = (0..conns)
        .map(|_| if fiber { fiber_worker(ex, lfd, bytes.clone()) } else { future_worker(ex, lfd, bytes.clone()) })
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
    eprintln!("echo {} conns x {} msgs ({}): {:?}", conns, msgs, if fiber { "fiber" } else { "future" }, t0.elapsed());
}

#[test]
fn echo_100x1000_fiber() {
    echo(100, 1000, 64, true);
}

#[test]
fn echo_100x1000_future() {
    echo(100, 1000, 64, false);
}
