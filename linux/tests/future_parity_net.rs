//! The future twins of the fiber socket calls that futures lacked (README "Fibers and
//! futures"): `send_then_recv` and `send_zc_fixed`. Each gives the result its fiber twin
//! gives; a cancelled task's call returns its completion or `ECANCELED` with the buffer;
//! a `send_zc_fixed` dropped in flight leaves its registered buffer to the slot, which
//! releases it only after the kernel's notification (regbuf rule 5, completion rule 4);
//! a `send_then_recv` moved out of its task completes in the task that polls it then
//! (wake-token rule 3 in `ring`).

#[path = "parity_util/mod.rs"]
mod parity;
#[path = "net_util/mod.rs"]
mod util;

use core::future::Future;
use core::pin::Pin;
use core::time::Duration;
use keel_core::{Errno, Fiber, rt};
use keel_linux::RingConfig;
use keel_linux::fs;
use keel_linux::net::{self, FiberNet, SockAddr, Socket};
use parity::poll_once;
use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use util::*;

type Log = Rc<RefCell<Vec<String>>>;

fn log() -> Log {
    Rc::new(RefCell::new(Vec::new()))
}

/// A listener through the ring and a std peer connected to it (the kernel completes the
/// handshake from the backlog; a task accepts it).
fn connected(ex: Pin<&Ex>) -> (RawFd, TcpStream) {
    let (lfd, addr) = listen(ex, SockAddr::from("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap()));
    let peer = TcpStream::connect(std_addr(&addr)).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (lfd, peer)
}

async fn accept(lfd: RawFd) -> Socket {
    // SAFETY: a view of the test's listener that never closes it (ManuallyDrop); the test
    // closes it once, after every task using it is done.
    let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd) });
    net::future::accept(&*l).await.unwrap()
}

/// A peer that answers each 4-byte request with its bytes reversed, until end of stream.
fn echo_reversed(mut peer: TcpStream) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut req = [0u8; 4];
        while peer.read_exact(&mut req).is_ok() {
            req.reverse();
            if peer.write_all(&req).is_err() {
                return;
            }
        }
    })
}

#[test]
fn future_send_then_recv_exchanges_as_the_fiber_call_does() {
    let ex = executor(RingConfig::default());
    let (lfd, peer) = connected(ex.as_ref());
    let peer = echo_reversed(peer);
    let out = log();
    let o = out.clone();
    ex.as_ref()
        .attach(task(), async move {
            let c = accept(lfd).await;
            let mut buf = Vec::with_capacity(64);
            buf.extend_from_slice(b"pingXXXX"); // only `len` bytes go out
            let (r, back) = net::future::send_then_recv(&c, buf, 4).await;
            o.borrow_mut().push(format!("{r:?} {:?} {}", String::from_utf8(back.clone()), back.capacity()));
            net::future::close_socket(c).await.unwrap();
            0u64
        })
        .unwrap();
    run_all(ex.as_ref());
    peer.join().unwrap();
    // The fiber twin, on the next connection.
    let (lfd2, peer) = connected(ex.as_ref());
    let peer = echo_reversed(peer);
    let o = out.clone();
    ex.as_ref()
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            // SAFETY: as in `accept`.
            let l = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(lfd2) });
            let c = f.accept(&*l).unwrap();
            let mut buf = *b"abcdXXXX";
            let r = f.send_then_recv(&c, &mut buf, 4);
            o.borrow_mut().push(format!("fiber {r:?} {:?}", std::str::from_utf8(&buf[..4])));
            f.close_socket(c).unwrap();
            0u64
        })
        .unwrap();
    run_all(ex.as_ref());
    peer.join().unwrap();
    parity::close(lfd);
    parity::close(lfd2);
    assert_eq!(
        *out.borrow(),
        ["Ok(4) Ok(\"gnip\") 64".to_owned(), format!("fiber Ok(4) {:?}", Ok::<&str, std::str::Utf8Error>("dcba")),]
    );
}

