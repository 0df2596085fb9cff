//! sendmsg/recvmsg through the ring (`net/msg.rs`), fibers and futures: UDP and Unix
//! datagrams with addresses, descriptors passed with SCM_RIGHTS (owned on arrival, never
//! leaked: a short control buffer, a future dropped after the kernel completed), bad input
//! and cancellation. Sockets on 127.0.0.1 and socket pairs only; every wait is bounded by
//! the runner's 60 s cap.

#[path = "net_util/mod.rs"]
mod util;

use core::future::Future;
use core::task::{Context, Poll};
use keel_core::{Errno, Fiber, rt};
use keel_linux::RingConfig;
use keel_linux::net::{self, AddressFamily, FiberMsg, FiberNet, ReturnFlags, SockAddr, SocketType};
use std::cell::RefCell;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use util::*;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut p = [0; 2];
    // SAFETY: `p` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) }, 0);
    // SAFETY: just made, ours, wrapped once each.
    unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) }
}

/// Whether every write end of the pipe whose read end is `r` is closed (read says end of
/// file rather than "would block").
fn writers_gone(r: &OwnedFd) -> bool {
    let mut b = [0u8; 16];
    loop {
        // SAFETY: reads into `b`, within its length.
        match unsafe { libc::read(r.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) } {
            0 => return true,
            n if n > 0 => continue,
            _ => return false,
        }
    }
}

/// Bytes queued on a socket, unread (`SIOCINQ`).
fn unread(fd: i32) -> i32 {
    let mut n: i32 = 0;
    // SAFETY: FIONREAD writes one int into `n`.
    assert_eq!(unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) }, 0);
    n
}

fn udp_pair(f: &mut Fiber) -> (net::Socket, SockAddr, net::Socket, SockAddr) {
    let any: SockAddr = "127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into();
    let a = f.socket(AddressFamily::INET, SocketType::DGRAM, None).unwrap();
    let b = f.socket(AddressFamily::INET, SocketType::DGRAM, None).unwrap();
    f.bind(&a, &any).unwrap();
    f.bind(&b, &any).unwrap();
    let (aa, ba) = (net::local_addr(&a).unwrap(), net::local_addr(&b).unwrap());
    (a, aa, b, ba)
}

