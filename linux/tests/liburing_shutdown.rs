//! liburing's `shutdown.c`, `accept.c` (a non-listening socket) and
//! `mshot-shutdown-race.c`: `shutdown(2)` through keel while another task's operation
//! waits on the same socket. A receive waiting on a connection that another task shuts
//! down ends with end of stream (and the peer sees it too); an accept waiting on a
//! listener that another task shuts down ends with `EINVAL`, as an accept on a socket that
//! never listened does at once. None hangs: each wait is bounded by a deadline (a wait
//! that never ends is `TIMED_OUT`). Fibers and futures, on the `Auto` backend
//! (`KEEL_DRIVER=epoll`: the epoll engine). 127.0.0.1 only.

#[path = "net_util/mod.rs"]
mod util;

use core::time::Duration;
use keel_core::{Errno, Fiber, rt};
use keel_linux::RingConfig;
use keel_linux::deadline::{self, Deadline, FiberDeadline};
use keel_linux::net::{self, FiberNet, Shutdown, Socket};
use std::cell::RefCell;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use util::{executor, fattrs, run_all, task};

fn bound() -> Deadline {
    Deadline::after(Duration::from_secs(5))
}

/// A connected TCP pair on 127.0.0.1: keel's end and the std peer.
fn tcp_pair() -> (Rc<Socket>, std::net::TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (ours, _) = l.accept().unwrap();
    (Rc::new(Socket::from(OwnedFd::from(ours))), peer)
}

/// Runs `wait` (a fiber's or a future's operation on `s`, per `fiber`) and, in another
/// task, `shutdown(s, how)` after a sleep; returns the operation's result and the
/// shutdown's.
fn wait_then_shutdown<T: 'static>(
    s: Rc<Socket>,
    how: Shutdown,
    fiber: bool,
    on_fiber: impl FnOnce(&mut Fiber, &Socket) -> Result<T, Errno> + 'static,
    on_future: impl AsyncFnOnce(&Socket) -> Result<T, Errno> + 'static,
) -> (Result<T, Errno>, Result<(), Errno>) {
    let got: Rc<RefCell<Option<Result<T, Errno>>>> = Rc::default();
    let shut: Rc<RefCell<Option<Result<(), Errno>>>> = Rc::default();
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let (g, s1) = (got.clone(), s.clone());
    if fiber {
        ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let r = f.within(bound(), |f| on_fiber(f, &s1));
            *g.borrow_mut() = Some(r);
            0u64
        })
        .unwrap();
    } else {
        ex.attach(task(), async move {
            let r = deadline::within(bound(), on_future(&s1)).await;
            *g.borrow_mut() = Some(r);
            0u64
        })
        .unwrap();
    }
    let sh = shut.clone();
    ex.attach(task(), async move {
        rt::sleep(Duration::from_millis(30)).await.unwrap();
        *sh.borrow_mut() = Some(net::future::shutdown(&*s, how).await);
        0u64
    })
    .unwrap();
    run_all(ex);
    let r = got.borrow_mut().take().expect("the waiting task finished");
    let sh = shut.borrow_mut().take().expect("the shutting task finished");
    (r, sh)
}

#[test]
fn a_receive_waiting_on_a_connection_another_task_shuts_down_ends_with_end_of_stream() {
    for how in [Shutdown::Read, Shutdown::Both] {
        for fiber in [true, false] {
            let (s, mut peer) = tcp_pair();
            let (r, sh) = wait_then_shutdown(
                s,
                how,
                fiber,
                |f, s| {
                    let mut buf = [0u8; 64];
                    f.recv(s, &mut buf)
                },
                async |s| net::future::recv(s, Vec::with_capacity(64)).await.0,
            );
            assert_eq!(sh, Ok(()), "{how:?} fiber {fiber}: the shutdown");
            assert_eq!(r, Ok(0), "{how:?} fiber {fiber}: the waiting receive ends with end of stream");
            if how == Shutdown::Both {
                peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut b = [0u8; 8];
                assert_eq!(peer.read(&mut b).unwrap(), 0, "fiber {fiber}: the peer sees end of stream");
            }
        }
    }
}

#[test]
fn an_accept_waiting_on_a_listener_another_task_shuts_down_ends_with_einval() {
    for fiber in [true, false] {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let l = Rc::new(Socket::from(OwnedFd::from(l)));
        let (r, sh) = wait_then_shutdown(
            l,
            Shutdown::Both,
            fiber,
            |f, l| f.accept(l).map(drop),
            async |l| net::future::accept(l).await.map(drop),
        );
        assert_eq!(sh, Ok(()), "fiber {fiber}: the shutdown");
        assert_eq!(r, Err(Errno::EINVAL), "fiber {fiber}: the waiting accept (TIMED_OUT 62: it hung)");
    }
}

#[test]
fn an_accept_on_a_socket_that_never_listened_is_einval() {
    for fiber in [true, false] {
        let s = rustix::net::socket(rustix::net::AddressFamily::INET, rustix::net::SocketType::STREAM, None).unwrap();
        rustix::net::bind(&s, &"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap()).unwrap();
        let s = Rc::new(Socket::from(s));
        let got: Rc<RefCell<Option<Result<(), Errno>>>> = Rc::default();
        let ex = executor(RingConfig::default());
        let ex = ex.as_ref();
        let g = got.clone();
        if fiber {
            ex.attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
                *g.borrow_mut() = Some(f.within(bound(), |f| f.accept(&*s).map(drop)));
                0u64
            })
            .unwrap();
        } else {
            ex.attach(task(), async move {
                *g.borrow_mut() = Some(deadline::within(bound(), net::future::accept(&*s)).await.map(drop));
                0u64
            })
            .unwrap();
        }
        run_all(ex);
        assert_eq!(got.borrow_mut().take(), Some(Err(Errno::EINVAL)), "fiber {fiber}");
    }
}