/// The request goes out, no answer comes, the task is cancelled: `ECANCELED` with the
/// buffer (its capacity kept); the peer got the request.
#[test]
fn slot_op_a_cancelled_send_then_recv_returns_its_buffer() {
    let ex = executor(RingConfig::default());
    let (lfd, mut peer) = connected(ex.as_ref());
    let out = log();
    let o = out.clone();
    let t = ex
        .as_ref()
        .attach(task(), async move {
            let c = accept(lfd).await;
            let (r, back) = net::future::send_then_recv(&c, b"ping".to_vec(), 4).await;
            o.borrow_mut().push(format!("{r:?} {} {}", back.len(), back.capacity()));
            0u64
        })
        .unwrap();
    let mut req = [0u8; 4];
    run_until(ex.as_ref(), || {
        peer.set_nonblocking(true).unwrap();
        let got = peer.read_exact(&mut req).is_ok();
        peer.set_nonblocking(false).unwrap();
        got
    });
    for _ in 0..3 {
        let _ = ex.as_ref().run(16, Some(Duration::from_millis(5)));
    }
    ex.as_ref().cancel(t).unwrap();
    run_all(ex.as_ref());
    parity::close(lfd);
    assert_eq!(&req, b"ping");
    assert_eq!(*out.borrow(), [format!("{:?} 0 4", Err::<u32, _>(Errno::ECANCELED))]);
}

type Parked = Rc<RefCell<Option<Pin<Box<dyn Future<Output = (Result<u32, Errno>, Vec<u8>)>>>>>>;

/// Task A starts an exchange (polls it once) and hands it out; A completes at once; task
/// B awaits it and gets the answer.
#[test]
fn wake_token_rule_3_a_send_then_recv_moved_out_of_its_task_completes_in_another() {
    let ex = executor(RingConfig::default());
    let (lfd, peer) = connected(ex.as_ref());
    let sock: Rc<RefCell<Option<&'static Socket>>> = Rc::new(RefCell::new(None));
    let s = sock.clone();
    ex.as_ref()
        .attach(task(), async move {
            *s.borrow_mut() = Some(Box::leak(Box::new(accept(lfd).await)));
            0u64
        })
        .unwrap();
    run_all(ex.as_ref());
    let c: &'static Socket = sock.borrow_mut().take().unwrap();
    let parked: Parked = Rc::new(RefCell::new(None));
    let p = parked.clone();
    let a = ex
        .as_ref()
        .attach(task(), async move {
            let mut f: Pin<Box<dyn Future<Output = _>>> = Box::pin(net::future::send_then_recv(c, b"abcd".to_vec(), 4));
            assert!(poll_once(&mut f).await.is_none(), "the send is submitted, nothing answered yet");
            *p.borrow_mut() = Some(f);
            1u64
        })
        .unwrap();
    run_until(ex.as_ref(), || parked.borrow().is_some());
    let _ = ex.as_ref().run(16, Some(Duration::from_millis(5)));
    assert_eq!(ex.as_ref().result(a), Ok(Some(Ok(1))), "A was not held by the exchange it moved out");
    let peer = echo_reversed(peer);
    let out = log();
    let (o, p) = (out.clone(), parked.clone());
    ex.as_ref()
        .attach(task(), async move {
            let f = p.borrow_mut().take().unwrap();
            let (r, back) = f.await;
            o.borrow_mut().push(format!("{r:?} {:?}", String::from_utf8(back)));
            0u64
        })
        .unwrap();
    run_all(ex.as_ref());
    // SAFETY: `c`'s descriptor is ours; shutting it down ends the peer's loop.
    unsafe { libc::shutdown(c.fd(), libc::SHUT_RDWR) };
    peer.join().unwrap();
    parity::close(lfd);
    assert_eq!(*out.borrow(), ["Ok(4) Ok(\"dcba\")"]);
}

