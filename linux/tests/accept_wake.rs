//! Many accepts waiting on one listener: a burst of connections completes one accept per
//! connection and strands none, also with two executors on two threads sharing the
//! listener (each engine's woken accept may lose the connection to the other's and waits
//! again: readiness rule 10 in `epoll/engine/ready.rs`). Each case runs on the `Auto`
//! backend and on the epoll engine: the same task code, two drivers.

#[path = "net_util/mod.rs"]
mod net_util;

use keel_core::{Config, Executor, Fiber};
use keel_linux::net::{FiberNet, Socket};
use keel_linux::{BackendChoice, MmapStacks, RingConfig, RingDriver};
use net_util::{Ex, fattrs, run_all, task};
use std::cell::Cell;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;

fn executor(backend: BackendChoice) -> Pin<Box<Ex>> {
    let d = RingDriver::new(RingConfig { backend, ..RingConfig::default() }).expect("a driver");
    Box::pin(Executor::with_stacks(d, MmapStacks::new().unwrap(), Config::default()).unwrap())
}

/// `n` fibers on `ex`, each accepting one connection on `lfd` and closing it; `count`
/// counts the accepts that succeeded.
fn acceptors(ex: Pin<&Ex>, lfd: RawFd, n: usize, count: Rc<Cell<u32>>) {
    for _ in 0..n {
        let count = count.clone();
        ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            // SAFETY: a view of the test's listener that never closes it (ManuallyDrop);
            // the test closes it after every task using it is done.
            let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
            let c = f.accept(&*l).expect("accept");
            count.set(count.get() + 1);
            f.close_socket(c).expect("close");
            0
        })
        .unwrap();
    }
}

/// Eight accepts wait (one pass ran), then eight connections arrive at once (one edge):
/// every accept completes.
#[test]
fn a_burst_of_connections_completes_every_waiting_accept() {
    for backend in [BackendChoice::Auto, BackendChoice::Epoll] {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let ex = executor(backend);
        let ex = ex.as_ref();
        let count = Rc::new(Cell::new(0));
        acceptors(ex, l.as_raw_fd(), 8, count.clone());
        ex.run(64, Some(core::time::Duration::ZERO)).unwrap();
        assert_eq!(count.get(), 0, "{backend:?}: no connection yet");
        let clients: Vec<_> = (0..8).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        run_all(ex);
        assert_eq!(count.get(), 8, "{backend:?}: one accept per connection, none stranded");
        drop(clients);
    }
}

/// Two executors on two threads, four accepts each on one listener; eight connections
/// from a third thread: all eight accepts complete, whichever engine's accept lost a race.
#[test]
fn two_executors_sharing_a_listener_strand_no_accept() {
    for backend in [BackendChoice::Auto, BackendChoice::Epoll] {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let lfd = l.as_raw_fd();
        let start = std::sync::Arc::new(std::sync::Barrier::new(3));
        let servers: Vec<_> = (0..2)
            .map(|_| {
                let start = start.clone();
                std::thread::spawn(move || {
                    let ex = executor(backend);
                    let ex = ex.as_ref();
                    let count = Rc::new(Cell::new(0));
                    acceptors(ex, lfd, 4, count.clone());
                    ex.run(64, Some(core::time::Duration::ZERO)).unwrap();
                    start.wait();
                    run_all(ex);
                    count.get()
                })
            })
            .collect();
        start.wait();
        let clients: Vec<_> = (0..8).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        let accepted: u32 = servers.into_iter().map(|s| s.join().unwrap()).sum();
        assert_eq!(accepted, 8, "{backend:?}");
        drop((clients, l));
    }
}