#[test]
fn msg_udp_datagrams_carry_their_sender_fiber_and_future() {
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let t = ex
        .attach_fiber(task(), fattrs(), |f: &mut Fiber| {
            let (a, aa, b, ba) = udp_pair(f);
            assert_eq!(f.send_to(&a, b"hello", &ba), Ok(5));
            let mut buf = [0u8; 64];
            let (n, from) = f.recv_from(&b, &mut buf).unwrap();
            assert_eq!((&buf[..n as usize], from.and_then(|a| a.to_std())), (&b"hello"[..], aa.to_std()));
            // A datagram longer than the buffer: MSG_TRUNC, the rest is gone.
            assert_eq!(f.send_to(&b, &[9u8; 100], &aa), Ok(100));
            let mut small = [0u8; 10];
            let r = f.recv_msg(&a, &mut small, 0).unwrap();
            assert_eq!(r.len, 10);
            assert!(r.flags.contains(ReturnFlags::TRUNC), "{:?}", r.flags);
            assert_eq!(r.from.and_then(|a| a.to_std()), ba.to_std());
            1u64
        })
        .unwrap();
    let u = ex
        .attach(task(), async {
            let any: SockAddr = "127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into();
            let a = net::future::socket(AddressFamily::INET, SocketType::DGRAM, None).await.unwrap();
            let b = net::future::socket(AddressFamily::INET, SocketType::DGRAM, None).await.unwrap();
            net::future::bind(&a, &any).await.unwrap();
            net::future::bind(&b, &any).await.unwrap();
            let (aa, ba) = (net::local_addr(&a).unwrap(), net::local_addr(&b).unwrap());
            let (r, back) = net::future::send_to(&a, b"future".to_vec(), &ba).await;
            assert_eq!((r, &back[..]), (Ok(6), &b"future"[..]));
            let (r, got) = net::future::recv_from(&b, Vec::with_capacity(64)).await;
            let (n, from) = r.unwrap();
            assert_eq!((n, &got[..]), (6, &b"future"[..]));
            assert_eq!(from.and_then(|a| a.to_std()), aa.to_std());
            1u64
        })
        .unwrap();
    run_all(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
    assert_eq!(ex.result(u), Ok(Some(Ok(1))));
}

#[test]
fn msg_unix_datagrams_name_a_bound_sender_and_not_an_unbound_one() {
    let dir = std::env::temp_dir().join(format!("keel-msg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (pa, pb) = (dir.join("a").to_str().unwrap().to_owned(), dir.join("b").to_str().unwrap().to_owned());
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let t = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let (aa, ba) = (SockAddr::unix(&pa).unwrap(), SockAddr::unix(&pb).unwrap());
            let a = f.socket(AddressFamily::UNIX, SocketType::DGRAM, None).unwrap();
            let b = f.socket(AddressFamily::UNIX, SocketType::DGRAM, None).unwrap();
            let c = f.socket(AddressFamily::UNIX, SocketType::DGRAM, None).unwrap(); // unbound
            f.bind(&a, &aa).unwrap();
            f.bind(&b, &ba).unwrap();
            assert_eq!(f.send_to(&a, b"from a", &ba), Ok(6));
            assert_eq!(f.send_to(&c, b"from c", &ba), Ok(6));
            let mut buf = [0u8; 16];
            let (_, from) = f.recv_from(&b, &mut buf).unwrap();
            assert_eq!(from.unwrap().unix_path(), Some(pa.as_bytes()));
            let (n, from) = f.recv_from(&b, &mut buf).unwrap();
            assert_eq!(&buf[..n as usize], b"from c");
            assert!(from.is_none(), "an unbound sender has no name: {from:?}");
            1u64
        })
        .unwrap();
    run_all(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Msg rule 2: a descriptor passed over a Unix stream arrives owned and working (a pipe's
/// write end: what is written through it comes out of the read end), fiber to future.
#[test]
fn msg_scm_rights_pass_a_working_descriptor_fiber_to_future() {
    let (a, b) = net::socket_pair(AddressFamily::UNIX, SocketType::STREAM).unwrap();
    let (r, w) = pipe();
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let t = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            assert_eq!(f.send_msg(&a, b"fd!", None, &[w.as_fd()]), Ok(3));
            drop(w); // ours is closed; the kernel's reference travels in the message
            1u64
        })
        .unwrap();
    let got = Rc::new(RefCell::new(None));
    let g = got.clone();
    let u = ex
        .attach(task(), async move {
            let (res, buf) = net::future::recv_msg(&b, Vec::with_capacity(16), 4).await;
            let rcv = res.unwrap();
            assert_eq!((rcv.len, &buf[..]), (3, &b"fd!"[..]));
            assert!(rcv.flags.is_empty(), "{:?}", rcv.flags);
            assert_eq!(rcv.fds.len(), 1);
            *g.borrow_mut() = rcv.fds.into_iter().next();
            1u64
        })
        .unwrap();
    run_all(ex);
    assert_eq!((ex.result(t), ex.result(u)), (Ok(Some(Ok(1))), Ok(Some(Ok(1)))));
    let w2 = got.borrow_mut().take().unwrap();
    // SAFETY: writes 4 bytes from a live buffer to a descriptor we own.
    assert_eq!(unsafe { libc::write(w2.as_raw_fd(), b"ping".as_ptr().cast(), 4) }, 4);
    let mut back = [0u8; 4];
    // SAFETY: reads into `back`, within its length.
    assert_eq!(unsafe { libc::read(r.as_raw_fd(), back.as_mut_ptr().cast(), 4) }, 4);
    assert_eq!(&back, b"ping");
    // SAFETY: only asks for the descriptor's flags.
    assert_ne!(unsafe { libc::fcntl(w2.as_raw_fd(), libc::F_GETFD) } & libc::FD_CLOEXEC, 0, "close-on-exec");
    drop(w2);
    assert!(writers_gone(&r), "the received copy was the last writer");
}

/// Msg rule 3: three descriptors sent, room for one (then for none): one arrives, the
/// rest are discarded, `MSG_CTRUNC` says so, and the process holds exactly the descriptors
/// it held before.
#[test]
fn msg_a_short_control_buffer_truncates_and_leaks_nothing() {
    let (a, b) = net::socket_pair(AddressFamily::UNIX, SocketType::STREAM).unwrap();
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let before = open_fds();
    let pipes: Vec<_> = (0..6).map(|_| pipe()).collect();
    let t = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let ws: Vec<_> = pipes.iter().map(|(_, w)| w.as_fd()).collect();
            assert_eq!(f.send_msg(&a, b"x", None, &ws[..3]), Ok(1));
            assert_eq!(f.send_msg(&a, b"y", None, &ws[3..]), Ok(1));
            let mut buf = [0u8; 1];
            let one = f.recv_msg(&b, &mut buf, 1).unwrap();
            assert_eq!((one.len, one.fds.len()), (1, 1));
            assert!(one.flags.contains(ReturnFlags::CTRUNC), "{:?}", one.flags);
            let none = f.recv_msg(&b, &mut buf, 0).unwrap();
            assert_eq!((none.len, none.fds.len()), (1, 0));
            assert!(none.flags.contains(ReturnFlags::CTRUNC), "{:?}", none.flags);
            drop((one, none));
            // Every write end is now held only by `pipes`: dropping them leaves no writer.
            let (rs, ws): (Vec<_>, Vec<_>) = pipes.into_iter().unzip();
            drop(ws);
            assert!(rs.iter().all(writers_gone), "no received copy survives");
            drop(rs);
            1u64
        })
        .unwrap();
    run_all(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
    assert_eq!(open_fds(), before - 2, "descriptors at baseline (less the pair the fiber closed)");
}

/// Msg rules 1-2: a receive future polled until the kernel has completed it (the message
/// and its descriptor in the slot), then dropped without taking it: the descriptor is
/// closed. One dropped while still waiting leaves the message queued for the next receive.
#[test]
fn msg_a_dropped_receive_closes_what_it_got_and_loses_no_message() {
    let (a, b) = net::socket_pair(AddressFamily::UNIX, SocketType::STREAM).unwrap();
    let (r, w) = pipe();
    let (r2, w2) = pipe();
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let before = open_fds();
    let out = Rc::new(RefCell::new(Vec::new()));
    let o = out.clone();
    let bfd = b.as_raw_fd();
    ex.attach(task(), async move {
        // Completed, then dropped untaken.
        let mut f = Box::pin(net::future::recv_msg(&b, Vec::with_capacity(8), 2));
        core::future::poll_fn(|cx: &mut Context<'_>| {
            assert!(f.as_mut().poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        rt::yield_now().await.unwrap(); // submitted; waits for data
        let (res, _, back) = net::future::send_msg(&a, b"m1".to_vec(), None, vec![w]).await;
        assert_eq!(res, Ok(2));
        drop(back); // our copy of the write end
        for _ in 0..1000 {
            if unread(bfd) == 0 {
                break; // the kernel's receive took the message and installed its descriptor
            }
            keel_linux::fs::nop().await.unwrap();
        }
        drop(f);
        let mut gone = false;
        for _ in 0..1000 {
            // A ring round trip: the driver takes the abandoned op (shared rule 2) and reaps.
            keel_linux::fs::nop().await.unwrap();
            gone = writers_gone(&r);
            if gone {
                break;
            }
        }
        o.borrow_mut().push(gone);
        // Dropped while waiting: cancelled, and the next message stays for the next receive.
        let mut f = Box::pin(net::future::recv_msg(&b, Vec::with_capacity(8), 2));
        core::future::poll_fn(|cx: &mut Context<'_>| {
            assert!(f.as_mut().poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        rt::yield_now().await.unwrap();
        drop(f);
        rt::yield_now().await.unwrap();
        let (res, _, back) = net::future::send_msg(&a, b"m2".to_vec(), None, vec![w2]).await;
        assert_eq!(res, Ok(2));
        drop(back);
        let (res, buf) = net::future::recv_msg(&b, Vec::with_capacity(8), 2).await;
        let got = res.unwrap();
        o.borrow_mut().push(&buf[..] == b"m2" && got.fds.len() == 1);
        drop(got);
        o.borrow_mut().push(writers_gone(&r2));
        drop((r, r2));
        0u64
    })
    .unwrap();
    run_all(ex);
    assert_eq!(*out.borrow(), [true, true, true]);
    assert_eq!(open_fds(), before - 6, "the two pipes and the pair are gone, nothing else");
}

/// Msg rule 3: more than 253 descriptors to send or to receive is `EINVAL` before
/// anything is submitted (fibers and futures); the future hands its arguments back.
#[test]
fn msg_more_than_scm_max_fd_is_einval() {
    let (a, b) = net::socket_pair(AddressFamily::UNIX, SocketType::STREAM).unwrap();
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let t = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let fds = vec![a.as_fd(); net::MAX_FDS + 1];
            assert_eq!(f.send_msg(&a, b"x", None, &fds), Err(Errno::EINVAL));
            let mut buf = [0u8; 1];
            assert_eq!(f.recv_msg(&b, &mut buf, net::MAX_FDS + 1).err(), Some(Errno::EINVAL));
            1u64
        })
        .unwrap();
    let (c, d) = net::socket_pair(AddressFamily::UNIX, SocketType::STREAM).unwrap();
    let u = ex
        .attach(task(), async move {
            let fds: Vec<OwnedFd> = (0..=net::MAX_FDS).map(|_| c.as_fd().try_clone_to_owned().unwrap()).collect();
            let (r, buf, back) = net::future::send_msg(&c, b"x".to_vec(), None, fds).await;
            assert_eq!((r, &buf[..], back.len()), (Err(Errno::EINVAL), &b"x"[..], net::MAX_FDS + 1));
            let (r, _) = net::future::recv_msg(&d, Vec::with_capacity(1), net::MAX_FDS + 1).await;
            assert_eq!(r.err(), Some(Errno::EINVAL));
            1u64
        })
        .unwrap();
    run_all(ex);
    assert_eq!((ex.result(t), ex.result(u)), (Ok(Some(Ok(1))), Ok(Some(Ok(1)))));
}

/// Msg rule 5: a fiber cancelled while its receive waits gets `ECANCELED`, a future's
/// task the same; the executor drains.
#[test]
fn msg_a_cancelled_receive_returns_ecanceled() {
    let (_a, b) = net::socket_pair(AddressFamily::UNIX, SocketType::DGRAM).unwrap();
    let (_c, d) = net::socket_pair(AddressFamily::UNIX, SocketType::DGRAM).unwrap();
    let ex = executor(RingConfig::default());
    let ex = ex.as_ref();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s1 = seen.clone();
    let t = ex
        .attach_fiber(task(), fattrs(), move |f: &mut Fiber| {
            let mut buf = [0u8; 8];
            s1.borrow_mut().push(f.recv_msg(&b, &mut buf, 1).err());
            0u64
        })
        .unwrap();
    let s2 = seen.clone();
    let u = ex
        .attach(task(), async move {
            let (r, _) = net::future::recv_msg(&d, Vec::with_capacity(8), 1).await;
            s2.borrow_mut().push(r.err());
            0u64
        })
        .unwrap();
    for _ in 0..3 {
        let _ = ex.run(16, Some(core::time::Duration::from_millis(5)));
    }
    ex.cancel(t).unwrap();
    ex.cancel(u).unwrap();
    run_all(ex);
    assert_eq!(*seen.borrow(), [Some(Errno::ECANCELED), Some(Errno::ECANCELED)]);
}

/// Msg rule 2 with shared rule 4: a receive future whose message and descriptor the
/// kernel delivered is moved out of its task, the executor is dropped, then the future:
/// the driver's teardown gave the result back, so the descriptor is closed.
#[test]
fn msg_a_receive_outliving_its_executor_leaks_no_descriptor() {
    let (a, b) = net::socket_pair(AddressFamily::UNIX, SocketType::STREAM).unwrap();
    let (r, w) = pipe();
    type Recv = core::pin::Pin<Box<dyn Future<Output = (Result<net::Received, Errno>, Vec<u8>)>>>;
    let kept: Rc<RefCell<Option<Recv>>> = Rc::new(RefCell::new(None));
    let k = kept.clone();
    let ex = executor(RingConfig::default());
    let bfd = b.as_raw_fd();
    ex.as_ref()
        .attach(task(), async move {
            let b: &'static net::Socket = Box::leak(Box::new(b));
            let mut f: Recv = Box::pin(net::future::recv_msg(b, Vec::with_capacity(8), 1));
            core::future::poll_fn(|cx: &mut Context<'_>| {
                assert!(f.as_mut().poll(cx).is_pending());
                Poll::Ready(())
            })
            .await;
            keel_linux::fs::nop().await.unwrap();
            let (res, _, back) = net::future::send_msg(&a, b"m".to_vec(), None, vec![w]).await;
            assert_eq!(res, Ok(1));
            drop(back);
            for _ in 0..1000 {
                if unread(bfd) == 0 {
                    break;
                }
                keel_linux::fs::nop().await.unwrap();
            }
            *k.borrow_mut() = Some(f); // moved out of the task, its result untaken
            0u64
        })
        .unwrap();
    run_all(ex.as_ref());
    drop(ex);
    drop(kept.borrow_mut().take());
    assert!(writers_gone(&r), "the received write end was closed");
}

/// Messages on direct descriptors (a UDP socket in the fixed-file table): the same calls,
/// naming the socket by index.
#[test]
fn msg_datagrams_on_direct_sockets() {
    if ring_only("direct descriptors") {
        return;
    }
    let ex = executor(RingConfig { registered_files: 4, ..RingConfig::default() });
    let ex = ex.as_ref();
    let t = ex
        .attach_fiber(task(), fattrs(), |f: &mut Fiber| {
            let (a, _aa, b, ba) = udp_pair(f);
            let d = f.socket_direct(AddressFamily::INET, SocketType::DGRAM, None).unwrap();
            let any: SockAddr = "127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into();
            f.bind(&d, &any).unwrap();
            assert_eq!(f.send_to(&d, b"direct", &ba), Ok(6));
            let mut buf = [0u8; 16];
            let (n, from) = f.recv_from(&b, &mut buf).unwrap();
            assert_eq!(&buf[..n as usize], b"direct");
            let from = from.unwrap();
            assert_eq!(f.send_to(&a, b"back", &from), Ok(4));
            let r = f.recv_msg(&d, &mut buf, 0).unwrap();
            assert_eq!(&buf[..r.len as usize], b"back");
            f.close_fixed_socket(d).unwrap();
            1u64
        })
        .unwrap();
    run_all(ex);
    assert_eq!(ex.result(t), Ok(Some(Ok(1))));
}