#[test]
fn future_send_zc_fixed_sends_and_gives_the_buffer_back() {
    if ring_only("zero-copy sends from registered buffers") {
        return;
    }
    let ex = executor(RingConfig { registered_buffers: 1, ..RingConfig::default() });
    let (lfd, mut peer) = connected(ex.as_ref());
    // A buffer of another executor's ring, carried out of its task.
    let other = executor(RingConfig { registered_buffers: 1, ..RingConfig::default() });
    let foreign = Rc::new(RefCell::new(None));
    let fo = foreign.clone();
    other
        .as_ref()
        .attach(task(), async move {
            *fo.borrow_mut() = Some(fs::claim_buffer().await.unwrap());
            0u64
        })
        .unwrap();
    run_all(other.as_ref());
    let out = log();
    let o = out.clone();
    ex.as_ref()
        .attach(task(), async move {
            let c = accept(lfd).await;
            let fb = foreign.borrow_mut().take().unwrap();
            let (r, fb) = net::future::send_zc_fixed(&c, fb, 4).await;
            o.borrow_mut().push(format!("foreign {r:?} {}", fb.index()));
            let mut b = fs::claim_buffer().await.unwrap();
            b[..4].copy_from_slice(b"zero");
            let (r, b) = net::future::send_zc_fixed(&c, b, 4).await;
            o.borrow_mut().push(format!("sent {r:?} {}", b.index()));
            let (r, b) = net::future::send_zc_fixed(&c, b, 4097).await;
            o.borrow_mut().push(format!("too long {r:?} {}", b.index()));
            net::future::close_socket(c).await.unwrap();
            0u64
        })
        .unwrap();
    run_all(ex.as_ref());
    let mut got = Vec::new();
    peer.read_to_end(&mut got).unwrap();
    parity::close(lfd);
    assert_eq!(got, b"zero");
    assert_eq!(
        *out.borrow(),
        [
            format!("foreign {:?} 0", Err::<u32, _>(Errno(libc::EXDEV))),
            "sent Ok(4) 0".to_owned(),
            format!("too long {:?} 0", Err::<u32, _>(Errno::EINVAL)),
        ]
    );
}

#[derive(Copy, Clone, Debug, PartialEq)]
enum Leave {
    Drop,
    Cancel,
    MoveOut,
}

type ParkedZc =
    Rc<RefCell<Option<(Pin<Box<dyn Future<Output = (Result<u32, Errno>, fs::FixedBuf)>>>, &'static Socket)>>>;

/// Zero-copy sends of a 64 KiB registered buffer to a peer that does not read, until one
/// stays in flight; then the task drops that send (or is cancelled while awaiting it).
/// Dropped: the buffer is not released while the kernel may still read it (a claim
/// waits) and is released once the peer reads and the notification comes (the claim gets
/// it). Cancelled: the send returns (`ECANCELED`, or the bytes it sent) with the buffer.
/// Moved out: the task hands the send out and completes at once; another task awaits it
/// and gets the result and the buffer once the peer reads (wake-token rule 3).
fn a_blocked_send_zc_fixed_that_leaves(leave: Leave) {
    let ex = executor(RingConfig { registered_buffers: 1, registered_buffer_size: 64 * 1024, ..RingConfig::default() });
    let (lfd, mut peer) = connected(ex.as_ref());
    let read_now = Arc::new(AtomicBool::new(false));
    let (go, release) = (read_now.clone(), read_now.clone());
    let reader = std::thread::spawn(move || {
        // Acquire: pairs with the task's Release store once it has checked the claim.
        while !go.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut sink = Vec::new();
        peer.read_to_end(&mut sink).map(|_| sink.len()).unwrap_or(0)
    });
    let blocked = Rc::new(std::cell::Cell::new(false));
    let out = log();
    let parked: ParkedZc = Rc::new(RefCell::new(None));
    let (o, bl, read_now, pk) = (out.clone(), blocked.clone(), read_now.clone(), parked.clone());
    let t = ex
        .as_ref()
        .attach(task(), async move {
            let c: &'static Socket = Box::leak(Box::new(accept(lfd).await));
            // SAFETY: sets SO_SNDBUF on our socket from a local int.
            unsafe {
                let v: libc::c_int = 4096;
                libc::setsockopt(c.fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, (&v as *const libc::c_int).cast(), 4);
            }
            let mut b = fs::claim_buffer().await.unwrap();
            let mut pending = None;
            for _ in 0..256 {
                let mut f: Pin<Box<dyn Future<Output = _>>> = Box::pin(net::future::send_zc_fixed(c, b, 64 * 1024));
                let mut done = None;
                for _ in 0..3 {
                    done = poll_once(&mut f).await;
                    if done.is_some() {
                        break;
                    }
                    rt::yield_now().await.unwrap(); // the send reaches the kernel
                }
                match done {
                    Some((r, back)) => {
                        r.unwrap();
                        b = back;
                    }
                    None => {
                        pending = Some(f);
                        break;
                    }
                }
            }
            let f = pending.expect("a peer that does not read blocks the sender within 16 MiB");
            if leave == Leave::MoveOut {
                *pk.borrow_mut() = Some((f, c));
                return 0u64;
            }
            if leave == Leave::Cancel {
                bl.set(true);
                let (r, b) = f.await; // the task is cancelled while it waits here
                let ok = matches!(r, Err(Errno::ECANCELED) | Ok(_));
                o.borrow_mut().push(format!("cancelled send ended as expected {ok}, buffer {}", b.index()));
                read_now.store(true, Ordering::Release); // pairs with the reader's Acquire
                // SAFETY: `c`'s descriptor is ours; the peer's read ends at end of stream.
                unsafe { libc::shutdown(c.fd(), libc::SHUT_RDWR) };
                return 0u64;
            }
            drop(f);
            let mut claim = Box::pin(fs::claim_buffer());
            let waits = poll_once(&mut claim).await.is_none();
            o.borrow_mut().push(format!("claim waits {waits}"));
            read_now.store(true, Ordering::Release);
            let b = claim.await.unwrap();
            o.borrow_mut().push(format!("claimed {}", b.index()));
            // SAFETY: `c`'s descriptor is ours; the peer's read ends at end of stream.
            unsafe { libc::shutdown(c.fd(), libc::SHUT_RDWR) };
            0u64
        })
        .unwrap();
    if leave == Leave::Cancel {
        run_until(ex.as_ref(), || blocked.get());
        let _ = ex.as_ref().run(16, Some(Duration::from_millis(5)));
        ex.as_ref().cancel(t).unwrap();
    }
    if leave == Leave::MoveOut {
        run_until(ex.as_ref(), || parked.borrow().is_some());
        let _ = ex.as_ref().run(16, Some(Duration::from_millis(5)));
        assert_eq!(ex.as_ref().result(t), Ok(Some(Ok(0))), "the task was not held by the send it moved out");
        let (f, c) = parked.borrow_mut().take().unwrap();
        let (o, go) = (out.clone(), release.clone());
        ex.as_ref()
            .attach(task(), async move {
                go.store(true, Ordering::Release); // pairs with the reader's Acquire
                let (r, b) = f.await;
                o.borrow_mut().push(format!("moved send sent {}, buffer {}", r.is_ok_and(|n| n > 0), b.index()));
                // SAFETY: `c`'s descriptor is ours; the peer's read ends at end of stream.
                unsafe { libc::shutdown(c.fd(), libc::SHUT_RDWR) };
                0u64
            })
            .unwrap();
    }
    run_all(ex.as_ref());
    release.store(true, Ordering::Release); // pairs with the reader's Acquire
    let _ = reader.join();
    parity::close(lfd);
    let want: &[&str] = match leave {
        Leave::Drop => &["claim waits true", "claimed 0"],
        Leave::Cancel => &["cancelled send ended as expected true, buffer 0"],
        Leave::MoveOut => &["moved send sent true, buffer 0"],
    };
    assert_eq!(*out.borrow(), want);
}

#[test]
fn regbuf_rule_5_a_send_zc_fixed_dropped_in_flight_releases_its_buffer_only_after_the_notification() {
    if ring_only("zero-copy sends from registered buffers") {
        return;
    }
    a_blocked_send_zc_fixed_that_leaves(Leave::Drop);
}

#[test]
fn slot_op_a_cancelled_send_zc_fixed_returns_its_buffer() {
    if ring_only("zero-copy sends from registered buffers") {
        return;
    }
    a_blocked_send_zc_fixed_that_leaves(Leave::Cancel);
}

#[test]
fn wake_token_rule_3_a_send_zc_fixed_moved_out_of_its_task_completes_in_another() {
    if ring_only("zero-copy sends from registered buffers") {
        return;
    }
    a_blocked_send_zc_fixed_that_leaves(Leave::MoveOut);
}
